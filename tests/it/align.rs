//! Alignment through the `lf` binary on a tiny model: `rm` and `dpo` train and log their metrics, the
//! reward model keeps its value head, changing β re-runs only `dpo` and what reads it, and bad
//! preference settings are refused before anything runs.

use crate::common::{Project, Run, TINY_STEPS, ok};
use serde_json::Value as Json;

/// tokenizer → tiny model → built-in preference pairs (and identity conversations) → `steps`.
fn manifest(steps: &str) -> String {
    format!(
        r#"name: align-test
vars: {{name: Lumi, author: the lf authors}}
steps:
{TINY_STEPS}  prefs:
    kind: template
    source: builtin:identity_pref
    vars: {{name: "{{{{ vars.name }}}}", author: "{{{{ vars.author }}}}"}}
  pairs:
    kind: dataset
    model: base
    datasets: [{{source: prefs}}]
    stage: rm
    cutoff_len: 160
    val_size: 4
{steps}"#
    )
}

fn align(beta: &str) -> String {
    format!(
        r#"  rm:
    kind: rm
    model: base
    dataset: pairs
    finetuning_type: full
    max_steps: 4
    batch_size: 4
    learning_rate: 1.0e-3
    logging_steps: 2
  dpo:
    kind: dpo
    model: base
    dataset: pairs
    pref_beta: {beta}
    max_steps: 4
    batch_size: 4
    learning_rate: 1.0e-3
    logging_steps: 2
    save_steps: 2
  eval:
    kind: evaluate
    models: [rm, dpo]
    batch_size: 4
    reward: {{dataset: pairs}}
"#
    )
}

