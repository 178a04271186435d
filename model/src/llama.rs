//! The decoder: [`Llama`] (embeddings, layers of RMSNorm → GQA attention with rotate-half RoPE →
//! RMSNorm → SwiGLU MLP, final norm, LM head), its [`ForwardInput`] and its [`KvCache`].
//!
//! One implementation covers Llama, Mistral, Qwen2 and Qwen3; the differences are flags in
//! [`ModelConfig`] (biases, q/k norms, sliding window, tied head). Parameter names map 1:1 to HF
//! names (see [`Llama::hf_tensors`]).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::linear::{BaseWeight, LINEAR_MODULES, Linear, LoraConfig};
use crate::ops;
use crate::quant::{QuantSpec, QuantWeight, QuantizedMatrix};
use crate::rope::{Rope, apply_rotary};

/// Added to attention scores that must not be attended to (finite, so no NaN from `-inf - -inf`).
const MASKED: f32 = -1.0e30;

/// RMSNorm with a learned scale.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale `[dim]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Normalises over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        ops::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// Multi-head attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[heads·head_dim, hidden]`.
    pub q_proj: Linear<B>,
    /// `[kv_heads·head_dim, hidden]`.
    pub k_proj: Linear<B>,
    /// `[kv_heads·head_dim, hidden]`.
    pub v_proj: Linear<B>,
    /// `[hidden, heads·head_dim]`.
    pub o_proj: Linear<B>,
    /// Qwen3's per-head RMSNorm of queries.
    pub q_norm: Option<RmsNorm<B>>,
    /// Qwen3's per-head RMSNorm of keys.
    pub k_norm: Option<RmsNorm<B>>,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads.
    pub num_kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[intermediate, hidden]`.
    pub gate_proj: Linear<B>,
    /// `[intermediate, hidden]`.
    pub up_proj: Linear<B>,
    /// `[hidden, intermediate]`.
    pub down_proj: Linear<B>,
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Attention block.
    pub self_attn: Attention<B>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// A Llama-family decoder-only language model.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// Token embeddings `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// LM head `[vocab, hidden]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: ModelConfig,
    /// RoPE frequencies.
    #[module(skip)]
    pub rope: Rope,
    /// dtype of weights and activations.
    #[module(skip)]
    pub dtype: DType,
}

/// The inputs of one forward pass.
///
/// # Shapes
/// - `ids`: `[batch, seq]` token ids
/// - `positions`: `[batch, seq]` RoPE positions; default `cache_len + 0..seq`. Packed rows restart
///   them per sample.
/// - `segments`: `[batch, seq]` segment ids; a token attends only to earlier tokens of the same
///   segment. Packed samples get distinct ids; padding gets an id of its own.
#[derive(Debug, Clone)]
pub struct ForwardInput<B: Backend> {
    /// Token ids.
    pub ids: Tensor<B, 2, Int>,
    /// Optional RoPE positions.
    pub positions: Option<Tensor<B, 2, Int>>,
    /// Optional segment ids.
    pub segments: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> ForwardInput<B> {
    /// Inputs with default positions and one segment per row.
    pub fn new(ids: Tensor<B, 2, Int>) -> Self {
        ForwardInput {
            ids,
            positions: None,
            segments: None,
        }
    }

    /// Sets explicit positions.
    pub fn with_positions(mut self, positions: Tensor<B, 2, Int>) -> Self {
        self.positions = Some(positions);
        self
    }

    /// Sets segment ids.
    pub fn with_segments(mut self, segments: Tensor<B, 2, Int>) -> Self {
        self.segments = Some(segments);
        self
    }

    /// Inputs from rows of token ids of equal length.
    pub fn from_rows(rows: &[Vec<u32>], device: &B::Device) -> Self {
        Self::new(int_tensor(rows, device))
    }
}

/// A `[rows, cols]` Int tensor from equal-length rows.
pub fn int_tensor<B: Backend, T: Copy + Into<i64>>(
    rows: &[Vec<T>],
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let b = rows.len();
    let t = rows.first().map_or(0, Vec::len);
    assert!(
        rows.iter().all(|r| r.len() == t),
        "rows must have equal length"
    );
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&x| x.into()))
        .collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

