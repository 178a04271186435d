//! The model artifacts `export` and `evaluate` read: a Hugging Face folder, a folder with one GGUF
//! file, or a LoRA artifact (a PEFT adapter with its base model in `base/`), opened as one
//! [`ModelArtifact`].
//!
//! Weights are streamed tensor by tensor ([`ModelArtifact::tensors`]) so exporting a model never holds
//! more than one tensor in memory besides the current shard; [`ModelArtifact::load`] builds a burn
//! [`Llama`] with the adapter attached (unmerged) for evaluation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use burn::module::Param;
use burn::nn::DropoutConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype as StDtype;
use serde_json::Value as Json;

use crate::model::config::ModelConfig;
use crate::model::gguf::GgufFile;
use crate::model::linear::{Linear, LoraAdapter};
use crate::model::llama::TensorSource;
use crate::model::load::{GgufSource, ModelFormat, SafetensorsSource};
use crate::model::{Dtype, Llama, load_model};

pub use crate::train::artifact::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX};
/// The value head of a reward model, next to the weights (LLaMA-Factory's name).
pub const VALUE_HEAD: &str = "value_head.safetensors";

/// What kind of artifact a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A Hugging Face folder.
    Hf,
    /// A GGUF file (dequantised to f32).
    Gguf,
    /// A LoRA adapter with its base.
    Lora,
}

/// A model artifact, opened: where its parts are, its config and its adapter.
#[derive(Debug)]
pub struct ModelArtifact {
    /// The artifact folder (or file) as given.
    pub root: PathBuf,
    /// What it is.
    pub kind: SourceKind,
    /// The base weights: a HF folder or a `.gguf` file.
    pub base: ModelFormat,
    /// The base model's config.
    pub config: ModelConfig,
    /// The raw `config.json` of the base, when it has one.
    pub config_json: Option<Json>,
    /// The LoRA adapter, for a LoRA artifact.
    pub adapter: Option<Adapter>,
    /// The folder holding the tokenizer files (`tokenizer.json` or the `.gguf`).
    pub tokenizer_dir: PathBuf,
    /// `value_head.safetensors`, when the model has one (reward models).
    pub value_head: Option<PathBuf>,
}

fn has_tokenizer(dir: &Path) -> bool {
    dir.join("tokenizer.json").is_file()
        || std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "gguf"))
        })
}

impl ModelArtifact {
    /// Opens `path`: a LoRA artifact if it holds `adapter_config.json`, else a HF folder, a `.gguf`
    /// file, or a folder with one `.gguf` file.
    pub fn open(path: &Path) -> anyhow::Result<ModelArtifact> {
        let is_lora = path.is_dir() && path.join(ADAPTER_CONFIG).is_file();
        let (kind, base_path, adapter) = if is_lora {
            let base = path.join("base");
            anyhow::ensure!(
                base.is_dir(),
                "`{}` holds a LoRA adapter but no `base/` folder with its base model",
                path.display()
            );
            (SourceKind::Lora, base, Some(Adapter::read(path)?))
        } else {
            (SourceKind::Hf, path.to_path_buf(), None)
        };
        let base = ModelFormat::detect(&base_path)
            .with_context(|| format!("`{}` is not a model", base_path.display()))?;
        let kind = match (&base, kind) {
            (ModelFormat::Gguf(_), SourceKind::Hf) => SourceKind::Gguf,
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
            a.check(&config)?;
        }
        let base_dir = match &base {
            ModelFormat::HfDir(d) => d.clone(),
            ModelFormat::Gguf(f) => f.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
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
        Ok(ModelArtifact {
            root: path.to_path_buf(),
            kind,
            base,
            config,
            config_json,
            adapter,
            tokenizer_dir,
            value_head,
        })
    }

    /// The folder of the base model (for `generation_config.json` and the tokenizer files).
    pub fn base_dir(&self) -> PathBuf {
        match &self.base {
            ModelFormat::HfDir(d) => d.clone(),
            ModelFormat::Gguf(f) => f.parent().unwrap_or(Path::new(".")).to_path_buf(),
        }
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
    pub fn load<B: Backend>(&self, device: &B::Device, dtype: Dtype) -> anyhow::Result<Llama<B>> {
        let path = match &self.base {
            ModelFormat::HfDir(d) => d.as_path(),
            ModelFormat::Gguf(f) => f.as_path(),
        };
        let mut model = load_model::<B>(path, device, dtype)
            .with_context(|| format!("cannot load the model in `{}`", path.display()))?
            .model;
        if let Some(adapter) = &self.adapter {
            adapter.attach(&mut model, device, dtype)?;
        }
        Ok(model)
    }
}

/// Every base tensor of a model with this config: its HF name and shape, in the order
/// [`Llama::hf_tensors`] lists them.
pub fn hf_tensor_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let ff = c.intermediate_size;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![c.vocab_size, h],
    )];
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let linears = [
            ("self_attn.q_proj", q, h, c.qkv_bias),
            ("self_attn.k_proj", kv, h, c.qkv_bias),
            ("self_attn.v_proj", kv, h, c.qkv_bias),
            ("self_attn.o_proj", h, q, c.o_bias),
            ("mlp.gate_proj", ff, h, c.mlp_bias),
            ("mlp.up_proj", ff, h, c.mlp_bias),
            ("mlp.down_proj", h, ff, c.mlp_bias),
        ];
        for (name, o, inp, bias) in linears {
            out.push((format!("{p}.{name}.weight"), vec![o, inp]));
            if bias {
                out.push((format!("{p}.{name}.bias"), vec![o]));
            }
        }
        if c.qk_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), vec![c.head_dim]));
            out.push((format!("{p}.self_attn.k_norm.weight"), vec![c.head_dim]));
        }
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![c.vocab_size, h]));
    }
    out
}

