//! `model`: a seeded, randomly initialised Llama-family model built around a tokenizer, for training
//! from scratch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Input, Params};

/// Creates a randomly initialised decoder (Llama architecture by default) sized by the parameters, with
/// the vocabulary, special tokens and chat template of a tokenizer, and writes it as a Hugging Face model
/// folder: `config.json`, `generation_config.json`, `model.safetensors` (f32) and the tokenizer's files.
///
/// Initialisation follows transformers (`normal(0, initializer_range)` for projections and embeddings,
/// ones for norms, zeros for biases and the padding row) and draws each tensor from its own stream of
/// `seed`, so the same parameters give a byte-identical artifact on any machine.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// The tokenizer: a `tokenizer` step, or any step or folder holding a Hugging Face `tokenizer.json`
    /// (with `tokenizer_config.json`). Its vocabulary size becomes the model's, its bos/eos/pad tokens
    /// the model's special ids.
    pub tokenizer: String,
    /// The architecture: `llama` (default), `mistral`, `qwen2` (biases on q/k/v) or `qwen3` (q/k norms).
    #[serde(default)]
    pub arch: ModelArch,
    /// Width of the residual stream. Default 256.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward block. Default 768.
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    /// Number of decoder layers. Default 4.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Number of query heads. Default 4.
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); must divide `num_attention_heads`.
    /// Default: `num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head. Default: `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// The longest sequence the model is meant for (recorded in `config.json`). Default 2048.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// RoPE base frequency. Default 10000.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Epsilon of the RMS norms. Default 1e-6.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Share the input embedding with the LM head. Default true.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation. Default 0.02.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Seed of the initialisation. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

/// Architecture of a model built from scratch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelArch {
    /// `LlamaForCausalLM`.
    #[default]
    Llama,
    /// `MistralForCausalLM`.
    Mistral,
    /// `Qwen2ForCausalLM` (q/k/v biases).
    Qwen2,
    /// `Qwen3ForCausalLM` (per-head q/k norms).
    Qwen3,
}

fn default_hidden_size() -> usize {
    256
}
fn default_intermediate_size() -> usize {
    768
}
fn default_layers() -> usize {
    4
}
fn default_heads() -> usize {
    4
}
fn default_max_positions() -> usize {
    2048
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_seed() -> u64 {
    42
}

impl Params for ModelParams {
    fn inputs(&self) -> Vec<Input> {
        vec![Input::step_or_path(
            FieldPath::key("tokenizer"),
            self.tokenizer.clone(),
        )]
    }
}
