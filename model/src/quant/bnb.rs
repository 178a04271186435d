//! The formats of bitsandbytes: 4-bit NF4 and FP4 in blocks of 64 with absmax scales, double
//! quantisation of those scales (8-bit "dynamic" codes in blocks of 256, around their mean), and
//! row-wise absmax int8.
//!
//! The values are bitsandbytes' own (`tests/fixtures/quant/bnb_golden.json`, written by
//! `scripts/goldens/bnb_quant.py` with bitsandbytes on the CPU, pins every code, scale and
//! dequantised value). The arithmetic follows its reference (PyTorch) kernels:
//!
//! - 4-bit: per block, `absmax = max |x|`; `x · (1 / absmax)` clamped to `[-1, 1]` goes to the code
//!   whose interval between midpoints of the sorted code book holds it (a value on a midpoint goes
//!   down); two codes per byte, the first in the high nibble. Dequantised: `code[q] · absmax`.
//! - Double quantisation: `offset = mean(absmax)`; `absmax − offset` is quantised blockwise (256) with
//!   the signed dynamic map; dequantised: `map[q] · absmax₂ + offset`.
//! - int8: per row `s = max |x|`; `q = round_half_even(x · (127 / s))`; dequantised
//!   `q · s · (1/127)`.
//!
//! Blocks run over the flattened matrix, so a block may straddle two rows (as in bitsandbytes).

/// The NF4 code book (the QLoRA paper's quantiles of N(0, 1), normalised to [-1, 1]).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The FP4 code book (1 sign, 2 exponent, 1 mantissa bit; exponent bias 2) in bit-pattern order,
/// normalised by its largest magnitude, 12. Both zeros are +0, as in bitsandbytes.
pub const FP4: [f32; 16] = {
    const RAW: [f32; 16] = [
        0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, 0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0,
        -3.0,
    ];
    let mut out = [0.0f32; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = RAW[i] / 12.0;
        i += 1;
    }
    out
};

/// Elements per 4-bit block.
pub const BLOCK: usize = 64;
/// Scales per block of double quantisation.
pub const DOUBLE_BLOCK: usize = 256;

/// A 4-bit code book: NF4 or FP4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FourBit {
    /// NormalFloat 4 (QLoRA's default).
    Nf4,
    /// 4-bit float.
    Fp4,
}

impl FourBit {
    /// The 16 values, indexed by code.
    pub fn code(self) -> &'static [f32; 16] {
        match self {
            FourBit::Nf4 => &NF4,
            FourBit::Fp4 => &FP4,
        }
    }

    /// The name used in manifests and by bitsandbytes.
    pub fn name(self) -> &'static str {
        match self {
            FourBit::Nf4 => "nf4",
            FourBit::Fp4 => "fp4",
        }
    }
}

/// A code book prepared for quantising: its values sorted, the code of each, and the midpoints.
struct Bucketizer {
    midpoints: Vec<f32>,
    codes: Vec<u8>,
}

impl Bucketizer {
    fn new(code: &[f32]) -> Self {
        let mut order: Vec<u8> = (0..code.len() as u16).map(|i| i as u8).collect();
        // Stable: of FP4's two zeros, code 0 stays before code 8.
        order.sort_by(|&a, &b| {
            code[a as usize]
                .partial_cmp(&code[b as usize])
                .expect("code books hold no NaN")
        });
        let midpoints = order
            .windows(2)
            .map(|w| (code[w[0] as usize] + code[w[1] as usize]) / 2.0)
            .collect();
        Bucketizer {
            midpoints,
            codes: order,
        }
    }

    /// The code of `v`: the first midpoint at or above `v` ends its interval.
    fn code_of(&self, v: f32) -> u8 {
        self.codes[self.midpoints.partition_point(|&m| m < v)]
    }
}

/// Per block of `block` elements, `max |x|`; the last block may be partial.
fn block_absmax(x: &[f32], block: usize) -> Vec<f32> {
    x.chunks(block)
        .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect()
}

/// Blockwise quantisation of `x` against `code` (one code per element, unpacked), and the absmax of
/// each block.
fn quantize_blockwise(x: &[f32], block: usize, code: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let bucket = Bucketizer::new(code);
    let absmax = block_absmax(x, block);
    let mut q = Vec::with_capacity(x.len());
    for (values, &am) in x.chunks(block).zip(&absmax) {
        let inv = 1.0 / am.max(1e-38);
        q.extend(
            values
                .iter()
                .map(|&v| bucket.code_of((v * inv).clamp(-1.0, 1.0))),
        );
    }
    (q, absmax)
}

