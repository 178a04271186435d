//! Model artifacts as training writes them: a Hugging Face folder (full weights) or a LoRA artifact.
//!
//! Training reads its starting model through [`lf_model::ModelArtifact`] and writes:
//!
//! ```text
//! adapter_config.json        peft's LoraConfig; base_model_name_or_path is "base"
//! adapter_model.safetensors  lora_A / lora_B with peft's names (base_model.model.model.layers.…)
//! base/                      the base model, hard-linked from its artifact (or written, when merged)
//! quantization_config.json   how training quantised the (linked) base, for QLoRA
//! tokenizer.json, …          the tokenizer files, so the artifact can be a `dataset` step's model
//! trainer_state.json         what training did
//! logs/                      metrics.jsonl, loss.png (not part of the content hash)
//! ```

use std::fs;
use std::path::Path;

use anyhow::Context as _;
use burn::tensor::backend::Backend;
use lf_model::adapter::{Adapter, BASE_DIR};
use lf_model::artifact::{QUANTIZATION_CONFIG, TOKENIZER_FILES};
use lf_model::config::special_ids_json;
use lf_model::linear::LoraConfig;
use lf_model::load::{ModelFormat, SaveDtype};
use lf_model::quant::QuantSpec;
use lf_model::{ArtifactKind, Llama, ModelArtifact, load_tokenizer, save_hf};
use serde_json::{Value as Json, json};

use crate::files::{Transfer, transfer};

/// The files besides [`TOKENIZER_FILES`] that a trained model carries from its source: how it
/// generates, and a chat template kept in its own JSON file.
const GENERATION_FILES: &[&str] = &["generation_config.json", "chat_template.json"];

/// Whether `path` lies inside an artifact of an lf store (`<store>/objects/<hash>/…`): such files are
/// immutable, so hard-linking them is safe; a user's own files are copied instead.
pub fn in_store(path: &Path) -> bool {
    let Ok(real) = fs::canonicalize(path) else {
        return false;
    };
    real.ancestors().any(|a| {
        a.file_name().is_some_and(|n| n == "objects")
            && a.parent().is_some_and(|p| p.join("STORE").is_file())
    })
}

fn link_or_copy(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let how = if in_store(src) {
        Transfer::Link
    } else {
        Transfer::Copy
    };
    transfer(src, dest, how)
}

/// Copies the tokenizer and generation files found at `from` into `out`; for a `.gguf` file, writes
/// them from its metadata. `out` then tokenizes like `from`.
pub fn write_tokenizer_files(from: &Path, out: &Path) -> anyhow::Result<()> {
    if from.is_file() {
        return export_gguf_tokenizer(from, out);
    }
    for name in TOKENIZER_FILES.iter().chain(GENERATION_FILES) {
        let src = from.join(name);
        if src.is_file() {
            link_or_copy(&src, &out.join(name))?;
        }
    }
    Ok(())
}

/// Writes `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` for the tokenizer a
/// GGUF file describes.
pub fn export_gguf_tokenizer(file: &Path, out: &Path) -> anyhow::Result<()> {
    let bundle = load_tokenizer(file)
        .with_context(|| format!("cannot read the tokenizer of `{}`", file.display()))?;
    let text = bundle
        .tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?;
    fs::write(out.join("tokenizer.json"), text + "\n")?;
    let config = json!({
        "add_bos_token": bundle.add_bos,
        "add_eos_token": false,
        "bos_token": bundle.bos_token,
        "chat_template": bundle.chat_template,
        "clean_up_tokenization_spaces": false,
        "eos_token": bundle.eos_token,
        "pad_token": bundle.pad_token,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": bundle.unk_token,
    });
    fs::write(
        out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    let generation = special_ids_json(bundle.bos_id, &bundle.eos_ids, bundle.pad_id);
    fs::write(
        out.join("generation_config.json"),
        serde_json::to_string_pretty(&Json::Object(generation))? + "\n",
    )?;
    Ok(())
}

/// Writes full weights as a Hugging Face folder (`config.json`, `model.safetensors`) with the
/// tokenizer files of `source`. Adapters, if any, are merged first.
pub fn write_full<B: Backend>(
    model: Llama<B>,
    source: &ModelArtifact,
    out: &Path,
    dtype: SaveDtype,
) -> anyhow::Result<()> {
    let model = model.merge_lora();
    save_hf(&model, out, dtype)?;
    write_tokenizer_files(source.tokenizer_path(), out)?;
    if !out.join("generation_config.json").is_file() {
        fs::write(
            out.join("generation_config.json"),
            serde_json::to_string_pretty(&model.config.generation_config())? + "\n",
        )?;
    }
    Ok(())
}

/// How the base of a LoRA artifact gets into it.
pub enum BaseOut<'a, B: Backend> {
    /// Hard-link (or copy) the files of this model.
    Link(&'a ModelArtifact),
    /// Write these weights (a merged model), with the tokenizer files of the source.
    Write(&'a Llama<B>, &'a ModelArtifact),
}

/// Writes a LoRA artifact: the adapters of `model` in peft's layout, the base model in `base/`, the
/// tokenizer files at the top, and `quantization_config.json` when the adapter was trained on the
/// base quantised as `quantization` says.
pub fn write_lora<B: Backend>(
    model: &Llama<B>,
    cfg: &LoraConfig,
    base: BaseOut<'_, B>,
    quantization: Option<QuantSpec>,
    out: &Path,
) -> anyhow::Result<()> {
    Adapter::from_model(model, cfg)?.write(out)?;
    if let Some(spec) = quantization {
        fs::write(
            out.join(QUANTIZATION_CONFIG),
            serde_json::to_string_pretty(&spec.to_json())? + "\n",
        )?;
    }
    let base_dir = out.join(BASE_DIR);
    fs::create_dir_all(&base_dir)?;
    let tokenizer_source = match base {
        BaseOut::Link(source) => {
            link_base(source, &base_dir)?;
            source
        }
        BaseOut::Write(merged, source) => {
            save_hf(merged, &base_dir, SaveDtype::F32)?;
            write_tokenizer_files(source.tokenizer_path(), &base_dir)?;
            source
        }
    };
    write_tokenizer_files(tokenizer_source.tokenizer_path(), out)
}

/// Puts the files of a base model into `dest`: every file of a Hugging Face folder but its logs and
/// training state, or the one GGUF file.
fn link_base(source: &ModelArtifact, dest: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        source.kind != ArtifactKind::Lora,
        "a merged base must be written, not linked"
    );
    match &source.base {
        ModelFormat::HfDir(dir) => {
            let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                if name == "logs" || name == "trainer_state.json" {
                    continue;
                }
                link_or_copy(&e.path(), &dest.join(&name))?;
            }
            Ok(())
        }
        ModelFormat::Gguf(file) => {
            let name = file.file_name().context("a GGUF file has a name")?;
            link_or_copy(file, &dest.join(name))
        }
    }
}