/// Keys and values of the tokens seen so far, per layer, for incremental decoding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    segments: Option<Tensor<B, 2, Int>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            segments: None,
            len: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.segments = None;
        self.len = 0;
    }
}

/// Where the query block sits relative to the keys, for building masks.
struct MaskSpec<B: Backend> {
    batch: usize,
    offset: usize,
    q_len: usize,
    /// `[batch, q_len]` and `[batch, offset + q_len]`.
    segments: Option<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)>,
}

impl<B: Backend> MaskSpec<B> {
    /// Additive f32 mask `[batch|1, 1, 1, q_len, k_len]` (0 or [`MASKED`]); `None` when every query
    /// may see every key.
    fn build(&self, window: Option<usize>, device: &B::Device) -> Option<Tensor<B, 5>> {
        let (t, s) = (self.q_len, self.offset + self.q_len);
        let needs_causal = t > 1 || window.is_some_and(|w| w < s);
        if !needs_causal && self.segments.is_none() {
            return None;
        }
        let mut host = vec![0f32; t * s];
        for i in 0..t {
            let qi = self.offset + i;
            for j in 0..s {
                let visible = j <= qi && window.is_none_or(|w| qi - j < w);
                if !visible {
                    host[i * s + j] = MASKED;
                }
            }
        }
        let causal = Tensor::<B, 2>::from_data(TensorData::new(host, [t, s]), (device, DType::F32))
            .reshape([1, 1, 1, t, s]);
        match &self.segments {
            None => Some(causal),
            Some((seg_q, seg_k)) => {
                let b = self.batch;
                let same = seg_q
                    .clone()
                    .reshape([b, t, 1])
                    .expand([b, t, s])
                    .equal(seg_k.clone().reshape([b, 1, s]).expand([b, t, s]));
                let cross = ops::cast(same.bool_not().float(), DType::F32)
                    .mul_scalar(MASKED)
                    .reshape([b, 1, 1, t, s]);
                Some(causal + cross)
            }
        }
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `cos`, `sin`: `[batch, 1, seq, head_dim/2]`
    /// - `mask`: `[batch|1, 1, 1, seq, cached+seq]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: Option<&Tensor<B, 5>>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let mut q = self.q_proj.forward(x.clone()).reshape([b, t, nh, hd]);
        let mut k = self.k_proj.forward(x.clone()).reshape([b, t, nkv, hd]);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, t, nkv, hd])
            .swap_dims(1, 2);
        if let Some(norm) = &self.q_norm {
            q = norm.forward(q);
        }
        if let Some(norm) = &self.k_norm {
            k = norm.forward(k);
        }
        let q = apply_rotary(q.swap_dims(1, 2), cos, sin);
        let k = apply_rotary(k.swap_dims(1, 2), cos, sin);

        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
            }
            None => (k, v),
        };
        let s = k.dims()[2];
        let rep = nh / nkv;

        // Query head h uses kv head h / rep; grouping the rep query heads of a kv head into the
        // row dimension lets one batched matmul serve them without repeating K and V.
        let q = q.reshape([b, nkv, rep * t, hd]);
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = ops::matmul(q, k.swap_dims(2, 3)).reshape([b, nkv, rep, t, s]);
        let probs = ops::cast(ops::masked_softmax(scores, scale, mask), v.dtype()).reshape([
            b,
            nkv,
            rep * t,
            s,
        ]);
        let out = ops::matmul(probs, v)
            .reshape([b, nh, t, hd])
            .swap_dims(1, 2)
            .reshape([b, t, nh * hd]);
        self.o_proj.forward(out)
    }
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = ops::swiglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        self.down_proj.forward(hidden)
    }
}

impl<B: Backend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: Option<&Tensor<B, 5>>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let h = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            cos,
            sin,
            mask,
            cache,
        );
        let x = x + h;
        let h = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + h
    }
}

