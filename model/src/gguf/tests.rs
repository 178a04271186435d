//! Tests of the GGUF reader, the block formats and the writer.

use half::{bf16, f16};

use super::*;
use crate::error::Error;

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

#[test]
fn dequant_f32_f16_bf16() {
    let v = [1.5f32, -2.25, 0.0, 1e-3];
    let b32: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(dequantize(GgmlType::F32, &b32, 4).unwrap(), v);
    let b16: Vec<u8> = v.iter().flat_map(|&x| h(x)).collect();
    let got = dequantize(GgmlType::F16, &b16, 4).unwrap();
    for (g, x) in got.iter().zip(v) {
        assert_eq!(*g, f16::from_f32(x).to_f32());
    }
    let bb: Vec<u8> = v
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
        .collect();
    let got = dequantize(GgmlType::BF16, &bb, 4).unwrap();
    for (g, x) in got.iter().zip(v) {
        assert_eq!(*g, bf16::from_f32(x).to_f32());
    }
}

#[test]
fn dequant_q8_0() {
    let mut b = h(0.5).to_vec();
    b.extend((0..32).map(|j| (j as i8 - 16) as u8));
    let got = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
    for (j, g) in got.iter().enumerate() {
        assert_eq!(*g, (j as f32 - 16.0) * 0.5);
    }
}

#[test]
fn dequant_q4_0() {
    let mut b = h(2.0).to_vec();
    // byte j: low nibble j (element j), high nibble 15 - j (element j + 16).
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let got = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(got[j], (j as f32 - 8.0) * 2.0);
        assert_eq!(got[j + 16], ((15 - j) as f32 - 8.0) * 2.0);
    }
}

#[test]
fn dequant_q4_1() {
    let mut b = h(0.25).to_vec();
    b.extend(h(-1.0));
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let got = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(got[j], j as f32 * 0.25 - 1.0);
        assert_eq!(got[j + 16], (15 - j) as f32 * 0.25 - 1.0);
    }
}

#[test]
fn dequant_q4_k() {
    // Sub-block s (0..8) gets scale s + 1 and min s; packed as ggml's 12-byte layout.
    let sc: Vec<u8> = (1..=8).collect();
    let mn: Vec<u8> = (0..8).collect();
    let mut scales = [0u8; 12];
    for j in 0..4 {
        scales[j] = sc[j] & 63;
        scales[j + 4] = mn[j] & 63;
    }
    for j in 4..8 {
        scales[j + 4] = (sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4);
        scales[j - 4] |= (sc[j] >> 4) << 6;
        scales[j] |= (mn[j] >> 4) << 6;
    }
    let mut b = h(0.5).to_vec();
    b.extend(h(0.25));
    b.extend(scales);
    // Element e of sub-block s has quant (e + s) % 16.
    let mut qs = [0u8; 128];
    for chunk in 0..4 {
        for l in 0..32 {
            let lo = ((l + 2 * chunk) % 16) as u8;
            let hi = ((l + 2 * chunk + 1) % 16) as u8;
            qs[32 * chunk + l] = lo | (hi << 4);
        }
    }
    b.extend(qs);
    let got = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
    for s in 0..8 {
        for l in 0..32 {
            let q = ((l + s) % 16) as f32;
            let want = 0.5 * sc[s] as f32 * q - 0.25 * mn[s] as f32;
            assert_eq!(got[32 * s + l], want, "sub-block {s} element {l}");
        }
    }
    // Scales above 15 exercise the high bits of the packing.
    let mut scales2 = scales;
    scales2[0] |= 1 << 6; // sub-block 4 scale += 16
    let mut b2 = b.clone();
    b2[4..16].copy_from_slice(&scales2);
    let got2 = dequantize(GgmlType::Q4_K, &b2, 256).unwrap();
    let want = 0.5 * (sc[4] + 16) as f32 * 4.0 - 0.25 * mn[4] as f32;
    assert_eq!(got2[128], want);
}

