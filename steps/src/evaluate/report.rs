//! The results of an evaluation: `results.json` (every deterministic number, per model) and
//! `report.md` (one table, a column per model).

use std::fmt::Write as _;
use std::path::Path;

use lf_engine::Numerics;
use lf_schemas::kinds::EvaluateParams;
use serde::Serialize;
use serde_json::{Value as Json, json};

use lf_model::{ArtifactKind, ModelArtifact};

/// The results of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResults {
    /// The model as named in `models`.
    #[serde(rename = "model")]
    pub label: String,
    /// What its artifact is (`hf`, `gguf`, `lora`).
    pub source: ArtifactKind,
    /// Its architecture.
    pub arch: String,
    /// Number of parameters of the base model.
    pub parameters: usize,
    /// Whether a LoRA adapter was applied.
    pub adapter: bool,
    /// Whether it has a value head.
    pub value_head: bool,
    /// `{split, rows, tokens, nll, perplexity}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<Json>,
    /// `{samples, skipped, template, bleu_4, rouge_1, rouge_2, rouge_l, ...}` (percentages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<Json>,
    /// `{questions, shots, accuracy, by_subject, ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiple_choice: Option<Json>,
    /// `{available, pairs, accuracy, mean_margin, ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<Json>,
    /// Remarks (e.g. a fallback template).
    pub notes: Vec<String>,
    /// Wall-clock measurements; written to `logs/latency.json`, never to `results.json`.
    #[serde(skip)]
    pub latency: Option<Json>,
}

/// Rounds to 6 significant digits, so results do not carry the last bits of float arithmetic.
pub fn round6(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    format!("{x:.5e}").parse().unwrap_or(x)
}

impl ModelResults {
    /// Empty results for the model `label`.
    pub fn new(label: &str, art: &ModelArtifact) -> ModelResults {
        ModelResults {
            label: label.to_string(),
            source: art.kind,
            arch: art.config.arch.model_type().to_string(),
            parameters: art.config.num_params(),
            adapter: art.adapter.is_some(),
            value_head: art.value_head.is_some(),
            perplexity: None,
            generation: None,
            multiple_choice: None,
            reward: None,
            notes: Vec::new(),
            latency: None,
        }
    }

    /// The headline numbers, for the run summary.
    pub fn headline(&self) -> Vec<(&'static str, Json)> {
        let mut out = Vec::new();
        let mut take = |name: &'static str, v: Option<&Json>| {
            if let Some(v) = v.filter(|v| !v.is_null()) {
                out.push((name, v.clone()));
            }
        };
        take(
            "perplexity",
            self.perplexity.as_ref().and_then(|p| p.get("perplexity")),
        );
        if let Some(g) = &self.generation {
            for k in ["bleu_4", "rouge_1", "rouge_2", "rouge_l"] {
                take(k, g.get(k));
            }
        }
        take(
            "mc_accuracy",
            self.multiple_choice
                .as_ref()
                .and_then(|m| m.get("accuracy")),
        );
        take(
            "reward_accuracy",
            self.reward.as_ref().and_then(|r| r.get("accuracy")),
        );
        if let Some(l) = &self.latency {
            let r1 = |v: Option<&Json>| {
                v.and_then(Json::as_f64)
                    .map(|x| json!((x * 10.0).round() / 10.0))
            };
            take("ttft_ms", r1(l.get("time_to_first_token_ms")).as_ref());
            take("tokens_per_sec", r1(l.get("tokens_per_sec")).as_ref());
        }
        out
    }
}

/// Writes `results.json`.
pub fn write_results(path: &Path, all: &[ModelResults], numerics: &Numerics) -> anyhow::Result<()> {
    let v = json!({
        "format": "lf-eval",
        "version": 1,
        "numerics": numerics,
        "models": all,
    });
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
    Ok(())
}

fn num(v: Option<&Json>, digits: usize) -> String {
    match v.and_then(Json::as_f64) {
        Some(x) => format!("{x:.digits$}"),
        None => "–".to_string(),
    }
}

