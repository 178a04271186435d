//! Fused CPU kernels, each with its backward, for the parts of the decoder that are not matrix
//! products: RMSNorm, RoPE, the masked attention softmax, SwiGLU and the target-token
//! log-probabilities of the loss (alone, or together with the LM head so that the `[n, vocab]` logits
//! are never kept: [`head_logps`]).
//!
//! Written with burn's tensor operations, each is a chain of two to eight operations, and most of them
//! broadcast a per-row statistic (a maximum, a sum, a mean square) or a table (RoPE's angles, the
//! mask) over a bigger tensor. The CPU backend runs a
//! broadcasting operation element by element through a generic strided iterator, and under autodiff
//! every link records its own backward. In the quickstart's training step, the attention softmax and
//! its backward took about 40 % of the time (profile: `docs/design/cpu-performance.md`). Here each
//! one is a single pass over contiguous rows, both forward and backward, as a custom autodiff
//! operation like [`crate::fixed_order`]'s product.
//!
//! **Order of additions.** Every row sum uses 8 running sums, lane `i mod 8`, combined as
//! `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))` ([`sum`], [`dot`]). A sum over rows (a norm
//! weight's gradient) adds fixed blocks of [`ROW_BLOCK`] rows, in block order. Rust never fuses a
//! multiply and an add on its own, so the bits do not depend on the CPU, its vector width or the
//! thread count. Rows are spread over threads, but each row is computed by one thread.
//!
//! Other backends, and dtypes other than f32, use the composite definitions in [`crate::ops`].

use std::any::Any;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::fixed_order::{matmul_blocked, same_type, tensor};

type CpuAd = Autodiff<Flex>;

/// Rows whose contributions to a column sum are added together before the blocks are added in
/// order (a norm weight's gradient).
pub const ROW_BLOCK: usize = 64;

/// Elements one parallel task gets, at least (whole rows).
const TASK_ELEMS: usize = 1 << 14;

/// `softmax(scale · scores + mask)` over the last dimension, computed in f32.
///
/// `Err` gives `scores` back when this backend or dtype has no fused kernel, or the mask does not
/// have the shape below: the caller computes it from tensor operations.
///
/// # Shapes
/// - `scores`: `[batch, a, b, q, k]`
/// - `mask`: `[batch|1, 1, 1, q, k]`, additive
pub fn masked_softmax<B: Backend>(
    scores: Tensor<B, 5>,
    scale: f32,
    mask: Option<&Tensor<B, 5>>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let dims = scores.dims();
    let mask_fits = mask.is_none_or(|m| {
        let md = m.dims();
        (md[0] == 1 || md[0] == dims[0]) && md[1] == 1 && md[2] == 1 && md[3..] == dims[3..]
    });
    if scores.dtype() != DType::F32
        || mask.is_some_and(|m| m.dtype() != DType::F32)
        || !mask_fits
        || dims[4] == 0
    {
        return Err(scores);
    }
    let args: Box<dyn Any> = Box::new((scores, mask.cloned()));
    let args = match args.downcast::<(Tensor<CpuAd, 5>, Option<Tensor<CpuAd, 5>>)>() {
        Ok(a) => {
            let (scores, mask) = *a;
            return Ok(same_type(softmax_autodiff(
                scores,
                scale,
                mask.map(|m| m.inner()),
            )));
        }
        Err(other) => other,
    };
    match args.downcast::<(Tensor<Flex, 5>, Option<Tensor<Flex, 5>>)>() {
        Ok(a) => {
            let (scores, mask) = *a;
            let dims = scores.dims();
            let out = softmax_forward(flex(scores), scale, mask.map(flex).as_ref(), &dims);
            Ok(same_type(tensor::<5>(out)))
        }
        Err(other) => {
            let (scores, _) = *same_type::<_, Box<(Tensor<B, 5>, Option<Tensor<B, 5>>)>>(other);
            Err(scores)
        }
    }
}

/// RMSNorm over the last dimension, `x / sqrt(mean(x²) + eps) · weight`, computed in f32.
///
/// `Err` gives the inputs back when this backend or dtype has no fused kernel.
///
/// # Shapes
/// - `x`: `[..., d]`
/// - `weight`: `[d]`
#[allow(clippy::type_complexity)]
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, 1>)> {
    let d = weight.dims()[0];
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 || d == 0 || x.dims()[D - 1] != d {
        return Err((x, weight));
    }
    let eps = eps as f32;
    let args: Box<dyn Any> = Box::new((x, weight));
    let args = match args.downcast::<(Tensor<CpuAd, D>, Tensor<CpuAd, 1>)>() {
        Ok(a) => return Ok(same_type(rms_norm_autodiff(a.0, a.1, eps))),
        Err(other) => other,
    };
    match args.downcast::<(Tensor<Flex, D>, Tensor<Flex, 1>)>() {
        Ok(a) => {
            let dims = a.0.dims();
            let out = rms_norm_forward(&flex(a.0), &flex(a.1), eps, &dims);
            Ok(same_type(tensor::<D>(out)))
        }
        Err(other) => Err(*same_type::<_, Box<(Tensor<B, D>, Tensor<B, 1>)>>(other)),
    }
}

/// The autodiff tensor primitive of the CPU backend.
pub(crate) type AdPrimitive = <CpuAd as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// Records `output` as the result of the custom operation `op` on `parents`, keeping `state` for its
/// backward when a parent needs a gradient.
pub(crate) fn record<O: Backward<Flex, N>, const N: usize, const D: usize>(
    op: O,
    parents: [&AdPrimitive; N],
    state: O::State,
    output: FlexTensor,
) -> Tensor<CpuAd, D> {
    let output = match op
        .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// The contiguous CPU tensor under `t`.
fn flex<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor().to_contiguous()
}

