//! `export` and `evaluate` through the `lf` binary, offline: a tiny model built from scratch is exported
//! (safetensors, GGUF, Modelfile) and evaluated beside its export; the export must score exactly like
//! the model, results are cached, and latency stays out of the artifact's hash.

use crate::common::{Project, ok};
use serde_json::Value as Json;

const PIPELINE: &str = r#"name: ee
vars:
  name: Lumi
  author: the lf authors
steps:
  tok:
    kind: tokenizer
    source: builtin:corpus
    vocab_size: 400
  base:
    kind: model
    tokenizer: tok
    hidden_size: 64
    intermediate_size: 128
    num_hidden_layers: 2
    num_attention_heads: 4
  identity:
    kind: template
    source: builtin:identity
    vars: {name: "{{ vars.name }}", author: "{{ vars.author }}"}
  identity-eval:
    kind: template
    source: builtin:identity_eval
    vars: {name: "{{ vars.name }}", author: "{{ vars.author }}"}
  data:
    kind: dataset
    model: tok
    datasets: [{source: identity}]
    cutoff_len: 256
    val_size: 8
  export:
    kind: export
    model: base
    max_shard_size: 200KB
    gguf: [q8_0]
    ollama: true
  eval:
    kind: evaluate
    models: [base, export]
    batch_size: 4
    perplexity: {dataset: data}
    generation: {source: identity-eval, max_new_tokens: 4, max_samples: 3}
    multiple_choice: {shots: 1, max_samples: 6}
    latency: {prompt_tokens: 8, new_tokens: 2, runs: 1}
"#;

fn read_json(p: &Project, rel: &str) -> Json {
    serde_json::from_str(&p.read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn exported_model_scores_like_the_original_and_results_cache() {
    let p = Project::new();
    p.write("p.yaml", PIPELINE);
    let first = p.lf(&["run", "p.yaml", "--json"]);
    ok(&first);
    assert!(
        first.statuses().iter().all(|(_, s)| s == "ran"),
        "{:?}",
        first.statuses()
    );

    let export = read_json(&p, "runs/ee/export/export.json");
    let files = export["weights"]["files"].as_array().unwrap();
    assert!(files.len() > 1, "{export}");
    assert!(
        p.path()
            .join("runs/ee/export/model.safetensors.index.json")
            .is_file()
    );
    assert!(p.path().join("runs/ee/export/model-q8_0.gguf").is_file());
    assert_eq!(export["ollama"]["template"], true);
    let modelfile = p.read("runs/ee/export/Modelfile");
    assert!(modelfile.contains("FROM ./model-q8_0.gguf"), "{modelfile}");
    assert!(
        modelfile.contains("PARAMETER stop \"<|im_end|>\""),
        "{modelfile}"
    );

    // The f32 export computes exactly what the model does.
    let results = read_json(&p, "runs/ee/eval/results.json");
    let models = results["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for task in ["perplexity", "generation", "multiple_choice"] {
        assert!(models[0][task].is_object(), "{task}: {results}");
        assert_eq!(models[0][task], models[1][task], "{task}");
    }
    assert_eq!(models[0]["perplexity"]["split"], "val");
    assert_eq!(models[0]["generation"]["samples"], 3);
    let report = p.read("runs/ee/eval/report.md");
    assert!(report.contains("| metric | base | export |"), "{report}");
    assert!(p.path().join("runs/ee/eval/logs/latency.json").is_file());
    let preds = p.read("runs/ee/eval/predictions.jsonl");
    assert_eq!(preds.lines().count(), 2 * (3 + 6));
    // Headline numbers reach the run summary.
    let eval = first.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "eval")
        .cloned()
        .unwrap();
    let metrics = eval["metrics"].as_object().unwrap();
    assert!(metrics.contains_key("export.perplexity"), "{eval}");
    assert!(metrics.contains_key("base.mc_accuracy"), "{eval}");

    let again = p.lf(&["run", "p.yaml", "--json"]);
    ok(&again);
    assert!(again.statuses().iter().all(|(_, s)| s == "cached"));

    // Re-running reproduces the same artifacts: latency lives under logs/, outside the hash.
    let before = p.outputs("p.yaml");
    let forced = p.lf(&[
        "run", "p.yaml", "--force", "eval", "--force", "export", "--json",
    ]);
    ok(&forced);
    assert_eq!(forced.status_of("eval"), "ran");
    assert_eq!(p.outputs("p.yaml"), before);
}

#[test]
fn bad_parameters_are_reported_before_running() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: bad
steps:
  export:
    kind: export
    model: somewhere
    max_shard_size: lots
    ollama: true
  eval:
    kind: evaluate
    models: []
"#,
    );
    let run = p.lf(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for needle in [
        "max_shard_size",
        "needs a GGUF file to point at",
        "no models to evaluate",
        "no task to evaluate",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
}
