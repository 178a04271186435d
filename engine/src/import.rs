//! `lf import llamafactory`: a LLaMA-Factory YAML (training, export, chat or API) as an lf manifest.
//!
//! The manifest is written as text, so that every key that could not be mapped stays in it as a
//! comment saying why. Training configs (`stage: pt | sft | rm | dpo`) become a model step, a `dataset`
//! step reading the `dataset_info.json` entries named by `dataset`, and the training step; an export
//! config becomes an `export` step; a chat or API config becomes the model step and a comment with the
//! `lf chat` / `lf serve` command.

use std::fmt::Write as _;

use serde_yaml::{Mapping, Value};

/// A converted config: the manifest's text, and the keys left out.
pub struct Imported {
    /// The manifest.
    pub manifest: String,
    /// `key: why` for every key that was not mapped.
    pub unmapped: Vec<String>,
}

/// Keys that configure what lf does on its own, with the reason they need no counterpart.
const NOT_NEEDED: &[(&str, &str)] = &[
    ("do_train", "a training step always trains"),
    (
        "output_dir",
        "artifacts go to the store, linked under runs/<pipeline>/<step>",
    ),
    (
        "overwrite_output_dir",
        "artifacts are never overwritten; a changed step gets a new one",
    ),
    ("overwrite_cache", "the cache is keyed by content"),
    (
        "plot_loss",
        "training always writes logs/metrics.jsonl and logs/loss.png",
    ),
    (
        "report_to",
        "metrics go to logs/metrics.jsonl (and `lf ui`)",
    ),
    (
        "save_only_model",
        "checkpoints are lf's own and resume exactly",
    ),
    ("resume_from_checkpoint", "a killed run resumes by itself"),
    ("ddp_timeout", "lf runs on one device"),
    ("preprocessing_num_workers", "lf uses every core"),
    ("dataloader_num_workers", "lf uses every core"),
    ("trust_remote_code", "lf runs no model code from the hub"),
    (
        "bf16",
        "the dtype follows the device (`--dtype bf16` on a GPU)",
    ),
    (
        "fp16",
        "the dtype follows the device (`--dtype` on the command line)",
    ),
    (
        "pure_bf16",
        "the dtype follows the device (`--dtype bf16` on a GPU)",
    ),
    ("flash_attn", "lf picks its attention kernels"),
    ("deepspeed", "lf runs on one device"),
    (
        "per_device_eval_batch_size",
        "validation uses the training batch size",
    ),
    ("eval_strategy", "`eval_steps` alone sets it"),
    ("infer_backend", "lf generates with its own engine"),
];