/// The f32 elements of a contiguous tensor.
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels are given contiguous f32 tensors")
}

/// A new contiguous f32 tensor of `dims`.
fn from_vec(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
}

/// `Σ xᵢ` in the fixed lane order (module docs).
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    for (l, v) in chunks.remainder().iter().enumerate() {
        acc[l] += v;
    }
    lanes(acc)
}

/// `Σ aᵢ·bᵢ` in the fixed lane order (module docs); each product is rounded before it is added.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[l] += x * y;
    }
    lanes(acc)
}

#[inline]
fn lanes(a: [f32; 8]) -> f32 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Rows per parallel task for rows of `width` elements.
fn rows_per_task(width: usize) -> usize {
    (TASK_ELEMS / width.max(1)).max(1)
}

/// Calls `f(row index, row of out)` for every row of `out`, rows spread over threads.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let per = rows_per_task(width);
    out.par_chunks_mut(per * width)
        .enumerate()
        .for_each(|(task, rows)| {
            for (i, row) in rows.chunks_exact_mut(width).enumerate() {
                f(task * per + i, row);
            }
        });
}

// ---------------------------------------------------------------------------------------------
// Masked softmax

/// The forward kernel: `dims` is the shape of `scores`, `mask` fits it (checked by the caller).
fn softmax_forward(
    scores: FlexTensor,
    scale: f32,
    mask: Option<&FlexTensor>,
    dims: &[usize; 5],
) -> FlexTensor {
    let x = values(&scores);
    let (q, k) = (dims[3], dims[4]);
    let per_batch = dims[1] * dims[2] * q;
    let mask = mask.map(|m| (values(m), m.layout().shape()[0] > 1));
    let mut out = vec![0f32; x.len()];
    for_rows(&mut out, k, |r, o| {
        let xr = &x[r * k..(r + 1) * k];
        match mask {
            Some((m, per_row_batch)) => {
                let mrow = if per_row_batch { r / per_batch } else { 0 } * q + r % q;
                let mr = &m[mrow * k..(mrow + 1) * k];
                for ((o, &x), &m) in o.iter_mut().zip(xr).zip(mr) {
                    *o = x * scale + m;
                }
            }
            None => {
                for (o, &x) in o.iter_mut().zip(xr) {
                    *o = x * scale;
                }
            }
        }
        let max = o.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in o.iter_mut() {
            *v = (*v - max).exp();
        }
        let total = sum(o);
        for v in o.iter_mut() {
            *v /= total;
        }
    });
    from_vec(out, dims)
}

/// `d scores = scale · p ⊙ (dp − Σ dp ⊙ p)`, row by row.
fn softmax_backward(grad: FlexTensor, probs: &FlexTensor, scale: f32) -> FlexTensor {
    let grad = grad.to_contiguous();
    let (dp, p) = (values(&grad), values(probs));
    let dims = probs.layout().shape().to_vec();
    let k = *dims.last().expect("a softmax has a last dimension");
    let mut out = vec![0f32; p.len()];
    for_rows(&mut out, k, |r, o| {
        let (dpr, pr) = (&dp[r * k..(r + 1) * k], &p[r * k..(r + 1) * k]);
        let inner = dot(dpr, pr);
        for ((o, &d), &p) in o.iter_mut().zip(dpr).zip(pr) {
            *o = scale * (p * (d - inner));
        }
    });
    from_vec(out, &dims)
}

/// Backward of [`masked_softmax`]; its state is the output and the scale.
#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (probs, scale) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            softmax_backward(grad, &probs, scale)
        });
    }
}

fn softmax_autodiff(
    scores: Tensor<CpuAd, 5>,
    scale: f32,
    mask: Option<Tensor<Flex, 5>>,
) -> Tensor<CpuAd, 5> {
    let dims = scores.dims();
    let scores = scores.into_primitive().tensor();
    let out = softmax_forward(
        scores.primitive.clone().to_contiguous(),
        scale,
        mask.map(flex).as_ref(),
        &dims,
    );
    record(SoftmaxBackward, [&scores], (out.clone(), scale), out)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `1 / sqrt(mean(x²) + eps)` of one row.
#[inline]
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt()
}

fn rms_norm_forward(x: &FlexTensor, weight: &FlexTensor, eps: f32, dims: &[usize]) -> FlexTensor {
    let (x, w) = (values(x), values(weight));
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for_rows(&mut out, d, |r, o| {
        let xr = &x[r * d..(r + 1) * d];
        let inv = inv_rms(xr, eps);
        for ((o, &x), &w) in o.iter_mut().zip(xr).zip(w) {
            *o = (x * inv) * w;
        }
    });
    from_vec(out, dims)
}

/// `dx = r·g − x·r³·(g·x)/d` with `g = dy ⊙ w` and `r` the row's inverse RMS.
fn rms_norm_backward_x(grad: &[f32], x: &FlexTensor, weight: &[f32], eps: f32) -> FlexTensor {
    let dims = x.layout().shape().to_vec();
    let x = values(x);
    let d = weight.len();
    let mut out = vec![0f32; x.len()];
    for_rows(&mut out, d, |r, o| {
        let (xr, dy) = (&x[r * d..(r + 1) * d], &grad[r * d..(r + 1) * d]);
        let inv = inv_rms(xr, eps);
        for ((o, &dy), &w) in o.iter_mut().zip(dy).zip(weight) {
            *o = dy * w;
        }
        let coeff = dot(o, xr) * (inv * inv * inv) / d as f32;
        for (o, &x) in o.iter_mut().zip(xr) {
            *o = *o * inv - x * coeff;
        }
    });
    from_vec(out, &dims)
}

