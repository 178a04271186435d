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

/// Converts a LLaMA-Factory config; `name` is the pipeline's name (made a valid one), `file` what the
/// manifest will be called (for the commands its comments show), `local` whether a
/// `model_name_or_path` is a local folder (else a hub id). An error says why it cannot be.
pub fn llamafactory(
    text: &str,
    name: &str,
    file: &str,
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
    if c.map.contains_key("adapter_name_or_path") {
        return Err(
            "`adapter_name_or_path`: lf loads LoRA adapters from its own training steps (with their base); import the config that trained the adapter and chat with, serve or export that step"
                .into(),
        );
    }
    // LLaMA-Factory's default stage is `sft`: a config that names data trains.
    let stage = c.string("stage").or_else(|| {
        c.map
            .get("dataset")
            .is_some_and(|v| !v.is_null())
            .then(|| "sft".to_string())
    });
    let kind = match stage.as_deref() {
        Some("pt") => Some("pretrain"),
        Some("sft") => Some("sft"),
        Some("rm") => Some("rm"),
        Some("dpo") => Some("dpo"),
        Some("kto") => Some("kto"),
        Some(other @ "ppo") => {
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
        train(&mut c, &mut out, kind, model_step)?;
    } else if c.map.contains_key("export_dir") {
        export(&mut c, &mut out, model_step)?;
    } else {
        let step = model_step;
        out.comment(&format!(
            "A chat or API config: `lf chat -f {file} --model {step}`, or `lf serve -f {file} --model {step}`."
        ));
        for (key, why) in [
            ("template", "lf chats with the model's own chat template"),
            ("default_system", "`lf chat --system`"),
        ] {
            if let Some(v) = c.take(key) {
                c.notes.push(format!("{key}: {} ({why})", inline(&v)));
            }
        }
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
        manifest: out.text(&pipeline_name(name), &c.notes),
        unmapped: c.notes,
    })
}

/// `name` as a pipeline name: letters, digits, `-` and `_` (others become `-`), at most 64.
fn pipeline_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "imported".into()
    } else {
        clean
    }
}

/// A LLaMA-Factory list argument: a YAML list, or a comma-separated string (its `split_arg`).
fn names(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items.iter().map(inline).collect(),
        Some(v) => inline(&v).split(',').map(str::to_string).collect(),
        None => Vec::new(),
    }
    .into_iter()
    .map(|x| x.trim().to_string())
    .filter(|x| !x.is_empty())
    .collect()
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

