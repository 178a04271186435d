//! `model`: a seeded, randomly initialised Llama-family model around a tokenizer, written as a Hugging
//! Face folder, for training from scratch.

use std::fs;

use anyhow::Context as _;
use lf_engine::{Problem, Step, StepContext};
use lf_schemas::FieldPath;
use lf_schemas::kinds::ModelParams;
use lf_schemas::kinds::model::ModelArch;

use crate::data::ModelTokenizer;
use crate::model::load::SaveDtype;
use crate::model::{Arch, Cpu, CpuDevice, Dtype, Llama, ModelConfig, save_hf};
use crate::train::artifact::{ModelSource, generation_config, write_tokenizer_files};

/// The `model` step kind.
pub struct ModelInit;

impl Step for ModelInit {
    type Params = ModelParams;
    const KIND: &'static str = "model";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "a seeded random Llama-family model with a tokenizer's vocabulary, for training from scratch";

    fn check(&self, p: &ModelParams) -> Vec<Problem> {
        let mut out = Vec::new();
        for (field, v) in [
            ("hidden_size", p.hidden_size),
            ("intermediate_size", p.intermediate_size),
            ("num_hidden_layers", p.num_hidden_layers),
            ("num_attention_heads", p.num_attention_heads),
            ("max_position_embeddings", p.max_position_embeddings),
        ] {
            if v == 0 {
                out.push(Problem::new(FieldPath::key(field), "must be at least 1"));
            }
        }
        if p.num_attention_heads == 0 {
            return out;
        }
        match p.head_dim {
            Some(d) if d == 0 || d % 2 == 1 => out.push(Problem::new(
                FieldPath::key("head_dim"),
                format!("must be a positive even number (RoPE rotates pairs), got {d}"),
            )),
            None if !p.hidden_size.is_multiple_of(p.num_attention_heads)
                || (p.hidden_size / p.num_attention_heads) % 2 == 1 =>
            {
                out.push(
                    Problem::new(
                        FieldPath::key("num_attention_heads"),
                        format!(
                            "`hidden_size` ({}) divided by `num_attention_heads` ({}) must be a whole even number",
                            p.hidden_size, p.num_attention_heads
                        ),
                    )
                    .hint("change one of them, or set `head_dim`"),
                )
            }
            _ => {}
        }
        if let Some(kv) = p.num_key_value_heads
            && (kv == 0 || !p.num_attention_heads.is_multiple_of(kv))
        {
            out.push(Problem::new(
                FieldPath::key("num_key_value_heads"),
                format!(
                    "must divide `num_attention_heads` ({}), got {kv}",
                    p.num_attention_heads
                ),
            ));
        }
        for (field, v) in [
            ("rope_theta", p.rope_theta),
            ("rms_norm_eps", p.rms_norm_eps),
            ("initializer_range", p.initializer_range),
        ] {
            if !(v.is_finite() && v > 0.0) {
                out.push(Problem::new(
                    FieldPath::key(field),
                    format!("must be a positive number, got {v}"),
                ));
            }
        }
        out
    }

    fn run(&self, p: &ModelParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let tok_dir = cx.input("tokenizer")?;
        let tokenizer = ModelTokenizer::load(tok_dir)
            .with_context(|| format!("cannot load the tokenizer `{}`", p.tokenizer))?;
        let config = config(p, &tokenizer);
        config.validate()?;
        let model = Llama::<Cpu>::init(&config, p.seed, &CpuDevice, Dtype::F32)?;
        let out = cx.out_dir();
        save_hf(&model, out, SaveDtype::F32)?;
        write_tokenizer_files(&ModelSource::Hf(tok_dir.to_owned()), out)?;
        fs::write(
            out.join("generation_config.json"),
            serde_json::to_string_pretty(&generation_config(&config))? + "\n",
        )?;
        cx.metric("params", config.num_params());
        cx.metric("vocab_size", config.vocab_size);
        Ok(())
    }
}

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