/// `dw = Σ_rows dy ⊙ x·r`, rows added in fixed blocks of [`ROW_BLOCK`], the blocks in order.
fn rms_norm_backward_w(grad: &[f32], x: &FlexTensor, d: usize, eps: f32) -> FlexTensor {
    let x = values(x);
    let rows = x.len() / d;
    let blocks: Vec<Vec<f32>> = (0..rows.div_ceil(ROW_BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0f32; d];
            for r in b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(rows) {
                let (xr, dy) = (&x[r * d..(r + 1) * d], &grad[r * d..(r + 1) * d]);
                let inv = inv_rms(xr, eps);
                for ((a, &dy), &x) in acc.iter_mut().zip(dy).zip(xr) {
                    *a += dy * (x * inv);
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0f32; d];
    for block in &blocks {
        for (t, b) in total.iter_mut().zip(block) {
            *t += b;
        }
    }
    from_vec(total, &[d])
}

/// Backward of [`rms_norm`]; its state is the input, the weight (both shared with the forward, not
/// copied) and `eps`.
#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    type State = (FlexTensor, FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, eps) = ops.state;
        let d = weight.layout().shape()[0];
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let grad = grad.to_contiguous();
                rms_norm_backward_x(values(&grad), &x, values(&weight), eps)
            },
            |grad| {
                let grad = grad.to_contiguous();
                rms_norm_backward_w(values(&grad), &x, d, eps)
            },
        );
    }
}

fn rms_norm_autodiff<const D: usize>(
    x: Tensor<CpuAd, D>,
    weight: Tensor<CpuAd, 1>,
    eps: f32,
) -> Tensor<CpuAd, D> {
    let dims = x.dims();
    let x = x.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let (xp, wp) = (
        x.primitive.clone().to_contiguous(),
        weight.primitive.clone().to_contiguous(),
    );
    let out = rms_norm_forward(&xp, &wp, eps, &dims);
    record(RmsNormBackward, [&x, &weight], (xp, wp, eps), out)
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding

/// Rotates `x` by the angles of `cos`/`sin`, pairing dimension `i` with `i + head_dim/2` (HF's
/// `x·cos + rotate_half(x)·sin`), reading `x` through its strides (a head-swapped view is not copied
/// first).
///
/// `Err` gives `x` back when this backend or dtype has no fused kernel.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[batch, 1, seq, head_dim / 2]`
/// - output: `[batch, heads, seq, head_dim]`, contiguous
pub fn rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [b, _, t, d] = x.dims();
    let fits = cos.dims() == [b, 1, t, d / 2] && sin.dims() == cos.dims() && d % 2 == 0 && d > 0;
    if !fits || [x.dtype(), cos.dtype(), sin.dtype()] != [DType::F32; 3] {
        return Err(x);
    }
    let args: Box<dyn Any> = Box::new((x, cos.clone(), sin.clone()));
    let args = match args.downcast::<(Tensor<CpuAd, 4>, Tensor<CpuAd, 4>, Tensor<CpuAd, 4>)>() {
        Ok(a) => {
            let (x, cos, sin) = *a;
            return Ok(same_type(rotary_autodiff(
                x,
                flex(cos.inner()),
                flex(sin.inner()),
            )));
        }
        Err(other) => other,
    };
    match args.downcast::<(Tensor<Flex, 4>, Tensor<Flex, 4>, Tensor<Flex, 4>)>() {
        Ok(a) => {
            let (x, cos, sin) = *a;
            let x = x.into_primitive().tensor();
            Ok(same_type(tensor::<4>(rotate(
                &x,
                &flex(cos),
                &flex(sin),
                1.0,
            ))))
        }
        Err(other) => {
            let (x, _, _) = *same_type::<_, Box<(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)>>(other);
            Err(x)
        }
    }
}

/// The rotation by `direction · angle` (`-1.0` undoes it: the backward), into a new contiguous tensor.
fn rotate(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, direction: f32) -> FlexTensor {
    let x = if x.layout().has_contiguous_inner() && x.layout().has_positive_strides() {
        x.clone()
    } else {
        x.to_contiguous()
    };
    let layout = x.layout();
    let dims: [usize; 4] = layout.shape().dims();
    let [_, h, t, d] = dims;
    let strides = layout.strides();
    let (start, st) = (
        layout.start_offset(),
        [
            strides[0] as usize,
            strides[1] as usize,
            strides[2] as usize,
        ],
    );
    let storage: &[f32] = x.storage();
    let (cos, sin) = (values(cos), values(sin));
    let half = d / 2;
    let mut out = vec![0f32; dims.iter().product()];
    for_rows(&mut out, d, |r, o| {
        let (bi, hi, ti) = (r / (h * t), r / t % h, r % t);
        let base = start + bi * st[0] + hi * st[1] + ti * st[2];
        let row = &storage[base..base + d];
        let angle = (bi * t + ti) * half;
        let (c, s) = (&cos[angle..angle + half], &sin[angle..angle + half]);
        let (x1, x2) = row.split_at(half);
        let (o1, o2) = o.split_at_mut(half);
        for i in 0..half {
            let s = direction * s[i];
            o1[i] = x1[i] * c[i] - x2[i] * s;
            o2[i] = x2[i] * c[i] + x1[i] * s;
        }
    });
    from_vec(out, &dims)
}

