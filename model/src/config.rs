//! [`ModelConfig`]: the shape of a Llama-family decoder, read from a HF `config.json` or GGUF metadata.
//!
//! Both the transformers 4.x layout (top-level `rope_theta` / `rope_scaling`, `torch_dtype`) and the
//! 5.x layout (`rope_parameters`, `dtype`) are read; [`ModelConfig::to_hf_json`] writes the 4.x
//! layout, which every transformers version accepts.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// The architectures this module implements, by their HF `model_type`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

/// A decoder architecture (HF `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 1/2/3 (and SmolLM, TinyLlama...): optional attention and MLP biases.
    Llama,
    /// Mistral: Llama with an optional sliding window.
    Mistral,
    /// Qwen2 / Qwen2.5: biases on q/k/v.
    Qwen2,
    /// Qwen3: RMSNorm on q and k per head, explicit `head_dim`.
    Qwen3,
}

impl Arch {
    /// The HF `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// The HF `architectures` entry of a causal LM.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// Parses a HF `model_type`; the error lists the supported ones.
    pub fn from_model_type(model_type: &str) -> Result<Self> {
        match model_type {
            "llama" => Ok(Arch::Llama),
            "mistral" => Ok(Arch::Mistral),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            other => {
                let supported = SUPPORTED_MODEL_TYPES
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(Error::config(match not_yet(other) {
                    Some(why) => format!(
                        "unsupported model_type `{other}`: {why}\nhint: supported model types are {supported}; see docs/design/model.md (\"Families lf does not load yet\")"
                    ),
                    None => format!(
                        "unsupported model_type `{other}`\nhint: supported model types are {supported}"
                    ),
                }))
            }
        }
    }
}

/// What lf lacks for a well-known family it does not load yet (`docs/design/model.md`).
fn not_yet(model_type: &str) -> Option<&'static str> {
    Some(match model_type {
        "chatglm" => {
            "ChatGLM3 ships its modeling code as remote code, with its own tokenizer code; lf does not run remote code, and GLM-4 (`glm4`), its maintained successor in transformers, is the family lf will load first"
        }
        "glm" | "glm4" => {
            "GLM-4 (partial rotary embeddings, a fused gate/up projection; post-norms in `glm4`) is not implemented yet"
        }
        "baichuan" => {
            "Baichuan2 (fused `W_pack` q/k/v, `NormHead`; ALiBi in the 13B model) is not implemented yet"
        }
        "gemma" | "gemma2" | "gemma3" | "gemma3_text" => {
            "Gemma (logit soft-capping, sliding-window layers, embedding scaling, (1+w) RMSNorm) is not implemented yet"
        }
        "phi3" => "Phi-3 (fused qkv and gate/up projections, LongRoPE) is not implemented yet",
        _ => return None,
    })
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor` (all frequencies divided by it).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// Divisor for low frequencies.
        factor: f64,
        /// Wavelength bound (in units of the original context) below which frequencies are scaled.
        low_freq_factor: f64,
        /// Wavelength bound above which frequencies are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
}

/// Everything needed to build a [`Llama`](super::Llama) of one of the [`Arch`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Arch,
    /// Rows of the embedding and of the LM head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA when smaller than `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Context length the model was trained for (informative; longer inputs still run).
    pub max_position_embeddings: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE rescaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Bias on q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// RMSNorm of q and k per head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// The LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Sliding-window attention width, for the layers [`ModelConfig::layer_uses_window`] selects.
    pub sliding_window: Option<usize>,
    /// Qwen2/3: layers from this index on use the sliding window (when one is set).
    pub max_window_layers: Option<usize>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (HF allows one or a list).
    pub eos_token_ids: Vec<u32>,
    /// Padding token id.
    pub pad_token_id: Option<u32>,
    /// Standard deviation of the random initialisation.
    pub initializer_range: f64,
    /// The dtype the checkpoint was stored in (`float32`, `bfloat16`, ...), when stated.
    pub torch_dtype: Option<String>,
}

fn get_usize(obj: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
            Error::config(format!("`{key}` must be a non-negative integer, got {v}"))
        }),
    }
}