fn metrics(p: &Project, step: &str) -> Vec<Json> {
    p.read(&format!("runs/align-test/{step}/logs/metrics.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn plan_statuses(run: &Run) -> Vec<(String, String)> {
    run.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn rm_and_dpo_train_log_metrics_and_beta_reruns_only_dpo() {
    let p = Project::new();
    p.write("p.yaml", &manifest(&align("0.1")));
    let first = p.lf(&["run", "p.yaml", "--json"]);
    ok(&first);

    // The reward model: a value head beside full weights, accuracy and margin in its logs.
    let rm = p.path().join("runs/align-test/rm");
    assert!(rm.join("value_head.safetensors").is_file());
    assert!(rm.join("model.safetensors").is_file());
    let lines = metrics(&p, "rm");
    assert_eq!(lines.len(), 3, "{lines:?}"); // steps 2 and 4, and the validation split
    for key in ["loss", "accuracy", "margin", "grad_norm"] {
        assert!(lines[0].get(key).is_some(), "no `{key}` in {}", lines[0]);
    }
    for key in ["eval_loss", "eval_accuracy", "eval_margin"] {
        assert!(lines[2].get(key).is_some(), "no `{key}` in {}", lines[2]);
    }
    let state: Json =
        serde_json::from_str(&p.read("runs/align-test/rm/trainer_state.json")).unwrap();
    assert_eq!(state["stage"], "rm");

    // DPO: a LoRA adapter (the default), TRL's reward metrics per logging step.
    let dpo = p.path().join("runs/align-test/dpo");
    assert!(dpo.join("adapter_model.safetensors").is_file());
    assert!(!dpo.join("value_head.safetensors").exists());
    let lines = metrics(&p, "dpo");
    for key in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
    ] {
        assert!(lines[0].get(key).is_some(), "no `{key}` in {}", lines[0]);
    }
    // The first step starts from the reference itself: its loss is log 2.
    let state: Json =
        serde_json::from_str(&p.read("runs/align-test/dpo/trainer_state.json")).unwrap();
    assert_eq!(state["stage"], "dpo");
    let first_loss = state["log_history"][0]["loss"].as_f64().unwrap();
    assert!(
        (first_loss - std::f64::consts::LN_2).abs() < 1e-4,
        "{first_loss}"
    );
    assert!(
        first.json()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "dpo" && s["metrics"]["rewards/accuracies"].is_number()),
        "{}",
        first.stdout
    );

    // The evaluation scores the reward model with its head and DPO by log-probabilities.
    let results: Json = serde_json::from_str(&p.read("runs/align-test/eval/results.json")).unwrap();
    assert_eq!(results["models"][0]["reward"]["scorer"], "value_head");
    assert_eq!(results["models"][1]["reward"]["scorer"], "mean_logp");

    // A second run is fully cached.
    let again = p.lf(&["run", "p.yaml", "--json"]);
    ok(&again);
    assert!(
        again.statuses().iter().all(|(_, s)| s == "cached"),
        "{:?}",
        again.statuses()
    );

    // Changing β re-runs DPO and what reads it, nothing else.
    p.write("p.yaml", &manifest(&align("0.5")));
    let plan = p.lf(&["plan", "p.yaml", "--json"]);
    ok(&plan);
    for (name, status) in plan_statuses(&plan) {
        let want = match name.as_str() {
            "dpo" => "run",
            "eval" => "pending",
            _ => "cached",
        };
        assert_eq!(status, want, "{name}: {}", plan.stdout);
    }
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    for (name, status) in run.statuses() {
        let want = if name == "dpo" || name == "eval" {
            "ran"
        } else {
            "cached"
        };
        assert_eq!(status, want, "{name}: {:?}", run.statuses());
    }
}

fn refused(p: &Project, steps: &str, needles: &[&str]) {
    p.write("p.yaml", &manifest(steps));
    let run = p.lf(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for n in needles {
        assert!(run.stderr.contains(n), "no {n:?} in:\n{}", run.stderr);
    }
    // `lf plan` refuses the same manifest.
    let plan = p.lf(&["plan", "p.yaml"]);
    assert_eq!(plan.code, 2, "{}", plan.stderr);
}

#[test]
fn bad_preference_parameters_are_validation_errors() {
    let p = Project::new();
    refused(
        &p,
        r#"  dpo:
    kind: dpo
    model: base
    dataset: pairs
    pref_loss: kto
"#,
        &["p.yaml:30:16", "kto", "sigmoid"],
    );
    refused(
        &p,
        r#"  dpo:
    kind: dpo
    model: base
    dataset: pairs
    pref_beta: 0
    dpo_label_smoothing: 0.5
"#,
        &[
            "`pref_beta`",
            "must be a positive number, got 0",
            "`dpo_label_smoothing`",
            "must be in [0, 0.5)",
        ],
    );
    refused(
        &p,
        r#"  dpo:
    kind: dpo
    model: base
    dataset: pairs
    pref_loss: simpo
    ref_model: base
"#,
        &["`pref_loss: simpo` uses no reference model"],
    );
}

#[test]
fn rm_trains_with_a_margin_column() {
    let p = Project::new();
    let rows: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"instruction": "Who are you? ({i})", "chosen": "I am Lumi.", "rejected": "I am a cat.", "gap": {}}}"#,
                i as f64 / 2.0
            )
        })
        .collect();
    p.write("pairs.jsonl", &(rows.join("\n") + "\n"));
    p.write(
        "p.yaml",
        &manifest(
            r#"  mine:
    kind: dataset
    model: base
    datasets: [{source: pairs.jsonl, format: preference, columns: {margin: gap}}]
    stage: rm
  rm:
    kind: rm
    model: base
    dataset: mine
    max_steps: 2
    batch_size: 3
"#,
        ),
    );
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    assert_eq!(run.status_of("rm"), "ran");
    assert!(
        p.path()
            .join("runs/align-test/rm/value_head.safetensors")
            .is_file()
    );
}