/// Backward of [`rotary`]: the rotation is linear, its gradient the opposite rotation.
#[derive(Debug)]
struct RotaryBackward;

impl Backward<Flex, 1> for RotaryBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            rotate(&grad, &cos, &sin, -1.0)
        });
    }
}

fn rotary_autodiff(x: Tensor<CpuAd, 4>, cos: FlexTensor, sin: FlexTensor) -> Tensor<CpuAd, 4> {
    let x = x.into_primitive().tensor();
    let out = rotate(&x.primitive, &cos, &sin, 1.0);
    record(RotaryBackward, [&x], (cos, sin), out)
}

// ---------------------------------------------------------------------------------------------
// Token log-probabilities (the language-modelling loss)

/// `log softmax(logits)[target]` of each row: the log-probability of each row's target token.
///
/// Only the logits themselves are kept for the backward (`d logits = g · (onehot − softmax)`, formed
/// row by row), not the `[n, vocab]` intermediates of a composite log-softmax.
///
/// `Err` gives `logits` back when this backend or dtype has no fused kernel, or a target is not a
/// column of `logits`.
///
/// # Shapes
/// - `logits`: `[n, vocab]`
/// - `targets`: `n` token ids
/// - output: `[n]`
pub fn token_logps<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[i64],
) -> Result<Tensor<B, 1>, Tensor<B, 2>> {
    let [n, vocab] = logits.dims();
    let in_range = targets.len() == n && targets.iter().all(|&t| (0..vocab as i64).contains(&t));
    if logits.dtype() != DType::F32 || !in_range || n == 0 || vocab == 0 {
        return Err(logits);
    }
    let args: Box<dyn Any> = Box::new(logits);
    let args = match args.downcast::<Tensor<CpuAd, 2>>() {
        Ok(l) => return Ok(same_type(token_logps_autodiff(*l, targets))),
        Err(other) => other,
    };
    match args.downcast::<Tensor<Flex, 2>>() {
        Ok(l) => {
            let (logps, _) = logps_forward(&flex(*l), targets);
            Ok(same_type(tensor::<1>(from_vec(logps, &[n]))))
        }
        Err(other) => Err(*same_type::<_, Box<Tensor<B, 2>>>(other)),
    }
}

/// Each row's target log-probability and log-sum-exp.
fn logps_forward(logits: &FlexTensor, targets: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let x = values(logits);
    let vocab = x.len() / targets.len();
    let rows: Vec<(f32, f32)> = (0..targets.len())
        .into_par_iter()
        .with_min_len(rows_per_task(vocab))
        .map_init(
            || vec![0f32; vocab],
            |scratch, r| {
                let row = &x[r * vocab..(r + 1) * vocab];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for (e, &v) in scratch.iter_mut().zip(row) {
                    *e = (v - max).exp();
                }
                let lse = sum(scratch).ln() + max;
                (row[targets[r] as usize] - lse, lse)
            },
        )
        .collect();
    rows.into_iter().unzip()
}

/// Backward of [`token_logps`]; its state is the logits, each row's log-sum-exp and the targets.
#[derive(Debug)]
struct TokenLogpsBackward;

impl Backward<Flex, 1> for TokenLogpsBackward {
    type State = (FlexTensor, Vec<f32>, Vec<i64>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, lse, targets) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = grad.to_contiguous();
            let g = values(&grad);
            let x = values(&logits);
            let vocab = x.len() / targets.len();
            let mut out = vec![0f32; x.len()];
            for_rows(&mut out, vocab, |r, o| {
                let row = &x[r * vocab..(r + 1) * vocab];
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = -(g[r] * (v - lse[r]).exp());
                }
                o[targets[r] as usize] += g[r];
            });
            from_vec(out, &[targets.len(), vocab])
        });
    }
}

fn token_logps_autodiff(logits: Tensor<CpuAd, 2>, targets: &[i64]) -> Tensor<CpuAd, 1> {
    let n = targets.len();
    let logits = logits.into_primitive().tensor();
    let x = logits.primitive.clone().to_contiguous();
    let (logps, lse) = logps_forward(&x, targets);
    let out = from_vec(logps, &[n]);
    record(
        TokenLogpsBackward,
        [&logits],
        (x, lse, targets.to_vec()),
        out,
    )
}

// ---------------------------------------------------------------------------------------------
// The LM head and the target log-probabilities together

/// Rows of the LM head [`head_logps`] computes at a time: one block of the fixed-order product's
/// summed dimension, so that the weight gradient, added chunk after chunk, is summed exactly as one
/// product over all rows would sum it.
pub const HEAD_CHUNK: usize = crate::fixed_order::K_BLOCK;