fn need_usize(obj: &Map<String, Value>, key: &str) -> Result<usize> {
    get_usize(obj, key)?.ok_or_else(|| Error::config(format!("missing `{key}`")))
}

fn get_f64(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::config(format!("`{key}` must be a number, got {v}"))),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| Error::config(format!("`{key}` must be a boolean, got {v}"))),
    }
}

fn get_ids(obj: &Map<String, Value>, key: &str) -> Result<Vec<u32>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|x| x as u32)
                    .ok_or_else(|| Error::config(format!("`{key}` must hold token ids, got {v}")))
            })
            .collect(),
        Some(v) => v
            .as_u64()
            .map(|x| vec![x as u32])
            .ok_or_else(|| Error::config(format!("`{key}` must be a token id, got {v}"))),
    }
}

fn parse_rope_scaling(obj: &Map<String, Value>) -> Result<Option<RopeScaling>> {
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor =
        || get_f64(obj, "factor")?.ok_or_else(|| Error::config("rope scaling lacks `factor`"));
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear { factor: factor()? })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: get_f64(obj, "low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: get_f64(obj, "high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: get_usize(obj, "original_max_position_embeddings")?
                .unwrap_or(8192),
        })),
        other => Err(Error::config(format!(
            "unsupported rope_type `{other}`\nhint: supported rope types are `default`, `linear`, `llama3`"
        ))),
    }
}

