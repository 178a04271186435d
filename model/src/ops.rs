//! The numeric kernels the decoder is built from, with [`matmul`] as the one seam every matrix
//! product goes through.
//!
//! Keeping all products behind [`matmul`] means a faster kernel (a fused GPU GEMM, a quantised
//! matmul for a QLoRA base) can slot in at one place without touching the layers.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// Batched matrix product `lhs · rhs` over the last two dimensions; leading dimensions broadcast.
///
/// # Shapes
/// - `lhs`: `[..., m, k]`
/// - `rhs`: `[..., k, n]`
/// - output: `[..., m, n]`
///
/// On the CPU the order of additions is fixed, so results are the same bytes on every CPU
/// ([`crate::fixed_order`]).
pub fn matmul<B: Backend, const D: usize>(lhs: Tensor<B, D>, rhs: Tensor<B, D>) -> Tensor<B, D> {
    crate::fixed_order::matmul(lhs, rhs)
}

/// `x · weightᵀ` for a weight stored as HF does, `[out, in]`.
///
/// # Shapes
/// - `x`: `[..., in]`
/// - `weight`: `[out, in]`
/// - output: `[..., out]`
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>) -> Tensor<B, D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let [n, _] = weight.dims();
    let y = matmul(x.reshape([rows, k]), weight.transpose());
    let mut out = dims;
    out[D - 1] = n;
    y.reshape(out)
}

/// Casts to `dtype` unless the tensor already has it.
pub fn cast<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// RMSNorm over the last dimension, computed in f32 and cast back, then scaled by `weight`
/// (transformers' `LlamaRMSNorm`). On the CPU in f32, one fused kernel ([`crate::fused::rms_norm`]).
///
/// # Shapes
/// - `x`: `[..., d]`
/// - `weight`: `[d]`
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let (x, weight) = match crate::fused::rms_norm(x, weight, eps) {
        Ok(y) => return y,
        Err(args) => args,
    };
    let dtype = x.dtype();
    let xf = cast(x, DType::F32);
    let variance = xf.clone().square().mean_dim(D - 1);
    let normed = xf * variance.add_scalar(eps).sqrt().recip();
    cast(normed, dtype) * weight.unsqueeze::<D>()
}

/// Attention probabilities `softmax(scale · scores + mask)` over the last dimension, computed in f32
/// and returned in f32. On the CPU in f32, one fused kernel ([`crate::fused::masked_softmax`]).
///
/// # Shapes
/// - `scores`: `[batch, a, b, q, k]`
/// - `mask`: `[batch|1, 1, 1, q, k]`, additive (0 or a large negative number)
pub fn masked_softmax<B: Backend>(
    scores: Tensor<B, 5>,
    scale: f64,
    mask: Option<&Tensor<B, 5>>,
) -> Tensor<B, 5> {
    let scores = match crate::fused::masked_softmax(scores, scale as f32, mask) {
        Ok(p) => return p,
        Err(scores) => scores,
    };
    let mut scores = cast(scores.mul_scalar(scale), DType::F32);
    if let Some(mask) = mask {
        scores = scores + mask.clone();
    }
    activation::softmax(scores, 4)
}

/// `silu(gate) · up`, the gated unit of the SwiGLU feed-forward block. On the CPU in f32, one fused
/// kernel ([`crate::fused::swiglu`]).
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    match crate::fused::swiglu(gate, up) {
        Ok(y) => y,
        Err((gate, up)) => silu(gate) * up,
    }
}

/// SiLU (`x · sigmoid(x)`).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::silu(x)
}