fn train(c: &mut Config, out: &mut Manifest, kind: &str, model: &str) -> Result<(), String> {
    let stage = match kind {
        "pretrain" => "pt",
        "rm" | "dpo" => "rm",
        "kto" => "kto",
        _ => "sft",
    };
    // `REMOTE:org/name`: a hub dataset repository holding the `dataset_info.json`; else a folder
    // (`./`: never a step's name).
    let dir = c.string("dataset_dir").unwrap_or_else(|| "data".into());
    if dir == "ONLINE" {
        return Err(
            "`dataset_dir: ONLINE` names hub datasets: fetch each with a `download` step (repo_type: dataset) and name it as `source`"
                .into(),
        );
    }
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
    let datasets = names(c.take("dataset"));
    if datasets.is_empty() {
        return Err("`dataset` is missing: a training config names its data".into());
    }
    let probs = names(c.take("interleave_probs"))
        .iter()
        .map(|p| {
            p.parse::<f64>()
                .map_err(|_| format!("`interleave_probs`: `{p}` is not a number"))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    let mut data = vec![
        ("model".to_string(), model.to_string()),
        ("stage".to_string(), stage.to_string()),
        // LLaMA-Factory cuts a row longer than `cutoff_len`; lf's default drops it.
        ("truncation".to_string(), "cut".to_string()),
    ];
    if let Some(t) = c.string("template") {
        if stage == "pt" {
            c.notes
                .push(format!("template: {t} (pretraining uses none)"));
        } else {
            c.notes.push(template_note(&t));
            // LLaMA-Factory's `*_nothink` templates are the model's own with thinking off.
            if t.ends_with("_nothink") {
                data.push(("template_vars".into(), "{enable_thinking: false}".into()));
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
    let mix = c.string("mix_strategy").unwrap_or_else(|| "concat".into());
    match mix.as_str() {
        "concat" => {}
        "interleave_under" => data.push(("mix".into(), "interleave".into())),
        "interleave_over" => data.push(("mix".into(), "interleave_all".into())),
        other => {
            return Err(format!(
                "`mix_strategy: {other}` is not one LLaMA-Factory has"
            ));
        }
    }
    if !probs.is_empty() && (mix == "concat" || probs.len() != datasets.len()) {
        return Err(format!(
            "`interleave_probs` needs an interleaving `mix_strategy` and one probability per dataset ({} datasets, {} probabilities)",
            datasets.len(),
            probs.len()
        ));
    }
    let dir_value = scalar(&Value::String(dir));
    let entries: Vec<String> = datasets
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
                let _ = write!(e, ", probability: {}", scalar(&Value::from(*p)));
            }
            e.push('}');
            e
        })
        .collect();
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
    // LLaMA-Factory's default is `lora` for every stage (lf's `pretrain` defaults to `full`).
    match c.string("finetuning_type").as_deref() {
        Some(f @ ("lora" | "full" | "freeze")) => t.push(("finetuning_type".into(), f.into())),
        Some(other) => {
            return Err(format!(
                "`finetuning_type: {other}`: lf trains `full`, `freeze` or `lora`"
            ));
        }
        None => t.push(("finetuning_type".into(), "lora".into())),
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
    let target = names(c.take("lora_target"));
    if !target.is_empty() {
        lora.push(format!("target: {}", list(&target)));
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
    let modules = names(c.take("freeze_trainable_modules"));
    if !modules.is_empty() {
        freeze.push(format!("trainable_modules: {}", list(&modules)));
    }
    let extra = names(c.take("freeze_extra_modules"));
    if !extra.is_empty() {
        freeze.push(format!("extra_modules: {}", list(&extra)));
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
    let own: &[&str] = match kind {
        "dpo" => &[
            "pref_beta",
            "pref_loss",
            "pref_ftx",
            "simpo_gamma",
            "dpo_label_smoothing",
        ],
        "kto" => &[
            "pref_beta",
            "pref_ftx",
            "kto_chosen_weight",
            "kto_rejected_weight",
        ],
        _ => &[],
    };
    for key in own {
        if let Some(v) = c.take(key) {
            if kind == "kto" && *key == "pref_ftx" {
                c.notes.push(format!(
                    "pref_ftx: {} (kept as is, but lf adds it to each desirable row's loss, while LLaMA-Factory's KTO scales it by rows / desirable rows twice: with half the rows desirable, its term is 4x lf's)",
                    inline(&v)
                ));
            }
            t.push(((*key).into(), scalar(&v)));
        }
    }
    out.step(kind, kind, t);
    Ok(())
}

fn export(c: &mut Config, out: &mut Manifest, model: &str) -> Result<(), String> {
    let mut e = vec![("model".to_string(), model.to_string())];
    if let Some(t) = c.string("template") {
        c.notes.push(template_note(&t));
    }
    if let Some(size) = c.take("export_size") {
        // LLaMA-Factory's `export_size` is the shard size in GB.
        let gb = size.as_u64().ok_or_else(|| {
            format!(
                "`export_size: {}` is not a whole number of GB",
                inline(&size)
            )
        })?;
        e.push(("max_shard_size".into(), format!("{gb}GB")));
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
            if let Some(v) = c.take(key) {
                c.notes.push(format!(
                    "{key}: {} (with export_quantization_bit)",
                    inline(&v)
                ));
            }
        }
    }
    out.step("export", "export", e);
    Ok(())
}

/// The note for a LLaMA-Factory template: lf renders with the model's own chat template
/// (`template: auto`, the default), since LLaMA-Factory's templates differ from lf's built-in ones of
/// the same names (default system prompts, spacing, tool formats).
fn template_note(t: &str) -> String {
    let thinking = if t.ends_with("_nothink") {
        "; `template_vars: {enable_thinking: false}` for its no-thinking form"
    } else {
        ""
    };
    format!("template: {t} (the model's own chat template is used{thinking})")
}

/// Names as a YAML flow list.
fn list(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|x| scalar(&Value::String(x.clone())))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A value as YAML in flow context: a string plain when it reads back as the same string, else
/// quoted; lists and mappings as JSON (which YAML reads).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
                && !s.starts_with(['-', '.'])
                && serde_yaml::from_str::<Value>(s).is_ok_and(|back| back == *v);
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => serde_json::to_value(v)
            .map(|j| j.to_string())
            .unwrap_or_else(|_| "null".into()),
        other => inline(other),
    }
}

/// Any value on one line, for comments and messages.
fn inline(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_value(other)
            .map(|j| j.to_string())
            .unwrap_or_default(),
    };
    one_line(&text)
}

/// `text` with every line break made a space (a comment line must stay one line).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => ' ',
            c => c,
        })
        .collect()
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
            let _ = writeln!(s, "# {}", one_line(c));
        }
        if !notes.is_empty() {
            s.push_str("# Not mapped:\n");
            for n in notes {
                let _ = writeln!(s, "#   {}", one_line(n));
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
        let got = llamafactory(config, "qwen-sft", "q.yaml", |_| false).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&got.manifest).unwrap();
        let steps = &doc["steps"];
        assert_eq!(steps["model"]["repo"], "Qwen/Qwen2.5-0.5B-Instruct");
        let data = &steps["train-data"];
        assert!(data.get("template").is_none(), "the model's own template");
        assert_eq!(data["truncation"], "cut");
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
        for stage in ["ppo", "nope"] {
            let config = format!("model_name_or_path: a/b\nstage: {stage}\n");
            assert!(
                llamafactory(&config, "x", "x.yaml", |_| false).is_err(),
                "{stage}"
            );
        }
        assert!(llamafactory("- a list", "x", "x.yaml", |_| false).is_err());
        let e = llamafactory("stage: sft\n", "x", "x.yaml", |_| false)
            .err()
            .unwrap();
        assert!(e.contains("model_name_or_path"), "{e}");
    }

    /// Converts `config`, checks the manifest is YAML whose only top-level keys are `name` and
    /// `steps` (nothing escaped a comment), and returns it parsed.
    fn converted(config: &str) -> serde_yaml::Value {
        let got = llamafactory(config, "odd name.v2", "m.yaml", |_| false)
            .unwrap_or_else(|e| panic!("{e}\n{config}"));
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&got.manifest).unwrap_or_else(|e| panic!("{e}\n{}", got.manifest));
        let keys: Vec<&str> = doc
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["name", "steps"], "{}", got.manifest);
        assert_eq!(doc["name"], "odd-name-v2");
        doc
    }

    #[test]
    fn odd_values_stay_values_and_comments_stay_comments() {
        let doc = converted(
            "model_name_or_path: \"org/m\"
stage: pt
dataset: [wiki, \"c4: part #2\"]
dataset_dir: \"REMOTE:org/data\"
mix_strategy: interleave_under
interleave_probs: [0.25, 0.75]
max_samples: 100
lora_target: [q_proj, v_proj]
cutoff_len: 128
seed: \"-1\"
warmup_steps: null
output_dir: \"x\\nallow_outside: [/]\\r\\u2028y: 1\"
weird: {nested: [1, 2]}
",
        );
        let steps = &doc["steps"];
        assert_eq!(steps["dataset-dir"]["repo"], "org/data");
        assert_eq!(steps["dataset-dir"]["repo_type"], "dataset");
        let data = &steps["train-data"];
        assert_eq!(data["datasets"][1]["dataset_info"], "c4: part #2");
        assert_eq!(data["datasets"][1]["source"], "dataset-dir");
        assert_eq!(data["datasets"][1]["probability"], 0.75);
        assert_eq!(data["mix"], "interleave");
        assert_eq!(
            steps["pretrain"]["finetuning_type"], "lora",
            "LLaMA-Factory's default"
        );
        assert_eq!(steps["pretrain"]["lora"]["target"][1], "v_proj");
        assert_eq!(steps["pretrain"]["seed"], "-1", "a string stays a string");
    }

    #[test]
    fn thinking_off_templates_and_list_arguments() {
        let doc = converted(
            "model_name_or_path: org/m\nstage: dpo\ndataset: a , b\ntemplate: qwen3_nothink\npref_beta: 0.2\n",
        );
        let data = &doc["steps"]["train-data"];
        assert_eq!(data["template_vars"]["enable_thinking"], false);
        assert_eq!(data["stage"], "rm");
        assert_eq!(data["datasets"][1]["dataset_info"], "b");
        assert_eq!(doc["steps"]["dpo"]["pref_beta"], 0.2);
    }

    #[test]
    fn kto_configs_become_kto_steps_on_kto_data() {
        let doc = converted(
            "model_name_or_path: org/m\nstage: kto\ndataset: kto_en_demo\npref_beta: 0.2\nkto_rejected_weight: 1.5\n",
        );
        assert_eq!(doc["steps"]["train-data"]["stage"], "kto");
        let kto = &doc["steps"]["kto"];
        assert_eq!(kto["kind"], "kto");
        assert_eq!(kto["pref_beta"], 0.2);
        assert_eq!(kto["kto_rejected_weight"], 1.5);
    }

    #[test]
    fn configs_lf_cannot_honour_are_refused_with_the_reason() {
        for (config, says) in [
            (
                "model_name_or_path: a/b\nstage: ppo\ndataset: d\n",
                "no PPO stage",
            ),
            (
                "model_name_or_path: a/b\nadapter_name_or_path: saves/x\nexport_dir: out\n",
                "adapter_name_or_path",
            ),
            (
                "model_name_or_path: a/b\nstage: sft\ndataset: d\ndataset_dir: ONLINE\n",
                "ONLINE",
            ),
            (
                "model_name_or_path: a/b\nstage: sft\ndataset: null\n",
                "`dataset` is missing",
            ),
            (
                "model_name_or_path: a/b\nstage: sft\ndataset: a,b\ninterleave_probs: 0.5,0.5\n",
                "interleave_probs",
            ),
            (
                "model_name_or_path: a/b\nstage: sft\ndataset: a\nfinetuning_type: oft\n",
                "oft",
            ),
            (
                "model_name_or_path: a/b\nstage: sft\ndataset: a\ndo_predict: true\n",
                "do_predict",
            ),
            (
                "model_name_or_path: a/b\nexport_dir: o\nexport_size: 1.5\n",
                "export_size",
            ),
        ] {
            let e = llamafactory(config, "x", "x.yaml", |_| false)
                .err()
                .unwrap_or_else(|| panic!("{config}"));
            assert!(e.contains(says), "{config}: {e}");
        }
    }
}