impl ModelConfig {
    /// Reads `config.json` from a file.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_owned(),
            source,
        })?;
        Self::from_hf_json(&value).map_err(|e| e.at(path))
    }

    /// Reads a parsed HF `config.json`.
    pub fn from_hf_json(value: &Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::config("config.json must hold a JSON object"))?;
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config("missing `model_type`"))?;
        let arch = Arch::from_model_type(model_type)?;
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(Error::config(format!(
                "unsupported hidden_act `{act}`; only `silu` is implemented"
            )));
        }
        let hidden_size = need_usize(obj, "hidden_size")?;
        let num_attention_heads = need_usize(obj, "num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(Error::config("`num_attention_heads` must be positive"));
        }
        let num_key_value_heads =
            get_usize(obj, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        let head_dim = get_usize(obj, "head_dim")?.unwrap_or(hidden_size / num_attention_heads);

        // transformers 5 nests RoPE settings (theta included) in `rope_parameters`.
        let (rope_theta, rope_scaling) = match obj.get("rope_parameters") {
            Some(Value::Object(rp)) => (
                get_f64(rp, "rope_theta")?
                    .or(get_f64(obj, "rope_theta")?)
                    .unwrap_or(10000.0),
                parse_rope_scaling(rp)?,
            ),
            _ => (
                get_f64(obj, "rope_theta")?.unwrap_or(10000.0),
                match obj.get("rope_scaling") {
                    Some(Value::Object(rs)) => parse_rope_scaling(rs)?,
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        return Err(Error::config(format!(
                            "`rope_scaling` must be an object, got {v}"
                        )));
                    }
                },
            ),
        };

        let attention_bias = get_bool(obj, "attention_bias")?.unwrap_or(false);
        let (qkv_bias, o_bias) = match arch {
            Arch::Llama | Arch::Qwen3 => (attention_bias, attention_bias),
            Arch::Mistral => (false, false),
            Arch::Qwen2 => (true, false),
        };
        let mlp_bias = arch == Arch::Llama && get_bool(obj, "mlp_bias")?.unwrap_or(false);

        let (sliding_window, max_window_layers) = match arch {
            Arch::Mistral => (get_usize(obj, "sliding_window")?, None),
            Arch::Qwen2 | Arch::Qwen3 => {
                if get_bool(obj, "use_sliding_window")?.unwrap_or(false) {
                    (
                        get_usize(obj, "sliding_window")?,
                        get_usize(obj, "max_window_layers")?,
                    )
                } else {
                    (None, None)
                }
            }
            Arch::Llama => (None, None),
        };

        let cfg = ModelConfig {
            arch,
            vocab_size: need_usize(obj, "vocab_size")?,
            hidden_size,
            intermediate_size: need_usize(obj, "intermediate_size")?,
            num_hidden_layers: need_usize(obj, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: get_usize(obj, "max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: get_f64(obj, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: arch == Arch::Qwen3,
            tie_word_embeddings: get_bool(obj, "tie_word_embeddings")?.unwrap_or(false),
            sliding_window,
            max_window_layers,
            bos_token_id: get_ids(obj, "bos_token_id")?.first().copied(),
            eos_token_ids: get_ids(obj, "eos_token_id")?,
            pad_token_id: get_ids(obj, "pad_token_id")?.first().copied(),
            initializer_range: get_f64(obj, "initializer_range")?.unwrap_or(0.02),
            torch_dtype: obj
                .get("torch_dtype")
                .or_else(|| obj.get("dtype"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::config(format!("`{name}` must be positive")));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(Error::config(format!(
                "`num_attention_heads` ({}) must be a multiple of `num_key_value_heads` ({})",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::config(format!(
                "`head_dim` ({}) must be even for RoPE",
                self.head_dim
            )));
        }
        Ok(())
    }

    /// Whether layer `layer` attends within [`ModelConfig::sliding_window`] only.
    pub fn layer_uses_window(&self, layer: usize) -> Option<usize> {
        let w = self.sliding_window?;
        match self.max_window_layers {
            Some(start) if layer < start => None,
            _ => Some(w),
        }
    }

    /// Number of parameters of the base model (no adapters).
    pub fn num_params(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let i = self.intermediate_size;
        let mut layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        if self.qkv_bias {
            layer += q + 2 * kv;
        }
        if self.o_bias {
            layer += h;
        }
        if self.mlp_bias {
            layer += 2 * i + h;
        }
        if self.qk_norm {
            layer += 2 * self.head_dim;
        }
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * h
        };
        self.vocab_size * h + self.num_hidden_layers * layer + h + head
    }

    /// A HF `config.json` that transformers loads as this model (4.x layout).
    pub fn to_hf_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("architectures".into(), json!([self.arch.hf_class()]));
        m.insert("model_type".into(), json!(self.arch.model_type()));
        m.insert("vocab_size".into(), json!(self.vocab_size));
        m.insert("hidden_size".into(), json!(self.hidden_size));
        m.insert("intermediate_size".into(), json!(self.intermediate_size));
        m.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        m.insert(
            "num_attention_heads".into(),
            json!(self.num_attention_heads),
        );
        m.insert(
            "num_key_value_heads".into(),
            json!(self.num_key_value_heads),
        );
        m.insert("head_dim".into(), json!(self.head_dim));
        m.insert("hidden_act".into(), json!("silu"));
        m.insert(
            "max_position_embeddings".into(),
            json!(self.max_position_embeddings),
        );
        m.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        m.insert("rope_theta".into(), json!(self.rope_theta));
        m.insert(
            "rope_scaling".into(),
            match &self.rope_scaling {
                None => Value::Null,
                Some(RopeScaling::Linear { factor }) => {
                    json!({"rope_type": "linear", "factor": factor})
                }
                Some(RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                }) => json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position_embeddings,
                }),
            },
        );
        match self.arch {
            Arch::Llama => {
                m.insert("attention_bias".into(), json!(self.qkv_bias));
                m.insert("mlp_bias".into(), json!(self.mlp_bias));
            }
            Arch::Qwen3 => {
                m.insert("attention_bias".into(), json!(self.qkv_bias));
            }
            Arch::Mistral | Arch::Qwen2 => {}
        }
        match self.arch {
            Arch::Mistral => {
                m.insert("sliding_window".into(), json!(self.sliding_window));
            }
            Arch::Qwen2 | Arch::Qwen3 => {
                m.insert(
                    "use_sliding_window".into(),
                    json!(self.sliding_window.is_some()),
                );
                m.insert("sliding_window".into(), json!(self.sliding_window));
                m.insert(
                    "max_window_layers".into(),
                    json!(self.max_window_layers.unwrap_or(self.num_hidden_layers)),
                );
            }
            Arch::Llama => {}
        }
        m.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings),
        );
        m.insert("attention_dropout".into(), json!(0.0));
        m.insert("initializer_range".into(), json!(self.initializer_range));
        m.extend(self.special_ids_json());
        if let Some(dt) = &self.torch_dtype {
            m.insert("torch_dtype".into(), json!(dt));
        }
        m.insert("use_cache".into(), json!(true));
        Value::Object(m)
    }

    /// The special token ids as `generation_config.json` writes them (see [`special_ids_json`]).
    pub fn special_ids_json(&self) -> serde_json::Map<String, Value> {
        special_ids_json(self.bos_token_id, &self.eos_token_ids, self.pad_token_id)
    }

    /// `generation_config.json` for these special ids.
    pub fn generation_config(&self) -> Value {
        Value::Object(self.special_ids_json())
    }

    /// A small config for tests and from-scratch experiments.
    pub fn tiny(arch: Arch) -> Self {
        ModelConfig {
            arch,
            vocab_size: 256,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            max_position_embeddings: 256,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: None,
            qkv_bias: arch == Arch::Qwen2,
            o_bias: false,
            mlp_bias: false,
            qk_norm: arch == Arch::Qwen3,
            tie_word_embeddings: false,
            sliding_window: None,
            max_window_layers: None,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            pad_token_id: Some(0),
            initializer_range: 0.02,
            torch_dtype: Some("float32".into()),
        }
    }
}

