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
/// (transformers' `LlamaRMSNorm`).
///
/// # Shapes
/// - `x`: `[..., d]`
/// - `weight`: `[d]`
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let xf = cast(x, DType::F32);
    let variance = xf.clone().square().mean_dim(D - 1);
    let normed = xf * variance.add_scalar(eps).sqrt().recip();
    cast(normed, dtype) * weight.unsqueeze::<D>()
}

/// SiLU (`x · sigmoid(x)`).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::silu(x)
}

/// Softmax over `dim`, computed in f32 and cast back to the input dtype.
pub fn softmax_f32<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let dtype = x.dtype();
    cast(activation::softmax(cast(x, DType::F32), dim), dtype)
}
