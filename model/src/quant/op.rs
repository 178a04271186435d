//! `x · deq(W)ᵀ` for a quantised frozen weight `W` (`[out, in]`).
//!
//! On the CPU backend in f32 the weight is dequantised into a contiguous `[out, in]` tensor, used for
//! one fixed-order product ([`crate::fixed_order`]) and dropped. Under autodiff this is a custom
//! operation whose state is the shared quantised matrix only: its backward dequantises again and
//! computes `dx = dy · deq(W)`. `W` is frozen, so there is no weight gradient, and `x` is not kept.
//! The products are the ones a dense frozen layer computes, so the results are the same bits.
//!
//! Other backends and dtypes dequantise on the host and multiply with the dense weight as a constant
//! (their autodiff keeps it until the backward: correct, without the memory saving).

use std::any::Any;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};

use super::QuantWeight;
use crate::fixed_order::{matmul_blocked, same_type, tensor};
use crate::fused::record;
use crate::ops;

type CpuAd = Autodiff<Flex>;

/// `x · deq(w)ᵀ`.
///
/// # Shapes
/// - `x`: `[..., in]`
/// - `w`: `[out, in]`
/// - output: `[..., out]`
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, w: &QuantWeight) -> Tensor<B, D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let [n, _] = w.dims();
    let y = linear_2d(x.reshape([rows, k]), w);
    let mut out = dims;
    out[D - 1] = n;
    y.reshape(out)
}

fn linear_2d<B: Backend>(x: Tensor<B, 2>, w: &QuantWeight) -> Tensor<B, 2> {
    let x = if x.dtype() == DType::F32 {
        let any: Box<dyn Any> = Box::new(x);
        let any = match any.downcast::<Tensor<CpuAd, 2>>() {
            Ok(x) => return same_type(linear_autodiff(*x, w)),
            Err(other) => other,
        };
        match any.downcast::<Tensor<Flex, 2>>() {
            Ok(x) => {
                return same_type(matmul_blocked(
                    *x,
                    dense::<Flex>(w, &Default::default(), DType::F32).transpose(),
                ));
            }
            Err(other) => *same_type::<_, Box<Tensor<B, 2>>>(other),
        }
    } else {
        x
    };
    let w = dense::<B>(w, &x.device(), x.dtype());
    ops::linear(x, w)
}

/// The dequantised weight as a (constant) tensor of `dtype`.
fn dense<B: Backend>(w: &QuantWeight, device: &B::Device, dtype: DType) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(w.0.dequantize(), w.dims()), (device, dtype))
}

/// Backward of [`linear_autodiff`]: `dx = dy · deq(W)`.
#[derive(Debug)]
struct QuantLinearBackward;

impl Backward<Flex, 1> for QuantLinearBackward {
    type State = QuantWeight;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let w = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let w = dense::<Flex>(&w, &Default::default(), DType::F32);
            matmul_blocked::<2>(tensor(grad), w)
                .into_primitive()
                .tensor()
        });
    }
}

fn linear_autodiff(x: Tensor<CpuAd, 2>, w: &QuantWeight) -> Tensor<CpuAd, 2> {
    let x = x.into_primitive().tensor();
    let out = matmul_blocked::<2>(
        tensor(x.primitive.clone()),
        dense::<Flex>(w, &Default::default(), DType::F32).transpose(),
    )
    .into_primitive()
    .tensor();
    record(QuantLinearBackward, [&x], w.clone(), out)
}