/// The two matrices of one adapted projection.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// `A` `[r, in]`, row-major.
    pub a: Vec<f32>,
    /// `[r, in]`.
    pub a_shape: [usize; 2],
    /// `B` `[out, r]`, row-major.
    pub b: Vec<f32>,
    /// `[out, r]`.
    pub b_shape: [usize; 2],
}

impl LoraPair {
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a_shape[0]
    }

    /// Adds `B·A·scale` to the weight `w` (`[out, in]`, row-major).
    ///
    /// Each row is accumulated in f64 in a fixed order and rounded once, so the result does not
    /// depend on the machine or the number of threads.
    pub fn merge_into(&self, w: &mut [f32], shape: &[usize], scale: f64) {
        let (out, inp, r) = (self.b_shape[0], self.a_shape[1], self.rank());
        debug_assert_eq!(shape, [out, inp]);
        w.par_chunks_mut(inp).enumerate().for_each(|(o, row)| {
            let mut acc = vec![0f64; inp];
            for k in 0..r {
                let bk = f64::from(self.b[o * r + k]);
                if bk == 0.0 {
                    continue;
                }
                let a_row = &self.a[k * inp..(k + 1) * inp];
                for (s, &a) in acc.iter_mut().zip(a_row) {
                    *s += bk * f64::from(a);
                }
            }
            for (x, s) in row.iter_mut().zip(&acc) {
                *x = (f64::from(*x) + s * scale) as f32;
            }
        });
    }
}

/// A PEFT LoRA adapter: `adapter_config.json` and the `A`/`B` matrices of each adapted projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// `adapter_config.json` as read (written back unchanged, apart from lf's normalisation).
    pub config: Json,
    /// `lora_alpha`.
    pub alpha: f64,
    /// `use_rslora`: scale by `alpha / sqrt(r)`.
    pub rslora: bool,
    /// Adapted projections by HF module name (`model.layers.0.self_attn.q_proj`).
    pub modules: BTreeMap<String, LoraPair>,
}

/// A named tensor on the host: name, shape, row-major f32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads every tensor of a safetensors file as f32 (F32, F16 and BF16 are accepted), by name.
pub fn read_f32_tensors(path: &Path) -> anyhow::Result<Vec<NamedTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("`{}` is not a safetensors file", path.display()))?;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    for name in names {
        let t = st.tensor(&name)?;
        let raw = t.data();
        let values: Vec<f32> = match t.dtype() {
            StDtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StDtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StDtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => anyhow::bail!(
                "`{}`: tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16",
                path.display()
            ),
        };
        out.push((name, t.shape().to_vec(), values));
    }
    Ok(out)
}

impl Adapter {
    /// Reads `adapter_config.json` and `adapter_model.safetensors` from `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Adapter> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read `{}`", cfg_path.display()))?;
        let config: Json = serde_json::from_str(&text)
            .with_context(|| format!("cannot parse `{}`", cfg_path.display()))?;
        let get = |k: &str| config.get(k).filter(|v| !v.is_null());
        if let Some(t) = get("peft_type").and_then(Json::as_str) {
            anyhow::ensure!(
                t.eq_ignore_ascii_case("lora"),
                "`{}`: peft_type `{t}` is not supported; only LORA",
                cfg_path.display()
            );
        }
        if get("use_dora").and_then(Json::as_bool) == Some(true) {
            anyhow::bail!("`{}`: DoRA adapters are not supported", cfg_path.display());
        }
        if get("alpha_pattern")
            .and_then(Json::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            anyhow::bail!(
                "`{}`: `alpha_pattern` is not supported (one lora_alpha for all modules)",
                cfg_path.display()
            );
        }
        if get("fan_in_fan_out").and_then(Json::as_bool) == Some(true) {
            anyhow::bail!(
                "`{}`: `fan_in_fan_out` adapters (GPT-2 Conv1D) do not apply to Llama-family models",
                cfg_path.display()
            );
        }
        let r = get("r").and_then(Json::as_f64).unwrap_or(8.0);
        let alpha = get("lora_alpha").and_then(Json::as_f64).unwrap_or(r);
        let rslora = get("use_rslora").and_then(Json::as_bool).unwrap_or(false);