#[test]
fn dequant_q6_k() {
    // Element e (0..256) gets quant q(e) = (e * 7) % 64 and sub-block scale (e / 16) - 8.
    let q = |e: usize| ((e * 7) % 64) as u8;
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for half in 0..2 {
        for l in 0..32 {
            let base = 128 * half;
            let (q1, q2, q3, q4) = (
                q(base + l),
                q(base + l + 32),
                q(base + l + 64),
                q(base + l + 96),
            );
            ql[64 * half + l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            ql[64 * half + l + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            qh[32 * half + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    let scales: Vec<u8> = (0..16).map(|s| (s as i8 - 8) as u8).collect();
    let mut b = ql.to_vec();
    b.extend(qh);
    b.extend(scales);
    b.extend(h(0.125));
    let got = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
    for (e, g) in got.iter().enumerate() {
        let want = 0.125 * ((e / 16) as f32 - 8.0) * (q(e) as f32 - 32.0);
        assert_eq!(*g, want, "element {e}");
    }
}

#[test]
fn dequant_rejects_wrong_sizes_and_unsupported_types() {
    assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err());
    assert!(dequantize(GgmlType::Q4_0, &[0; 18], 31).is_err());
    assert!(matches!(
        dequantize(GgmlType::Q3_K, &[0; 110], 256),
        Err(Error::Unsupported(_))
    ));
}

fn sample_file() -> Vec<u8> {
    let meta = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String("llama".into()),
        ),
        ("a.u8".into(), GgufValue::U8(7)),
        ("a.i16".into(), GgufValue::I16(-3)),
        ("a.f64".into(), GgufValue::F64(2.5)),
        ("a.bool".into(), GgufValue::Bool(true)),
        (
            "a.arr".into(),
            GgufValue::Array(vec![
                GgufValue::String("x".into()),
                GgufValue::String("yz".into()),
            ]),
        ),
        (
            "a.nested".into(),
            GgufValue::Array(vec![GgufValue::Array(vec![
                GgufValue::I32(1),
                GgufValue::I32(-2),
            ])]),
        ),
    ];
    let w: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let w16: Vec<u8> = (0..4).flat_map(|i| h(i as f32)).collect();
    write_gguf(
        &meta,
        &[
            ("w".into(), vec![2, 3], GgmlType::F32, w),
            ("v".into(), vec![4], GgmlType::F16, w16),
        ],
    )
}

#[test]
fn reads_all_value_types_and_tensors() {
    let f = GgufFile::from_bytes(sample_file()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.meta_str("general.architecture"), Some("llama"));
    assert_eq!(f.meta_u64("a.u8"), Some(7));
    assert_eq!(f.meta("a.i16").unwrap().as_i64(), Some(-3));
    assert_eq!(f.meta_f64("a.f64"), Some(2.5));
    assert_eq!(f.meta_bool("a.bool"), Some(true));
    assert_eq!(f.meta_array_len("a.arr"), Some(2));
    let nested = f.meta("a.nested").unwrap().as_array().unwrap();
    assert_eq!(nested[0].as_array().unwrap()[1].as_i64(), Some(-2));
    let (w, shape) = f.dequantize("w").unwrap();
    assert_eq!(shape, vec![2, 3]);
    assert_eq!(w, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let (v, _) = f.dequantize("v").unwrap();
    assert_eq!(v, vec![0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn truncated_or_corrupted_never_panics() {
    let full = sample_file();
    for cut in 0..full.len() {
        let r = GgufFile::from_bytes(full[..cut].to_vec());
        assert!(r.is_err(), "truncation at {cut} parsed");
    }
    for i in 0..full.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut b = full.clone();
            b[i] ^= flip;
            if let Ok(f) = GgufFile::from_bytes(b) {
                for t in f.tensors.clone() {
                    let _ = f.dequantize(&t.name);
                }
            }
        }
    }
}

#[test]
fn permutation_is_the_inverse_of_the_readers() {
    let (rows, cols, heads) = (16, 3, 2);
    let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let p = permute_rows(&data, rows, cols, heads);
    assert_ne!(p, data);
    assert_eq!(unpermute_rows(&p, rows, cols, heads), data);
    // Head 0, hd 8: HF rows 0..4 are the first halves of the pairs, rows 4..8 the second.
    let row = |v: &[f32], r: usize| v[r * cols];
    assert_eq!(row(&p, 0), row(&data, 0));
    assert_eq!(row(&p, 1), row(&data, 4));
    assert_eq!(row(&p, 2), row(&data, 1));
    assert_eq!(row(&p, 3), row(&data, 5));
}

#[test]
fn q8_0_matches_hand_computed_blocks_and_reads_back() {
    let mut x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
    x.extend(std::iter::repeat_n(0.0, 32));
    let q = quantize_q8_0(&x);
    assert_eq!(q.len(), 68);
    // Block 0: max |x| = 16, d = 16/127; x = -16 → -127, x = 15 → round(119.06) = 119.
    let d = f16::from_le_bytes([q[0], q[1]]).to_f32();
    assert_eq!(d, f16::from_f32(16.0 / 127.0).to_f32());
    assert_eq!(q[2] as i8, -127);
    assert_eq!(q[2 + 31] as i8, 119);
    // An all-zero block has d = 0 and zero quants.
    assert!(q[34..].iter().all(|&b| b == 0));
    let back = dequantize(GgmlType::Q8_0, &q, 64).unwrap();
    for (a, b) in x.iter().zip(&back) {
        assert!((a - b).abs() <= 16.0 / 127.0 / 2.0 + 1e-3, "{a} vs {b}");
    }
}

#[test]
fn rounding_is_half_away_from_zero() {
    // max |x| = 127 makes d = 1 exactly, so x is its own quant before rounding.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = -0.5;
    x[3] = 2.5;
    x[4] = -2.5;
    let q = quantize_q8_0(&x);
    assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), 1.0);
    let quants: Vec<i8> = q[2..7].iter().map(|&b| b as i8).collect();
    assert_eq!(quants, vec![127, 1, -1, 3, -3]);
}
