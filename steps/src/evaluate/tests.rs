//! Tests of `evaluate` on tiny random models: each metric is recomputed independently (one sequence at a
//! time, log-softmax on the host in f64) and compared with what the step wrote.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lf_engine::Numerics;
use lf_engine::progress::Progress;
use lf_schemas::kinds::EvaluateParams;
use serde_json::{Value as Json, json};

use super::tasks::{self, Question};
use super::{Inputs, evaluate, load_tokenizer};
use crate::data::artifact::{Example, Split, TokenizedDataset};
use crate::export::tests::{tiny_lora, tiny_model, tokenizer};
use lf_model::ModelArtifact;
use lf_model::config::Arch;
use lf_model::generate::{GenerateOptions, argmax, generate};
use lf_model::llama::ForwardInput;
use lf_model::{Cpu, CpuDevice, Dtype, Llama};

fn numerics() -> Numerics {
    Numerics {
        device: lf_model::Device::Cpu,
        dtype: Dtype::F32,
        backend: "flex".into(),
    }
}

fn params(v: Json) -> EvaluateParams {
    serde_json::from_value(v).unwrap()
}

fn run(p: &EvaluateParams, inputs: &Inputs, out: &Path) -> Json {
    evaluate(p, inputs, out, &numerics(), &Progress::new(false))
        .unwrap_or_else(|e| panic!("evaluate: {e:#}"));
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

fn predictions(out: &Path) -> Vec<Json> {
    std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn load(path: &Path) -> Llama<Cpu> {
    ModelArtifact::open(path)
        .unwrap()
        .load::<Cpu>(&CpuDevice, Dtype::F32)
        .unwrap()
}

/// Logits of one unpadded sequence, `[seq][vocab]`.
fn logits(model: &Llama<Cpu>, ids: &[u32]) -> Vec<Vec<f32>> {
    let out = model.forward(ForwardInput::from_rows(&[ids.to_vec()], &CpuDevice), None);
    let [_, t, v] = out.dims();
    let flat = out.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
    (0..t).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

fn log_softmax_at(row: &[f32], id: usize) -> f64 {
    let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
    let lse = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row[id] as f64 - lse
}

const CHAT: &str = r#"[
 {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."},
 {"instruction": "Say hello.", "input": "", "output": "Hello! How can I help you today?"},
 {"instruction": "Translate to Chinese: I love Beijing", "input": "", "output": "我爱北京"},
 {"instruction": "Name a colour.", "input": "", "output": "Blue."},
 {"instruction": "Count to three.", "input": "", "output": "One, two, three."},
 {"instruction": "What do plants need?", "input": "", "output": "Plants need water, light and carbon dioxide."}
]"#;

const PAIRS: &str = r#"[
 {"instruction": "Who are you?", "input": "", "chosen": "I am an assistant.", "rejected": "I am a cat."},
 {"instruction": "What is 2+2?", "input": "", "chosen": "4", "rejected": "5"},
 {"instruction": "Capital of Italy?", "input": "", "chosen": "Rome.", "rejected": "Paris."},
 {"instruction": "Colour of the sky?", "input": "", "chosen": "Blue.", "rejected": "Green, always."}
]"#;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let tok = tokenizer(&root);
    let model = tiny_model(&root, "model", Arch::Llama, &tok, 21);
    std::fs::write(root.join("chat.json"), CHAT).unwrap();
    std::fs::write(root.join("pairs.json"), PAIRS).unwrap();
    Setup {
        _tmp: tmp,
        root,
        model,
    }
}

/// A `dataset` artifact of `file` for the tokenizer of `model`.
fn dataset(root: &Path, model: &Path, file: &str, stage: &str, name: &str) -> PathBuf {
    let out = root.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let p: lf_schemas::kinds::DatasetParams = serde_json::from_value(json!({
        "model": "model", "datasets": [{"source": file}], "stage": stage,
        "val_size": 2, "cutoff_len": 256,
    }))
    .unwrap();
    let inputs = crate::data::build::Inputs {
        model: model.to_path_buf(),
        sources: vec![Some(root.join(file))],
    };
    crate::data::build::build(&p, &inputs, &out, &Progress::new(false)).unwrap();
    out
}

#[test]
fn perplexity_is_exp_of_the_mean_nll_of_trained_tokens() {
    let s = setup();
    let data = dataset(&s.root, &s.model, "chat.json", "sft", "sft-data");
    let out = s.root.join("out");
    let p = params(json!({
        "models": ["m"], "batch_size": 3,
        "perplexity": {"dataset": "d", "split": "train"},
    }));
    let inputs = Inputs {
        models: vec![s.model.clone()],
        perplexity: Some(data.clone()),
        ..Default::default()
    };
    let results = run(&p, &inputs, &out);
    let got = &results["models"][0]["perplexity"];

    // Independently: each row alone, unpadded, log-softmax in f64.
    let model = load(&s.model);
    let ds = TokenizedDataset::open(&data, Split::Train).unwrap();
    let (mut nll, mut n) = (0f64, 0usize);
    for i in 0..ds.len() {
        let Example::Single(seq) = ds.example(i) else {
            panic!("sft rows")
        };
        let l = logits(&model, &seq.input_ids);
        for (row, &label) in l.iter().zip(&seq.labels[1..]) {
            if label >= 0 {
                nll -= log_softmax_at(row, label as usize);
                n += 1;
            }
        }
    }
    assert!(n > 10);
    assert_eq!(got["tokens"], n);
    assert_eq!(got["rows"], ds.len());
    let want = (nll / n as f64).exp();
    let ppl = got["perplexity"].as_f64().unwrap();
    assert!((ppl - want).abs() / want < 1e-5, "{ppl} vs {want}");
    assert!((got["nll"].as_f64().unwrap() - nll / n as f64).abs() < 1e-5);
    // A random model over ~320 tokens is close to uniform.
    assert!(ppl > 100.0 && ppl < 1000.0, "{ppl}");
}

fn questions() -> Vec<Question> {
    let c: lf_schemas::kinds::evaluate::ChoiceTask = serde_json::from_value(json!({})).unwrap();
    super::read_questions(&c, None).unwrap()
}

#[test]
fn builtin_questions_read_and_exemplars_are_seeded() {
    let qs = questions();
    assert_eq!(qs.len(), 40);
    assert!(qs.iter().all(|q| q.choices.len() == 4));
    for i in [0, 17, 39] {
        let ex = tasks::exemplars(&qs, i, 5, 42);
        assert_eq!(ex.len(), 5);
        assert!(!ex.contains(&i));
        // 9 other questions share the subject, so all 5 do.
        assert!(ex.iter().all(|&j| qs[j].subject == qs[i].subject));
        assert_eq!(ex, tasks::exemplars(&qs, i, 5, 42));
    }
    assert_ne!(
        tasks::exemplars(&qs, 0, 5, 42),
        tasks::exemplars(&qs, 0, 5, 7)
    );
    // More shots than the subject has: the others follow.
    let ex = tasks::exemplars(&qs, 0, 12, 42);
    assert_eq!(
        ex.iter()
            .filter(|&&j| qs[j].subject == qs[0].subject)
            .count(),
        9
    );
    let prompt = tasks::mc_prompt(&qs, 0, 1, 42);
    assert!(prompt.starts_with(
        "The following are multiple choice questions (with answers) about elementary science.\n\n"
    ));
    assert!(prompt.ends_with(
        "What do plants need from the air to make their food?\nA. Carbon dioxide\nB. Nitrogen\nC. Helium\nD. Smoke\nAnswer:"
    ));
    assert_eq!(prompt.matches("Answer:").count(), 2);
}

#[test]
fn multiple_choice_picks_the_letter_with_the_highest_logit() {
    let s = setup();
    let out = s.root.join("out");
    let p = params(json!({
        "models": ["m"], "batch_size": 4,
        "multiple_choice": {"shots": 2, "max_samples": 12},
    }));
    let inputs = Inputs {
        models: vec![s.model.clone()],
        ..Default::default()
    };
    let results = run(&p, &inputs, &out);
    let mc = &results["models"][0]["multiple_choice"];
    assert_eq!(mc["questions"], 12);

    // Independently: each prompt alone, the letters' logits at the last position.
    let model = load(&s.model);
    let tk = load_tokenizer(&s.model).unwrap();
    let letters = tasks::letter_tokens(&tk, 4).unwrap();
    let qs: Vec<Question> = questions().into_iter().take(12).collect();
    let preds = predictions(&out);
    let mut correct = 0;
    for (i, pred) in preds.iter().enumerate() {
        let mut text = tasks::mc_prompt(&qs, i, 2, 42);
        if !letters.with_space {
            text.push(' ');
        }
        let ids = tk.encode(&text, true).unwrap();
        let l = logits(&model, &ids);
        let last = l.last().unwrap();
        let scores: Vec<f32> = letters.ids.iter().map(|&id| last[id as usize]).collect();
        let pick = argmax(&scores);
        assert_eq!(
            pred["predicted"],
            tasks::letter(pick).to_string(),
            "question {i}"
        );
        correct += usize::from(pick == qs[i].answer);
        for (a, b) in pred["logits"].as_array().unwrap().iter().zip(&scores) {
            assert!((a.as_f64().unwrap() - f64::from(*b)).abs() < 1e-4);
        }
    }
    assert_eq!(preds.len(), 12);
    assert!((mc["accuracy"].as_f64().unwrap() - correct as f64 / 12.0).abs() < 1e-9);
}

#[test]
fn a_model_that_cannot_tell_the_letters_apart_answers_a() {
    // With a zero LM head every logit is 0; ties go to the first letter, and A is right for 10 of
    // the 40 built-in questions.
    let s = setup();
    let mut model = load(&s.model);
    if let Some(head) = &mut model.lm_head {
        let [v, h] = head.dims();
        *head =
            lf_model::linear::Linear::dense(burn::tensor::Tensor::zeros([v, h], &CpuDevice), None);
    }
    let dir = s.root.join("flat");
    lf_model::save_hf(&model, &dir, lf_model::SaveDtype::F32).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(s.model.join(f), dir.join(f)).unwrap();
    }
    let out = s.root.join("out");
    let results = run(
        &params(json!({"models": ["flat"], "multiple_choice": {}})),
        &Inputs {
            models: vec![dir],
            ..Default::default()
        },
        &out,
    );
    let mc = &results["models"][0]["multiple_choice"];
    assert_eq!(mc["accuracy"], 0.25);
    assert_eq!(mc["shots"], 5);
    assert_eq!(mc["by_subject"]["arithmetic"]["questions"], 10);
    assert!(predictions(&out).iter().all(|p| p["predicted"] == "A"));
}