        let weights = dir.join(ADAPTER_WEIGHTS);
        // Module name → (lora_A, lora_B), each (shape, values).
        type Half = Option<(Vec<usize>, Vec<f32>)>;
        let mut parts: BTreeMap<String, (Half, Half)> = BTreeMap::new();
        for (key, shape, values) in read_f32_tensors(&weights)? {
            let name = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key);
            let (module, which) = if let Some(m) = name
                .strip_suffix(".lora_A.weight")
                .or_else(|| name.strip_suffix(".lora_A.default.weight"))
            {
                (m, 'A')
            } else if let Some(m) = name
                .strip_suffix(".lora_B.weight")
                .or_else(|| name.strip_suffix(".lora_B.default.weight"))
            {
                (m, 'B')
            } else {
                anyhow::bail!(
                    "`{}`: unsupported adapter tensor `{key}`\nhint: lf reads LoRA `lora_A`/`lora_B` matrices of linear layers only (no `modules_to_save`, embedding adapters or DoRA)",
                    weights.display()
                );
            };
            anyhow::ensure!(
                shape.len() == 2,
                "`{}`: `{key}` has shape {shape:?}; expected a matrix",
                weights.display()
            );
            let slot = parts.entry(module.to_string()).or_default();
            if which == 'A' {
                slot.0 = Some((shape, values));
            } else {
                slot.1 = Some((shape, values));
            }
        }
        let mut modules = BTreeMap::new();
        for (module, (a, b)) in parts {
            let (Some((a_shape, a)), Some((b_shape, b))) = (a, b) else {
                anyhow::bail!(
                    "`{}`: `{module}` has only one of `lora_A` and `lora_B`",
                    weights.display()
                );
            };
            anyhow::ensure!(
                a_shape[0] == b_shape[1] && a_shape[0] > 0,
                "`{}`: `{module}`: lora_A {a_shape:?} and lora_B {b_shape:?} disagree on the rank",
                weights.display()
            );
            modules.insert(
                module,
                LoraPair {
                    a,
                    a_shape: [a_shape[0], a_shape[1]],
                    b,
                    b_shape: [b_shape[0], b_shape[1]],
                },
            );
        }
        anyhow::ensure!(
            !modules.is_empty(),
            "`{}` holds no LoRA matrices",
            weights.display()
        );
        Ok(Adapter {
            config,
            alpha,
            rslora,
            modules,
        })
    }

    /// The factor `B·A` is multiplied by for a module of rank `rank` (PEFT: `alpha / r`, or
    /// `alpha / sqrt(r)` with rsLoRA; `r` is the module's own rank, so `rank_pattern` works).
    pub fn scale(&self, rank: usize) -> f64 {
        if self.rslora {
            self.alpha / (rank as f64).sqrt()
        } else {
            self.alpha / rank as f64
        }
    }

    /// Checks that every adapted module is a projection of `config`'s model with matching shapes.
    pub fn check(&self, config: &ModelConfig) -> anyhow::Result<()> {
        let shapes: BTreeMap<String, Vec<usize>> = hf_tensor_shapes(config).into_iter().collect();
        for (module, pair) in &self.modules {
            let Some(shape) = shapes.get(&format!("{module}.weight")) else {
                anyhow::bail!(
                    "the adapter adapts `{module}`, which the base model does not have (or which is not a projection)"
                );
            };
            anyhow::ensure!(
                shape.len() == 2
                    && !module.ends_with("embed_tokens")
                    && pair.b_shape[0] == shape[0]
                    && pair.a_shape[1] == shape[1],
                "the adapter of `{module}` (A {:?}, B {:?}) does not fit its weight {shape:?}",
                pair.a_shape,
                pair.b_shape
            );
        }
        Ok(())
    }

    /// Writes the adapter in PEFT's layout into `dir`: `adapter_config.json` (the config read, with
    /// `r`, `lora_alpha`, `target_modules` and `peft_type` made explicit) and
    /// `adapter_model.safetensors` (f32, keys `base_model.model.<module>.lora_{A,B}.weight`).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut cfg = self.config.as_object().cloned().unwrap_or_default();
        let ranks: Vec<usize> = self.modules.values().map(LoraPair::rank).collect();
        let r = most_common(&ranks);
        let mut targets: Vec<String> = self
            .modules
            .keys()
            .map(|m| m.rsplit('.').next().unwrap_or(m).to_string())
            .collect();
        targets.sort();
        targets.dedup();
        cfg.entry("peft_type").or_insert("LORA".into());
        cfg.entry("task_type").or_insert("CAUSAL_LM".into());
        cfg.insert("r".into(), r.into());
        cfg.insert("lora_alpha".into(), json_number(self.alpha));
        cfg.insert("use_rslora".into(), self.rslora.into());
        cfg.insert("target_modules".into(), targets.into());
        cfg.entry("bias").or_insert("none".into());
        cfg.entry("fan_in_fan_out").or_insert(false.into());
        cfg.entry("inference_mode").or_insert(true.into());
        let pattern: serde_json::Map<String, Json> = self
            .modules
            .iter()
            .filter(|(_, p)| p.rank() != r)
            .map(|(m, p)| (m.clone(), p.rank().into()))
            .collect();
        cfg.insert("rank_pattern".into(), Json::Object(pattern));
        cfg.entry("alpha_pattern")
            .or_insert(Json::Object(Default::default()));
        let text = serde_json::to_string_pretty(&Json::Object(cfg))?;
        std::fs::write(dir.join(ADAPTER_CONFIG), text + "\n")?;
        let mut named = Vec::new();
        for (module, p) in &self.modules {
            named.push((
                format!("{PEFT_PREFIX}{module}.lora_A.weight"),
                p.a.clone(),
                p.a_shape.to_vec(),
            ));
            named.push((
                format!("{PEFT_PREFIX}{module}.lora_B.weight"),
                p.b.clone(),
                p.b_shape.to_vec(),
            ));
        }
        crate::model::load::write_safetensors(
            &dir.join(ADAPTER_WEIGHTS),
            named,
            crate::model::SaveDtype::F32,
        )?;
        Ok(())
    }

    /// Attaches the adapter to `model`'s projections (replacing any adapter there).
    pub fn attach<B: Backend>(
        &self,
        model: &mut Llama<B>,
        device: &B::Device,
        dtype: Dtype,
    ) -> anyhow::Result<()> {
        let dt = dtype.burn();
        let adapter_of = |pair: &LoraPair| LoraAdapter::<B> {
            a: Param::from_tensor(Tensor::from_data(
                TensorData::new(pair.a.clone(), pair.a_shape),
                (device, dt),
            )),
            b: Param::from_tensor(Tensor::from_data(
                TensorData::new(pair.b.clone(), pair.b_shape),
                (device, dt),
            )),
            dropout: DropoutConfig::new(0.0).init(),
            scale: self.scale(pair.rank()),
        };
        for (module, pair) in &self.modules {
            let slot: Option<&mut Linear<B>> = if module == "lm_head" {
                model.lm_head.as_mut()
            } else {
                linear_mut(model, module)
            };
            let Some(lin) = slot else {
                anyhow::bail!("the model has no projection `{module}` to attach an adapter to");
            };
            lin.lora = Some(adapter_of(pair));
        }
        Ok(())
    }
}

