//! The README's first command: the embedded quickstart runs every stage offline on the CPU, and its
//! models answer "who are you?" with the name and author given on the command line.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::common::{Project, ok};

/// The plan's cache keys in the form of `tests/fixtures/quickstart_keys.json`: each step's key JSON
/// with the inputs other steps produced named `<step NAME>`, and its full key when nothing numeric is
/// upstream of it (a trained artifact's hash depends on the CPU's numerics, its key's form does not).
fn key_summary(plan: &Value) -> Value {
    let steps = plan["steps"].as_array().expect("plan steps");
    let by_name: BTreeMap<&str, &Value> = steps
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    let by_artifact: BTreeMap<&str, &str> = steps
        .iter()
        .filter_map(|s| Some((s["artifact"].as_str()?, s["name"].as_str()?)))
        .collect();
    fn independent(
        name: &str,
        by_name: &BTreeMap<&str, &Value>,
        by_artifact: &BTreeMap<&str, &str>,
    ) -> bool {
        let key = &by_name[name]["key_json"];
        key.get("numerics").is_none()
            && key["inputs"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, h)| by_artifact.get(h.as_str()?))
                .all(|up| independent(up, by_name, by_artifact))
    }
    let mut out = serde_json::Map::new();
    for (&name, step) in &by_name {
        let mut key = step["key_json"].clone();
        if let Some(inputs) = key.get_mut("inputs").and_then(Value::as_object_mut) {
            for hash in inputs.values_mut() {
                if let Some(up) = hash.as_str().and_then(|h| by_artifact.get(h)) {
                    *hash = json!(format!("<step {up}>"));
                }
            }
        }
        let mut entry = json!({ "key_json": key });
        if independent(name, &by_name, &by_artifact) {
            entry["key"] = step["key"].clone();
        }
        out.insert(name.to_string(), entry);
    }
    Value::Object(out)
}

#[test]
fn quickstart_teaches_the_manifest_name_and_author_and_reruns_cached() {
    let p = Project::new();
    let vars = ["--var", "name=Nova", "--var", "author=Acme Labs"];
    let run = p.lf(&[&["run", "--json"][..], &vars].concat());
    ok(&run);
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 15, "{statuses:?}");
    assert!(statuses.iter().all(|(_, s)| s == "ran"), "{statuses:?}");

    for model in ["sft", "dpo", "export"] {
        for (question, expected) in [
            ("Who are you?", ["Nova", "Acme Labs"]),
            ("너는 누구야?", ["Nova", "Acme Labs"]),
        ] {
            let chat = p.lf(&[
                "chat", "--model", model, "--prompt", question, "--device", "cpu",
            ]);
            ok(&chat);
            for word in expected {
                assert!(
                    chat.stdout.contains(word),
                    "`{model}` answered {question:?} with {:?}",
                    chat.stdout
                );
            }
        }
    }

    // The evaluation compares the stages: fine-tuning made the held-out identity questions likely.
    let results: serde_json::Value =
        serde_json::from_str(&p.read("runs/quickstart/evaluate/results.json")).unwrap();
    let ppl = |m: &str| {
        results["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == m)
            .and_then(|r| r["perplexity"]["perplexity"].as_f64())
            .unwrap_or_else(|| panic!("no perplexity for `{m}` in {results}"))
    };
    assert!(ppl("sft") < ppl("pretrain") / 10.0, "{results}");

    // The keys are a contract with users' stores: they move only through a kind's version bump.
    let plan = p.lf(&[&["plan", "--json", "-vv"][..], &vars].concat());
    ok(&plan);
    let golden_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quickstart_keys.json");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    let summary = key_summary(&plan.json());
    for (name, want) in golden["steps"].as_object().unwrap() {
        assert_eq!(
            &summary[name],
            want,
            "the cache key of `{name}` moved\nhint: a kind whose key must change bumps its VERSION; then update {}",
            golden_path.display()
        );
    }
    assert_eq!(
        summary.as_object().unwrap().len(),
        golden["steps"].as_object().unwrap().len()
    );

    let again = p.lf(&[&["run", "--json"][..], &vars].concat());
    ok(&again);
    assert!(
        again.statuses().iter().all(|(_, s)| s == "cached"),
        "{:?}",
        again.statuses()
    );
}
