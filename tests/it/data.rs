//! The data steps through the `lf` binary, offline: `template` fills the built-in identity data,
//! `tokenizer` trains a tokenizer on the built-in corpus, and `dataset` tokenizes both for it; caching
//! follows the inputs, and `lf preview` shows what is trained.

use crate::common::{Project, ok};

fn pipeline(p: &Project, name: &str, with_author: bool) {
    let author = if with_author {
        ", author: \"{{ vars.author }}\""
    } else {
        ""
    };
    p.write(
        "p.yaml",
        &format!(
            r#"name: data
vars:
  name: {name}
  author: the lf authors
steps:
  identity:
    kind: template
    source: builtin:identity
    vars: {{name: "{{{{ vars.name }}}}"{author}}}
  tok:
    kind: tokenizer
    source: builtin:corpus
    vocab_size: 1000
  sft:
    kind: dataset
    model: tok
    datasets:
      - source: identity
    cutoff_len: 256
    val_size: 0.1
  pt:
    kind: dataset
    model: tok
    stage: pt
    datasets: [{{source: builtin:corpus}}]
    cutoff_len: 128
"#
        ),
    );
}

#[test]
fn data_pipeline_runs_offline_and_caches_by_input() {
    let p = Project::new();
    pipeline(&p, "Lumi", true);
    let first = p.lf(&["run", "p.yaml", "--json"]);
    ok(&first);
    assert!(
        first.statuses().iter().all(|(_, s)| s == "ran"),
        "{:?}",
        first.statuses()
    );
    let info: serde_json::Value = serde_json::from_str(&p.read("runs/data/sft/info.json")).unwrap();
    assert_eq!(info["kept"], 134);
    assert_eq!(info["splits"]["val"]["rows"], 13);
    assert_eq!(info["template"]["name"], "auto");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(p.path().join("runs/data/tok").join(f).is_file(), "{f}");
    }
    let rendered = p.read("runs/data/identity/identity.json");
    assert!(rendered.contains("Lumi") && !rendered.contains("{{"));

    let again = p.lf(&["run", "p.yaml", "--json"]);
    ok(&again);
    assert!(again.statuses().iter().all(|(_, s)| s == "cached"));

    // A new name re-renders and re-tokenizes the identity data only.
    pipeline(&p, "Nova", true);
    let changed = p.lf(&["run", "p.yaml", "--json"]);
    ok(&changed);
    assert_eq!(changed.status_of("identity"), "ran");
    assert_eq!(changed.status_of("sft"), "ran");
    assert_eq!(changed.status_of("tok"), "cached");
    assert_eq!(changed.status_of("pt"), "cached");

    let preview = p.lf(&["preview", "p.yaml", "sft", "-n", "1"]);
    ok(&preview);
    assert!(
        preview.stdout.contains("── sample 1 ·"),
        "{}",
        preview.stdout
    );
    assert!(
        preview.stdout.contains("⟦<|im_start|>"),
        "{}",
        preview.stdout
    );
    assert!(preview.stdout.contains("Nova"), "{}", preview.stdout);
    assert!(
        preview.stdout.contains("dropped: none of 134 rows"),
        "{}",
        preview.stdout
    );
}

