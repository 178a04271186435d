//! Matrix products and sums whose order of additions is the same on every CPU, so that trained
//! weights are the same bytes on every machine (see `docs/reproducibility.md`).
//!
//! The CPU backend multiplies matrices with the `gemm` crate, which sums the shared dimension `k` in
//! blocks whose length it derives from the CPU's L1 cache geometry when `k` exceeds 512: a product over
//! 576 terms is one block on one CPU and two blocks of 288 on another, and the last bits differ. A sum
//! of at most [`K_BLOCK`] terms is never split. So [`matmul`] cuts `k` into fixed blocks of
//! [`K_BLOCK`] itself, gives each block to `gemm`, and adds the partial products in block order. Inside
//! a block, each output is a chain of fused multiply-adds in `k` order on every x86-64-v3 CPU
//! (`fixed_order_products_match_a_scalar_reference` pins this against a scalar reference).
//!
//! Under autodiff the backward products (`dC·Bᵀ` sums over `n`, `Aᵀ·dC` over `m`) are as long as any
//! forward one, so the product is a custom autodiff operation whose backward uses the same blocked
//! product; like burn's own, it skips the gradient of an input that does not need one (a frozen
//! weight).
//!
//! Other backends (CUDA) multiply as they always do: their determinism is a separate setting.

use std::any::Any;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, binary};

/// The longest run of the summed dimension one `gemm` call gets. `gemm` 0.19 never splits a sum of at
/// most 512 terms, on any CPU.
pub const K_BLOCK: usize = 512;

/// The longest tensor [`sum_all`] gives the backend in one piece. The CPU backend sums 4M elements or
/// more in parallel chunks combined in an order that depends on thread scheduling.
pub const SUM_BLOCK: usize = 1 << 20;

type CpuAd = Autodiff<Flex>;

/// `lhs · rhs` over the last two dimensions, leading dimensions broadcast; on the CPU with a fixed
/// order of additions (see the module docs).
///
/// # Shapes
/// - `lhs`: `[..., m, k]`
/// - `rhs`: `[..., k, n]`
/// - output: `[..., m, n]`
pub fn matmul<B: Backend, const D: usize>(lhs: Tensor<B, D>, rhs: Tensor<B, D>) -> Tensor<B, D> {
    let pair: Box<dyn Any> = Box::new((lhs, rhs));
    let pair = match pair.downcast::<(Tensor<CpuAd, D>, Tensor<CpuAd, D>)>() {
        Ok(pair) => return same_type(matmul_autodiff(pair.0, pair.1)),
        Err(other) => other,
    };
    let pair = match pair.downcast::<(Tensor<Flex, D>, Tensor<Flex, D>)>() {
        Ok(pair) => return same_type(matmul_blocked(pair.0, pair.1)),
        Err(other) => other,
    };
    let (lhs, rhs) = *same_type::<_, Box<(Tensor<B, D>, Tensor<B, D>)>>(pair);
    lhs.matmul(rhs)
}

/// The sum of all elements, in an order that does not depend on the thread count: tensors longer than
/// [`SUM_BLOCK`] are summed block by block (each block alone, one after another), then the block sums.
///
/// Returns a one-element tensor, like [`Tensor::sum`].
pub fn sum_all<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    let flat: Tensor<B, 1> = x.flatten(0, D - 1);
    let n = flat.dims()[0];
    if n <= SUM_BLOCK {
        return flat.sum();
    }
    let whole = n / SUM_BLOCK * SUM_BLOCK;
    let mut parts: Tensor<B, 1> = flat
        .clone()
        .narrow(0, 0, whole)
        .reshape([n / SUM_BLOCK, SUM_BLOCK])
        .sum_dim(1)
        .flatten(0, 1);
    if whole < n {
        parts = Tensor::cat(vec![parts, flat.narrow(0, whole, n - whole).sum()], 0);
    }
    parts.sum()
}

/// Moves a value to the type it is known to have (the caller matched it with a downcast).
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> U {
    match (Box::new(value) as Box<dyn Any>).downcast::<U>() {
        Ok(value) => *value,
        Err(_) => unreachable!("called with two different types"),
    }
}

/// The blocked product on the CPU backend, without autodiff.
pub(crate) fn matmul_blocked<const D: usize>(
    lhs: Tensor<Flex, D>,
    rhs: Tensor<Flex, D>,
) -> Tensor<Flex, D> {
    let k = lhs.dims()[D - 1];
    if k <= K_BLOCK {
        return lhs.matmul(rhs);
    }
    let block = |start: usize| {
        let len = K_BLOCK.min(k - start);
        lhs.clone()
            .narrow(D - 1, start, len)
            .matmul(rhs.clone().narrow(D - 2, start, len))
    };
    (K_BLOCK..k)
        .step_by(K_BLOCK)
        .fold(block(0), |sum, start| sum + block(start))
}

/// Broadcasts the leading dimensions of two product operands to one shape.
fn broadcast_batch<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let (l, r) = (lhs.dims(), rhs.dims());
    if l[..D - 2] == r[..D - 2] {
        return (lhs, rhs);
    }
    let mut lshape = l;
    let mut rshape = r;
    for d in 0..D - 2 {
        let size = l[d].max(r[d]);
        lshape[d] = size;
        rshape[d] = size;
    }
    (lhs.expand(lshape), rhs.expand(rshape))
}