/// The special token ids as `generation_config.json` (and `config.json`) write them: `bos_token_id`,
/// `eos_token_id` (a number, or a list when there are several) and `pad_token_id`, each when known.
pub fn special_ids_json(
    bos: Option<u32>,
    eos: &[u32],
    pad: Option<u32>,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    if let Some(id) = bos {
        m.insert("bos_token_id".into(), json!(id));
    }
    match eos {
        [] => {}
        [one] => {
            m.insert("eos_token_id".into(), json!(one));
        }
        many => {
            m.insert("eos_token_id".into(), json!(many));
        }
    }
    if let Some(id) = pad {
        m.insert("pad_token_id".into(), json!(id));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_model_type_lists_supported() {
        let err = ModelConfig::from_hf_json(&json!({"model_type": "gpt_neox"})).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("gpt_neox"), "{msg}");
        for t in SUPPORTED_MODEL_TYPES {
            assert!(msg.contains(t), "{msg}");
        }
    }

    #[test]
    fn families_not_loaded_yet_say_why() {
        let msg = ModelConfig::from_hf_json(&json!({"model_type": "chatglm"}))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("remote code") && msg.contains("glm4"), "{msg}");
        assert!(msg.contains("docs/design/model.md"), "{msg}");
        let msg = ModelConfig::from_hf_json(&json!({"model_type": "baichuan"}))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("W_pack"), "{msg}");
    }

    #[test]
    fn hf_json_round_trips() {
        for arch in [Arch::Llama, Arch::Mistral, Arch::Qwen2, Arch::Qwen3] {
            let mut cfg = ModelConfig::tiny(arch);
            if arch == Arch::Llama {
                cfg.rope_scaling = Some(RopeScaling::Llama3 {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 64,
                });
            }
            let back = ModelConfig::from_hf_json(&cfg.to_hf_json()).unwrap();
            assert_eq!(cfg, back, "{arch:?}");
        }
    }

    #[test]
    fn reads_v5_rope_parameters_and_eos_lists() {
        let v = json!({
            "model_type": "mistral", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2,
            "rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"},
            "eos_token_id": [2, 7], "dtype": "bfloat16"
        });
        let cfg = ModelConfig::from_hf_json(&v).unwrap();
        assert_eq!(cfg.rope_theta, 5000.0);
        assert_eq!(cfg.num_key_value_heads, 2);
        assert_eq!(cfg.head_dim, 4);
        assert_eq!(cfg.eos_token_ids, vec![2, 7]);
        assert_eq!(cfg.torch_dtype.as_deref(), Some("bfloat16"));
    }
}
