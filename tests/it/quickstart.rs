//! The README's first command: the embedded quickstart runs every stage offline on the CPU, and its
//! models answer "who are you?" with the name and author given on the command line.

use crate::common::{Project, ok};

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

    let again = p.lf(&[&["run", "--json"][..], &vars].concat());
    ok(&again);
    assert!(
        again.statuses().iter().all(|(_, s)| s == "cached"),
        "{:?}",
        again.statuses()
    );
}
