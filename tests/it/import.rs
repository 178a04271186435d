//! `lf import llamafactory`: LLaMA-Factory configs (`tests/fixtures/llamafactory/`) become manifests
//! that validate and run, with every key lf did not map left as a comment.

use crate::common::{Project, TINY_STEPS, ok};

fn fixture(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn a_llamafactory_training_config_imports_and_trains() {
    let p = Project::new();
    p.write("base.yaml", &format!("name: base\nsteps:\n{TINY_STEPS}"));
    ok(&p.lf(&["run", "base.yaml"]));
    // LLaMA-Factory's layout: the config, and data/ with its dataset_info.json.
    for f in [
        "dataset_info.json",
        "qa.json",
        "chat.json",
        "pref.json",
        "kto.json",
    ] {
        p.write(&format!("data/{f}"), &fixture(&format!("data/lf_data/{f}")));
    }
    for f in ["lora_sft.yaml", "merge.yaml", "kto.yaml", "ppo.yaml"] {
        p.write(f, &fixture(&format!("llamafactory/{f}")));
    }

    let imported = p.lf(&["import", "llamafactory", "lora_sft.yaml", "-o", "sft.yaml"]);
    ok(&imported);
    let manifest = p.read("sft.yaml");
    for comment in [
        "#   output_dir: saves/tiny/lora/sft (",
        "#   bf16: ",
        "#   use_unsloth_gc: true (no lf counterpart)",
    ] {
        assert!(manifest.contains(comment), "{comment:?} in:\n{manifest}");
    }
    ok(&p.lf(&["validate", "sft.yaml"]));
    let run = p.lf(&["run", "sft.yaml", "--json"]);
    ok(&run);
    assert_eq!(run.status_of("sft"), "ran");
    let lora: serde_json::Value =
        serde_json::from_str(&p.read("runs/lora-sft/sft/adapter_config.json")).unwrap();
    assert_eq!(
        (&lora["r"], &lora["lora_alpha"]),
        (&4.into(), &8.0.into()),
        "{lora}"
    );
    let metrics = p.read("runs/lora-sft/sft/logs/metrics.jsonl");
    assert_eq!(metrics.lines().count(), 2, "logging_steps: 1, max_steps: 2");

    // An export config exports; a KTO config is refused, saying why.
    ok(&p.lf(&[
        "import",
        "llamafactory",
        "merge.yaml",
        "-o",
        "merge.lf.yaml",
    ]));
    ok(&p.lf(&["run", "merge.lf.yaml"]));
    assert!(
        p.path()
            .join("runs/merge/export/model.safetensors")
            .is_file()
    );
    // A KTO config trains on LLaMA-Factory's `kto_tag` data; a PPO config is refused, saying why.
    ok(&p.lf(&["import", "llamafactory", "kto.yaml", "-o", "kto.lf.yaml"]));
    let run = p.lf(&["run", "kto.lf.yaml", "--json"]);
    ok(&run);
    assert_eq!(run.status_of("kto"), "ran");
    let metrics = p.read("runs/kto/kto/logs/metrics.jsonl");
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(first["kl"].is_number(), "{first}");
    let ppo = p.lf(&["import", "llamafactory", "ppo.yaml"]);
    assert_eq!(ppo.code, 2, "{}", ppo.stderr);
    assert!(ppo.stderr.contains("no PPO stage"), "{}", ppo.stderr);
}
