//! Training through the `lf` binary: a killed run resumes bit-identically, and bad inputs are refused
//! before training starts.

use std::time::{Duration, Instant};

use crate::common::{Project, TINY_STEPS, ok};

/// tokenizer → tiny model → pretraining data → pretrain (and identity data for sft).
fn manifest(train: &str) -> String {
    format!(
        r#"name: train-test
vars: {{name: Lumi, author: the lf authors}}
steps:
{TINY_STEPS}  text:
    kind: dataset
    model: base
    datasets: [{{source: builtin:corpus}}]
    stage: pt
    cutoff_len: 64
{train}"#
    )
}

fn pretrain(steps: usize) -> String {
    format!(
        r#"  pretrain:
    kind: pretrain
    model: base
    dataset: text
    max_steps: {steps}
    batch_size: 4
    learning_rate: 1.0e-3
    warmup_steps: 5
    logging_steps: 10
    save_steps: 3
"#
    )
}

#[test]
fn killed_training_resumes_bit_identical() {
    let text = manifest(&pretrain(300));
    let reference = Project::new();
    reference.write("p.yaml", &text);
    ok(&reference.lf(&["run", "p.yaml", "--only", "text"]));
    let start = Instant::now();
    let run = reference.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    let train_ms = start.elapsed().as_millis() as u64;
    let expected = reference.outputs("p.yaml");
    let state = reference.read("runs/train-test/pretrain/trainer_state.json");
    assert!(state.contains("\"global_step\": 300"), "{state}");

    // Kill at pseudo-random moments of the training, then finish.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut resumed = false;
    for _ in 0..3 {
        let p = Project::new();
        p.write("p.yaml", &text);
        ok(&p.lf(&["run", "p.yaml", "--only", "text"]));
        for _ in 0..2 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = train_ms / 5 + seed % (train_ms * 3 / 5).max(1);
            let mut child = p.spawn(&["run", "p.yaml"]);
            std::thread::sleep(Duration::from_millis(delay));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        let last = p.lf(&["run", "p.yaml", "--json"]);
        ok(&last);
        assert_eq!(
            p.outputs("p.yaml"),
            expected,
            "outputs differ after resuming"
        );
        let steps = last.json()["steps"].clone();
        let pretrain = steps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "pretrain")
            .unwrap()
            .clone();
        resumed |= pretrain["metrics"]["resumed_from_step"].as_u64().is_some();
    }
    assert!(resumed, "no run resumed from a checkpoint");
}

#[test]
fn logs_and_state_are_written_and_volatile_params_keep_the_cache() {
    let p = Project::new();
    p.write("p.yaml", &manifest(&pretrain(12)));
    ok(&p.lf(&["run", "p.yaml"]));
    let metrics = p.read("runs/train-test/pretrain/logs/metrics.jsonl");
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{metrics}");
    for key in ["step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s"] {
        assert!(lines[0].get(key).is_some(), "no `{key}` in {}", lines[0]);
    }
    assert!(
        p.path()
            .join("runs/train-test/pretrain/logs/loss.png")
            .is_file()
    );
    assert!(
        p.path()
            .join("runs/train-test/pretrain/model.safetensors")
            .is_file()
    );
    // Logging, evaluation and checkpoint intervals are not part of the key.
    let changed = manifest(&pretrain(12))
        .replace("logging_steps: 10", "logging_steps: 1")
        .replace("save_steps: 3", "save_steps: 7");
    p.write("p.yaml", &changed);
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    assert_eq!(run.status_of("pretrain"), "cached");
}