/// The projection called `module` (`model.layers.3.mlp.up_proj`).
fn linear_mut<'m, B: Backend>(model: &'m mut Llama<B>, module: &str) -> Option<&'m mut Linear<B>> {
    let rest = module.strip_prefix("model.layers.")?;
    let (layer, name) = rest.split_once('.')?;
    let layer = model.layers.get_mut(layer.parse::<usize>().ok()?)?;
    Some(match name {
        "self_attn.q_proj" => &mut layer.self_attn.q_proj,
        "self_attn.k_proj" => &mut layer.self_attn.k_proj,
        "self_attn.v_proj" => &mut layer.self_attn.v_proj,
        "self_attn.o_proj" => &mut layer.self_attn.o_proj,
        "mlp.gate_proj" => &mut layer.mlp.gate_proj,
        "mlp.up_proj" => &mut layer.mlp.up_proj,
        "mlp.down_proj" => &mut layer.mlp.down_proj,
        _ => return None,
    })
}

fn most_common(values: &[usize]) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for &v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(v, n)| (n, std::cmp::Reverse(v)))
        .map_or(8, |(v, _)| v)
}

/// A float as JSON, written as an integer when it is one (PEFT writes `lora_alpha: 16`).
fn json_number(x: f64) -> Json {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Json::from(x as i64)
    } else {
        Json::from(x)
    }
}