/// A HF-named parameter of the model, of rank 1 or 2.
#[derive(Debug, Clone)]
pub enum HfTensor<B: Backend> {
    /// Norm weights, biases.
    Rank1(Tensor<B, 1>),
    /// Matrices.
    Rank2(Tensor<B, 2>),
}

impl<B: Backend> HfTensor<B> {
    /// The values as f32 and the shape.
    pub fn to_f32(&self) -> (Vec<f32>, Vec<usize>) {
        let data = match self {
            HfTensor::Rank1(t) => t.to_data(),
            HfTensor::Rank2(t) => t.to_data(),
        };
        let shape = data.shape.to_vec();
        let data = data.convert::<f32>();
        (data.to_vec::<f32>().unwrap_or_default(), shape)
    }
}

/// Source of HF-named tensors to build a model from (a checkpoint, or a random initialiser).
pub trait TensorSource {
    /// The tensor `name` as row-major f32 values of shape `shape`; an error if it is missing or
    /// has another shape.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// The tensor `name` in the quantised form it is stored in, if it is (a GGUF file's Q4_1
    /// projection, a bitsandbytes checkpoint's NF4 weight); `None` for tensors stored as floats.
    fn quantized(&mut self, _name: &str, _shape: &[usize]) -> Result<Option<QuantizedMatrix>> {
        Ok(None)
    }
}

/// How the decoder's projections are stored when a model is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Quantise them (QLoRA's frozen base).
    pub quantize: Option<QuantSpec>,
    /// Keep those the source stores quantised (a GGUF file's blocks, a bitsandbytes checkpoint) as
    /// they are stored (before `quantize`).
    pub keep_quantized: bool,
}

impl BuildOptions {
    /// Projections kept as the source stores them, nothing quantised anew (LoRA's default).
    pub const KEEP_QUANTIZED: BuildOptions = BuildOptions {
        quantize: None,
        keep_quantized: true,
    };
}

/// Turns HF-named host tensors into device tensors of one dtype.
struct Builder<'a, B: Backend> {
    src: &'a mut dyn TensorSource,
    device: &'a B::Device,
    dtype: DType,
    options: BuildOptions,
}

impl<B: Backend> Builder<'_, B> {
    fn t1(&mut self, name: &str, n: usize) -> Result<Tensor<B, 1>> {
        let v = self.src.tensor(name, &[n])?;
        Ok(Tensor::from_data(
            TensorData::new(v, [n]),
            (self.device, self.dtype),
        ))
    }

    fn t2(&mut self, name: &str, rows: usize, cols: usize) -> Result<Tensor<B, 2>> {
        let v = self.src.tensor(name, &[rows, cols])?;
        Ok(Tensor::from_data(
            TensorData::new(v, [rows, cols]),
            (self.device, self.dtype),
        ))
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear<B>> {
        let b = if bias {
            Some(self.t1(&format!("{name}.bias"), out)?)
        } else {
            None
        };
        let weight = format!("{name}.weight");
        let kept = if self.options.keep_quantized {
            self.src.quantized(&weight, &[out, inp])?
        } else {
            None
        };
        let quantized = match (kept, self.options.quantize) {
            (Some(q), _) => Some(q),
            (None, Some(spec)) => {
                let v = self.src.tensor(&weight, &[out, inp])?;
                Some(QuantizedMatrix::quantize(&v, out, inp, spec))
            }
            (None, None) => None,
        };
        Ok(match quantized {
            Some(q) => Linear {
                base: BaseWeight::Quantized(QuantWeight::new(q)),
                bias: b.map(Param::from_tensor),
                lora: None,
            },
            None => Linear::dense(self.t2(&weight, out, inp)?, b),
        })
    }

    fn norm(&mut self, name: &str, n: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNorm {
            weight: Param::from_tensor(self.t1(name, n)?),
            eps,
        })
    }
}

impl<B: Backend> Llama<B> {
    /// Builds the model from HF-named tensors.
    pub fn from_source(
        config: &ModelConfig,
        src: &mut dyn TensorSource,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::from_source_with(config, src, device, dtype, BuildOptions::default())
    }