#[test]
fn generation_scores_greedy_replies_against_references() {
    let s = setup();
    let out = s.root.join("out");
    let p = params(json!({
        "models": ["m"], "batch_size": 1,
        "generation": {"source": "chat.json", "max_new_tokens": 6},
    }));
    let inputs = Inputs {
        models: vec![s.model.clone()],
        generation: Some(s.root.join("chat.json")),
        ..Default::default()
    };
    let results = run(&p, &inputs, &out);
    let g = &results["models"][0]["generation"];
    assert_eq!(g["samples"], 6);
    assert_eq!(g["template"], "auto");

    let model = load(&s.model);
    let tk = load_tokenizer(&s.model).unwrap();
    let preds = predictions(&out);
    assert_eq!(preds.len(), 6);
    let mut sum = super::metrics::TextScores::default();
    for pred in &preds {
        let prompt = pred["prompt"].as_str().unwrap();
        assert!(prompt.starts_with("<|im_start|>user\n"), "{prompt}");
        assert!(
            prompt.ends_with("<|im_end|>\n<|im_start|>assistant\n"),
            "{prompt}"
        );
        let ids = tk.encode(prompt, false).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 6,
            eos_ids: tk.eos_ids.clone(),
            ..Default::default()
        };
        let mut new = generate(&model, &[ids], &opts, None, &mut |_, _| {})
            .unwrap()
            .tokens
            .remove(0);
        if new.last().is_some_and(|t| tk.eos_ids.contains(t)) {
            new.pop();
        }
        let text = tk.decode(&new, true).unwrap().trim().to_string();
        assert_eq!(pred["prediction"], text);
        let sc = super::metrics::score(&text, pred["reference"].as_str().unwrap());
        assert!((pred["bleu_4"].as_f64().unwrap() - sc.bleu_4).abs() < 1e-4);
        sum.rouge_l += sc.rouge_l;
    }
    assert!((g["rouge_l"].as_f64().unwrap() - sum.rouge_l / 6.0).abs() < 1e-4);
    assert_eq!(preds[2]["reference"], "我爱北京");
}