/// `log softmax(hidden · weightᵀ)[target]` of each row, without keeping the `[n, vocab]` logits: the
/// forward computes them [`HEAD_CHUNK`] rows at a time and keeps each row's log-sum-exp; the backward
/// computes each chunk's logits again, then `d logits = g · (onehot − softmax)` and from it the
/// gradients of `hidden` and (when it needs one) `weight`. The same products and row formulas as
/// [`crate::ops::linear`] followed by [`token_logps`], so the same bits, in a chunk's logits of
/// memory instead of two `[n, vocab]` tensors.
///
/// `Err` gives the inputs back when this backend or dtype has no fused kernel, or a target is not a
/// row of `weight`.
///
/// # Shapes
/// - `hidden`: `[n, width]`
/// - `weight`: `[vocab, width]`
/// - `targets`: `n` token ids
/// - output: `[n]`
#[allow(clippy::type_complexity)]
pub fn head_logps<B: Backend>(
    hidden: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    targets: &[i64],
) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 2>)> {
    let ([n, width], [vocab, w_width]) = (hidden.dims(), weight.dims());
    let in_range = targets.len() == n && targets.iter().all(|&t| (0..vocab as i64).contains(&t));
    if hidden.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || width != w_width
        || !in_range
        || n == 0
        || vocab == 0
    {
        return Err((hidden, weight));
    }
    let args: Box<dyn Any> = Box::new((hidden, weight));
    let args = match args.downcast::<(Tensor<CpuAd, 2>, Tensor<CpuAd, 2>)>() {
        Ok(a) => return Ok(same_type(head_logps_autodiff(a.0, a.1, targets))),
        Err(other) => other,
    };
    match args.downcast::<(Tensor<Flex, 2>, Tensor<Flex, 2>)>() {
        Ok(a) => {
            let (logps, _) = head_forward(&flex(a.0), &flex(a.1), targets);
            Ok(same_type(tensor::<1>(from_vec(logps, &[n]))))
        }
        Err(other) => Err(*same_type::<_, Box<(Tensor<B, 2>, Tensor<B, 2>)>>(other)),
    }
}

/// The logits of rows `start..start + len` of `hidden` (contiguous `[len, vocab]`).
fn head_chunk(hidden: &FlexTensor, weight: &FlexTensor, start: usize, len: usize) -> FlexTensor {
    let rows = tensor::<2>(hidden.clone()).narrow(0, start, len);
    let logits = matmul_blocked(rows, tensor::<2>(weight.clone()).transpose());
    flex(logits)
}

/// Each row's target log-probability and log-sum-exp, chunk by chunk.
fn head_forward(hidden: &FlexTensor, weight: &FlexTensor, targets: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let n = targets.len();
    let (mut logps, mut lse) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for start in (0..n).step_by(HEAD_CHUNK) {
        let len = HEAD_CHUNK.min(n - start);
        let logits = head_chunk(hidden, weight, start, len);
        let (l, s) = logps_forward(&logits, &targets[start..start + len]);
        logps.extend(l);
        lse.extend(s);
    }
    (logps, lse)
}

/// Backward of [`head_logps`]; its state is the hidden rows, the weight, each row's log-sum-exp and
/// the targets.
#[derive(Debug)]
struct HeadLogpsBackward;

impl Backward<Flex, 2> for HeadLogpsBackward {
    type State = (FlexTensor, FlexTensor, Vec<f32>, Vec<i64>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (hidden, weight, lse, targets) = ops.state;
        let [hidden_node, weight_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let g = values(&grad);
        let n = targets.len();
        let vocab = weight.layout().shape()[0];
        let mut d_hidden: Vec<f32> = Vec::new();
        let mut d_weight: Option<Tensor<Flex, 2>> = None;
        for start in (0..n).step_by(HEAD_CHUNK) {
            let len = HEAD_CHUNK.min(n - start);
            let logits = head_chunk(&hidden, &weight, start, len);
            let x = values(&logits);
            // The backward of `token_logps`, row by row.
            let mut d = vec![0f32; len * vocab];
            for_rows(&mut d, vocab, |r, o| {
                let (gr, lr) = (g[start + r], lse[start + r]);
                for (o, &v) in o.iter_mut().zip(&x[r * vocab..(r + 1) * vocab]) {
                    *o = -(gr * (v - lr).exp());
                }
                o[targets[start + r] as usize] += gr;
            });
            drop(logits);
            let d = tensor::<2>(from_vec(d, &[len, vocab]));
            if hidden_node.is_some() {
                let dh = matmul_blocked(d.clone(), tensor::<2>(weight.clone()));
                d_hidden.extend_from_slice(values(&flex(dh)));
            }
            if weight_node.is_some() {
                let rows = tensor::<2>(hidden.clone()).narrow(0, start, len);
                let dw = matmul_blocked(d.transpose(), rows);
                d_weight = Some(match d_weight {
                    None => dw,
                    Some(sum) => sum + dw,
                });
            }
        }
        if let Some(node) = hidden_node {
            let width = hidden.layout().shape()[1];
            grads.register::<Flex>(node.id, from_vec(d_hidden, &[n, width]));
        }
        if let (Some(node), Some(dw)) = (weight_node, d_weight) {
            grads.register::<Flex>(node.id, dw.into_primitive().tensor());
        }
    }
}

fn head_logps_autodiff(
    hidden: Tensor<CpuAd, 2>,
    weight: Tensor<CpuAd, 2>,
    targets: &[i64],
) -> Tensor<CpuAd, 1> {
    let n = targets.len();
    let hidden = hidden.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let h = hidden.primitive.clone().to_contiguous();
    let w = weight.primitive.clone().to_contiguous();
    let (logps, lse) = head_forward(&h, &w, targets);
    record(
        HeadLogpsBackward,
        [&hidden, &weight],
        (h, w, lse, targets.to_vec()),
        from_vec(logps, &[n]),
    )
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// `silu(gate) · up`, element-wise (the gated unit of the feed-forward block).
///
/// `Err` gives the inputs back when this backend or dtype has no fused kernel.
#[allow(clippy::type_complexity)]
pub fn swiglu<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    if gate.dtype() != DType::F32 || up.dtype() != DType::F32 || gate.dims() != up.dims() {
        return Err((gate, up));
    }
    let args: Box<dyn Any> = Box::new((gate, up));
    let args = match args.downcast::<(Tensor<CpuAd, D>, Tensor<CpuAd, D>)>() {
        Ok(a) => return Ok(same_type(swiglu_autodiff(a.0, a.1))),
        Err(other) => other,
    };
    match args.downcast::<(Tensor<Flex, D>, Tensor<Flex, D>)>() {
        Ok(a) => {
            let dims = a.0.dims();
            let out = swiglu_forward(&flex(a.0), &flex(a.1), &dims);
            Ok(same_type(tensor::<D>(out)))
        }
        Err(other) => Err(*same_type::<_, Box<(Tensor<B, D>, Tensor<B, D>)>>(other)),
    }
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn swiglu_forward(gate: &FlexTensor, up: &FlexTensor, dims: &[usize]) -> FlexTensor {
    let (g, u) = (values(gate), values(up));
    let mut out = vec![0f32; g.len()];
    out.par_chunks_mut(TASK_ELEMS)
        .zip(g.par_chunks(TASK_ELEMS).zip(u.par_chunks(TASK_ELEMS)))
        .for_each(|(o, (g, u))| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
    from_vec(out, dims)
}

/// Backward of [`swiglu`]: `d up = dy · silu(g)`, `d gate = dy · u · σ(g)·(1 + g·(1 − σ(g)))`; its
/// state is both inputs.
#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let dims = gate.layout().shape().to_vec();
        let each = |grad: FlexTensor, f: fn(f32, f32, f32) -> f32| {
            let grad = grad.to_contiguous();
            let (dy, g, u) = (values(&grad), values(&gate), values(&up));
            let mut out = vec![0f32; g.len()];
            out.par_chunks_mut(TASK_ELEMS)
                .enumerate()
                .for_each(|(c, o)| {
                    let at = c * TASK_ELEMS;
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = f(dy[at + i], g[at + i], u[at + i]);
                    }
                });
            from_vec(out, &dims)
        };
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                each(grad, |dy, g, u| {
                    let s = sigmoid(g);
                    dy * u * (s * (1.0 + g * (1.0 - s)))
                })
            },
            |grad| each(grad, |dy, g, _| dy * (g * sigmoid(g))),
        );
    }
}