#[test]
fn an_undefined_placeholder_fails_the_template_step() {
    let p = Project::new();
    pipeline(&p, "Lumi", false);
    let run = p.lf(&["run", "p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`builtin:identity` row 1: `author` is undefined"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("defined variables are `name`"),
        "{}",
        run.stderr
    );
}

#[test]
fn bench_tokenize_reports_rates() {
    let p = Project::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tok = root.join("tests/fixtures/smollm2/tokenizer");
    let run = p.lf(&[
        "bench",
        "tokenize",
        "--size",
        "200",
        "--model",
        tok.to_str().unwrap(),
    ]);
    ok(&run);
    let json = run.json();
    assert_eq!(json["rows"], 200);
    assert!(json["encode_batch_rows_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["total_tokens"].as_u64().unwrap() > 200 * 20);
}

#[test]
fn new_weights_do_not_retokenize_but_a_new_tokenizer_does() {
    let p = Project::new();
    let tok =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/tokenizer");
    let write = |weights: &str, tokenizer_note: &str| {
        p.write(
            "p.yaml",
            &format!(
                r#"name: weights
steps:
  model:
    kind: command
    run: |
      cp {tok}/tokenizer.json {tok}/tokenizer_config.json "$LF_OUT/"
      echo {weights} > "$LF_OUT/model.safetensors"
      echo '{tokenizer_note}' > "$LF_OUT/special_tokens_map.json"
  data:
    kind: dataset
    model: model
    datasets: [{{source: builtin:identity_eval, format: alpaca}}]
"#,
                tok = tok.display()
            ),
        );
    };
    write("v1", "{}");
    ok(&p.lf(&["run", "p.yaml"]));
    write("v2", "{}");
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    assert_eq!(run.status_of("model"), "ran");
    assert_eq!(run.status_of("data"), "cached");
    write("v2", "{\"pad_token\": \"<|endoftext|>\"}");
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    assert_eq!(run.status_of("data"), "ran");
}

/// Data problems name what is at fault: the empty file, each dropped row (file:line), the step whose
/// tokenizer fails and the file as the user can open it (its `runs/` link, not a store path).
#[test]
fn data_problems_name_the_file_the_rows_and_the_step() {
    let p = Project::new();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/tokenizer");
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        p.write(
            &format!("tok/{file}"),
            &std::fs::read_to_string(fixture.join(file)).unwrap(),
        );
    }
    p.write("data/empty.jsonl", "");
    let long = "x ".repeat(600);
    p.write(
        "data/rows.jsonl",
        &format!(
            "{{\"instruction\": \"hi\", \"output\": \"hello\"}}\n\
             {{\"instruction\": \"{long}\", \"output\": \"y\"}}\n\
             {{\"instruction\": \"q\", \"output\": \"\"}}\n\
             {{\"instruction\": \"{long}\", \"output\": \"w\"}}\n"
        ),
    );
    p.write(
        "p.yaml",
        r#"name: w
steps:
  model:
    kind: download
    path: tok
  some-dropped:
    kind: dataset
    model: model
    cutoff_len: 256
    datasets: [{source: data/rows.jsonl, format: alpaca}, {source: data/empty.jsonl, format: alpaca}]
  all-empty:
    kind: dataset
    model: model
    datasets: [{source: data/empty.jsonl, format: alpaca}]
"#,
    );
    let first = p.lf(&["run", "p.yaml"]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let dropped = p.read("runs/w/some-dropped/dropped.jsonl");
    assert_eq!(dropped.lines().count(), 3, "{dropped}");
    assert!(dropped.contains(r#""file":"data/rows.jsonl","reason":"too_long","row":2"#));

    // A broken tokenizer, named by step and by the file the user can open.
    p.write("tok/tokenizer.json", "{\"version\": \"1.0\", \"model\": {");
    let second = p.lf(&["run", "p.yaml"]);
    assert_eq!(second.code, 1, "{}", second.stderr);

    let project = p.path().display().to_string();
    // The messages, without timings; sorted, as the two dataset steps run in parallel.
    let relevant = |run: &crate::common::Run| -> String {
        let mut lines: Vec<String> = (run.stderr.clone() + &run.stdout)
            .lines()
            .map(|l| l.replace(&project, "<project>"))
            .map(|l| {
                l.replace("WARN lf_steps::data::build:", "warning:")
                    .trim()
                    .to_string()
            })
            .filter(|l| {
                ["dropped as", "no rows", "hint:", "cannot load"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        lines.sort();
        lines.dedup();
        lines.join("\n")
    };
    insta::assert_snapshot!(format!(
        "first run:\n{}\n\nbroken tokenizer:\n{}",
        relevant(&first),
        relevant(&second)
    ));
}
