//! Rotary position embeddings in the rotate-half convention of HF Llama/Qwen checkpoints, with
//! linear and Llama-3 frequency scaling.
//!
//! burn's built-in RoPE rotates interleaved pairs `(x0, x1), (x2, x3), …`; HF checkpoints pair
//! dimension `i` with `i + d/2` instead, so the built-in one would need permuted q/k weights. This
//! module implements the HF convention directly.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::config::{ModelConfig, RopeScaling};
use crate::ops::cast;

/// Inverse frequencies of one head, computed once from the config.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `head_dim / 2` inverse frequencies, in f32 as transformers computes them.
    pub inv_freq: Vec<f32>,
}

impl Rope {
    /// The frequencies for `cfg` (its `rope_theta`, `head_dim` and `rope_scaling`).
    pub fn new(cfg: &ModelConfig) -> Self {
        let dim = cfg.head_dim;
        // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
        let mut inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / dim as f32;
                1.0f32 / (cfg.rope_theta.powf(f64::from(exponent)) as f32)
            })
            .collect();
        match &cfg.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => {
                for f in &mut inv_freq {
                    *f /= *factor as f32;
                }
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let factor = *factor as f32;
                let low = *low_freq_factor as f32;
                let high = *high_freq_factor as f32;
                let old_ctx = *original_max_position_embeddings as f32;
                let low_freq_wavelen = old_ctx / low;
                let high_freq_wavelen = old_ctx / high;
                for f in &mut inv_freq {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_freq_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    // transformers: `~(wavelen < high) * ~(wavelen > low)` (wavelengths are never NaN).
                    let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    *f = if medium {
                        let smooth = (old_ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
        Rope { inv_freq }
    }

    /// Cosines and sines of `positions × inv_freq`, in `dtype`.
    ///
    /// # Shapes
    /// - `positions`: `[batch, seq]`
    /// - outputs: `[batch, 1, seq, head_dim / 2]` (broadcast over heads)
    pub fn cos_sin<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        dtype: DType,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t] = positions.dims();
        let half = self.inv_freq.len();
        let device = positions.device();
        let inv = Tensor::<B, 1>::from_data(
            TensorData::new(self.inv_freq.clone(), [half]),
            (&device, DType::F32),
        )
        .reshape([1, 1, half]);
        let pos = cast(positions.float(), DType::F32).reshape([b, t, 1]);
        let freqs = pos * inv;
        let cos = cast(freqs.clone().cos(), dtype).reshape([b, 1, t, half]);
        let sin = cast(freqs.sin(), dtype).reshape([b, 1, t, half]);
        (cos, sin)
    }
}

/// Rotates `x` by the angles in `cos`/`sin`, pairing dimension `i` with `i + head_dim/2`
/// (HF's `x * cos + rotate_half(x) * sin`). On the CPU in f32, one fused kernel
/// ([`crate::fused::rotary`]).
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[batch, 1, seq, head_dim / 2]`
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let x = match crate::fused::rotary(x, cos, sin) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let [_, _, _, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let first = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let second = x2 * cos.clone() + x1 * sin.clone();
    Tensor::cat(vec![first, second], 3)
}