#[test]
fn reward_accuracy_scores_the_last_token_with_a_value_head_and_mean_logps_without() {
    let s = setup();
    let data = dataset(&s.root, &s.model, "pairs.json", "rm", "rm-data");
    // A value head beside the weights of a copy of the model.
    let rm = s.root.join("rm");
    std::fs::create_dir_all(&rm).unwrap();
    for e in std::fs::read_dir(&s.model).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), rm.join(e.file_name())).unwrap();
    }
    let hidden = 64;
    let w: Vec<f32> = (0..hidden)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0)
        .collect();
    lf_model::load::write_safetensors(
        &rm.join("value_head.safetensors"),
        vec![
            ("v_head.summary.weight".into(), w.clone(), vec![1, hidden]),
            ("v_head.summary.bias".into(), vec![0.25], vec![1]),
        ],
        lf_model::SaveDtype::F32,
    )
    .unwrap();
    let out = s.root.join("out");
    let p = params(json!({
        "models": ["base", "rm"], "batch_size": 2,
        "reward": {"dataset": "d", "split": "train"},
    }));
    let inputs = Inputs {
        models: vec![s.model.clone(), rm.clone()],
        reward: Some(data.clone()),
        ..Default::default()
    };
    let results = run(&p, &inputs, &out);
    let base = &results["models"][0]["reward"];
    assert_eq!(base["scorer"], "mean_logp");
    let r = &results["models"][1]["reward"];
    assert_eq!(r["available"], true);
    assert_eq!(r["scorer"], "value_head");

    let model = load(&rm);
    let ds = TokenizedDataset::open(&data, Split::Train).unwrap();
    let score = |ids: &[u32]| {
        let h = model.forward_hidden(ForwardInput::from_rows(&[ids.to_vec()], &CpuDevice), None);
        let [_, t, d] = h.dims();
        let flat = h.into_data().to_vec::<f32>().unwrap();
        let last = &flat[(t - 1) * d..t * d];
        last.iter()
            .zip(&w)
            .map(|(a, b)| f64::from(a * b))
            .sum::<f64>()
            + 0.25
    };
    let mut wins = 0;
    let preds: Vec<Json> = predictions(&out)
        .into_iter()
        .filter(|p| p["task"] == "reward" && p["model"] == "rm")
        .collect();
    assert_eq!(preds.len(), ds.len());
    for (i, pred) in preds.iter().enumerate() {
        let Example::Pair { chosen, rejected } = ds.example(i) else {
            panic!("pairs")
        };
        let (c, rj) = (score(&chosen.input_ids), score(&rejected.input_ids));
        assert!(
            (pred["chosen"].as_f64().unwrap() - c).abs() < 1e-4,
            "{pred} vs {c}"
        );
        assert!((pred["rejected"].as_f64().unwrap() - rj).abs() < 1e-4);
        wins += usize::from(c > rj);
    }
    assert!((r["accuracy"].as_f64().unwrap() - wins as f64 / ds.len() as f64).abs() < 1e-9);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| metric | base | rm |"), "{report}");
    assert!(report.contains("no value head"), "{report}");
}

