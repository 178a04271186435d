//! LoRA adapters in PEFT's layout: the one reader and the one writer of `adapter_config.json` and
//! `adapter_model.safetensors`, used by training (which writes them), loading (which attaches them),
//! export (which merges or copies them) and evaluation.
//!
//! The principal type is [`Adapter`]: the config as read or built, and the `A`/`B` matrices of each
//! adapted projection on the host. [`Adapter::write`] writes the config verbatim, so an adapter lf
//! trained is written byte for byte as training built it; [`Adapter::normalized`] makes every key
//! explicit for adapters read from other tools.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use burn::module::Param;
use burn::nn::DropoutConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use serde_json::{Value as Json, json};

use crate::backend::{Dtype, burn_dtype};
use crate::config::ModelConfig;
use crate::linear::{LINEAR_MODULES, Linear, LoraAdapter, LoraConfig};
use crate::llama::{Llama, hf_tensor_shapes};
use crate::load::{SaveDtype, read_f32_tensors, write_safetensors};

/// One of an adapter's two matrices, once found: its shape and row-major values.
type Half = Option<(Vec<usize>, Vec<f32>)>;

/// peft's adapter config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// peft's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix peft puts before the model's own parameter names.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// The folder of an lf LoRA artifact that holds its base model (the adapter config's
/// `base_model_name_or_path`).
pub const BASE_DIR: &str = "base";

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

impl Adapter {
    /// The adapters attached to `model`, with the PEFT config of `cfg` (targets in layer order, the
    /// base at [`BASE_DIR`]), as training writes them.
    pub fn from_model<B: Backend>(model: &Llama<B>, cfg: &LoraConfig) -> anyhow::Result<Adapter> {
        let mut modules = BTreeMap::new();
        let mut halves: BTreeMap<String, [Half; 2]> = BTreeMap::new();
        for (name, t) in model.lora_tensors() {
            let shape = t.dims().to_vec();
            let values = t
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("cannot read the adapter `{name}`: {e:?}"))?;
            let (module, which) = match name.strip_suffix(".lora_A.weight") {
                Some(m) => (m, 0),
                None => match name.strip_suffix(".lora_B.weight") {
                    Some(m) => (m, 1),
                    None => anyhow::bail!("unexpected adapter tensor `{name}`"),
                },
            };
            halves.entry(module.to_string()).or_default()[which] = Some((shape, values));
        }
        for (module, [a, b]) in halves {
            let (Some((a_shape, a)), Some((b_shape, b))) = (a, b) else {
                anyhow::bail!("the adapter of `{module}` lacks one of its matrices");
            };
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
        Ok(Adapter {
            config: peft_config(cfg),
            alpha: cfg.alpha,
            rslora: cfg.rslora,
            modules,
        })
    }
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
        // Module name → (lora_A, lora_B).
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

    /// The same adapter with `r`, `lora_alpha`, `target_modules`, `rank_pattern` and `peft_type`
    /// made explicit in its config (for adapters other tools wrote, whose configs omit defaults).
    pub fn normalized(&self) -> Adapter {
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
        Adapter {
            config: Json::Object(cfg),
            ..self.clone()
        }
    }

    /// Writes the adapter in PEFT's layout into `dir`: `adapter_config.json` (the config as it is)
    /// and `adapter_model.safetensors` (f32, keys `base_model.model.<module>.lora_{A,B}.weight`).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = serde_json::to_string_pretty(&self.config)?;
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
        write_safetensors(&dir.join(ADAPTER_WEIGHTS), named, SaveDtype::F32)?;
        Ok(())
    }

    /// Attaches the adapter to `model`'s projections (replacing any adapter there).
    pub fn attach<B: Backend>(
        &self,
        model: &mut Llama<B>,
        device: &B::Device,
        dtype: Dtype,
    ) -> anyhow::Result<()> {
        let dt = burn_dtype(dtype);
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

/// The short names of the projections `cfg` adapts, in layer order.
pub fn adapted_modules(cfg: &LoraConfig) -> Vec<&'static str> {
    LINEAR_MODULES
        .iter()
        .copied()
        .filter(|m| cfg.targets(m))
        .collect()
}

/// peft's `LoraConfig` JSON for an adapter lf trains with `cfg`.
pub fn peft_config(cfg: &LoraConfig) -> Json {
    json!({
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
        "target_modules": adapted_modules(cfg),
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": cfg.rslora,
    })
}
