//! The GGML block formats: dequantisation of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K
//! and Q6_K (the layouts of ggml's `ggml-common.h`), and encoding to the types lf writes (all of
//! those), byte for byte as ggml's reference quantisers do (the k-quants are in [`kquant`]).

use std::fmt;

use half::{bf16, f16};

use super::kquant;
use crate::error::{Error, Result};

/// A GGML tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
    /// 32 weights: f16 scale, 32 × 4-bit, offset 8.
    Q4_0,
    /// 32 weights: f16 scale and min, 32 × 4-bit.
    Q4_1,
    /// 32 weights: f16 scale, 32 × 5-bit (high bits packed apart), offset 16.
    Q5_0,
    /// 32 weights: f16 scale and min, 32 × 5-bit.
    Q5_1,
    /// 32 weights: f16 scale, 32 × i8.
    Q8_0,
    /// 32 weights, 8-bit with sum (size known, not dequantised).
    Q8_1,
    /// k-quant 2-bit (size known, not dequantised).
    Q2_K,
    /// k-quant 3-bit (size known, not dequantised).
    Q3_K,
    /// k-quant 4-bit: 256 weights in 8 sub-blocks with 6-bit scales and mins.
    Q4_K,
    /// k-quant 5-bit: 256 weights in 8 sub-blocks with 6-bit scales and mins.
    Q5_K,
    /// k-quant 6-bit: 256 weights in 16 sub-blocks with i8 scales.
    Q6_K,
    /// k-quant 8-bit (size known, not dequantised).
    Q8_K,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
}

impl GgmlType {
    /// From the id stored in the file.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            _ => return None,
        })
    }

    /// The id stored in the file (the inverse of [`GgmlType::from_id`]).
    pub fn id(self) -> u32 {
        (0..=30)
            .find(|&i| GgmlType::from_id(i) == Some(self))
            .expect("every GgmlType has an id")
    }

    /// The bytes `n` elements of this type take (`n` a multiple of the block size).
    pub fn byte_size(self, n: usize) -> u64 {
        let (be, bb) = self.block();
        n as u64 / be * bb
    }

    /// `(elements per block, bytes per block)`.
    pub fn block(self) -> (u64, u64) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            F64 | I64 => (1, 8),
            I8 => (1, 1),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantises `n` elements of type `ty` stored in `bytes` to f32.
///
/// `bytes` must hold exactly the `n / block_elems` blocks of the type.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; n];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Whether [`dequantize`] reads this type.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4_K | Q5_K | Q6_K
    )
}

/// Dequantises the `out.len()` elements of type `ty` stored in `bytes` into `out`.
///
/// `bytes` must hold exactly the `out.len() / block_elems` blocks of the type.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let n = out.len();
    let (be, bb) = ty.block();
    let (be, bb) = (be as usize, bb as usize);
    if !n.is_multiple_of(be) || bytes.len() != n / be * bb {
        return Err(Error::gguf(format!(
            "{ty}: {} bytes do not hold {n} elements",
            bytes.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (j, v) in y.iter_mut().enumerate() {
                    *v = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(18)) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                for j in 0..16 {
                    y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
                    y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let qs = &b[4..20];
                for j in 0..16 {
                    y[j] = (qs[j] & 0x0F) as f32 * d + m;
                    y[j + 16] = (qs[j] >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q5_0 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(22)) {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for (j, v) in y.iter_mut().enumerate() {
                    *v = (five_bits(&b[6..22], qh, j) as i32 - 16) as f32 * d;
                }
            }
        }
        GgmlType::Q5_1 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(24)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                for (j, v) in y.iter_mut().enumerate() {
                    *v = five_bits(&b[8..24], qh, j) as f32 * d + m;
                }
            }
        }
        GgmlType::Q4_K => {
            for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(144)) {
                kquant::dequant_q4_k_block(b, y);
            }
        }
        GgmlType::Q5_K => {
            for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(176)) {
                kquant::dequant_q5_k_block(b, y);
            }
        }
        GgmlType::Q6_K => {
            for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(210)) {
                kquant::dequant_q6_k_block(b, y);
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "dequantising GGML type {other}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
            )));
        }
    }
    Ok(())
}

/// Weight `j` (0..32) of a 5-bit block: its low 4 bits in nibble `j mod 16` of `qs` (low nibbles for
/// the first 16 weights, high for the last), its fifth bit at bit `j` of `qh`.
fn five_bits(qs: &[u8], qh: u32, j: usize) -> u8 {
    let low = if j < 16 {
        qs[j] & 0x0F
    } else {
        qs[j - 16] >> 4
    };
    low | ((((qh >> j) & 1) as u8) << 4)
}