/// The signed 8-bit "dynamic" map bitsandbytes quantises double-quantisation scales with: for
/// exponents `10⁻⁶ … 10⁰`, `2ⁱ` values (i = 0..6) at the midpoints of an even split of `[0.1, 1]`,
/// with both signs; then 0 and 1; sorted. Computed in float32 as PyTorch computes it.
pub fn dynamic_map() -> [f32; 256] {
    const POW10: [f32; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for (i, &scale) in POW10.iter().enumerate() {
        let points = linspace_f32(0.1, 1.0, (1usize << i) + 1);
        for w in points.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            data.push(-scale * mean);
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let mut out = [0f32; 256];
    out.copy_from_slice(&data);
    out
}

/// PyTorch's float32 `linspace` on the CPU: the first half `start + step·i`, the second
/// `end − step·(n − 1 − i)`, each one fused multiply-add, with `step = (end − start) / (n − 1)`.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// The scales of a 4-bit matrix: plain f32, or double-quantised.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// One f32 per block.
    Plain(Vec<f32>),
    /// One 8-bit dynamic code per block, one f32 per 256 blocks, and the mean subtracted first.
    Double {
        /// Codes into [`dynamic_map`].
        codes: Vec<u8>,
        /// absmax of each group of 256 (centred) scales.
        absmax2: Vec<f32>,
        /// The mean of the scales.
        offset: f32,
    },
}

impl Absmax {
    /// Double-quantises `absmax` (bitsandbytes' `compress_statistics`).
    pub fn double(absmax: &[f32]) -> Absmax {
        let offset = torch_sum_f32(absmax) / absmax.len() as f32;
        let centred: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
        let (codes, absmax2) = quantize_blockwise(&centred, DOUBLE_BLOCK, &dynamic_map());
        Absmax::Double {
            codes,
            absmax2,
            offset,
        }
    }

    /// The f32 scale of every block.
    pub fn values(&self) -> Vec<f32> {
        match self {
            Absmax::Plain(v) => v.clone(),
            Absmax::Double {
                codes,
                absmax2,
                offset,
            } => {
                let map = dynamic_map();
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| map[c as usize] * absmax2[i / DOUBLE_BLOCK] + offset)
                    .collect()
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Absmax::Plain(v) => 4 * v.len(),
            Absmax::Double { codes, absmax2, .. } => codes.len() + 4 * absmax2.len() + 4,
        }
    }
}

/// The sum of a float32 vector in the order PyTorch's CPU kernel (`cascade_sum` in
/// `SumKernel.cpp`) adds it on an AVX2 CPU, so that double quantisation's offset (the mean of the
/// scales) is bitsandbytes' to the last bit: vectors of 8 lanes, 4 interleaved accumulators whose
/// partial sums are carried up 4 levels every 2^p rows (`p = max(4, ⌈log₂ rows⌉ / 4)`), then the
/// leftover vectors, the accumulators, the leftover scalars and the 8 lanes, in that order. (On an
/// AVX-512 build of PyTorch the lanes are 16 and its last bit can differ; lf's order is the same on
/// every machine.)
fn torch_sum_f32(x: &[f32]) -> f32 {
    const LANES: usize = 8;
    if x.len() < LANES {
        // PyTorch's scalar path: the same cascade over single values.
        return cascade::<1>(x)[0];
    }
    let lanes = cascade::<LANES>(&x[..x.len() / LANES * LANES]);
    let tail: f32 = x[x.len() / LANES * LANES..].iter().fold(0.0, |s, v| s + v);
    lanes.iter().fold(tail, |s, v| s + v)
}

/// `row_sum` of PyTorch's `cascade_sum` over `x` read as vectors of `L` lanes (`x.len()` a multiple
/// of `L`): the per-lane sums.
fn cascade<const L: usize>(x: &[f32]) -> [f32; L] {
    const ILP: usize = 4;
    const LEVELS: usize = 4;
    let vectors = x.len() / L;
    let vector = |i: usize| -> &[f32] { &x[i * L..(i + 1) * L] };
    let add = |acc: &mut [f32; L], v: &[f32]| acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    let rows = vectors / ILP;
    let ceil_log2 = if rows <= 1 {
        0
    } else {
        usize::BITS - (rows - 1).leading_zeros()
    } as usize;
    let power = (ceil_log2 / LEVELS).max(4);
    let step = 1usize << power;
    let mut acc = [[[0f32; L]; ILP]; LEVELS];
    let mut i = 0;
    while i + step <= rows {
        for _ in 0..step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                add(a, vector(i * ILP + k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (below, above) = acc.split_at_mut(j);
            for (lower, upper) in below[j - 1].iter_mut().zip(above[0].iter_mut()) {
                add(upper, lower);
                *lower = [0.0; L];
            }
            if i & ((step - 1) << (j * power)) != 0 {
                break;
            }
        }
    }
    for i in i..rows {
        for (k, a) in acc[0].iter_mut().enumerate() {
            add(a, vector(i * ILP + k));
        }
    }
    let (first, rest) = acc.split_at_mut(1);
    for level in rest.iter() {
        for (a, upper) in first[0].iter_mut().zip(level) {
            add(a, upper);
        }
    }
    let mut sums = acc[0];
    for v in rows * ILP..vectors {
        add(&mut sums[0], vector(v));
    }
    for k in 1..ILP {
        let other = sums[k];
        add(&mut sums[0], &other);
    }
    sums[0]
}

/// A matrix in 4-bit blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct FourBitMatrix {
    /// NF4 or FP4.
    pub kind: FourBit,
    /// Two codes per byte, the first in the high nibble; `ceil(n / 2)` bytes.
    pub packed: Vec<u8>,
    /// One scale per block.
    pub absmax: Absmax,
    /// Elements per block ([`BLOCK`] when lf quantises; a checkpoint may use another).
    pub block: usize,
}

impl FourBitMatrix {
    /// Quantises `x` (flattened, row-major).
    pub fn quantize(x: &[f32], kind: FourBit, double: bool) -> Self {
        let (q, absmax) = quantize_blockwise(x, BLOCK, kind.code());
        let packed = q
            .chunks(2)
            .map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(0))
            .collect();
        let absmax = if double {
            Absmax::double(&absmax)
        } else {
            Absmax::Plain(absmax)
        };
        FourBitMatrix {
            kind,
            packed,
            absmax,
            block: BLOCK,
        }
    }

    /// Dequantises elements `start .. start + out.len()` of the flattened matrix into `out`, given
    /// the f32 scales (from [`Absmax::values`]).
    pub fn dequantize_into(&self, scales: &[f32], start: usize, out: &mut [f32]) {
        let code = self.kind.code();
        for (i, o) in out.iter_mut().enumerate() {
            let e = start + i;
            let byte = self.packed[e / 2];
            let q = if e.is_multiple_of(2) {
                byte >> 4
            } else {
                byte & 0x0F
            };
            *o = code[q as usize] * scales[e / self.block];
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.packed.len() + self.absmax.bytes()
    }

    /// Checks that the parts hold `n` elements (packed codes and one scale per block).
    pub fn check(&self, n: usize) -> Result<(), String> {
        let blocks = n.div_ceil(self.block.max(1));
        let scales = match &self.absmax {
            Absmax::Plain(v) => v.len(),
            Absmax::Double { codes, absmax2, .. } => {
                if absmax2.len() != codes.len().div_ceil(DOUBLE_BLOCK) {
                    return Err(format!(
                        "{} second-level scales for {} scales",
                        absmax2.len(),
                        codes.len()
                    ));
                }
                codes.len()
            }
        };
        if self.block == 0 || self.packed.len() != n.div_ceil(2) || scales != blocks {
            return Err(format!(
                "{} packed bytes and {scales} scales (blocks of {}) do not hold {n} weights",
                self.packed.len(),
                self.block
            ));
        }
        Ok(())
    }
}

/// A matrix in row-wise absmax int8.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    /// The codes, row-major.
    pub q: Vec<i8>,
    /// `max |x|` of each row.
    pub row_absmax: Vec<f32>,
}

/// `1/127` as bitsandbytes multiplies by it.
const INV_127: f32 = 7.874_016e-3;

impl Int8Matrix {
    /// Quantises a `[rows, cols]` matrix.
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        let row_absmax = block_absmax(x, cols);
        let mut q = Vec::with_capacity(x.len());
        for (row, &s) in x.chunks(cols).zip(&row_absmax) {
            let factor = 127.0 / s;
            // A zero row gives 0 · ∞ = NaN, which casts to 0 (as in bitsandbytes).
            q.extend(row.iter().map(|&v| (v * factor).round_ties_even() as i8));
        }
        Int8Matrix { q, row_absmax }
    }

    /// Dequantises elements `start .. start + out.len()` of the flattened `[rows, cols]` matrix.
    pub fn dequantize_into(&self, cols: usize, start: usize, out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            let e = start + i;
            *o = self.q[e] as f32 * self.row_absmax[e / cols] * INV_127;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.row_absmax.len()
    }
}