fn pct(v: Option<&Json>) -> String {
    match v.and_then(Json::as_f64) {
        Some(x) => format!("{:.1}%", 100.0 * x),
        None => "–".to_string(),
    }
}

/// `report.md`: one row per metric, one column per model.
pub fn markdown(all: &[ModelResults], p: &EvaluateParams) -> String {
    let mut s = String::from("# Evaluation\n\n");
    let _ = write!(s, "| metric |");
    for r in all {
        let _ = write!(s, " {} |", r.label.replace('|', "\\|"));
    }
    s += "\n|---|";
    for _ in all {
        s += "---:|";
    }
    s += "\n";
    let mut row = |name: String, cell: &dyn Fn(&ModelResults) -> String| {
        let _ = write!(s, "| {name} |");
        for r in all {
            let _ = write!(s, " {} |", cell(r));
        }
        s.push('\n');
    };
    if let Some(t) = &p.perplexity {
        let tokens = all
            .first()
            .and_then(|r| r.perplexity.as_ref())
            .and_then(|v| v.get("tokens").cloned())
            .unwrap_or(Json::Null);
        let split = match t.split {
            lf_schemas::kinds::evaluate::EvalSplit::Train => "train",
            lf_schemas::kinds::evaluate::EvalSplit::Val => "val",
        };
        row(format!("perplexity ({split}, {tokens} tokens) ↓"), &|r| {
            num(r.perplexity.as_ref().and_then(|v| v.get("perplexity")), 3)
        });
    }
    if p.generation.is_some() {
        for (k, name) in [
            ("bleu_4", "BLEU-4"),
            ("rouge_1", "ROUGE-1"),
            ("rouge_2", "ROUGE-2"),
            ("rouge_l", "ROUGE-L"),
        ] {
            row(format!("{name} ↑"), &|r| {
                num(r.generation.as_ref().and_then(|v| v.get(k)), 2)
            });
        }
        row("mean new tokens".into(), &|r| {
            num(
                r.generation.as_ref().and_then(|v| v.get("mean_new_tokens")),
                1,
            )
        });
    }
    if let Some(c) = &p.multiple_choice {
        let n = all
            .first()
            .and_then(|r| r.multiple_choice.as_ref())
            .and_then(|v| v.get("questions").cloned())
            .unwrap_or(Json::Null);
        row(
            format!("multiple choice ({}-shot, {n} questions) ↑", c.shots),
            &|r| pct(r.multiple_choice.as_ref().and_then(|v| v.get("accuracy"))),
        );
    }
    if p.reward.is_some() {
        row("reward accuracy ↑".into(), &|r| {
            pct(r.reward.as_ref().and_then(|v| v.get("accuracy")))
        });
        row("reward margin".into(), &|r| {
            num(r.reward.as_ref().and_then(|v| v.get("mean_margin")), 3)
        });
        row("reward scored by".into(), &|r| match r
            .reward
            .as_ref()
            .and_then(|v| v.get("scorer"))
            .and_then(Json::as_str)
        {
            Some("value_head") => "value head".into(),
            Some("mean_logp") => "mean log p".into(),
            _ => "–".into(),
        });
    }
    s += "\nBLEU-4 (NLTK smoothing method 3) and ROUGE F1 are percentages averaged over samples; CJK text \
          is split per character. Details per model are in `results.json`, every prediction in \
          `predictions.jsonl`";
    if p.latency.is_some() {
        s += ", wall-clock latency in `logs/latency.json`";
    }
    s += ".\n";
    let notes: Vec<String> = all
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| format!("- `{}`: {n}", r.label)))
        .chain(all.iter().filter_map(|r| {
            r.reward
                .as_ref()
                .and_then(|v| v.get("note"))
                .and_then(Json::as_str)
                .map(|n| format!("- `{}`: {n}", r.label))
        }))
        .collect();
    if !notes.is_empty() {
        s += "\nNotes:\n\n";
        s += &notes.join("\n");
        s += "\n";
    }
    s
}
