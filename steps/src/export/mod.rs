//! `export`: a model (a Hugging Face folder, a GGUF file, or a LoRA adapter with its base) written as a
//! Hugging Face folder with merged weights, and on request as a PEFT adapter, GGUF files and an Ollama
//! `Modelfile`.
//!
//! The model comes in as an [`lf_model::ModelArtifact`], whose tensors stream with the adapter merged.
//! The pieces:
//!
//! - [`hf`]: `config.json`, `generation_config.json`, tokenizer files, sharded safetensors.
//! - [`gguf`]: GGUF v3 files for llama.cpp (F32/F16/BF16/Q8_0, tokenizer metadata).
//! - [`ollama`]: the `Modelfile`, with a Go template derived from the Jinja chat template.
//!
//! Everything is computed on the host in f32 with a fixed order of operations, so the artifact is the
//! same bytes on every machine; the step is therefore not numeric (its key has no device or dtype).

pub mod gguf;
pub mod hf;
pub mod ollama;

#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;

use anyhow::Context as _;
use lf_engine::progress::Progress;
use lf_schemas::kinds::ExportParams;
use lf_schemas::kinds::dataset::TemplateName;
use lf_schemas::kinds::export::ExportDtype;
use serde::Serialize;

use crate::data::ModelTokenizer;
use lf_model::SaveDtype;
use lf_model::llama::hf_tensor_shapes;
use lf_model::{ArtifactKind, ModelArtifact};

/// `export.json`: what an export artifact holds.
#[derive(Debug, Clone, Serialize)]
pub struct ExportInfo {
    /// `lf-export`.
    pub format: &'static str,
    /// Layout version.
    pub version: u32,
    /// What the input was (`hf`, `gguf`, `lora`).
    pub source: ArtifactKind,
    /// Whether a LoRA adapter was merged into the weights.
    pub merged_adapter: bool,
    /// The architecture (`llama`, `qwen2`, ...).
    pub arch: String,
    /// The dtype of the safetensors weights.
    pub dtype: SaveDtype,
    /// The safetensors files.
    pub weights: hf::WeightFiles,
    /// Whether tokenizer files were written.
    pub tokenizer: bool,
    /// blake3 of the chat template written, if any.
    pub chat_template: Option<String>,
    /// `adapter/` was written.
    pub adapter: bool,
    /// The GGUF files.
    pub gguf: Vec<gguf::GgufSummary>,
    /// The `Modelfile`, if written: whether its `TEMPLATE` was derived from the chat template.
    pub ollama: Option<OllamaInfo>,
    /// Warnings.
    pub notes: Vec<String>,
}

/// What the `Modelfile` holds.
#[derive(Debug, Clone, Serialize)]
pub struct OllamaInfo {
    /// The GGUF file it names.
    pub from: String,
    /// Whether a Go `TEMPLATE` equivalent to the chat template was written.
    pub template: bool,
    /// Whether the chat template trims message contents (the Go template cannot).
    pub trims_content: bool,
    /// The stop strings.
    pub stop: Vec<String>,
}

fn resolve_dtype(d: ExportDtype, model: &ModelArtifact) -> SaveDtype {
    match d {
        ExportDtype::F32 => SaveDtype::F32,
        ExportDtype::F16 => SaveDtype::F16,
        ExportDtype::Bf16 => SaveDtype::Bf16,
        ExportDtype::Auto => match model.config.torch_dtype.as_deref() {
            Some("float16" | "half" | "fp16") => SaveDtype::F16,
            Some("bfloat16" | "bf16") => SaveDtype::Bf16,
            _ => SaveDtype::F32,
        },
    }
}

