//! Model artifacts as training reads and writes them.
//!
//! A training step starts from a [`ModelSource`]: a Hugging Face folder, a GGUF file (or a folder holding
//! one), or the LoRA artifact of an earlier step. It writes either a Hugging Face folder (full weights)
//! or a LoRA artifact:
//!
//! ```text
//! adapter_config.json        peft's LoraConfig; base_model_name_or_path is "base"
//! adapter_model.safetensors  lora_A / lora_B with peft's names (base_model.model.model.layers.…)
//! base/                      the base model, hard-linked from its artifact (or written, when merged)
//! tokenizer.json, …          the tokenizer files, so the artifact can be a `dataset` step's model
//! trainer_state.json         what training did
//! logs/                      metrics.jsonl, loss.png (not part of the content hash)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use burn::tensor::backend::Backend;

use serde_json::{Value as Json, json};

use super::params::LINEAR_MODULES;
use crate::export::source::Adapter;
use crate::files::{Transfer, transfer};
use crate::model::gguf::GgufFile;
use crate::model::linear::LoraConfig;
use crate::model::load::{ModelFormat, SaveDtype, write_safetensors};
use crate::model::{
    Dtype, Llama, ModelConfig, TokenizerBundle, load_model, load_tokenizer, save_hf,
};

/// peft's adapter config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// peft's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The folder of a LoRA artifact that holds its base model.
pub const BASE_DIR: &str = "base";
/// The prefix peft puts before the model's own parameter names.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// The files of a Hugging Face folder that describe the tokenizer and generation, copied along with
/// trained weights.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
];

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face folder with `config.json` and safetensors weights.
    Hf(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
    /// A LoRA artifact: an adapter and its base in `base/`.
    Lora {
        /// The artifact.
        dir: PathBuf,
        /// Its base model.
        base: Box<ModelSource>,
    },
}

impl ModelSource {
    /// Decides what `path` holds.
    pub fn detect(path: &Path) -> anyhow::Result<ModelSource> {
        if path.is_dir() && path.join(ADAPTER_CONFIG).is_file() {
            let base = path.join(BASE_DIR);
            anyhow::ensure!(
                base.is_dir(),
                "`{}` holds a LoRA adapter but no `{BASE_DIR}/` folder with its base model\nhint: adapters written by lf carry their base; for others, train from the base model",
                path.display()
            );
            let base = ModelSource::detect(&base)?;
            anyhow::ensure!(
                !matches!(base, ModelSource::Lora { .. }),
                "the base of `{}` is itself an adapter",
                path.display()
            );
            return Ok(ModelSource::Lora {
                dir: path.to_owned(),
                base: Box::new(base),
            });
        }
        Ok(match ModelFormat::detect(path)? {
            ModelFormat::HfDir(dir) => ModelSource::Hf(dir),
            ModelFormat::Gguf(file) => ModelSource::Gguf(file),
        })
    }

    /// The model's configuration, without loading weights.
    pub fn config(&self) -> anyhow::Result<ModelConfig> {
        Ok(match self {
            ModelSource::Hf(dir) => ModelConfig::from_hf_file(&dir.join("config.json"))?,
            ModelSource::Gguf(file) => {
                let gguf = GgufFile::open(file)?;
                ModelConfig::from_gguf(&gguf).map_err(|e| e.at(file))?
            }
            ModelSource::Lora { base, .. } => base.config()?,
        })
    }

    /// The folder (or GGUF file) whose tokenizer the model uses.
    pub fn tokenizer_path(&self) -> &Path {
        match self {
            ModelSource::Hf(dir) | ModelSource::Lora { dir, .. } => dir,
            ModelSource::Gguf(file) => file,
        }
    }

    /// The model's tokenizer (a LoRA artifact carries the tokenizer files of its base).
    pub fn tokenizer(&self) -> anyhow::Result<TokenizerBundle> {
        Ok(match self {
            ModelSource::Hf(_) | ModelSource::Gguf(_) => load_tokenizer(self.tokenizer_path())?,
            ModelSource::Lora { dir, .. } => TokenizerBundle::from_hf_dir(dir)?,
        })
    }

    /// Loads the model; a LoRA artifact comes with its adapters attached (not merged).
    pub fn load<B: Backend>(&self, device: &B::Device, dtype: Dtype) -> anyhow::Result<Llama<B>> {
        Ok(match self {
            ModelSource::Hf(path) | ModelSource::Gguf(path) => {
                load_model::<B>(path, device, dtype)
                    .with_context(|| format!("cannot load model `{}`", path.display()))?
                    .model
            }
            ModelSource::Lora { dir, base } => {
                let mut model = base.load::<B>(device, dtype)?;
                let adapter = Adapter::read(dir)?;
                adapter
                    .check(&model.config)
                    .with_context(|| format!("`{}` does not fit its base", dir.display()))?;
                adapter.attach(&mut model, device, dtype)?;
                model
            }
        })
    }
}

/// Loads the model at `path` (a Hugging Face folder, a GGUF file or folder, or a LoRA artifact, whose
/// adapters come attached), e.g. for chatting with a training step's result.
pub fn load_any<B: Backend>(
    path: &Path,
    device: &B::Device,
    dtype: Dtype,
) -> anyhow::Result<Llama<B>> {
    ModelSource::detect(path)?.load(device, dtype)
}