/// The blocked product as an autodiff operation on the CPU backend.
fn matmul_autodiff<const D: usize>(
    lhs: Tensor<CpuAd, D>,
    rhs: Tensor<CpuAd, D>,
) -> Tensor<CpuAd, D> {
    let (lhs, rhs) = broadcast_batch(lhs, rhs);
    let lhs = lhs.into_primitive().tensor();
    let rhs = rhs.into_primitive().tensor();
    let forward = |l, r| primitive(matmul_blocked::<D>(tensor(l), tensor(r)));
    let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
    let out = match BlockedMatmul::<D>
        .prepare::<NoCheckpointing>([lhs.node.clone(), rhs.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            // Each gradient needs the other operand only.
            let lhs_state = rhs_tracked.then(|| prep.checkpoint(&lhs));
            let rhs_state = lhs_tracked.then(|| prep.checkpoint(&rhs));
            prep.finish(
                (lhs_state, rhs_state),
                forward(lhs.primitive, rhs.primitive),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(lhs.primitive, rhs.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

type FlexPrimitive = <Flex as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// The CPU tensor of a primitive.
pub(crate) fn tensor<const D: usize>(p: FlexPrimitive) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn primitive<const D: usize>(t: Tensor<Flex, D>) -> FlexPrimitive {
    t.into_primitive().tensor()
}

/// Backward of [`matmul_autodiff`]: `dA = dC·Bᵀ`, `dB = Aᵀ·dC`, both blocked.
#[derive(Debug)]
struct BlockedMatmul<const D: usize>;

impl<const D: usize> Backward<Flex, 2> for BlockedMatmul<D> {
    type State = (Option<burn_autodiff::NodeId>, Option<burn_autodiff::NodeId>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (lhs, rhs) = ops.state;
        let lhs: Option<FlexPrimitive> = lhs.map(|id| checkpointer.retrieve_node_output(id));
        let rhs: Option<FlexPrimitive> = rhs.map(|id| checkpointer.retrieve_node_output(id));
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| match rhs {
                Some(rhs) => primitive(matmul_blocked::<D>(
                    tensor(grad),
                    tensor::<D>(rhs).transpose(),
                )),
                None => unreachable!("the rhs is kept whenever the lhs needs a gradient"),
            },
            |grad| match lhs {
                Some(lhs) => primitive(matmul_blocked::<D>(
                    tensor::<D>(lhs).transpose(),
                    tensor(grad),
                )),
                None => unreachable!("the lhs is kept whenever the rhs needs a gradient"),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand_chacha::ChaCha8Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// The documented order: per block of `K_BLOCK` terms a chain of fused multiply-adds from zero,
    /// the block results added left to right.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut total = 0.0f32;
                for (block, start) in (0..k).step_by(K_BLOCK).enumerate() {
                    let mut s = 0.0f32;
                    for t in start..(start + K_BLOCK).min(k) {
                        s = a[i * k + t].mul_add(b[t * n + j], s);
                    }
                    total = if block == 0 { s } else { total + s };
                }
                out[i * n + j] = total;
            }
        }
        out
    }

    fn input<B: Backend>(values: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
    }

    fn values<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn fixed_order_products_match_a_scalar_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Small and large m/n (gemm's two blocking paths), k below, at and past one block.
        for &(m, k, n) in &[
            (3, 5, 4),
            (64, 576, 64),
            (70, 576, 65),
            (96, 1536, 80),
            (130, 1100, 2),
            (2, 2049, 130),
        ] {
            let a = random(&mut rng, m * k);
            let b = random(&mut rng, k * n);
            let got = values(matmul(input::<Flex>(&a, [m, k]), input(&b, [k, n])));
            assert_eq!(bits(&got), bits(&reference(&a, &b, m, k, n)), "{m}x{k}x{n}");
        }
    }

    #[test]
    fn fixed_order_gradients_match_a_scalar_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let (m, k, n) = (700, 40, 600);
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let g = random(&mut rng, m * n);
        let lhs = input::<CpuAd>(&a, [m, k]).require_grad();
        let rhs = input::<CpuAd>(&b, [k, n]).require_grad();
        let upstream = input::<CpuAd>(&g, [m, n]);
        let grads = (matmul(lhs.clone(), rhs.clone()) * upstream)
            .sum()
            .backward();
        let da = values(lhs.grad(&grads).unwrap());
        let db = values(rhs.grad(&grads).unwrap());
        let transpose = |v: &[f32], r: usize, c: usize| -> Vec<f32> {
            (0..c * r).map(|i| v[(i % r) * c + i / r]).collect()
        };
        // dA = g · bᵀ sums over n = 600, dB = aᵀ · g over m = 700: both longer than one block.
        assert_eq!(
            bits(&da),
            bits(&reference(&g, &transpose(&b, k, n), m, n, k))
        );
        assert_eq!(
            bits(&db),
            bits(&reference(&transpose(&a, m, k), &g, k, m, n))
        );
    }

    #[test]
    fn a_frozen_operand_gets_no_gradient() {
        let device = Default::default();
        let x = Tensor::<CpuAd, 2>::ones([4, 600], &device).require_grad();
        let w = Tensor::<CpuAd, 2>::ones([600, 3], &device);
        let grads = matmul(x.clone(), w.clone()).sum().backward();
        assert!(w.grad(&grads).is_none());
        let dx = values(x.grad(&grads).unwrap());
        assert!(dx.iter().all(|&v| v == 3.0));
    }

    #[test]
    fn long_sums_do_not_depend_on_the_thread_count() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let n = 5 * SUM_BLOCK + 123;
        let x = Tensor::<Flex, 1>::from_data(
            TensorData::new(random(&mut rng, n), [n]),
            &Default::default(),
        );
        let sum = |threads: usize| -> u32 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| sum_all(x.clone()).into_scalar().to_bits())
        };
        let one = sum(1);
        for threads in [2, 3, 4, 8] {
            assert_eq!(sum(threads), one, "{threads} threads");
        }
    }
}