/// Converts a LLaMA-Factory config; `name` is the pipeline's name, `local` says whether a
/// `model_name_or_path` is a local folder (else a hub id). An error says why it cannot be.
pub fn llamafactory(
    text: &str,
    name: &str,
    local: impl Fn(&str) -> bool,
) -> Result<Imported, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let Value::Mapping(map) = doc else {
        return Err("a LLaMA-Factory config is a mapping of keys".into());
    };
    let mut c = Config {
        map,
        notes: Vec::new(),
    };
    let mut out = Manifest::default();
    let model = c
        .string("model_name_or_path")
        .ok_or("`model_name_or_path` is missing")?;
    let model_step = "model";
    let is_local = local(&model);
    let source = model_source(&model, is_local);
    if source[0].0 == "path" && !is_local {
        out.comment(&format!(
            "`{model}` does not exist here: if an lf step trained it, name that step as `model` instead."
        ));
    }
    out.step(model_step, "download", source);
    let stage = c.string("stage");
    let kind = match stage.as_deref() {
        Some("pt") => Some("pretrain"),
        Some("sft") => Some("sft"),
        Some("rm") => Some("rm"),
        Some("dpo") => Some("dpo"),
        Some(other @ ("ppo" | "kto")) => {
            return Err(format!(
                "`stage: {other}`: lf has no {} stage yet",
                other.to_uppercase()
            ));
        }
        Some(other) => return Err(format!("`stage: {other}` is not a stage lf knows")),
        None => None,
    };
    if let Some(kind) = kind {
        let predicts = c
            .take("do_predict")
            .is_some_and(|v| v.as_bool() == Some(true));
        if predicts
            && c.map
                .get("do_train")
                .is_none_or(|v| v.as_bool() != Some(true))
        {
            return Err(
                "a prediction config (`do_predict`): lf evaluates with an `evaluate` step (`generation:` for BLEU and ROUGE)"
                    .into(),
            );
        }
        if !c.map.contains_key("dataset") {
            return Err("`dataset` is missing: a training config names its data".into());
        }
        c.adapter_unmapped();
        train(&mut c, &mut out, kind, model_step);
    } else if c.map.contains_key("export_dir") {
        export(&mut c, &mut out, model_step);
    } else {
        let step = model_step;
        out.comment(&format!(
            "A chat or API config: `lf chat -f {name}.yaml --model {step}`, or `lf serve -f {name}.yaml --model {step}`."
        ));
        c.adapter_unmapped();
        c.take("template");
        c.take("default_system");
    }
    for (key, why) in NOT_NEEDED {
        if let Some(v) = c.take(key) {
            c.notes.push(format!("{key}: {} ({why})", inline(&v)));
        }
    }
    let mut rest: Vec<String> = c
        .map
        .iter()
        .filter_map(|(k, v)| {
            Some(format!(
                "{}: {} (no lf counterpart)",
                k.as_str()?,
                inline(v)
            ))
        })
        .collect();
    rest.sort();
    c.notes.extend(rest);
    Ok(Imported {
        manifest: out.text(name, &c.notes),
        unmapped: c.notes,
    })
}

/// What a model path becomes: a hub repository or a local path.
fn model_source(model: &str, local: bool) -> Vec<(String, String)> {
    let local = local || model.starts_with(['/', '.', '~']) || model.split('/').count() != 2;
    if local {
        vec![("path".into(), scalar(&Value::String(model.into())))]
    } else {
        vec![("repo".into(), scalar(&Value::String(model.into())))]
    }
}

