//! `model`: a seeded, randomly initialised Llama-family model around a tokenizer, written as a Hugging
//! Face folder, for training from scratch.

use std::fs;

use anyhow::Context as _;
use lf_engine::{Problem, Step, StepContext};
use lf_schemas::FieldPath;
use lf_schemas::kinds::ModelParams;

use crate::data::ModelTokenizer;
use crate::train::artifact::write_tokenizer_files;
use crate::train::init::config;
use lf_model::load::SaveDtype;
use lf_model::{Cpu, CpuDevice, Dtype, Llama, save_hf};

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
        write_tokenizer_files(tok_dir, out)?;
        fs::write(
            out.join("generation_config.json"),
            serde_json::to_string_pretty(&config.generation_config())? + "\n",
        )?;
        cx.metric("params", config.num_params());
        cx.metric("vocab_size", config.vocab_size);
        Ok(())
    }
}
