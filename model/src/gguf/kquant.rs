//! ggml's k-quants: super-blocks of 256 weights with quantised per-sub-block scales. lf reads Q4_K,
//! Q5_K and Q6_K, and writes them as ggml's reference quantisers do (`quantize_row_q{4,5,6}_K_ref`,
//! without an importance matrix): the same search for each sub-block's scale and minimum, the same
//! float operations in the same order, so the bytes equal llama.cpp's (golden test).
//!
//! Layouts (`ggml-common.h`):
//! - Q4_K, 144 bytes: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight sub-blocks of 32,
//!   each with a 6-bit scale and a 6-bit minimum (packed in `scales`); weight = `d·sc·q − dmin·m`,
//!   `q` in 0..16.
//! - Q5_K, 176 bytes: Q4_K's header, then `qh: [u8; 32]` (the fifth bits) and `qs: [u8; 128]`;
//!   `q` in 0..32.
//! - Q6_K, 210 bytes: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Sixteen sub-blocks
//!   of 16 with an i8 scale each; weight = `d·sc·(q − 32)`, `q` in 0..64.

use half::f16;

/// Weights per super-block.
pub const QK_K: usize = 256;

/// Below this a group is all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// The f16 that `v` rounds to, and its value back in f32.
fn to_f16(v: f32) -> (f16, f32) {
    let h = f16::from_f32(v);
    (h, h.to_f32())
}

/// ggml's `nearest_int`: rounds to nearest, ties to even, through the float's bits (exact for
/// `|v| < 2^22`; other inputs give the same garbage ggml's does, never a panic).
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs the eight 6-bit scales and mins of a Q4_K/Q5_K block (the inverse of [`scale_min_k4`]).
fn pack_scales(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Q4_K block: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`.
pub(crate) fn dequant_q4_k_block(b: &[u8], y: &mut [f32]) {
    dequant_affine_k_block(&b[..16], None, &b[16..144], y);
}

/// Q5_K block: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`. Sub-block `2c`
/// takes bit `2c` of `qh[l]` as its fifth bit, sub-block `2c + 1` bit `2c + 1`.
pub(crate) fn dequant_q5_k_block(b: &[u8], y: &mut [f32]) {
    dequant_affine_k_block(&b[..16], Some(&b[16..48]), &b[48..176], y);
}

/// Q4_K and Q5_K: `header` holds `d`, `dmin` and the packed scales; `qh` the fifth bits of Q5_K.
fn dequant_affine_k_block(header: &[u8], qh: Option<&[u8]>, qs: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(header, 0), f16_at(header, 2));
    let scales = &header[4..16];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let out = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            let (h1, h2) = qh.map_or((0, 0), |qh| {
                (
                    ((qh[l] >> (2 * chunk)) & 1) << 4,
                    ((qh[l] >> (2 * chunk + 1)) & 1) << 4,
                )
            });
            out[l] = d1 * ((q[l] & 0x0F) | h1) as f32 - m1;
            out[l + 32] = d2 * ((q[l] >> 4) | h2) as f32 - m2;
        }
    }
}

/// Q6_K block: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
pub(crate) fn dequant_q6_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// The search of ggml's `make_qkx2_quants` for one sub-block: codes `l` in `0..=nmax` with
/// `x ≈ scale·l − min` minimising the `weights`-weighted squared error. It starts from the
/// min/max fit and tries `nstep + 1` stretched grids (`iscale = (rmin + rdelta·i + nmax)/(max −
/// min)`), refitting scale and min by weighted least squares on each. Returns `(scale, min)`
/// (`min ≥ 0`) and writes the codes to `l_out`.
struct AffineSearch {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
}