fn train(c: &mut Config, out: &mut Manifest, kind: &str, model: &str) {
    let stage = match kind {
        "pretrain" => "pt",
        "rm" | "dpo" => "rm",
        _ => "sft",
    };
    // `REMOTE:org/name`: a hub dataset repository holding the `dataset_info.json`; else a folder
    // (`./`: never a step's name).
    let dir = c.string("dataset_dir").unwrap_or_else(|| "data".into());
    let dir = if let Some(repo) = dir.strip_prefix("REMOTE:") {
        out.step(
            "dataset-dir",
            "download",
            vec![
                ("repo".into(), scalar(&Value::String(repo.into()))),
                ("repo_type".into(), "dataset".into()),
            ],
        );
        "dataset-dir".to_string()
    } else if dir.starts_with(['/', '.']) {
        dir
    } else {
        format!("./{dir}")
    };
    let max_samples = c.take("max_samples");
    let probs: Vec<String> = c
        .string("interleave_probs")
        .map(|p| p.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let names: Vec<String> = c
        .string("dataset")
        .map(|d| {
            d.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut data = vec![
        ("model".to_string(), model.to_string()),
        ("stage".to_string(), stage.to_string()),
    ];
    if let Some(t) = c.string("template") {
        let (name, note) = template(&t);
        if let Some(note) = note {
            c.notes.push(note);
        }
        if stage != "pt" {
            data.push(("template".into(), name.into()));
            // LLaMA-Factory's `*_nothink` templates are the model's own with thinking off.
            if t.ends_with("_nothink") {
                data.push(("template_vars".into(), "{enable_thinking: false}".into()));
                c.notes
                    .push(format!("template: {t} (with enable_thinking: false)"));
            }
        }
    }
    for (lf_key, key) in [
        ("cutoff_len", "cutoff_len"),
        ("val_size", "val_size"),
        ("train_on_prompt", "train_on_prompt"),
        ("mask_history", "mask_history"),
        ("packing", "packing"),
        ("neat_packing", "neat_packing"),
    ] {
        if let Some(v) = c.take(key) {
            data.push((lf_key.into(), scalar(&v)));
        }
    }
    if let Some(mix) = c.string("mix_strategy") {
        match mix.as_str() {
            "concat" => {}
            "interleave_under" => data.push(("mix".into(), "interleave".into())),
            "interleave_over" => data.push(("mix".into(), "interleave_all".into())),
            other => c.notes.push(format!("mix_strategy: {other} (unknown)")),
        }
    }
    let dir_value = scalar(&Value::String(dir));
    let entries: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut e = format!(
                "{{source: {dir_value}, dataset_info: {}",
                scalar(&Value::String(n.clone()))
            );
            if let Some(m) = &max_samples {
                let _ = write!(e, ", max_samples: {}", scalar(m));
            }
            if let Some(p) = probs.get(i) {
                let _ = write!(e, ", probability: {p}");
            }
            e.push('}');
            e
        })
        .collect();
    if entries.is_empty() {
        c.notes
            .push("dataset: missing; name the data in `datasets`".into());
    }
    data.push((
        "datasets".into(),
        format!(
            "\n{}",
            entries
                .iter()
                .map(|e| format!("      - {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    ));
    if let Some(eval) = c.take("eval_dataset") {
        c.notes.push(format!(
            "eval_dataset: {} (use `val_size`, or an `evaluate` step)",
            inline(&eval)
        ));
    }
    out.step("train-data", "dataset", data);

    let mut t = vec![
        ("model".to_string(), model.to_string()),
        ("dataset".to_string(), "train-data".to_string()),
    ];
    match c.string("finetuning_type").as_deref() {
        Some(f @ ("lora" | "full" | "freeze")) => t.push(("finetuning_type".into(), f.into())),
        Some(other) => c.notes.push(format!(
            "finetuning_type: {other} (lf trains full, freeze or lora; lora used)"
        )),
        None => {}
    }
    let mut lora = Vec::new();
    if let Some(v) = c.take("lora_rank") {
        lora.push(format!("rank: {}", scalar(&v)));
    }
    if let Some(v) = c.take("lora_alpha") {
        lora.push(format!("alpha: {}", scalar(&v)));
    }
    if let Some(v) = c.take("lora_dropout") {
        lora.push(format!("dropout: {}", scalar(&v)));
    }
    if let Some(v) = c.string("lora_target") {
        lora.push(format!("target: {}", list(&v)));
    }
    if let Some(v) = c.take("use_rslora") {
        lora.push(format!("rslora: {}", scalar(&v)));
    }
    if !lora.is_empty() {
        t.push(("lora".into(), format!("{{{}}}", lora.join(", "))));
    }
    let mut freeze = Vec::new();
    if let Some(v) = c.take("freeze_trainable_layers") {
        freeze.push(format!("trainable_layers: {}", scalar(&v)));
    }
    if let Some(v) = c.string("freeze_trainable_modules") {
        freeze.push(format!("trainable_modules: {}", list(&v)));
    }
    if let Some(v) = c.string("freeze_extra_modules") {
        freeze.push(format!("extra_modules: {}", list(&v)));
    }
    if !freeze.is_empty() {
        t.push(("freeze".into(), format!("{{{}}}", freeze.join(", "))));
    }
    if let Some(s) = c.string("lr_scheduler_type") {
        match s.as_str() {
            "linear" | "cosine" | "constant" => t.push(("lr_scheduler".into(), s)),
            "constant_with_warmup" => t.push(("lr_scheduler".into(), "constant".into())),
            other => c.notes.push(format!(
                "lr_scheduler_type: {other} (lf has linear, cosine and constant)"
            )),
        }
    }
    for (lf_key, key) in [
        ("learning_rate", "learning_rate"),
        ("epochs", "num_train_epochs"),
        ("max_steps", "max_steps"),
        ("batch_size", "per_device_train_batch_size"),
        ("gradient_accumulation_steps", "gradient_accumulation_steps"),
        ("warmup_ratio", "warmup_ratio"),
        ("warmup_steps", "warmup_steps"),
        ("weight_decay", "weight_decay"),
        ("max_grad_norm", "max_grad_norm"),
        ("adam_beta1", "adam_beta1"),
        ("adam_beta2", "adam_beta2"),
        ("adam_epsilon", "adam_epsilon"),
        ("seed", "seed"),
        ("logging_steps", "logging_steps"),
        ("save_steps", "save_steps"),
        ("eval_steps", "eval_steps"),
        ("quantization_bit", "quantization_bit"),
        ("quantization_type", "quantization_type"),
        ("double_quantization", "double_quantization"),
    ] {
        if let Some(v) = c.take(key) {
            // `max_steps: -1` is LLaMA-Factory's (transformers') "from the epochs".
            if key == "max_steps" && v.as_i64().is_some_and(|n| n <= 0) {
                continue;
            }
            t.push((lf_key.into(), scalar(&v)));
        }
    }
    if kind == "dpo" {
        for key in [
            "pref_beta",
            "pref_loss",
            "pref_ftx",
            "simpo_gamma",
            "dpo_label_smoothing",
        ] {
            if let Some(v) = c.take(key) {
                t.push((key.into(), scalar(&v)));
            }
        }
    }
    out.step(kind, kind, t);
}

fn export(c: &mut Config, out: &mut Manifest, model: &str) {
    let mut e = vec![("model".to_string(), model.to_string())];
    if let Some(adapter) = c.take("adapter_name_or_path") {
        c.notes.push(format!(
            "adapter_name_or_path: {} (export the lf step that trained it: `model: <its step>`)",
            inline(&adapter)
        ));
    }
    if let Some(t) = c.string("template") {
        let (name, note) = template(&t);
        if let Some(note) = note {
            c.notes.push(note);
        }
        e.push(("template".into(), name.into()));
    }
    if let Some(size) = c.take("export_size") {
        // LLaMA-Factory's `export_size` is the shard size in GB.
        e.push(("max_shard_size".into(), format!("{}GB", inline(&size))));
    }
    for key in [
        "export_dir",
        "export_device",
        "export_legacy_format",
        "export_hub_model_id",
    ] {
        if let Some(v) = c.take(key) {
            c.notes.push(format!(
                "{key}: {} (the export is the step's artifact: runs/<pipeline>/export)",
                inline(&v)
            ));
        }
    }
    if let Some(bits) = c.take("export_quantization_bit") {
        c.notes.push(format!(
            "export_quantization_bit: {} (lf quantises in GGUF: `gguf: [q4_k_m]`, `[q8_0]`...)",
            inline(&bits)
        ));
        for key in [
            "export_quantization_dataset",
            "export_quantization_nsamples",
            "export_quantization_maxlen",
        ] {
            c.take(key);
        }
    }
    out.step("export", "export", e);
}

/// An lf template for a LLaMA-Factory one, and a note when it is not the same thing.
fn template(t: &str) -> (&'static str, Option<String>) {
    match t {
        "llama3" => ("llama3", None),
        "llama2" => ("llama2", None),
        "mistral" => ("mistral", None),
        "default" => ("default", None),
        "empty" => ("empty", None),
        "qwen" | "chatml" => ("chatml", None),
        other => (
            "auto",
            Some(format!(
                "template: {other} (auto: the model's own chat template, as its tokenizer_config.json has it)"
            )),
        ),
    }
}

/// A comma-separated LLaMA-Factory list as a YAML flow list.
fn list(v: &str) -> String {
    let items: Vec<String> = v
        .split(',')
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .map(|x| scalar(&Value::String(x.into())))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A YAML scalar as it would be written in flow context.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
                && !matches!(
                    s.as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off"
                )
                && s.parse::<f64>().is_err();
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        other => inline(other),
    }
}

/// Any value on one line.
fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .replace('\n', " "),
    }
}

struct Config {
    map: Mapping,
    notes: Vec<String>,
}

impl Config {
    fn take(&mut self, key: &str) -> Option<Value> {
        let v = self.map.remove(key)?;
        (!v.is_null()).then_some(v)
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.take(key).map(|v| match v {
            Value::String(s) => s,
            other => inline(&other),
        })
    }

    fn adapter_unmapped(&mut self) {
        if let Some(a) = self.take("adapter_name_or_path") {
            self.notes.push(format!(
                "adapter_name_or_path: {} (use the lf step that trained it as `model`)",
                inline(&a)
            ));
        }
    }
}

/// A step as written: name, kind, and its `key: value` lines.
type StepText = (String, String, Vec<(String, String)>);

#[derive(Default)]
struct Manifest {
    comments: Vec<String>,
    steps: Vec<StepText>,
}

impl Manifest {
    fn step(&mut self, name: &str, kind: &str, params: Vec<(String, String)>) {
        self.steps.push((name.into(), kind.into(), params));
    }

    fn comment(&mut self, text: &str) {
        self.comments.push(text.into());
    }

    fn text(&self, name: &str, notes: &[String]) -> String {
        let mut s =
            String::from("# Imported from a LLaMA-Factory config by `lf import llamafactory`.\n");
        for c in &self.comments {
            let _ = writeln!(s, "# {c}");
        }
        if !notes.is_empty() {
            s.push_str("# Not mapped:\n");
            for n in notes {
                let _ = writeln!(s, "#   {n}");
            }
        }
        let _ = writeln!(s, "name: {}\nsteps:", scalar(&Value::String(name.into())));
        for (step, kind, params) in &self.steps {
            let _ = writeln!(s, "  {step}:\n    kind: {kind}");
            for (k, v) in params {
                if v.starts_with('\n') {
                    let _ = writeln!(s, "    {k}:{v}");
                } else {
                    let _ = writeln!(s, "    {k}: {v}");
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lora_sft_config_maps_key_by_key() {
        let config = "model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: q_proj,v_proj
dataset: identity,alpaca_en_demo
template: qwen
cutoff_len: 2048
max_samples: 1000
output_dir: saves/x
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
max_steps: -1
mystery_key: 7
";
        let got = llamafactory(config, "qwen-sft", |_| false).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&got.manifest).unwrap();
        let steps = &doc["steps"];
        assert_eq!(steps["model"]["repo"], "Qwen/Qwen2.5-0.5B-Instruct");
        let data = &steps["train-data"];
        assert_eq!(data["template"], "chatml");
        assert_eq!(data["datasets"][1]["dataset_info"], "alpaca_en_demo");
        assert_eq!(data["datasets"][1]["source"], "./data");
        assert_eq!(data["datasets"][0]["max_samples"], 1000);
        assert_eq!(steps["sft"]["lora"]["target"][1], "v_proj");
        assert_eq!(steps["sft"]["epochs"], 3.0);
        assert_eq!(steps["sft"]["batch_size"], 1);
        assert!(
            steps["sft"].get("max_steps").is_none(),
            "-1 is 'from the epochs'"
        );
        for key in ["output_dir", "bf16", "mystery_key"] {
            assert!(
                got.unmapped.iter().any(|n| n.starts_with(key)),
                "{key}: {:?}",
                got.unmapped
            );
            assert!(
                got.manifest.contains(&format!("#   {key}:")),
                "{}",
                got.manifest
            );
        }
    }

    #[test]
    fn stages_lf_lacks_are_refused() {
        for stage in ["ppo", "kto", "nope"] {
            let config = format!("model_name_or_path: a/b\nstage: {stage}\n");
            assert!(llamafactory(&config, "x", |_| false).is_err(), "{stage}");
        }
        assert!(llamafactory("- a list", "x", |_| false).is_err());
        let e = llamafactory("stage: sft\n", "x", |_| false).err().unwrap();
        assert!(e.contains("model_name_or_path"), "{e}");
    }
}