#[test]
fn rm_on_conversations_is_refused_before_training() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &manifest(
            r#"  identity:
    kind: template
    source: builtin:identity
    vars: {name: Lumi, author: the lf authors}
  chats:
    kind: dataset
    model: base
    datasets: [{source: identity}]
  rm:
    kind: rm
    model: base
    dataset: chats
"#,
        ),
    );
    let run = p.lf(&["run", "p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`chats` was prepared for stage `sft`, but `rm` trains on stage `rm` data"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "hint: set `stage: rm` on the dataset step (`rm` trains on preference pairs)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn kto_trains_on_unpaired_preferences_and_refuses_pair_data() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &manifest(
            r#"  feedback:
    kind: dataset
    model: base
    datasets: [{source: prefs}]
    stage: kto
    cutoff_len: 160
    val_size: 4
  kto:
    kind: kto
    model: base
    dataset: feedback
    kto_rejected_weight: 1.2
    max_steps: 3
    batch_size: 4
    learning_rate: 1.0e-3
    logging_steps: 1
"#,
        ),
    );
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    // The data: each preference pair became a desirable and an undesirable row.
    let info: Json = serde_json::from_str(&p.read("runs/align-test/feedback/info.json")).unwrap();
    assert_eq!(info["stage"], "kto");
    assert_eq!(info["rows"], 140, "70 pairs, unpaired");
    // A LoRA adapter (the default) and TRL's KTO metrics per logged step.
    let kto = p.path().join("runs/align-test/kto");
    assert!(kto.join("adapter_model.safetensors").is_file());
    let lines = metrics(&p, "kto");
    for key in ["loss", "kl", "fraction/chosen"] {
        assert!(lines[0].get(key).is_some(), "no `{key}` in {}", lines[0]);
    }
    // A mean over the desirable (undesirable) rows is logged where a step had some.
    for key in ["rewards/chosen", "rewards/rejected", "logps/chosen"] {
        assert!(
            lines.iter().any(|l| l.get(key).is_some()),
            "no `{key}` in {lines:?}"
        );
    }
    assert!(lines.last().unwrap().get("eval_kl").is_some(), "{lines:?}");
    // The policy starts as its reference: every log-ratio and the KL estimate are 0, so each
    // example's loss is λ·(1 − σ(0)): the mean of 0.5 and 0.6 weighted by the batch's tags.
    let state: Json =
        serde_json::from_str(&p.read("runs/align-test/kto/trainer_state.json")).unwrap();
    assert_eq!(state["stage"], "kto");
    let first = &state["log_history"][0];
    let share = first["fraction/chosen"].as_f64().unwrap();
    let want = 0.5 * share + 0.6 * (1.0 - share);
    let got = first["loss"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    assert!(first["kl"].as_f64().unwrap().abs() < 1e-4, "{first}");

    // `dpo` on KTO data, and `kto` on pairs, are refused before they run.
    p.write(
        "p.yaml",
        &manifest(
            r#"  feedback:
    kind: dataset
    model: base
    datasets: [{source: prefs}]
    stage: kto
    cutoff_len: 160
    val_size: 4
  kto:
    kind: kto
    model: base
    dataset: pairs
  dpo:
    kind: dpo
    model: base
    dataset: feedback
"#,
        ),
    );
    let bad = p.lf(&["run", "p.yaml"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    for needle in ["set `stage: kto`", "set `stage: rm`"] {
        assert!(
            bad.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            bad.stderr
        );
    }
    // KTO rows are not packed.
    refused(
        &p,
        r#"  feedback:
    kind: dataset
    model: base
    datasets: [{source: prefs}]
    stage: kto
    packing: true
"#,
        &["`packing`: KTO rows cannot be packed"],
    );
}

#[test]
fn a_killed_kto_run_resumes_to_the_same_bytes() {
    // The KTO step's reference (own and mismatched replies) is cached in its scratch folder and
    // read back on resuming; the result must be what an uninterrupted run writes.
    let text = manifest(
        r#"  feedback:
    kind: dataset
    model: base
    datasets: [{source: prefs}]
    stage: kto
    cutoff_len: 160
  kto:
    kind: kto
    model: base
    dataset: feedback
    max_steps: 40
    batch_size: 4
    learning_rate: 1.0e-3
    save_steps: 3
"#,
    );
    let reference = Project::new();
    reference.write("p.yaml", &text);
    ok(&reference.lf(&["run", "p.yaml", "--only", "feedback"]));
    let start = std::time::Instant::now();
    ok(&reference.lf(&["run", "p.yaml"]));
    let train_ms = start.elapsed().as_millis() as u64;
    let expected = reference.outputs("p.yaml");

    // Kill at different moments until a run has resumed from a checkpoint.
    let mut resumed = false;
    for try_ in 1..=3u64 {
        let p = Project::new();
        p.write("p.yaml", &text);
        ok(&p.lf(&["run", "p.yaml", "--only", "feedback"]));
        let mut child = p.spawn(&["run", "p.yaml"]);
        std::thread::sleep(std::time::Duration::from_millis(train_ms * try_ / 4));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last = p.lf(&["run", "p.yaml", "--json"]);
        ok(&last);
        assert_eq!(
            p.outputs("p.yaml"),
            expected,
            "outputs differ after resuming"
        );
        resumed |= last.json()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "kto" && s["metrics"]["resumed_from_step"].is_u64());
        if resumed {
            break;
        }
    }
    assert!(resumed, "no run resumed from a checkpoint");
}