impl AffineSearch {
    fn run(&self, x: &[f32], weights: &[f32], l_out: &mut [u8]) -> (f32, f32) {
        let n = x.len();
        let nmax = self.nmax;
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            let w = weights[i];
            sum_w += w;
            sum_x += w * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            l_out.fill(0);
            return (0.0, -min);
        }
        let mut iscale = nmax as f32 / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_error = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l_out[i] = l as u8;
            let diff = scale * l as f32 + min - x[i];
            best_error += weights[i] * (diff * diff);
        }
        let mut aux = [0u8; 32];
        for is in 0..=self.nstep {
            iscale = (self.rmin + self.rdelta * is as f32 + nmax as f32) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
            for i in 0..n {
                let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
                aux[i] = l as u8;
                let (w, l) = (weights[i], l as f32);
                sum_l += w * l;
                sum_l2 += w * l * l;
                sum_xl += w * l * x[i];
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            if det > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0f32;
                for i in 0..n {
                    let diff = this_scale * aux[i] as f32 + this_min - x[i];
                    cur_error += weights[i] * (diff * diff);
                }
                if cur_error < best_error {
                    l_out[..n].copy_from_slice(&aux[..n]);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }
}

/// Q4_K's and Q5_K's encoder (`bits` 4 or 5): per sub-block of 32, weights `rms(x) + |x|` and
/// [`AffineSearch`]; the eight scales and mins are then quantised to 6 bits against the block's
/// largest (`d = max_scale/63`, `dmin = max_min/63` as f16), and the codes recomputed from those.
fn quantize_affine_k(x: &[f32], bits: u32) -> Vec<u8> {
    let (nmax, block_bytes) = if bits == 4 { (15, 144) } else { (31, 176) };
    let search = if bits == 4 {
        AffineSearch {
            nmax,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
        }
    } else {
        AffineSearch {
            nmax,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
        }
    };
    let mut out = Vec::with_capacity(x.len() / QK_K * block_bytes);
    for block in x.chunks_exact(QK_K) {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..8 {
            let sub = &block[32 * j..32 * j + 32];
            let mut sum_x2 = 0f32;
            for &v in sub {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            let mut weights = [0f32; 32];
            for (w, &v) in weights.iter_mut().zip(sub) {
                *w = av_x + v.abs();
            }
            (scales[j], mins[j]) = search.run(sub, &weights, &mut l[32 * j..32 * j + 32]);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut ls = [0u8; 8];
        let mut lm = [0u8; 8];
        for j in 0..8 {
            ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
        }
        let packed = pack_scales(&ls, &lm);
        let (d_h, d) = to_f16(max_scale / 63.0);
        let (dmin_h, dmin) = to_f16(max_min / 63.0);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &packed);
            let ds = d * sc as f32;
            if ds == 0.0 {
                continue;
            }
            let dm = dmin * m as f32;
            for ii in 0..32 {
                let q = nearest_int((block[32 * j + ii] + dm) / ds).clamp(0, nmax);
                l[32 * j + ii] = q as u8;
            }
        }
        out.extend_from_slice(&d_h.to_le_bytes());
        out.extend_from_slice(&dmin_h.to_le_bytes());
        out.extend_from_slice(&packed);
        if bits == 5 {
            let mut qh = [0u8; 32];
            for chunk in 0..4 {
                for i in 0..32 {
                    qh[i] |= (l[64 * chunk + i] >> 4) << (2 * chunk);
                    qh[i] |= (l[64 * chunk + 32 + i] >> 4) << (2 * chunk + 1);
                }
            }
            out.extend_from_slice(&qh);
        }
        for chunk in 0..4 {
            let c = &l[64 * chunk..64 * chunk + 64];
            out.extend((0..32).map(|i| (c[i] & 0x0F) | ((c[i + 32] & 0x0F) << 4)));
        }
    }
    out
}

/// Quantises `x` (a multiple of 256 values) to ggml's Q4_K.
pub fn quantize_q4_k(x: &[f32]) -> Vec<u8> {
    quantize_affine_k(x, 4)
}

/// Quantises `x` (a multiple of 256 values) to ggml's Q5_K.
pub fn quantize_q5_k(x: &[f32]) -> Vec<u8> {
    quantize_affine_k(x, 5)
}

/// ggml's `make_qx_quants` with `x²` weights, for Q6_K's sub-blocks of 16: symmetric codes in
/// `−nmax..nmax` scaled from the element of largest magnitude, then 18 stretched grids
/// (`iscale = −(nmax + 0.1·i)/max`), keeping the one whose least-squares scale explains most of
/// `Σ x²·x·l`. Returns the scale and writes the codes (offset by `nmax`) to `l_out`.
fn symmetric_search(x: &[f32], nmax: i32, l_out: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let iscale = -(nmax as f32) / max;
    for (o, &v) in l_out.iter_mut().zip(x) {
        *o = (code(iscale, v) + nmax) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l_out.iter_mut().zip(x) {
                *o = (code(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantises `x` (a multiple of 256 values) to ggml's Q6_K: per sub-block of 16 a scale from
/// [`symmetric_search`], the sixteen scales quantised to i8 against the largest
/// (`d = −max_scale/128` as f16), and the codes recomputed from those.
pub fn quantize_q6_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * 210);
    for block in x.chunks_exact(QK_K) {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let s = symmetric_search(
                &block[16 * ib..16 * ib + 16],
                32,
                &mut l[16 * ib..16 * ib + 16],
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.extend_from_slice(&[0u8; 210]);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let (d_h, d) = to_f16(1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        for j in 0..16 {
            let ds = d * sc[j] as f32;
            if ds == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(block[16 * j + ii] / ds).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as u8;
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            let c = &l[128 * half..128 * half + 128];
            let (ql, qh) = (&mut ql[64 * half..], &mut qh[32 * half..]);
            for i in 0..32 {
                ql[i] = (c[i] & 0x0F) | ((c[i + 64] & 0x0F) << 4);
                ql[i + 32] = (c[i + 32] & 0x0F) | ((c[i + 96] & 0x0F) << 4);
                qh[i] = (c[i] >> 4)
                    | ((c[i + 32] >> 4) << 2)
                    | ((c[i + 64] >> 4) << 4)
                    | ((c[i + 96] >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d_h.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.6, -8),
        ];
        for (v, want) in cases {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn scales_pack_and_unpack() {
        let ls = [0, 1, 17, 63, 32, 45, 7, 63];
        let lm = [63, 2, 33, 0, 16, 48, 5, 31];
        let packed = pack_scales(&ls, &lm);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &packed), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
