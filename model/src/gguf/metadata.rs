//! A model's configuration from GGUF metadata (`general.architecture` and its `{arch}.*` keys).

use super::read::GgufFile;
use crate::config::{Arch, ModelConfig, RopeScaling};
use crate::error::{Error, Result};

impl ModelConfig {
    /// Builds the config from GGUF metadata (`general.architecture` and its `{arch}.*` keys).
    ///
    /// Token ids come from `tokenizer.ggml.*`; whether the head is tied from the absence of
    /// `output.weight`; q/k/v biases from the presence of `blk.0.attn_q.bias`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch_name = file
            .meta_str("general.architecture")
            .ok_or_else(|| Error::gguf("missing `general.architecture`"))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => {
                return Err(Error::config(format!(
                    "unsupported GGUF architecture `{other}`\nhint: supported architectures are `llama`, `mistral`, `qwen2`, `qwen3`"
                )));
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let need = |k: &str| -> Result<usize> {
            file.meta_u64(&key(k))
                .map(|v| v as usize)
                .ok_or_else(|| Error::gguf(format!("missing or non-integer `{}`", key(k))))
        };
        let hidden_size = need("embedding_length")?;
        let num_attention_heads = need("attention.head_count")?;
        if num_attention_heads == 0 {
            return Err(Error::gguf(format!(
                "`{}` must be positive",
                key("attention.head_count")
            )));
        }
        let num_key_value_heads = file
            .meta_u64(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(num_attention_heads);
        let head_dim = file
            .meta_u64(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(hidden_size / num_attention_heads);
        let vocab_size = match file.meta_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => match file.meta_array_len("tokenizer.ggml.tokens") {
                Some(n) => n,
                None => file
                    .tensor("token_embd.weight")
                    .map(|t| t.dims.get(1).copied().unwrap_or(0) as usize)
                    .ok_or_else(|| Error::gguf("cannot determine the vocabulary size"))?,
            },
        };
        let rope_scaling = match file.meta_str(&key("rope.scaling.type")) {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear {
                factor: file
                    .meta_f64(&key("rope.scaling.factor"))
                    .ok_or_else(|| Error::gguf("linear rope scaling without a factor"))?,
            }),
            Some(other) => {
                return Err(Error::Unsupported(format!("GGUF rope scaling `{other}`")));
            }
        };
        if file.tensor("rope_freqs.weight").is_some() {
            return Err(Error::Unsupported(
                "GGUF files with a `rope_freqs.weight` tensor (Llama 3.1 frequency factors)".into(),
            ));
        }
        let qkv_bias = file.tensor("blk.0.attn_q.bias").is_some();
        let o_bias = file.tensor("blk.0.attn_output.bias").is_some();
        let mlp_bias = file.tensor("blk.0.ffn_up.bias").is_some();
        let qk_norm = file.tensor("blk.0.attn_q_norm.weight").is_some();
        let tok = |k: &str| {
            file.meta_u64(&format!("tokenizer.ggml.{k}"))
                .map(|v| v as u32)
        };
        let cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: need("block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: file
                .meta_u64(&key("context_length"))
                .map(|v| v as usize)
                .unwrap_or(2048),
            rms_norm_eps: file
                .meta_f64(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: file.meta_f64(&key("rope.freq_base")).unwrap_or(10000.0),
            rope_scaling,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm,
            tie_word_embeddings: file.tensor("output.weight").is_none(),
            sliding_window: None,
            max_window_layers: None,
            bos_token_id: tok("bos_token_id"),
            eos_token_ids: tok("eos_token_id").into_iter().collect(),
            pad_token_id: tok("padding_token_id"),
            initializer_range: 0.02,
            torch_dtype: Some("float32".into()),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