/// Runs the export of the model at `model_dir` into `out` (what the `export` kind runs, without the
/// step context).
pub fn export(
    p: &ExportParams,
    model_dir: &Path,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<ExportInfo> {
    let model = ModelArtifact::open(model_dir)?;
    let mut notes = Vec::new();
    let dtype = resolve_dtype(p.dtype, &model);
    let max_shard = hf::parse_size(&p.max_shard_size).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(out)?;

    hf::write_config(&model, out, dtype)?;
    hf::write_generation_config(&model, out)?;
    let template_override = match p.template {
        TemplateName::Auto => None,
        name => Some(
            crate::data::chat::builtin(name)
                .with_context(|| format!("no built-in template `{}`", name.name()))?
                .source,
        ),
    };
    let has_tokenizer = model.tokenizer_dir.join("tokenizer.json").is_file()
        || matches!(model.base, lf_model::load::ModelFormat::Gguf(_));
    let chat_template = if has_tokenizer {
        hf::write_tokenizer(&model, out, template_override)?
    } else {
        notes.push(format!(
            "`{}` has no tokenizer files; the export holds the weights and config only",
            model.tokenizer_dir.display()
        ));
        None
    };

    let n_tensors = hf_tensor_shapes(&model.config).len();
    let bar = progress.bar((n_tensors * (1 + p.gguf.len())) as u64, "tensors");
    let mut tick = || bar.inc(1);
    let weights = hf::write_weights(&model, out, dtype, max_shard, &mut tick)?;

    if p.adapter {
        let adapter = model.adapter.as_ref().with_context(|| {
            format!(
                "`adapter: true`, but `{}` is not a LoRA artifact",
                model_dir.display()
            )
        })?;
        adapter.normalized().write(&out.join("adapter"))?;
    }

    let mut ggufs = Vec::new();
    if !p.gguf.is_empty() {
        anyhow::ensure!(
            has_tokenizer,
            "GGUF files need the model's tokenizer, and `{}` has none\nhint: export a model whose folder holds `tokenizer.json`",
            model.tokenizer_dir.display()
        );
        let meta = gguf::tokenizer_meta(&model, out, chat_template.as_deref())?;
        notes.extend(meta.notes.iter().cloned());
        for &ty in &p.gguf {
            let path = out.join(format!("model-{}.gguf", ty.name()));
            ggufs.push(gguf::write_gguf(&model, &path, ty, &meta, &mut tick)?);
        }
    }
    bar.finish_and_clear();

    let ollama = if p.ollama {
        let first = ggufs.first().context("`ollama: true` needs `gguf`")?;
        let tk = ModelTokenizer::load(out)?;
        let bundle = lf_model::TokenizerBundle::from_hf_dir(out)?;
        let mut stops: Vec<String> = Vec::new();
        for id in bundle
            .eos_ids
            .iter()
            .chain(&model.config.eos_token_ids)
            .copied()
        {
            if let Some(t) = tk.tokenizer.id_to_token(id)
                && !stops.contains(&t)
            {
                stops.push(t);
            }
        }
        let is_token = |s: &str| tk.tokenizer.token_to_id(s).is_some();
        let (text, mf) = ollama::modelfile(
            &first.file,
            chat_template.as_deref(),
            &tk.tokens,
            tk.adds_bos,
            &stops,
            &is_token,
        );
        if chat_template.is_some() && !mf.template {
            notes.push("the chat template could not be written as an Ollama Go template; the Modelfile has no TEMPLATE and Ollama uses the GGUF's `tokenizer.chat_template`".into());
        }
        if mf.trims_content {
            notes.push("the chat template trims whitespace around message contents; the Ollama template passes contents as they are".into());
        }
        std::fs::write(out.join("Modelfile"), text)?;
        Some(OllamaInfo {
            from: first.file.clone(),
            template: mf.template,
            trims_content: mf.trims_content,
            stop: mf.stops,
        })
    } else {
        None
    };

    let info = ExportInfo {
        format: "lf-export",
        version: 1,
        source: model.kind,
        merged_adapter: model.adapter.is_some(),
        arch: model.config.arch.model_type().to_string(),
        dtype,
        weights,
        tokenizer: has_tokenizer,
        chat_template: chat_template
            .as_ref()
            .map(|t| blake3::hash(t.as_bytes()).to_hex().to_string()),
        adapter: p.adapter,
        gguf: ggufs,
        ollama,
        notes,
    };
    std::fs::write(
        out.join("export.json"),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    Ok(info)
}