/// The short names of the projections an adapter config adapts, in layer order.
pub fn adapted_modules(cfg: &LoraConfig) -> Vec<&'static str> {
    LINEAR_MODULES
        .iter()
        .copied()
        .filter(|m| cfg.targets(m))
        .collect()
}

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

/// Copies the tokenizer and generation files of `source` into `out` (for a GGUF source, writes them
/// from the GGUF metadata), so `out` tokenizes like its source.
pub fn write_tokenizer_files(source: &ModelSource, out: &Path) -> anyhow::Result<()> {
    match source {
        ModelSource::Hf(dir) | ModelSource::Lora { dir, .. } => {
            for name in TOKENIZER_FILES {
                let src = dir.join(name);
                if src.is_file() {
                    link_or_copy(&src, &out.join(name))?;
                }
            }
            Ok(())
        }
        ModelSource::Gguf(file) => export_gguf_tokenizer(file, out),
    }
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
    let mut generation = serde_json::Map::new();
    if let Some(id) = bundle.bos_id {
        generation.insert("bos_token_id".into(), json!(id));
    }
    match bundle.eos_ids.as_slice() {
        [] => {}
        [one] => {
            generation.insert("eos_token_id".into(), json!(one));
        }
        many => {
            generation.insert("eos_token_id".into(), json!(many));
        }
    }
    if let Some(id) = bundle.pad_id {
        generation.insert("pad_token_id".into(), json!(id));
    }
    fs::write(
        out.join("generation_config.json"),
        serde_json::to_string_pretty(&Json::Object(generation))? + "\n",
    )?;
    Ok(())
}

/// `generation_config.json` from a model config's special ids.
pub fn generation_config(config: &ModelConfig) -> Json {
    let mut m = serde_json::Map::new();
    if let Some(id) = config.bos_token_id {
        m.insert("bos_token_id".into(), json!(id));
    }
    match config.eos_token_ids.as_slice() {
        [] => {}
        [one] => {
            m.insert("eos_token_id".into(), json!(one));
        }
        many => {
            m.insert("eos_token_id".into(), json!(many));
        }
    }
    if let Some(id) = config.pad_token_id {
        m.insert("pad_token_id".into(), json!(id));
    }
    Json::Object(m)
}

/// Writes full weights as a Hugging Face folder (`config.json`, `model.safetensors`) with the
/// tokenizer files of `source`. Adapters, if any, are merged first.
pub fn write_full<B: Backend>(
    model: Llama<B>,
    source: &ModelSource,
    out: &Path,
    dtype: SaveDtype,
) -> anyhow::Result<()> {
    let model = model.merge_lora();
    save_hf(&model, out, dtype)?;
    write_tokenizer_files(source, out)?;
    if !out.join("generation_config.json").is_file() {
        fs::write(
            out.join("generation_config.json"),
            serde_json::to_string_pretty(&generation_config(&model.config))? + "\n",
        )?;
    }
    Ok(())
}

/// How the base of a LoRA artifact gets into it.
pub enum BaseOut<'a, B: Backend> {
    /// Hard-link (or copy) the files of this source.
    Link(&'a ModelSource),
    /// Write these weights (a merged model), with the tokenizer files of the source.
    Write(&'a Llama<B>, &'a ModelSource),
}

/// Writes a LoRA artifact: the adapters of `model` in peft's layout, the base model in `base/`, and
/// the tokenizer files at the top.
pub fn write_lora<B: Backend>(
    model: &Llama<B>,
    cfg: &LoraConfig,
    base: BaseOut<'_, B>,
    out: &Path,
) -> anyhow::Result<()> {
    let named = model
        .lora_tensors()
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let values = t
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 data");
            (format!("{PEFT_PREFIX}{name}"), values, shape)
        })
        .collect();
    write_safetensors(&out.join(ADAPTER_WEIGHTS), named, SaveDtype::F32)?;
    let targets = adapted_modules(cfg);
    let config = json!({
        "alpha_pattern": {},
        "base_model_name_or_path": BASE_DIR,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_to_transform": null,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": cfg.rank,
        "rank_pattern": {},
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": cfg.rslora,
    });
    fs::write(
        out.join(ADAPTER_CONFIG),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    let base_dir = out.join(BASE_DIR);
    fs::create_dir_all(&base_dir)?;
    let tokenizer_source = match base {
        BaseOut::Link(source) => {
            link_base(source, &base_dir)?;
            source
        }
        BaseOut::Write(merged, source) => {
            save_hf(merged, &base_dir, SaveDtype::F32)?;
            write_tokenizer_files(source, &base_dir)?;
            source
        }
    };
    write_tokenizer_files(tokenizer_source, out)
}

/// Puts the files of a base model into `dest`: every file of a Hugging Face folder but its logs and
/// training state, or the one GGUF file.
fn link_base(source: &ModelSource, dest: &Path) -> anyhow::Result<()> {
    match source {
        ModelSource::Hf(dir) => {
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
        ModelSource::Gguf(file) => {
            let name = file.file_name().context("a GGUF file has a name")?;
            link_or_copy(file, &dest.join(name))
        }
        ModelSource::Lora { .. } => anyhow::bail!("a merged base must be written, not linked"),
    }
}
