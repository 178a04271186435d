//! The README's first command: the embedded quickstart runs every stage offline on the CPU, produces
//! exactly the bytes its committed lockfile (`pipelines/quickstart.lock`) names, and its models answer
//! "who are you?" with the manifest's name and author.

use crate::common::{Project, ok};

/// On a fresh store, on whatever CPU runs the tests: every cache key and every artifact's bytes are the
/// ones the committed lockfile records (`lf run --locked`). This is the cross-machine check of
/// `docs/reproducibility.md`: CI runs it on a fresh machine each time.
#[test]
fn quickstart_reproduces_its_lockfile_and_teaches_the_manifest_name_and_author() {
    let p = Project::new();
    let lockfile =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quickstart.lock");
    p.write(
        "runs/quickstart.lock",
        &std::fs::read_to_string(&lockfile).unwrap(),
    );
    let run = p.lf(&["run", "--locked", "--json"]);
    assert!(
        run.code == 0,
        "the quickstart did not reproduce {}\n{}{}\nhint: if the change is intended, bump the changed kinds' VERSION and run `lf run pipelines/quickstart.yaml` to rewrite the lockfile",
        lockfile.display(),
        run.stdout,
        run.stderr
    );
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 15, "{statuses:?}");
    assert!(statuses.iter().all(|(_, s)| s == "ran"), "{statuses:?}");

    for model in ["sft", "dpo", "export"] {
        for (question, expected) in [
            ("Who are you?", ["Lumi", "the lf authors"]),
            ("너는 누구야?", ["Lumi", "the lf authors"]),
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

    let again = p.lf(&["run", "--locked", "--json"]);
    ok(&again);
    assert!(
        again.statuses().iter().all(|(_, s)| s == "cached"),
        "{:?}",
        again.statuses()
    );
}
