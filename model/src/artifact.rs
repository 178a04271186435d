//! A model on disk, opened: the one type training, evaluation, export, chat and serving read a model
//! through.
//!
//! The principal type is [`ModelArtifact`]. It accepts a Hugging Face folder (`config.json` and
//! safetensors weights, single or sharded), a `.gguf` file or a folder holding exactly one, and a LoRA
//! artifact: a PEFT adapter with its base model in `base/`, as lf's training steps write it.
//!
//! ```text
//! adapter_config.json        peft's LoraConfig; base_model_name_or_path is "base"
//! adapter_model.safetensors  lora_A / lora_B with peft's names (base_model.model.model.layers.…)
//! base/                      the base model (a Hugging Face folder or one `.gguf` file)
//! tokenizer.json, …          the tokenizer files, so the artifact can be a `dataset` step's model
//! value_head.safetensors     a reward model's value head, when there is one
//! quantization_config.json   when the adapter was trained on a quantised base (QLoRA): how the
//!                            base's projections were quantised (Hugging Face's BitsAndBytesConfig
//!                            fields)
//! ```
//!
//! A LoRA artifact with a quantisation config computes with its base *as quantised*: loading it
//! quantises the base's projections the same way (and, for inference, dequantises them once), and
//! exporting merges the adapter into those dequantised values.
//!
//! Weights are streamed tensor by tensor ([`ModelArtifact::tensors`]), so exporting a model never
//! holds more than one tensor in memory besides the current shard; [`ModelArtifact::load`] builds a
//! burn [`Llama`] with the adapter attached beside the base weights (not merged).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use burn::tensor::backend::Backend;
use serde_json::Value as Json;

use crate::adapter::{ADAPTER_CONFIG, Adapter, BASE_DIR};
use crate::backend::Dtype;
use crate::config::ModelConfig;
use crate::gguf::GgufFile;
use crate::gguf::GgufSource;
use crate::gguf::tokenizer::TokenizerBundle;
use crate::linear::LINEAR_MODULES;
use crate::llama::{BuildOptions, Llama, TensorSource, hf_tensor_shapes};
use crate::load::{ModelFormat, SafetensorsSource, find_gguf, load_model_with, load_tokenizer};
use crate::quant::{QuantSpec, QuantizedMatrix};
use crate::value_head::VALUE_HEAD;

/// The file beside an adapter that says how its base was quantised in training.
pub const QUANTIZATION_CONFIG: &str = "quantization_config.json";

/// The files of a Hugging Face folder that describe its tokenizer.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// What kind of artifact a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// A Hugging Face folder.
    Hf,
    /// A GGUF file (dequantised to the compute dtype when loaded).
    Gguf,
    /// A LoRA adapter with its base.
    Lora,
}

/// A model artifact, opened: where its parts are, its config and its adapter.
#[derive(Debug, Clone)]
pub struct ModelArtifact {
    /// The artifact folder (or file) as given.
    pub root: PathBuf,
    /// What it is.
    pub kind: ArtifactKind,
    /// The base weights: a HF folder or a `.gguf` file.
    pub base: ModelFormat,
    /// The base model's config.
    pub config: ModelConfig,
    /// The raw `config.json` of the base, when it has one.
    pub config_json: Option<Json>,
    /// The LoRA adapter, for a LoRA artifact (checked against the base's shapes).
    pub adapter: Option<Adapter>,
    /// The folder holding the tokenizer files (`tokenizer.json` or the `.gguf`).
    pub tokenizer_dir: PathBuf,
    /// `value_head.safetensors`, when the model has one (reward models).
    pub value_head: Option<PathBuf>,
    /// How the base's projections were quantised when the adapter was trained (QLoRA).
    pub quantization: Option<QuantSpec>,
}