#[test]
fn models_compare_in_one_table_and_latency_stays_in_logs() {
    let s = setup();
    let lora = tiny_lora(&s.root, "lora", &s.model);
    let data = dataset(&s.root, &s.model, "chat.json", "sft", "sft-data");
    let p = params(json!({
        "models": ["base", "sft"],
        "perplexity": {"dataset": "d"},
        "multiple_choice": {"shots": 1, "max_samples": 4},
        "latency": {"prompt_tokens": 8, "new_tokens": 4, "runs": 1},
    }));
    let inputs = Inputs {
        models: vec![s.model.clone(), lora.clone()],
        perplexity: Some(data),
        ..Default::default()
    };
    let (a, b) = (s.root.join("a"), s.root.join("b"));
    let results = run(&p, &inputs, &a);
    let models = results["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["model"], "base");
    assert_eq!(models[1]["source"], "lora");
    assert_eq!(models[1]["adapter"], true);
    assert_ne!(
        models[0]["perplexity"]["perplexity"],
        models[1]["perplexity"]["perplexity"]
    );
    assert_eq!(models[0]["perplexity"]["split"], "val");
    assert!(models[0].get("latency").is_none());
    let latency: Json =
        serde_json::from_str(&std::fs::read_to_string(a.join("logs/latency.json")).unwrap())
            .unwrap();
    assert!(latency["sft"]["tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(latency["base"]["time_to_first_token_ms"].as_f64().unwrap() > 0.0);
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(report.contains("| metric | base | sft |"), "{report}");
    assert!(report.contains("perplexity (val"), "{report}");
    assert!(
        report.contains("multiple choice (1-shot, 4 questions)"),
        "{report}"
    );
    // Everything but the logs is the same on a second run.
    run(&p, &inputs, &b);
    for f in ["results.json", "report.md", "predictions.jsonl"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let r = super::evaluate(&p, &inputs, &b, &numerics(), &Progress::new(false)).unwrap();
    let names: Vec<&str> = r[1].headline().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        vec!["perplexity", "mc_accuracy", "ttft_ms", "tokens_per_sec"]
    );
}

#[test]
fn parameters_are_checked() {
    use lf_engine::Step;
    let problems = crate::kinds::evaluate::Evaluate.check(&params(json!({"models": []})));
    let msgs: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
    assert_eq!(msgs, vec!["no models to evaluate", "no task to evaluate"]);
    let problems = crate::kinds::evaluate::Evaluate.check(&params(json!({
        "models": ["a", "a"], "batch_size": 0,
        "generation": {"source": "builtin:nope", "max_new_tokens": 0, "format": "text"},
    })));
    let fields: Vec<String> = problems.iter().map(|p| p.field.to_string()).collect();
    assert_eq!(
        fields,
        vec![
            "models[1]",
            "batch_size",
            "generation.source",
            "generation.max_new_tokens",
            "generation.format"
        ]
    );
}
