//! The formats against bitsandbytes' goldens, and the quantised product against the dense one.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::bnb::{self, Absmax, FourBit, FourBitMatrix, Int8Matrix};
use super::{QuantSpec, QuantWeight, QuantizedMatrix};
use crate::gguf::quant::{GgmlType, dequantize, quantize_q8_0};
use crate::ops;

type CpuAd = Autodiff<Flex>;

fn golden() -> Json {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant/bnb_golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The shape of the golden script's input matrix.
fn golden_shape(g: &Json) -> (usize, usize) {
    let dim = |k: &str| g[k].as_u64().unwrap() as usize;
    (dim("rows"), dim("cols"))
}

/// The golden script's input: integer hashing, float64 arithmetic, one rounding to float32.
fn golden_input(rows: usize, cols: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let i = (r * cols + c) as u64;
            let h = (i * 2_654_435_761 + 12345) % (1u64 << 32);
            let mut v = (h as f64 / 4_294_967_296.0 - 0.5) * (0.02 * (1 + r % 7) as f64);
            if i.is_multiple_of(997) {
                v *= 8.0;
            }
            x.push(if r == 5 { 0.0 } else { v as f32 });
        }
    }
    x
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn f32_hex(v: &[f32]) -> String {
    hex(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn f32_sha(v: &[f32]) -> String {
    sha(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
}

fn s(g: &Json, k: &str) -> String {
    g[k].as_str()
        .unwrap_or_else(|| panic!("golden has no `{k}`"))
        .to_string()
}

#[test]
fn code_books_and_the_dynamic_map_are_bitsandbytes() {
    let g = golden();
    assert_eq!(f32_hex(&bnb::NF4), s(&g, "nf4_code"));
    assert_eq!(f32_hex(&bnb::FP4), s(&g, "fp4_code"));
    assert_eq!(f32_hex(&bnb::dynamic_map()), s(&g, "dynamic_map"));
}

#[test]
fn four_bit_quantisation_matches_bitsandbytes() {
    let g = golden();
    let (rows, cols) = golden_shape(&g);
    let x = golden_input(rows, cols);
    assert_eq!(f32_sha(&x), s(&g, "input_sha256"), "the input formula");
    for (key, kind, double) in [
        ("nf4", FourBit::Nf4, false),
        ("nf4_double", FourBit::Nf4, true),
        ("fp4", FourBit::Fp4, false),
        ("fp4_double", FourBit::Fp4, true),
    ] {
        let want = &g[key];
        let m = FourBitMatrix::quantize(&x, kind, double);
        assert_eq!(hex(&m.packed[..64]), s(want, "codes_head"), "{key} codes");
        assert_eq!(sha(&m.packed), s(want, "codes_sha256"), "{key} codes");
        if let Absmax::Double {
            codes,
            absmax2,
            offset,
        } = &m.absmax
        {
            assert_eq!(f32_hex(&[*offset]), s(want, "offset"), "{key} offset");
            assert_eq!(hex(codes), s(want, "absmax_codes"), "{key} scale codes");
            assert_eq!(f32_hex(absmax2), s(want, "absmax2"), "{key} second scales");
        }
        let scales = m.absmax.values();
        assert_eq!(f32_hex(&scales), s(want, "absmax"), "{key} scales");
        let mut deq = vec![0f32; x.len()];
        m.dequantize_into(&scales, 0, &mut deq);
        assert_eq!(f32_hex(&deq[..64]), s(want, "dequantized_head"), "{key}");
        assert_eq!(f32_sha(&deq), s(want, "dequantized_sha256"), "{key}");
        // The matrix type dequantises the same values in parallel chunks.
        let spec = QuantSpec::FourBit { kind, double };
        let q = QuantizedMatrix::quantize(&x, rows, cols, spec);
        assert_eq!(q.dequantize(), deq, "{key}");
        // Double quantisation spends 8 bits plus a shared f32 per 64 weights instead of 32.
        let scale_bytes = m.absmax.bytes();
        let blocks = x.len().div_ceil(bnb::BLOCK);
        assert_eq!(
            scale_bytes,
            if double {
                blocks + 4 * blocks.div_ceil(bnb::DOUBLE_BLOCK) + 4
            } else {
                4 * blocks
            }
        );
    }
}

#[test]
fn int8_quantisation_matches_bitsandbytes() {
    let g = golden();
    let (rows, cols) = golden_shape(&g);
    let x = golden_input(rows, cols);
    let want = &g["int8"];
    let m = Int8Matrix::quantize(&x, cols);
    let q: Vec<u8> = m.q.iter().map(|&v| v as u8).collect();
    assert_eq!(hex(&q[..64]), s(want, "q_head"));
    assert_eq!(sha(&q), s(want, "q_sha256"));
    assert_eq!(f32_hex(&m.row_absmax), s(want, "row_absmax"));
    let deq = QuantizedMatrix::quantize(&x, rows, cols, QuantSpec::Int8).dequantize();
    assert_eq!(f32_hex(&deq[..64]), s(want, "dequantized_head"));
    assert_eq!(f32_sha(&deq), s(want, "dequantized_sha256"));
}

#[test]
fn ggml_blocks_dequantise_like_the_gguf_reader() {
    let (rows, cols) = (6, 96);
    let x = golden_input(rows, cols);
    let bytes = quantize_q8_0(&x);
    let m = QuantizedMatrix::from_ggml(GgmlType::Q8_0, bytes.clone(), rows, cols).unwrap();
    assert_eq!(
        m.dequantize(),
        dequantize(GgmlType::Q8_0, &bytes, rows * cols).unwrap()
    );
    assert_eq!(m.bytes(), rows * cols / 32 * 34);
    // Rows must be whole blocks, and the bytes must fill the shape.
    assert!(QuantizedMatrix::from_ggml(GgmlType::Q8_0, bytes.clone(), 12, 48).is_err());
    assert!(QuantizedMatrix::from_ggml(GgmlType::Q8_0, bytes[1..].to_vec(), rows, cols).is_err());
    let err = QuantizedMatrix::from_ggml(GgmlType::Q3_K, vec![0; 110], 1, 256).unwrap_err();
    assert!(err.to_string().contains("Q3_K"), "{err}");
}

#[test]
fn the_quantisation_config_round_trips() {
    for spec in [
        QuantSpec::FourBit {
            kind: FourBit::Nf4,
            double: true,
        },
        QuantSpec::FourBit {
            kind: FourBit::Fp4,
            double: false,
        },
        QuantSpec::Int8,
    ] {
        assert_eq!(QuantSpec::from_json(&spec.to_json()).unwrap(), spec);
    }
    assert!(QuantSpec::from_bits(3, FourBit::Nf4, true).is_err());
    assert!(QuantSpec::from_json(&serde_json::json!({"quant_method": "gptq"})).is_err());
}

fn tensor<B: burn::tensor::backend::Backend>(v: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn bits<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<u32> {
    t.into_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// The product with a quantised weight is the dense product with its dequantised values, bit for
/// bit, forward and backward (k and n longer than one block of the fixed-order product).
#[test]
fn the_quantised_product_is_the_dense_product_of_the_dequantised_weight() {
    let (m, k, n) = (9, 640, 576);
    let w = golden_input(n, k);
    let x = golden_input(m, k)
        .iter()
        .map(|v| v * 50.0 + 0.01)
        .collect::<Vec<_>>();
    let g = golden_input(m, n)
        .iter()
        .map(|v| v * 30.0 - 0.02)
        .collect::<Vec<_>>();
    for spec in [
        QuantSpec::FourBit {
            kind: FourBit::Nf4,
            double: true,
        },
        QuantSpec::Int8,
    ] {
        let q = QuantWeight::new(QuantizedMatrix::quantize(&w, n, k, spec));
        let deq = q.0.dequantize();

        let plain = super::op::linear(tensor::<Flex>(&x, [m, k]), &q);
        let dense = ops::linear(tensor::<Flex>(&x, [m, k]), tensor(&deq, [n, k]));
        assert_eq!(bits(plain), bits(dense), "{spec} forward");

        let xq = tensor::<CpuAd>(&x, [m, k]).require_grad();
        let xd = tensor::<CpuAd>(&x, [m, k]).require_grad();
        let wd = tensor::<CpuAd>(&deq, [n, k]);
        let up = tensor::<CpuAd>(&g, [m, n]);
        let yq = super::op::linear(xq.clone(), &q);
        let yd = ops::linear(xd.clone(), wd.clone());
        assert_eq!(
            bits(yq.clone()),
            bits(yd.clone()),
            "{spec} autodiff forward"
        );
        let gq = (yq * up.clone()).sum().backward();
        let gd = (yd * up).sum().backward();
        assert_eq!(
            bits(xq.grad(&gq).unwrap()),
            bits(xd.grad(&gd).unwrap()),
            "{spec} input gradient"
        );
    }
}

/// Inputs that need no gradient record nothing, and a 3-D input keeps its leading dimensions.
#[test]
fn the_quantised_product_keeps_shapes_and_skips_untracked_inputs() {
    let (k, n) = (64, 32);
    let w = golden_input(n, k);
    let q = QuantWeight::new(QuantizedMatrix::quantize(&w, n, k, QuantSpec::Int8));
    let x = Tensor::<CpuAd, 3>::ones([2, 3, k], &Default::default());
    let y = super::op::linear(x, &q);
    assert_eq!(y.dims(), [2, 3, n]);
    assert!(!y.is_require_grad());
}