impl ModelArtifact {
    /// Opens `path`: a LoRA artifact if it holds `adapter_config.json`, else a HF folder, a `.gguf`
    /// file, or a folder with one `.gguf` file.
    pub fn open(path: &Path) -> anyhow::Result<ModelArtifact> {
        let is_lora = path.is_dir() && path.join(ADAPTER_CONFIG).is_file();
        let (kind, base_path, adapter) = if is_lora {
            let base = path.join(BASE_DIR);
            anyhow::ensure!(
                base.is_dir(),
                "`{}` holds a LoRA adapter but no `{BASE_DIR}/` folder with its base model\nhint: adapters written by lf carry their base; for others, train from the base model",
                path.display()
            );
            anyhow::ensure!(
                !base.join(ADAPTER_CONFIG).is_file(),
                "the base of `{}` is itself an adapter",
                path.display()
            );
            (ArtifactKind::Lora, base, Some(Adapter::read(path)?))
        } else {
            (ArtifactKind::Hf, path.to_path_buf(), None)
        };
        let base = if is_lora {
            ModelFormat::detect(&base_path)
                .with_context(|| format!("`{}` is not a model", base_path.display()))?
        } else {
            ModelFormat::detect(&base_path)?
        };
        let kind = match (&base, kind) {
            (ModelFormat::Gguf(_), ArtifactKind::Hf) => ArtifactKind::Gguf,
            (_, k) => k,
        };
        let (config, config_json) = match &base {
            ModelFormat::HfDir(dir) => {
                let file = dir.join("config.json");
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read `{}`", file.display()))?;
                let json: Json = serde_json::from_str(&text)
                    .with_context(|| format!("cannot parse `{}`", file.display()))?;
                (
                    ModelConfig::from_hf_json(&json).map_err(|e| e.at(&file))?,
                    Some(json),
                )
            }
            ModelFormat::Gguf(file) => {
                let gguf = GgufFile::open(file)?;
                (ModelConfig::from_gguf(&gguf).map_err(|e| e.at(file))?, None)
            }
        };
        if let Some(a) = &adapter {
            a.check(&config)
                .with_context(|| format!("`{}` does not fit its base", path.display()))?;
        }
        let base_dir = base_dir_of(&base);
        let root_dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            base_dir.clone()
        };
        let tokenizer_dir = if has_tokenizer(&root_dir) {
            root_dir.clone()
        } else {
            base_dir.clone()
        };
        let value_head = [root_dir.join(VALUE_HEAD), base_dir.join(VALUE_HEAD)]
            .into_iter()
            .find(|p| p.is_file());
        let quantization = if is_lora {
            read_quantization(&path.join(QUANTIZATION_CONFIG))?
        } else {
            None
        };
        Ok(ModelArtifact {
            root: path.to_path_buf(),
            kind,
            base,
            config,
            config_json,
            adapter,
            tokenizer_dir,
            value_head,
            quantization,
        })
    }

    /// The folder of the base model (for `generation_config.json` and the tokenizer files).
    pub fn base_dir(&self) -> PathBuf {
        base_dir_of(&self.base)
    }

    /// The base weights: a HF folder or a `.gguf` file.
    pub fn base_path(&self) -> &Path {
        match &self.base {
            ModelFormat::HfDir(d) => d,
            ModelFormat::Gguf(f) => f,
        }
    }

    /// Where the model's tokenizer is read from: the artifact folder of a LoRA artifact (which carries
    /// its base's tokenizer files), the folder of a HF model, or the `.gguf` file.
    pub fn tokenizer_path(&self) -> &Path {
        match self.kind {
            ArtifactKind::Lora => &self.root,
            ArtifactKind::Hf | ArtifactKind::Gguf => self.base_path(),
        }
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> anyhow::Result<TokenizerBundle> {
        Ok(match self.kind {
            ArtifactKind::Lora => TokenizerBundle::from_hf_dir(&self.root)?,
            ArtifactKind::Hf | ArtifactKind::Gguf => load_tokenizer(self.base_path())?,
        })
    }

    /// Visits every base tensor in [`hf_tensor_shapes`] order with its HF name, shape and f32 values,
    /// the adapter (if any) merged in.
    pub fn tensors(
        &self,
        mut visit: impl FnMut(&str, &[usize], Vec<f32>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let shapes = hf_tensor_shapes(&self.config);
        let gguf;
        let mut st;
        let mut gs;
        let src: &mut dyn TensorSource = match &self.base {
            ModelFormat::HfDir(dir) => {
                st = SafetensorsSource::open_dir(dir)?;
                &mut st
            }
            ModelFormat::Gguf(file) => {
                gguf = GgufFile::open(file)?;
                gs = GgufSource::new(&gguf, &self.config);
                &mut gs
            }
        };
        for (name, shape) in &shapes {
            let mut values = src
                .tensor(name, shape)
                .with_context(|| format!("cannot read `{name}` of `{}`", self.root.display()))?;
            if let Some(spec) = self.quantization
                && is_projection_weight(name)
            {
                values = QuantizedMatrix::quantize(&values, shape[0], shape[1], spec).dequantize();
            }
            if let Some(adapter) = &self.adapter
                && let Some(module) = name.strip_suffix(".weight")
                && let Some(lora) = adapter.modules.get(module)
            {
                lora.merge_into(&mut values, shape, adapter.scale(lora.rank()));
            }
            visit(name, shape, values)?;
        }
        Ok(())
    }

    /// Loads the model on `device` in `dtype`, with the adapter attached beside the base weights
    /// (not merged), as training left it.
    ///
    /// A base quantised in training is quantised the same way and dequantised again: the same
    /// function as in training, computed with dense products.
    pub fn load<B: Backend>(&self, device: &B::Device, dtype: Dtype) -> anyhow::Result<Llama<B>> {
        self.load_with(device, dtype, BuildOptions::default())
    }

    /// [`ModelArtifact::load`] with the decoder's projections stored as `options` says: quantised
    /// (QLoRA), or kept in a GGUF base's blocks. A base this artifact records as quantised one way
    /// and asked for another is quantised its own way first (the function the adapter was trained
    /// on), then dequantised and, if asked, quantised the other way.
    pub fn load_with<B: Backend>(
        &self,
        device: &B::Device,
        dtype: Dtype,
        options: BuildOptions,
    ) -> anyhow::Result<Llama<B>> {
        let path = self.base_path();
        let own = self.quantization;
        let build = BuildOptions {
            quantize: own.or(options.quantize),
            ..options
        };
        let mut model = load_model_with::<B>(path, device, dtype, build)
            .with_context(|| format!("cannot load model `{}`", path.display()))?
            .model;
        if own.is_some() && own != options.quantize {
            model = model.dequantize_linears();
            if let Some(spec) = options.quantize {
                model = model.quantize_linears(spec);
            }
        }
        if let Some(adapter) = &self.adapter {
            adapter.attach(&mut model, device, dtype)?;
        }
        Ok(model)
    }
}

/// Whether `name` is the weight of a decoder layer's projection (what QLoRA quantises).
pub fn is_projection_weight(name: &str) -> bool {
    name.starts_with("model.layers.")
        && name
            .strip_suffix(".weight")
            .and_then(|m| m.rsplit('.').next())
            .is_some_and(|m| LINEAR_MODULES.contains(&m))
}

/// The quantisation recorded in `path`, if the file exists.
fn read_quantization(path: &Path) -> anyhow::Result<Option<QuantSpec>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let json: Json = serde_json::from_str(&text)
        .with_context(|| format!("cannot parse `{}`", path.display()))?;
    let spec = QuantSpec::from_json(&json).with_context(|| format!("in `{}`", path.display()))?;
    Ok(Some(spec))
}

fn base_dir_of(base: &ModelFormat) -> PathBuf {
    match base {
        ModelFormat::HfDir(d) => d.clone(),
        ModelFormat::Gguf(f) => f.parent().unwrap_or(Path::new(".")).to_path_buf(),
    }
}

fn has_tokenizer(dir: &Path) -> bool {
    dir.join("tokenizer.json").is_file() || matches!(find_gguf(dir), Ok(Some(_)))
}
