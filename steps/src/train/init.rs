//! The configuration of a seeded random model (the `model` kind's, and `lf bench train`'s) from its
//! manifest parameters.

use lf_model::config::{Arch, ModelConfig};
use lf_schemas::kinds::model::{ModelArch, ModelParams};

use crate::data::ModelTokenizer;

/// The configuration `p` describes for `tokenizer`.
pub fn config(p: &ModelParams, tokenizer: &ModelTokenizer) -> ModelConfig {
    ModelConfig {
        bos_token_id: tokenizer.bos_id,
        eos_token_ids: tokenizer.eos_id.into_iter().collect(),
        pad_token_id: Some(tokenizer.pad_id),
        ..config_for_vocab(p, tokenizer.vocab_size())
    }
}

/// The configuration `p` describes for a vocabulary of `vocab_size` tokens, without special tokens.
pub fn config_for_vocab(p: &ModelParams, vocab_size: usize) -> ModelConfig {
    let arch = match p.arch {
        ModelArch::Llama => Arch::Llama,
        ModelArch::Mistral => Arch::Mistral,
        ModelArch::Qwen2 => Arch::Qwen2,
        ModelArch::Qwen3 => Arch::Qwen3,
    };
    ModelConfig {
        arch,
        vocab_size,
        hidden_size: p.hidden_size,
        intermediate_size: p.intermediate_size,
        num_hidden_layers: p.num_hidden_layers,
        num_attention_heads: p.num_attention_heads,
        num_key_value_heads: p.num_key_value_heads.unwrap_or(p.num_attention_heads),
        head_dim: p
            .head_dim
            .unwrap_or(p.hidden_size / p.num_attention_heads.max(1)),
        max_position_embeddings: p.max_position_embeddings,
        rms_norm_eps: p.rms_norm_eps,
        rope_theta: p.rope_theta,
        rope_scaling: None,
        qkv_bias: arch == Arch::Qwen2,
        o_bias: false,
        mlp_bias: false,
        qk_norm: arch == Arch::Qwen3,
        tie_word_embeddings: p.tie_word_embeddings,
        sliding_window: None,
        max_window_layers: None,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        pad_token_id: None,
        initializer_range: p.initializer_range,
        torch_dtype: Some("float32".into()),
    }
}