#[test]
fn data_of_another_tokenizer_is_refused_before_training() {
    let p = Project::new();
    let text = manifest(
        r#"  tok2:
    kind: tokenizer
    source: builtin:corpus
    vocab_size: 300
  other:
    kind: dataset
    model: tok2
    datasets: [{source: builtin:corpus}]
    stage: pt
    cutoff_len: 64
  pretrain:
    kind: pretrain
    model: base
    dataset: other
"#,
    );
    p.write("p.yaml", &text);
    let run = p.lf(&["run", "p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("was tokenized with another tokenizer than `base`'s"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: set `model: base` on the dataset step"),
        "{}",
        run.stderr
    );
    // Now that the dataset exists, planning finds the mismatch: exit 2, located in the manifest,
    // and `lf run` refuses before running anything.
    let manifest_line = text
        .lines()
        .position(|l| l.trim() == "dataset: other")
        .unwrap()
        + 1;
    for args in [&["plan", "p.yaml"][..], &["run", "p.yaml"]] {
        let again = p.lf(args);
        assert_eq!(again.code, 2, "{args:?}: {}", again.stderr);
        assert!(
            again.stderr.contains(&format!("p.yaml:{manifest_line}:14")),
            "{}",
            again.stderr
        );
        assert!(again.stderr.contains("nothing ran"), "{}", again.stderr);
    }
}

#[test]
fn data_of_the_wrong_stage_is_refused_before_training() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &manifest(
            r#"  sft:
    kind: sft
    model: base
    dataset: text
"#,
        ),
    );
    let run = p.lf(&["run", "p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`text` was prepared for stage `pt`, but `sft` trains on stage `sft` data"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: set `stage: sft`"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_training_parameters_are_validation_errors() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &manifest(
            r#"  sft:
    kind: sft
    model: base
    dataset: text
    learning_rate: fast
    lora:
      target: [q_proj, c_attn]
"#,
        ),
    );
    let run = p.lf(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("p.yaml:25:20"), "{}", run.stderr);
    p.write(
        "p.yaml",
        &manifest(
            r#"  sft:
    kind: sft
    model: base
    dataset: text
    lora:
      target: [q_proj, c_attn]
"#,
        ),
    );
    let run = p.lf(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`c_attn` matches no linear module of the model"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn chat_answers_with_full_and_lora_artifacts_of_a_pipeline() {
    let p = Project::new();
    let sft = r#"  identity:
    kind: template
    source: builtin:identity
    vars: {name: "{{ vars.name }}", author: "{{ vars.author }}"}
  chat-data:
    kind: dataset
    model: base
    datasets: [{source: identity, max_samples: 8}]
    cutoff_len: 64
  sft:
    kind: sft
    model: base
    dataset: chat-data
    finetuning_type: lora
    max_steps: 2
    batch_size: 2
"#;
    p.write("p.yaml", &manifest(sft));
    // Before the run, the step has no artifact.
    let early = p.lf(&["chat", "-f", "p.yaml", "--model", "sft", "--prompt", "hi"]);
    assert_eq!(early.code, 1, "{}", early.stderr);
    assert!(
        early.stderr.contains("has not produced an artifact yet"),
        "{}",
        early.stderr
    );
    ok(&p.lf(&["run", "p.yaml"]));
    assert!(p.path().join("runs/train-test/sft/base").is_dir());
    for model in ["base", "sft"] {
        let args = [
            "chat",
            "-f",
            "p.yaml",
            "--model",
            model,
            "--prompt",
            "Who are you?",
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
        ];
        let run = p.lf(&args);
        ok(&run);
        assert!(run.stderr.contains("new tokens"), "{}", run.stderr);
        // Greedy decoding: the same answer twice.
        assert_eq!(p.lf(&args).stdout, run.stdout, "{model}");
    }
}

/// The same artifacts, bit for bit, whatever the thread count: a model wide enough that matrix
/// products and reductions are split across threads (inner dimension 512), trained for a few steps with
/// 1, 2 and 4 threads. (Across CPUs, see docs/reproducibility.md.)
#[test]
fn artifacts_do_not_depend_on_the_thread_count() {
    let text = manifest(&pretrain(4))
        .replace("hidden_size: 32", "hidden_size: 128")
        .replace("intermediate_size: 64", "intermediate_size: 512")
        .replace("num_attention_heads: 2", "num_attention_heads: 4");
    let mut outputs = Vec::new();
    for threads in ["1", "2", "4"] {
        let p = Project::new();
        p.write("p.yaml", &text);
        ok(&p.lf_env(&["run", "p.yaml"], &[("RAYON_NUM_THREADS", threads)]));
        outputs.push((threads, p.outputs("p.yaml")));
    }
    for (threads, o) in &outputs[1..] {
        assert_eq!(o, &outputs[0].1, "{threads} threads differ from 1");
    }
}