/// Quantises `x` (a multiple of 32 values) to ggml's Q8_0: per block of 32, `d = max|x| / 127` stored
/// as f16 and `q = round(x / d)` as i8 (rounding half away from zero, as ggml's reference and gguf-py
/// do).
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(32), "Q8_0 needs blocks of 32");
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for block in x.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for &v in block {
            out.push((v * id).round() as i8 as u8);
        }
    }
    out
}

/// The element of largest magnitude (the first, on ties), keeping its sign.
fn signed_absmax(block: &[f32]) -> f32 {
    block
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

/// `1 / d`, or 0 for `d = 0`.
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// Packs 32 codes two per byte: byte `j` holds code `j` (low nibble) and code `j + 16` (high).
fn pack_nibbles(q: &[u8; 32], out: &mut Vec<u8>) {
    out.extend((0..16).map(|j| (q[j] & 0x0F) | (q[j + 16] << 4)));
}

/// The fifth bits of 32 codes as a little-endian `u32` (bit `j` from code `j`).
fn high_bits(q: &[u8; 32]) -> [u8; 4] {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &v)| h | (u32::from(v >> 4) << j));
    qh.to_le_bytes()
}

/// Symmetric 4- or 5-bit blocks of 32 (Q4_0: `levels` 16, Q5_0: 32): `d = m / −(levels/2)` with `m`
/// the element of largest magnitude, codes `trunc(x/d + levels/2 + 0.5)` clamped to the range.
fn quantize_symmetric(x: &[f32], levels: u8) -> Vec<u8> {
    let five = levels == 32;
    let mut out = Vec::with_capacity(x.len() / 32 * if five { 22 } else { 18 });
    let half = f32::from(levels / 2);
    for block in x.chunks_exact(32) {
        let d = signed_absmax(block) / -half;
        let id = inverse(d);
        let mut q = [0u8; 32];
        for (c, &v) in q.iter_mut().zip(block) {
            *c = ((v * id + (half + 0.5)).trunc() as i32).clamp(0, i32::from(levels) - 1) as u8;
        }
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        if five {
            out.extend_from_slice(&high_bits(&q));
        }
        pack_nibbles(&q, &mut out);
    }
    out
}

/// Asymmetric 4- or 5-bit blocks of 32 (Q4_1: `levels` 16, Q5_1: 32): `d = (max − min)/(levels − 1)`,
/// codes `trunc((x − min)/d + 0.5)`, stored with `min`.
fn quantize_affine(x: &[f32], levels: u8) -> Vec<u8> {
    let five = levels == 32;
    let mut out = Vec::with_capacity(x.len() / 32 * if five { 24 } else { 20 });
    for block in x.chunks_exact(32) {
        let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = block.iter().copied().fold(f32::INFINITY, f32::min);
        let d = (max - min) / f32::from(levels - 1);
        let id = inverse(d);
        let mut q = [0u8; 32];
        for (c, &v) in q.iter_mut().zip(block) {
            *c = (((v - min) * id + 0.5).trunc() as i32).clamp(0, i32::from(levels) - 1) as u8;
        }
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        if five {
            out.extend_from_slice(&high_bits(&q));
        }
        pack_nibbles(&q, &mut out);
    }
    out
}

/// Encodes f32 values as `ty`.
pub fn encode(values: &[f32], ty: GgmlType) -> Result<Vec<u8>> {
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => quantize_q8_0(values),
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4_1 | GgmlType::Q5_1 => {
            if !values.len().is_multiple_of(32) {
                return Err(Error::gguf(format!("{ty} needs blocks of 32 values")));
            }
            match ty {
                GgmlType::Q4_0 => quantize_symmetric(values, 16),
                GgmlType::Q5_0 => quantize_symmetric(values, 32),
                GgmlType::Q4_1 => quantize_affine(values, 16),
                _ => quantize_affine(values, 32),
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            if !values.len().is_multiple_of(kquant::QK_K) {
                return Err(Error::gguf(format!("{ty} needs blocks of 256 values")));
            }
            match ty {
                GgmlType::Q4_K => kquant::quantize_q4_k(values),
                GgmlType::Q5_K => kquant::quantize_q5_k(values),
                _ => kquant::quantize_q6_k(values),
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "writing GGUF tensors of type {other}"
            )));
        }
    })
}