    /// Builds the model from HF-named tensors, the decoder's projections stored as `options` says
    /// (the LM head, embeddings and norms are always dense).
    pub fn from_source_with(
        config: &ModelConfig,
        src: &mut dyn TensorSource,
        device: &B::Device,
        dtype: DType,
        options: BuildOptions,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let mut ld = Builder::<B> {
            src,
            device,
            dtype,
            options: BuildOptions::default(),
        };
        let (h, q_dim, kv_dim) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let eps = c.rms_norm_eps;
        let embed_tokens =
            Param::from_tensor(ld.t2("model.embed_tokens.weight", c.vocab_size, h)?);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        ld.options = options;
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qk_norm = |ld: &mut Builder<B>, which: &str| -> Result<Option<RmsNorm<B>>> {
                if c.qk_norm {
                    Ok(Some(ld.norm(
                        &format!("{p}.self_attn.{which}.weight"),
                        c.head_dim,
                        eps,
                    )?))
                } else {
                    Ok(None)
                }
            };
            let self_attn = Attention {
                q_proj: ld.linear(&format!("{p}.self_attn.q_proj"), q_dim, h, c.qkv_bias)?,
                k_proj: ld.linear(&format!("{p}.self_attn.k_proj"), kv_dim, h, c.qkv_bias)?,
                v_proj: ld.linear(&format!("{p}.self_attn.v_proj"), kv_dim, h, c.qkv_bias)?,
                o_proj: ld.linear(&format!("{p}.self_attn.o_proj"), h, q_dim, c.o_bias)?,
                q_norm: qk_norm(&mut ld, "q_norm")?,
                k_norm: qk_norm(&mut ld, "k_norm")?,
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
            };
            let ff = c.intermediate_size;
            let mlp = Mlp {
                gate_proj: ld.linear(&format!("{p}.mlp.gate_proj"), ff, h, c.mlp_bias)?,
                up_proj: ld.linear(&format!("{p}.mlp.up_proj"), ff, h, c.mlp_bias)?,
                down_proj: ld.linear(&format!("{p}.mlp.down_proj"), h, ff, c.mlp_bias)?,
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: ld.norm(&format!("{p}.input_layernorm.weight"), h, eps)?,
                post_attention_layernorm: ld.norm(
                    &format!("{p}.post_attention_layernorm.weight"),
                    h,
                    eps,
                )?,
            });
        }
        ld.options = BuildOptions::default();
        let norm = ld.norm("model.norm.weight", h, eps)?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(ld.linear("lm_head", c.vocab_size, h, false)?)
        };
        Ok(Llama {
            embed_tokens,
            layers,
            norm,
            lm_head,
            config: config.clone(),
            rope: Rope::new(config),
            dtype,
        })
    }

    /// Final hidden states (after the last norm), for heads other than the LM head.
    ///
    /// # Shapes
    /// - output: `[batch, seq, hidden]`
    pub fn forward_hidden(
        &self,
        input: ForwardInput<B>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let ForwardInput {
            ids,
            positions,
            segments,
        } = input;
        let [b, t] = ids.dims();
        let device = ids.device();
        let offset = cache.as_ref().map_or(0, |c| c.len);
        if let Some(c) = cache.as_ref() {
            assert_eq!(
                c.layers.len(),
                self.layers.len(),
                "cache built for another model"
            );
        }

        let positions = positions.unwrap_or_else(|| {
            Tensor::<B, 1, Int>::arange(offset as i64..(offset + t) as i64, &device)
                .reshape([1, t])
                .expand([b, t])
        });
        let (cos, sin) = self.rope.cos_sin(positions, self.dtype);

        // Segment ids of the queries and of all keys (cached + new).
        let cached_segments = cache.as_ref().and_then(|c| c.segments.clone());
        let segments = match (segments, cached_segments) {
            (None, None) => None,
            (Some(q), None) if offset == 0 => Some((q.clone(), q)),
            (Some(q), None) => {
                let past = Tensor::<B, 2, Int>::zeros([b, offset], &device);
                Some((q.clone(), Tensor::cat(vec![past, q], 1)))
            }
            (q, Some(past)) => {
                // New tokens without ids continue the last segment of their row.
                let q = q.unwrap_or_else(|| past.clone().narrow(1, offset - 1, 1).expand([b, t]));
                Some((q.clone(), Tensor::cat(vec![past, q], 1)))
            }
        };
        if let Some(c) = cache.as_mut() {
            c.segments = segments.as_ref().map(|(_, k)| k.clone());
        }
        let spec = MaskSpec {
            batch: b,
            offset,
            q_len: t,
            segments,
        };
        let full_mask = spec.build(None, &device);
        let mut window_masks: Vec<(usize, Option<Tensor<B, 5>>)> = Vec::new();

        let mut x = self
            .embed_tokens
            .val()
            .select(0, ids.reshape([b * t]))
            .reshape([b, t, self.config.hidden_size]);
        for (i, layer) in self.layers.iter().enumerate() {
            let mask = match self.config.layer_uses_window(i) {
                None => full_mask.as_ref(),
                Some(w) => {
                    if !window_masks.iter().any(|(ww, _)| *ww == w) {
                        window_masks.push((w, spec.build(Some(w), &device)));
                    }
                    window_masks
                        .iter()
                        .find(|(ww, _)| *ww == w)
                        .and_then(|(_, m)| m.as_ref())
                }
            };
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &cos, &sin, mask, slot);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(x)
    }

    /// Logits from hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => ops::linear(hidden, self.embed_tokens.val()),
        }
    }

    /// The LM head as one dense `[vocab, hidden]` weight (the tied embedding, or an `lm_head` without
    /// bias or adapter), for losses that multiply by it themselves ([`crate::fused::head_logps`]).
    pub fn head_weight(&self) -> Option<Tensor<B, 2>> {
        match &self.lm_head {
            None => Some(self.embed_tokens.val()),
            Some(head) if head.bias.is_none() && head.lora.is_none() => head.base.dense(),
            Some(_) => None,
        }
    }

    /// Logits for every position.
    ///
    /// # Shapes
    /// - output: `[batch, seq, vocab]`
    pub fn forward(&self, input: ForwardInput<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        self.logits(self.forward_hidden(input, cache))
    }

    /// Logits of the last position only (what generation needs; skips the head for the rest).
    ///
    /// # Shapes
    /// - output: `[batch, vocab]`
    pub fn forward_last(
        &self,
        input: ForwardInput<B>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 2> {
        let hidden = self.forward_hidden(input, cache);
        let [b, t, _] = hidden.dims();
        self.logits(hidden.narrow(1, t - 1, 1))
            .reshape([b, self.config.vocab_size])
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.val().device()
    }

    /// Every base parameter with its HF name, in a stable order.
    pub fn hf_tensors(&self) -> Vec<(String, HfTensor<B>)> {
        let device = self.device();
        let at = (&device, self.dtype);
        let mut out = Vec::new();
        out.push((
            "model.embed_tokens.weight".to_string(),
            HfTensor::Rank2(self.embed_tokens.val()),
        ));
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (name, lin) in l.named_linears() {
                push_linear(&mut out, &format!("{p}.{name}"), lin, at);
            }
            if let Some(n) = &l.self_attn.q_norm {
                out.push((
                    format!("{p}.self_attn.q_norm.weight"),
                    HfTensor::Rank1(n.weight.val()),
                ));
            }
            if let Some(n) = &l.self_attn.k_norm {
                out.push((
                    format!("{p}.self_attn.k_norm.weight"),
                    HfTensor::Rank1(n.weight.val()),
                ));
            }
            out.push((
                format!("{p}.input_layernorm.weight"),
                HfTensor::Rank1(l.input_layernorm.weight.val()),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                HfTensor::Rank1(l.post_attention_layernorm.weight.val()),
            ));
        }
        out.push((
            "model.norm.weight".to_string(),
            HfTensor::Rank1(self.norm.weight.val()),
        ));
        if let Some(head) = &self.lm_head {
            push_linear(&mut out, "lm_head", head, at);
        }
        out
    }

    /// LoRA parameters with peft names (`model.layers.0.self_attn.q_proj.lora_A.weight`, without
    /// peft's `base_model.model.` prefix).
    pub fn lora_tensors(&self) -> Vec<(String, Tensor<B, 2>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (name, lin) in l.named_linears() {
                if let Some(lora) = &lin.lora {
                    out.push((
                        format!("model.layers.{i}.{name}.lora_A.weight"),
                        lora.a.val(),
                    ));
                    out.push((
                        format!("model.layers.{i}.{name}.lora_B.weight"),
                        lora.b.val(),
                    ));
                }
            }
        }
        out
    }

    /// Attaches LoRA adapters to the projections `cfg` targets, drawn from `seed`.
    pub fn with_lora(mut self, cfg: &LoraConfig, seed: u64) -> Result<Self> {
        if cfg.rank == 0 {
            return Err(Error::config("LoRA rank must be positive"));
        }
        let known = |t: &str| LINEAR_MODULES.contains(&t) || t == "all-linear" || t == "all_linear";
        if let Some(bad) = cfg.targets.iter().find(|t| !known(t)) {
            return Err(Error::config(format!(
                "unknown LoRA target `{bad}`\nhint: targets are {}",
                LINEAR_MODULES
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let (device, dtype) = (self.device(), self.dtype);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.map_linears(|name, lin| {
                if cfg.targets(name) {
                    lin.with_lora(
                        cfg,
                        &format!("model.layers.{i}.{name}"),
                        seed,
                        &device,
                        dtype,
                    )
                } else {
                    lin
                }
            });
        }
        Ok(self)
    }

    /// Freezes (or unfreezes) everything except LoRA adapters.
    pub fn freeze_base(mut self, frozen: bool) -> Self {
        self.embed_tokens = self.embed_tokens.set_require_grad(!frozen);
        self.norm.weight = self.norm.weight.set_require_grad(!frozen);
        self.lm_head = self.lm_head.map(|h| h.freeze_base(frozen));
        for layer in &mut self.layers {
            layer.map_linears(|_, lin| lin.freeze_base(frozen));
            for n in [
                Some(&mut layer.input_layernorm),
                Some(&mut layer.post_attention_layernorm),
                layer.self_attn.q_norm.as_mut(),
                layer.self_attn.k_norm.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                n.weight = n.weight.clone().set_require_grad(!frozen);
            }
        }
        self
    }

    /// The model with its LoRA adapters switched off: the base alone, sharing its weights with `self`
    /// (tensors are reference-counted; nothing is copied).
    pub fn without_lora(&self) -> Self {
        let mut model = self.clone();
        for layer in &mut model.layers {
            layer.map_linears(|_, mut lin| {
                lin.lora = None;
                lin
            });
        }
        model
    }

    /// Folds every LoRA adapter into its base weight.
    pub fn merge_lora(mut self) -> Self {
        for layer in &mut self.layers {
            layer.map_linears(|_, lin| lin.merge_lora());
        }
        self
    }

    /// Stores the dense projections of every decoder layer in `spec`'s format (QLoRA's frozen base;
    /// embeddings, norms and the LM head stay as they are). Layer by layer, so only one layer's
    /// weights exist in both forms at a time.
    pub fn quantize_linears(mut self, spec: QuantSpec) -> Self {
        for layer in &mut self.layers {
            layer.map_linears(|_, lin| lin.quantize(spec));
        }
        self
    }

    /// Replaces every quantised projection by its dequantised values (for inference: the same
    /// function as the quantised model, as dense products).
    pub fn dequantize_linears(mut self) -> Self {
        let (device, dtype) = (self.device(), self.dtype);
        for layer in &mut self.layers {
            layer.map_linears(|_, lin| lin.dequantize(&device, dtype));
        }
        self
    }

    /// Bytes held by the decoder projections: `(dense, quantised)`.
    pub fn linear_bytes(&self) -> (usize, usize) {
        let (mut dense, mut quantized) = (0, 0);
        for layer in &self.layers {
            for (_, lin) in layer.named_linears() {
                match lin.base.quantized() {
                    Some(q) => quantized += q.bytes(),
                    None => {
                        let [r, c] = lin.dims();
                        dense += r * c * self.dtype.size();
                    }
                }
            }
        }
        (dense, quantized)
    }
}

fn push_linear<B: Backend>(
    out: &mut Vec<(String, HfTensor<B>)>,
    name: &str,
    lin: &Linear<B>,
    (device, dtype): (&B::Device, DType),
) {
    out.push((
        format!("{name}.weight"),
        HfTensor::Rank2(lin.base.to_dense_on(device, dtype)),
    ));
    if let Some(b) = &lin.bias {
        out.push((format!("{name}.bias"), HfTensor::Rank1(b.val())));
    }
}

impl<B: Backend> DecoderLayer<B> {
    /// The layer's projections with their names relative to the layer (`self_attn.q_proj`, ...).
    pub fn named_linears(&self) -> [(&'static str, &Linear<B>); 7] {
        [
            ("self_attn.q_proj", &self.self_attn.q_proj),
            ("self_attn.k_proj", &self.self_attn.k_proj),
            ("self_attn.v_proj", &self.self_attn.v_proj),
            ("self_attn.o_proj", &self.self_attn.o_proj),
            ("mlp.gate_proj", &self.mlp.gate_proj),
            ("mlp.up_proj", &self.mlp.up_proj),
            ("mlp.down_proj", &self.mlp.down_proj),
        ]
    }

    /// Replaces each projection by `f(short_name, projection)` (`q_proj`, ..., `down_proj`).
    fn map_linears(&mut self, mut f: impl FnMut(&str, Linear<B>) -> Linear<B>) {
        fn take<B: Backend>(
            slot: &mut Linear<B>,
            name: &str,
            f: &mut impl FnMut(&str, Linear<B>) -> Linear<B>,
        ) {
            // Linear has no cheap default; swap through a clone of the (Arc-backed) tensors.
            let cur = slot.clone();
            *slot = f(name, cur);
        }
        take(&mut self.self_attn.q_proj, "q_proj", &mut f);
        take(&mut self.self_attn.k_proj, "k_proj", &mut f);
        take(&mut self.self_attn.v_proj, "v_proj", &mut f);
        take(&mut self.self_attn.o_proj, "o_proj", &mut f);
        take(&mut self.mlp.gate_proj, "gate_proj", &mut f);
        take(&mut self.mlp.up_proj, "up_proj", &mut f);
        take(&mut self.mlp.down_proj, "down_proj", &mut f);
    }
}

/// Every base tensor of a model with this config: its HF name and shape, in the order
/// [`Llama::hf_tensors`] lists them.
pub fn hf_tensor_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let ff = c.intermediate_size;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![c.vocab_size, h],
    )];
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let linears = [
            ("self_attn.q_proj", q, h, c.qkv_bias),
            ("self_attn.k_proj", kv, h, c.qkv_bias),
            ("self_attn.v_proj", kv, h, c.qkv_bias),
            ("self_attn.o_proj", h, q, c.o_bias),
            ("mlp.gate_proj", ff, h, c.mlp_bias),
            ("mlp.up_proj", ff, h, c.mlp_bias),
            ("mlp.down_proj", h, ff, c.mlp_bias),
        ];
        for (name, o, inp, bias) in linears {
            out.push((format!("{p}.{name}.weight"), vec![o, inp]));
            if bias {
                out.push((format!("{p}.{name}.bias"), vec![o]));
            }
        }
        if c.qk_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), vec![c.head_dim]));
            out.push((format!("{p}.self_attn.k_norm.weight"), vec![c.head_dim]));
        }
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![c.vocab_size, h]));
    }
    out
}
