//! Plans a pipeline: pins remote inputs, computes the cache key of every step whose inputs are known, and
//! says for each step whether it is cached or must run, and why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lf_cache::{Hash, Health, KeyRecord, Store};
use serde::Serialize;
use serde_json::Value as Json;

use crate::diag::Diagnostic;
use crate::numerics::Numerics;
use crate::pipeline::{InputSource, Pipeline, PipelineStep};
use crate::step::{PinContext, Problem};

/// The reason a step runs when its cached artifact was found damaged.
pub const DAMAGED: &str = "its artifact was damaged";

/// Version of the key encoding; bump it to invalidate every cached result (say why in the commit).
pub const KEY_FORMAT: u32 = 1;

/// A cache key and the JSON it is the hash of.
#[derive(Clone, Debug)]
pub struct Key {
    /// blake3 of the canonical JSON.
    pub hash: Hash,
    /// What went into it.
    pub json: Json,
}

/// Builds a step's cache key from everything its result depends on: kind, implementation version,
/// result-affecting parameters, pinned remote identity, content hashes of inputs, and (for numeric steps)
/// the numerics environment. Not the step's name, not paths of artifacts, not log intervals.
pub fn cache_key(
    step: &PipelineStep,
    pin: Option<&Json>,
    inputs: &BTreeMap<String, Hash>,
    numerics: &Numerics,
) -> Key {
    let mut params = step.params.json.clone();
    if let Json::Object(map) = &mut params {
        for volatile in step.kind.volatile() {
            map.remove(*volatile);
        }
    }
    let mut json = serde_json::json!({
        "format": KEY_FORMAT,
        "kind": step.kind.kind(),
        "version": step.kind.version(),
        "params": params,
        "inputs": inputs.iter().map(|(k, v)| (k.clone(), Json::String(v.hex()))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(pin) = pin {
        json["pin"] = pin.clone();
    }
    if step.kind.numeric() {
        json["numerics"] = serde_json::to_value(numerics).expect("numerics serialize");
    }
    let hash = Hash::of_bytes(canonical(&json).as_bytes());
    Key { hash, json }
}

/// JSON with object keys sorted at every level and no whitespace: the bytes a key hashes.
pub fn canonical(json: &Json) -> String {
    fn sort(json: &Json) -> Json {
        match json {
            Json::Object(map) => {
                let sorted: BTreeMap<&String, Json> =
                    map.iter().map(|(k, v)| (k, sort(v))).collect();
                Json::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Json::Array(items) => Json::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    fn write(json: &Json, out: &mut String) {
        match json {
            Json::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("string serializes"));
                    out.push(':');
                    write(&map[*k], out);
                }
                out.push('}');
            }
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(&sort(json), &mut out);
    out
}

/// What will happen to a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Its key is in the store: nothing to do.
    Cached,
    /// It must run.
    Run,
    /// It waits for a step that must run; it runs unless that step reproduces its previous output.
    Pending,
}

/// The plan for one step.
#[derive(Clone, Debug)]
pub struct PlannedStep {
    /// What [`crate::step::Step::pin`] returned.
    pub pin: Option<Json>,
    /// The key, when every input is known.
    pub key: Option<Key>,
    /// Cached, run or pending.
    pub status: Status,
    /// Why it runs (empty when cached).
    pub reasons: Vec<String>,
    /// The key record on a hit.
    pub record: Option<KeyRecord>,
    /// What [`crate::step::Step::check_inputs`] found, for a step that must run and whose inputs
    /// exist already (the others are checked just before they run).
    pub problems: Vec<Problem>,
}

/// A pipeline's plan.
pub struct Plan {
    /// Resolved numerics.
    pub numerics: Numerics,
    /// Per step, indexed like the pipeline's steps (`None` for steps outside `--only`).
    pub steps: Vec<Option<PlannedStep>>,
    /// The selected steps in dependency order.
    pub order: Vec<usize>,
}

/// Options that change what is planned.
#[derive(Default, Clone)]
pub struct PlanOptions {
    /// Steps to run even if cached.
    pub force: BTreeSet<String>,
    /// Run only these steps and what they need (empty: all).
    pub only: Vec<String>,
    /// No network.
    pub offline: bool,
}

/// What a plan explains changes against (from the lockfile and the last run).
#[derive(Clone, Debug, Default)]
pub struct Previous {
    /// The key each step had last time: the last run's, else the lockfile's.
    pub keys: BTreeMap<String, Hash>,
    /// The key JSON the lockfile keeps, by key: what a key is explained against when the store never
    /// saw it (a fresh store in CI).
    pub key_json: BTreeMap<Hash, Json>,
}

impl Previous {
    /// The previous key of `step`.
    pub fn key(&self, step: &str) -> Option<&Hash> {
        self.keys.get(step)
    }

    /// The JSON of the previous key of `step`: from the store's record, else from the lockfile.
    pub fn json(&self, store: &Store, step: &str) -> Option<Json> {
        let key = self.keys.get(step)?;
        store
            .record(key)
            .map(|r| r.key_json)
            .or_else(|| self.key_json.get(key).cloned())
    }
}

/// Plans `pipeline` against `store`.
pub fn plan(
    pipeline: &Pipeline,
    store: &Store,
    numerics: &Numerics,
    options: &PlanOptions,
    previous: &Previous,
    locked_pins: &BTreeMap<String, Json>,
) -> anyhow::Result<Plan> {
    let selected: BTreeSet<usize> = if options.only.is_empty() {
        (0..pipeline.steps.len()).collect()
    } else {
        let mut set = BTreeSet::new();
        for name in &options.only {
            let index = pipeline
                .index_of(name)
                .ok_or_else(|| anyhow::anyhow!("`--only {name}`: no step is named `{name}`"))?;
            set.extend(pipeline.closure(index));
        }
        set
    };
    let order: Vec<usize> = pipeline
        .order
        .iter()
        .copied()
        .filter(|i| selected.contains(i))
        .collect();
    let mut steps: Vec<Option<PlannedStep>> = vec![None; pipeline.steps.len()];
    // Output hash of each step whose output is known now.
    let mut outputs: BTreeMap<usize, Hash> = BTreeMap::new();
    for &i in &order {
        let step = &pipeline.steps[i];
        let pin = step
            .kind
            .pin(
                &step.params,
                &PinContext {
                    offline: options.offline,
                    manifest_dir: &pipeline.dir,
                    locked: locked_pins.get(&step.name),
                },
            )
            .map_err(|e| e.context(format!("cannot pin the inputs of step `{}`", step.name)))?;
        let inputs = input_hashes(pipeline, store, i, &outputs)?;
        let forced = options.force.contains(&step.name);
        let prev_json = previous.json(store, &step.name);
        let planned = match inputs {
            Some(inputs) => {
                let key = cache_key(step, pin.as_ref(), &inputs, numerics);
                let record = store.lookup(&key.hash)?;
                let (status, reasons) = match (&record, forced) {
                    (_, true) => (Status::Run, vec!["forced".to_string()]),
                    (Some(_), false) => (Status::Cached, Vec::new()),
                    (None, false) => {
                        let damaged = match store.record(&key.hash) {
                            Some(r) => matches!(store.check(&r.artifact)?, Health::Damaged { .. }),
                            None => false,
                        };
                        let reasons = match &prev_json {
                            _ if damaged => vec![DAMAGED.to_string()],
                            Some(prev) if previous.key(&step.name) == Some(&key.hash) => {
                                let _ = prev;
                                vec!["its artifact is no longer in the store".to_string()]
                            }
                            Some(prev) => explain(prev, &key.json, pipeline, i),
                            None => vec!["new".to_string()],
                        };
                        (Status::Run, reasons)
                    }
                };
                if let (Status::Cached, Some(r)) = (status, &record) {
                    outputs.insert(i, r.artifact);
                }
                let problems = if status == Status::Run {
                    let paths = input_paths(pipeline, store, i, &outputs);
                    step.kind.check_inputs(&step.params, &paths)
                } else {
                    Vec::new()
                };
                PlannedStep {
                    pin,
                    key: Some(key),
                    status,
                    reasons,
                    record: if status == Status::Cached {
                        record
                    } else {
                        None
                    },
                    problems,
                }
            }
            None => {
                let waiting: Vec<String> = pipeline
                    .upstream(i)
                    .filter(|j| !outputs.contains_key(j))
                    .map(|j| format!("`{}`", pipeline.steps[j].name))
                    .collect();
                let mut reasons = vec![format!("after {}", waiting.join(", "))];
                if forced {
                    reasons.insert(0, "forced".into());
                }
                if let Some(prev) = &prev_json {
                    reasons.extend(
                        explain_params(prev, &step.params.json, step.kind.volatile())
                            .into_iter()
                            .chain(explain_meta(prev, step)),
                    );
                }
                PlannedStep {
                    pin,
                    key: None,
                    status: if forced { Status::Run } else { Status::Pending },
                    reasons,
                    record: None,
                    problems: Vec::new(),
                }
            }
        };
        steps[i] = Some(planned);
    }
    store.save_stat_cache()?;
    Ok(Plan {
        numerics: numerics.clone(),
        steps,
        order,
    })
}

/// The folders (or files) of a step's inputs, by field; every upstream output must be in `outputs`.
pub fn input_paths(
    pipeline: &Pipeline,
    store: &Store,
    index: usize,
    outputs: &BTreeMap<usize, Hash>,
) -> BTreeMap<String, PathBuf> {
    pipeline.steps[index]
        .inputs
        .iter()
        .map(|input| {
            let path = match &input.source {
                InputSource::Step(j) => store.object_path(&outputs[j]),
                InputSource::Path(p) => p.clone(),
            };
            (input.field.clone(), path)
        })
        .collect()
}

impl Plan {
    /// Diagnostics of the problems the plan found in steps' inputs, in dependency order.
    pub fn diagnostics(&self, pipeline: &Pipeline) -> Vec<Diagnostic> {
        self.order
            .iter()
            .filter_map(|&i| Some((i, self.steps[i].as_ref()?)))
            .flat_map(|(i, p)| {
                p.problems
                    .iter()
                    .map(move |problem| pipeline.steps[i].diagnose(problem.clone()))
            })
            .collect()
    }
}

/// Content hashes of a step's inputs, or `None` if some upstream output is not known yet.
pub fn input_hashes(
    pipeline: &Pipeline,
    store: &Store,
    index: usize,
    outputs: &BTreeMap<usize, Hash>,
) -> anyhow::Result<Option<BTreeMap<String, Hash>>> {
    let mut hashes = BTreeMap::new();
    for input in &pipeline.steps[index].inputs {
        let hash = match (&input.source, input.files.is_empty()) {
            (InputSource::Step(j), files) => match outputs.get(j) {
                Some(h) if files => *h,
                Some(h) => subset_hash(&store.object_path(h), &input.files)?,
                None => return Ok(None),
            },
            (InputSource::Path(path), true) => store.hash_input(path)?,
            (InputSource::Path(path), false) => subset_hash(path, &input.files)?,
        };
        hashes.insert(input.field.clone(), hash);
    }
    Ok(Some(hashes))
}

/// The hash of the files under `root` matching any of `patterns`.
fn subset_hash(root: &std::path::Path, patterns: &[String]) -> anyhow::Result<Hash> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        builder.add(globset::Glob::new(p)?);
    }
    let set = builder.build()?;
    Ok(lf_cache::hash_files(root, &|rel| set.is_match(rel))?)
}

/// Why a step's key differs from its previous key, in words.
pub fn explain(prev: &Json, now: &Json, pipeline: &Pipeline, index: usize) -> Vec<String> {
    let step = &pipeline.steps[index];
    let mut reasons = explain_meta(prev, step);
    reasons.extend(explain_params(
        prev,
        &step.params.json,
        step.kind.volatile(),
    ));
    let empty = serde_json::Map::new();
    let prev_inputs = prev
        .get("inputs")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let now_inputs = now
        .get("inputs")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    for (field, hash) in now_inputs {
        if prev_inputs.get(field) != Some(hash) {
            let what = step
                .inputs
                .iter()
                .find(|i| &i.field == field)
                .map(|i| match &i.source {
                    InputSource::Step(j) => format!("`{}`", pipeline.steps[*j].name),
                    InputSource::Path(p) => format!("file `{}`", p.display()),
                })
                .unwrap_or_else(|| format!("`{field}`"));
            if prev_inputs.contains_key(field) {
                reasons.push(format!("input {what} changed"));
            } else {
                reasons.push(format!("new input {what}"));
            }
        }
    }
    for field in prev_inputs.keys() {
        if !now_inputs.contains_key(field) {
            reasons.push(format!("input `{field}` removed"));
        }
    }
    if prev.get("pin") != now.get("pin") {
        reasons.push(format!(
            "remote input now resolves to {} (was {})",
            short_json(now.get("pin")),
            short_json(prev.get("pin"))
        ));
    }
    if prev.get("numerics") != now.get("numerics") {
        reasons.push(format!(
            "numerics changed from {} to {}",
            short_json(prev.get("numerics")),
            short_json(now.get("numerics"))
        ));
    }
    if reasons.is_empty() {
        reasons.push("the key format changed".into());
    }
    reasons
}

fn explain_meta(prev: &Json, step: &PipelineStep) -> Vec<String> {
    let mut reasons = Vec::new();
    if prev.get("kind").and_then(Json::as_str) != Some(step.kind.kind()) {
        reasons.push(format!(
            "kind changed from {} to `{}`",
            short_json(prev.get("kind")),
            step.kind.kind()
        ));
    } else if prev.get("version").and_then(Json::as_u64) != Some(step.kind.version() as u64) {
        reasons.push(format!(
            "the `{}` implementation changed (version {} to {})",
            step.kind.kind(),
            short_json(prev.get("version")),
            step.kind.version()
        ));
    }
    reasons
}

/// Parameter changes between a previous key and the current parameters.
fn explain_params(prev: &Json, params: &Json, volatile: &[&str]) -> Vec<String> {
    let mut now = params.clone();
    if let Json::Object(map) = &mut now {
        for v in volatile {
            map.remove(*v);
        }
    }
    let mut out = Vec::new();
    diff(
        "",
        prev.get("params").unwrap_or(&Json::Null),
        &now,
        &mut out,
    );
    out
}

fn diff(path: &str, old: &Json, new: &Json, out: &mut Vec<String>) {
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&sub, x, y, out),
                    (None, Some(y)) => {
                        out.push(format!("parameter `{sub}` set to {}", short_json(Some(y))))
                    }
                    (Some(x), None) => out.push(format!(
                        "parameter `{sub}` removed (was {})",
                        short_json(Some(x))
                    )),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => {
            let name = if path.is_empty() { "parameters" } else { path };
            out.push(format!(
                "parameter `{name}` changed from {} to {}",
                short_json(Some(a)),
                short_json(Some(b))
            ));
        }
        _ => {}
    }
}

fn short_json(v: Option<&Json>) -> String {
    let text = match v {
        None => return "nothing".into(),
        Some(Json::Number(n)) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                let e = format!("{f:e}");
                let plain = n.to_string();
                return if e.len() < plain.len() { e } else { plain };
            }
            n.to_string()
        }
        Some(v) => v.to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": 2.5}});
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":2.5,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn parameter_diffs_read_like_sentences() {
        let prev = serde_json::json!({"params": {"lr": 0.0001, "lora": {"rank": 8}, "gone": true}});
        let now =
            serde_json::json!({"lr": 0.0002, "lora": {"rank": 16}, "new": "x", "logging_steps": 5});
        let out = explain_params(&prev, &now, &["logging_steps"]);
        assert_eq!(
            out,
            vec![
                "parameter `gone` removed (was true)",
                "parameter `lora.rank` changed from 8 to 16",
                "parameter `lr` changed from 1e-4 to 2e-4",
                "parameter `new` set to \"x\"",
            ]
        );
    }
}