fn swiglu_autodiff<const D: usize>(
    gate: Tensor<CpuAd, D>,
    up: Tensor<CpuAd, D>,
) -> Tensor<CpuAd, D> {
    let dims = gate.dims();
    let gate = gate.into_primitive().tensor();
    let up = up.into_primitive().tensor();
    let (g, u) = (
        gate.primitive.clone().to_contiguous(),
        up.primitive.clone().to_contiguous(),
    );
    let out = swiglu_forward(&g, &u, &dims);
    record(SwigluBackward, [&gate, &up], (g, u), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation;
    use rand::{Rng, SeedableRng};

    fn random(seed: u64, len: usize) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    fn input<B: Backend, const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
    }

    fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}[{i}]: fused {g}, composite {w}"
            );
        }
    }

    /// A causal mask `[1, 1, 1, q, k]` (keys after the query masked), or one per batch row that also
    /// masks the first `row` keys of batch row `row`.
    fn mask(batch: Option<usize>, q: usize, k: usize) -> (Vec<f32>, [usize; 5]) {
        let rows = batch.unwrap_or(1);
        let mut m = vec![0f32; rows * q * k];
        for b in 0..rows {
            for i in 0..q {
                for j in 0..k {
                    if j > i + (k - q) || (batch.is_some() && j < b) {
                        m[(b * q + i) * k + j] = -1.0e30;
                    }
                }
            }
        }
        (m, [rows, 1, 1, q, k])
    }

    #[test]
    fn fused_softmax_matches_the_composite_forward_and_gradient() {
        for (case, (dims, per_batch)) in [
            ([2, 2, 3, 5, 7], None),
            ([2, 1, 2, 9, 17], Some(2)),
            ([1, 3, 1, 4, 4], Some(1)),
        ]
        .into_iter()
        .enumerate()
        {
            let n: usize = dims.iter().product();
            let x = random(case as u64, n);
            let g = random(100 + case as u64, n);
            let (m, mdims) = mask(per_batch, dims[3], dims[4]);
            let scale = 0.37;
            let run = |fused: bool| {
                let scores = input::<CpuAd, 5>(&x, dims).require_grad();
                let mask = input::<CpuAd, 5>(&m, mdims);
                let probs = if fused {
                    masked_softmax(scores.clone(), scale, Some(&mask)).unwrap()
                } else {
                    activation::softmax(scores.clone().mul_scalar(scale) + mask, 4)
                };
                let grads = (probs.clone() * input::<CpuAd, 5>(&g, dims))
                    .sum()
                    .backward();
                (host(probs), host(scores.grad(&grads).unwrap()))
            };
            let ((p, dx), (want_p, want_dx)) = (run(true), run(false));
            assert_close(&p, &want_p, &format!("probs {dims:?}"));
            assert_close(&dx, &want_dx, &format!("d scores {dims:?}"));
            // Without autodiff the kernel is the same.
            let plain = masked_softmax(
                input::<Flex, 5>(&x, dims),
                scale,
                Some(&input::<Flex, 5>(&m, mdims)),
            )
            .unwrap();
            assert_eq!(bits(&host(plain)), bits(&p));
        }
    }

    #[test]
    fn fused_rms_norm_matches_the_composite_forward_and_gradients() {
        // d = 37: rows that are not a multiple of the 8 lanes; 150 rows: more than one row block.
        let (dims, d) = ([3, 50, 37], 37);
        let n: usize = dims.iter().product();
        let (x, w, g) = (random(1, n), random(2, d), random(3, n));
        let eps = 1e-5;
        let run = |fused: bool| {
            let xt = input::<CpuAd, 3>(&x, dims).require_grad();
            let wt = input::<CpuAd, 1>(&w, [d]).require_grad();
            let y = if fused {
                rms_norm(xt.clone(), wt.clone(), eps).unwrap()
            } else {
                let variance = xt.clone().square().mean_dim(2);
                xt.clone() * variance.add_scalar(eps).sqrt().recip() * wt.clone().unsqueeze::<3>()
            };
            let grads = (y.clone() * input::<CpuAd, 3>(&g, dims)).sum().backward();
            (
                host(y),
                host(xt.grad(&grads).unwrap()),
                host(wt.grad(&grads).unwrap()),
            )
        };
        let ((y, dx, dw), (want_y, want_dx, want_dw)) = (run(true), run(false));
        assert_close(&y, &want_y, "y");
        assert_close(&dx, &want_dx, "dx");
        assert_close(&dw, &want_dw, "dw");
    }

    #[test]
    fn a_frozen_norm_weight_gets_no_gradient() {
        let x = input::<CpuAd, 2>(&random(4, 6 * 16), [6, 16]).require_grad();
        let w = input::<CpuAd, 1>(&random(5, 16), [16]);
        let grads = rms_norm(x.clone(), w.clone(), 1e-6)
            .unwrap()
            .sum()
            .backward();
        assert!(w.grad(&grads).is_none());
        assert!(x.grad(&grads).is_some());
    }

    #[test]
    fn other_dtypes_are_given_back_for_the_composite() {
        let x = input::<Flex, 2>(&random(6, 32), [2, 16]).cast(DType::BF16);
        let w = input::<Flex, 1>(&random(7, 16), [16]);
        assert!(rms_norm(x.clone(), w, 1e-6).is_err());
        assert!(masked_softmax(x.reshape([1, 1, 1, 2, 16]), 1.0, None).is_err());
    }

    /// The documented order of a row sum: lane `i mod 8`, lanes combined pairwise.
    fn reference_sum(x: &[f32]) -> f32 {
        let mut lane = [0f32; 8];
        for (i, v) in x.iter().enumerate() {
            lane[i % 8] += v;
        }
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))
    }

    #[test]
    fn row_sums_follow_the_documented_order() {
        for len in [1, 7, 8, 9, 63, 576, 2049] {
            let x = random(len as u64, len);
            assert_eq!(sum(&x).to_bits(), reference_sum(&x).to_bits(), "{len}");
            let sq: Vec<f32> = x.iter().map(|v| v * v).collect();
            assert_eq!(dot(&x, &x).to_bits(), reference_sum(&sq).to_bits(), "{len}");
        }
        // One softmax row, by hand.
        let x = random(11, 19);
        let scale = 0.5f32;
        let v: Vec<f32> = x.iter().map(|x| x * scale).collect();
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = v.iter().map(|v| (v - max).exp()).collect();
        let total = reference_sum(&e);
        let want: Vec<f32> = e.iter().map(|e| e / total).collect();
        let got = masked_softmax(input::<Flex, 5>(&x, [1, 1, 1, 1, 19]), 0.5, None).unwrap();
        assert_eq!(bits(&host(got)), bits(&want));
    }

    #[test]
    fn fused_results_do_not_depend_on_the_thread_count() {
        // 1000 rows: many parallel tasks and row blocks.
        let (rows, d) = (1000, 96);
        let (x, w, g) = (random(8, rows * d), random(9, d), random(10, rows * d));
        let run = || {
            let xt = input::<CpuAd, 2>(&x, [rows, d]).require_grad();
            let wt = input::<CpuAd, 1>(&w, [d]).require_grad();
            let y = rms_norm(xt.clone(), wt.clone(), 1e-6).unwrap();
            let p = masked_softmax(y.clone().reshape([1, 1, 1, rows, d]), 0.3, None).unwrap();
            let grads = (p.reshape([rows, d]) * input::<CpuAd, 2>(&g, [rows, d]))
                .sum()
                .backward();
            let mut all = host(y);
            all.extend(host(xt.grad(&grads).unwrap()));
            all.extend(host(wt.grad(&grads).unwrap()));
            bits(&all)
        };
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(run)
        };
        let one = on(1);
        for threads in [2, 3, 8] {
            assert!(on(threads) == one, "{threads} threads");
        }
    }

    #[test]
    fn fused_rotary_matches_the_composite_on_a_head_swapped_view() {
        let (b, t, h, d) = (2, 5, 3, 8);
        let (x, g) = (random(12, b * t * h * d), random(13, b * t * h * d));
        let angles = random(14, b * t * d / 2);
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let run = |fused: bool| {
            // Heads swapped with positions, as the attention gives them: a strided view.
            let xt = input::<CpuAd, 4>(&x, [b, t, h, d]).require_grad();
            let (c, s) = (
                input::<CpuAd, 4>(&cos, [b, 1, t, d / 2]),
                input::<CpuAd, 4>(&sin, [b, 1, t, d / 2]),
            );
            let view = xt.clone().swap_dims(1, 2);
            let y = if fused {
                rotary(view, &c, &s).unwrap()
            } else {
                let (x1, x2) = (
                    view.clone().narrow(3, 0, d / 2),
                    view.narrow(3, d / 2, d / 2),
                );
                let first = x1.clone() * c.clone() - x2.clone() * s.clone();
                Tensor::cat(vec![first, x2 * c + x1 * s], 3)
            };
            let grads = (y.clone() * input::<CpuAd, 4>(&g, [b, h, t, d]))
                .sum()
                .backward();
            (host(y), host(xt.grad(&grads).unwrap()))
        };
        let ((y, dx), (want_y, want_dx)) = (run(true), run(false));
        // The same operations in the same order: the same bits.
        assert_eq!(bits(&y), bits(&want_y));
        assert_close(&dx, &want_dx, "dx");
    }

    #[test]
    fn fused_token_logps_match_the_composite_forward_and_gradient() {
        let (n, vocab) = (7, 300);
        let (x, g) = (random(15, n * vocab), random(16, n));
        let targets: Vec<i64> = (0..n as i64).map(|i| (i * 41) % vocab as i64).collect();
        let run = |fused: bool| {
            let logits = input::<CpuAd, 2>(&x, [n, vocab]).require_grad();
            let logps = if fused {
                token_logps(logits.clone(), &targets).unwrap()
            } else {
                let idx = Tensor::<CpuAd, 2, burn::tensor::Int>::from_data(
                    TensorData::new(targets.clone(), [n, 1]),
                    &Default::default(),
                );
                activation::log_softmax(logits.clone(), 1)
                    .gather(1, idx)
                    .reshape([n])
            };
            let grads = (logps.clone() * input::<CpuAd, 1>(&g, [n]))
                .sum()
                .backward();
            (host(logps), host(logits.grad(&grads).unwrap()))
        };
        let ((lp, dx), (want_lp, want_dx)) = (run(true), run(false));
        assert_close(&lp, &want_lp, "log p");
        assert_close(&dx, &want_dx, "d logits");
        // A target outside the vocabulary is given back, not read out of bounds.
        assert!(token_logps(input::<Flex, 2>(&x, [n, vocab]), &[300; 7]).is_err());
        // No rows: nothing to divide the logits by.
        assert!(token_logps(input::<Flex, 2>(&[], [0, vocab]), &[]).is_err());
    }

    #[test]
    fn fused_swiglu_matches_the_composite_forward_and_gradients() {
        let n = 3 * TASK_ELEMS + 5;
        let (g, u, dy) = (random(17, n), random(18, n), random(19, n));
        let run = |fused: bool| {
            let gt = input::<CpuAd, 1>(&g, [n]).require_grad();
            let ut = input::<CpuAd, 1>(&u, [n]).require_grad();
            let y = if fused {
                swiglu(gt.clone(), ut.clone()).unwrap()
            } else {
                activation::silu(gt.clone()) * ut.clone()
            };
            let grads = (y.clone() * input::<CpuAd, 1>(&dy, [n])).sum().backward();
            (
                host(y),
                host(gt.grad(&grads).unwrap()),
                host(ut.grad(&grads).unwrap()),
            )
        };
        let ((y, dg, du), (want_y, want_dg, want_du)) = (run(true), run(false));
        assert_close(&y, &want_y, "y");
        assert_close(&dg, &want_dg, "d gate");
        assert_close(&du, &want_du, "d up");
    }

    /// The head and the log-probabilities together are the dense product followed by
    /// [`token_logps`], bit for bit: the log-probabilities, the gradient of the hidden rows and of the
    /// weight (more rows than one chunk, a width longer than one block of the product).
    #[test]
    fn head_logps_is_the_head_product_then_token_logps() {
        let (n, width, vocab) = (HEAD_CHUNK * 2 + 77, 576, 300);
        let h = random(31, n * width);
        let w: Vec<f32> = random(32, vocab * width).iter().map(|v| v * 0.05).collect();
        let up = random(33, n);
        let targets: Vec<i64> = (0..n).map(|i| ((i * 37) % vocab) as i64).collect();
        let run = |fused: bool| {
            let hidden = input::<CpuAd, 2>(&h, [n, width]).require_grad();
            let weight = input::<CpuAd, 2>(&w, [vocab, width]).require_grad();
            let logps = if fused {
                head_logps(hidden.clone(), weight.clone(), &targets).unwrap()
            } else {
                let logits = crate::ops::linear(hidden.clone(), weight.clone());
                token_logps(logits, &targets).unwrap()
            };
            let grads = (logps.clone() * input::<CpuAd, 1>(&up, [n]))
                .sum()
                .backward();
            (
                bits(&host(logps)),
                bits(&host(hidden.grad(&grads).unwrap())),
                bits(&host(weight.grad(&grads).unwrap())),
            )
        };
        let (fused, composite) = (run(true), run(false));
        assert!(fused.0 == composite.0, "log-probabilities differ");
        assert!(fused.1 == composite.1, "hidden gradients differ");
        assert!(fused.2 == composite.2, "weight gradients differ");
        // Without autodiff, the same values.
        let plain = head_logps(
            input::<Flex, 2>(&h, [n, width]),
            input::<Flex, 2>(&w, [vocab, width]),
            &targets,
        )
        .unwrap();
        assert!(bits(&host(plain)) == fused.0);
        // A frozen weight gets no gradient; a target outside the vocabulary falls back.
        let hidden = input::<CpuAd, 2>(&h, [n, width]).require_grad();
        let weight = input::<CpuAd, 2>(&w, [vocab, width]);
        let grads = head_logps(hidden, weight.clone(), &targets)
            .unwrap()
            .sum()
            .backward();
        assert!(weight.grad(&grads).is_none());
        let mut bad = targets.clone();
        bad[3] = vocab as i64;
        assert!(
            head_logps(
                input::<Flex, 2>(&h, [n, width]),
                input::<Flex, 2>(&w, [vocab, width]),
                &bad
            )
            .is_err()
        );
    }
}