/// QLoRA through the binary: `sft` with `quantization_bit: 4` records its quantisation beside the
/// adapter, a second LoRA step continues from it in 8 bits, chat and export read both, and a
/// quantisation key on a full fine-tune is refused before anything runs.
#[test]
fn qlora_steps_train_chain_chat_and_export() {
    let p = Project::new();
    let steps = r#"  identity:
    kind: template
    source: builtin:identity
    vars: {name: "{{ vars.name }}", author: "{{ vars.author }}"}
  chat-data:
    kind: dataset
    model: base
    datasets: [{source: identity, max_samples: 8}]
    cutoff_len: 64
  qlora:
    kind: sft
    model: base
    dataset: chat-data
    quantization_bit: 4
    max_steps: 3
    batch_size: 2
    learning_rate: 1.0e-2
  qlora8:
    kind: sft
    model: qlora
    dataset: chat-data
    quantization_bit: 8
    max_steps: 2
    batch_size: 2
  export:
    kind: export
    model: qlora
"#;
    p.write("p.yaml", &manifest(steps));
    ok(&p.lf(&["run", "p.yaml"]));
    let config: serde_json::Value =
        serde_json::from_str(&p.read("runs/train-test/qlora/quantization_config.json")).unwrap();
    assert_eq!(config["load_in_4bit"], true);
    assert_eq!(config["bnb_4bit_quant_type"], "nf4");
    assert_eq!(config["bnb_4bit_use_double_quant"], true);
    let state: serde_json::Value =
        serde_json::from_str(&p.read("runs/train-test/qlora/trainer_state.json")).unwrap();
    assert!(state["final_loss"].as_f64().unwrap().is_finite(), "{state}");
    // The second step merged the first adapter into its (dequantised) base and wrote that base:
    // the values it trained against, so nothing more to record.
    assert!(
        p.path()
            .join("runs/train-test/qlora8/base/model.safetensors")
            .is_file()
    );
    assert!(
        !p.path()
            .join("runs/train-test/qlora8/quantization_config.json")
            .exists()
    );
    assert!(
        p.path()
            .join("runs/train-test/export/model.safetensors")
            .is_file()
    );
    for model in ["qlora", "qlora8"] {
        let run = p.lf(&[
            "chat",
            "-f",
            "p.yaml",
            "--model",
            model,
            "--prompt",
            "Who are you?",
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
        ]);
        ok(&run);
    }
    // Re-running is fully cached.
    let again = p.lf(&["run", "p.yaml", "--json"]);
    ok(&again);
    assert_eq!(again.status_of("qlora"), "cached");

    p.write(
        "p.yaml",
        &manifest(&steps.replace(
            "quantization_bit: 8",
            "quantization_bit: 8\n    finetuning_type: freeze",
        )),
    );
    let run = p.lf(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("quantised training needs `finetuning_type: lora`, not `freeze`"),
        "{}",
        run.stderr
    );
}

/// A GGUF model whose projections are quantised already trains on its own blocks: asking for
/// `quantization_bit` on it is refused before training, with a hint.
#[test]
fn quantization_bit_on_a_quantised_gguf_is_refused_before_training() {
    let gguf = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let gguf = std::env::var_os("LF_MODELS_DIR")
        .map(|d| std::path::PathBuf::from(d).join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .unwrap_or(gguf);
    assert!(gguf.is_file(), "run scripts/fetch-models.sh first");
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!(
            r#"name: gguf-qlora
allow_outside: [{dir}]
steps:
  model:
    kind: download
    path: {gguf}
  data:
    kind: dataset
    model: model
    datasets: [{{source: builtin:identity, max_samples: 4}}]
    cutoff_len: 256
  sft:
    kind: sft
    model: model
    dataset: data
    quantization_bit: 4
    max_steps: 1
"#,
            dir = gguf.parent().unwrap().display(),
            gguf = gguf.display()
        ),
    );
    let run = p.lf(&["run", "p.yaml"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("is quantised already"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Q4_1"), "{}", run.stderr);
    assert!(
        run.stderr.contains("remove `quantization_bit: 4`"),
        "{}",
        run.stderr
    );
    assert!(!p.path().join("runs/gguf-qlora/sft").exists());
}
