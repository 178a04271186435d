//! `evaluate`: compares models on perplexity, generated replies, multiple choice, reward accuracy and
//! latency (the work is in [`crate::evaluate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lf_engine::{Problem, Step, StepContext};
use lf_model::ModelArtifact;
use lf_schemas::FieldPath;
use lf_schemas::kinds::EvaluateParams;
use lf_schemas::kinds::dataset::{Format, Stage};

use crate::evaluate::{Inputs, evaluate};

/// The `evaluate` step kind.
pub struct Evaluate;

impl Step for Evaluate {
    type Params = EvaluateParams;
    const KIND: &'static str = "evaluate";
    // 2: models without a value head are scored by their replies' mean log-probability.
    // 3: matrix products and sums in a fixed order on every CPU (lf_model::fixed_order).
    // 4: fused CPU kernels for RMSNorm, RoPE, attention softmax and SwiGLU (lf_model::fused).
    const VERSION: u32 = 4;
    const ABOUT: &'static str = "compare models on perplexity, BLEU/ROUGE of generated replies, multiple-choice and reward accuracy, and latency";
    const NUMERIC: bool = true;

    fn check(&self, p: &EvaluateParams) -> Vec<Problem> {
        let key = FieldPath::key;
        let mut problems = Vec::new();
        if p.models.is_empty() {
            problems.push(
                Problem::new(key("models"), "no models to evaluate")
                    .hint("for example `models: [base, sft]`"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, m) in p.models.iter().enumerate() {
            if !seen.insert(m) {
                problems.push(Problem::new(
                    key("models").at(i),
                    format!("`{m}` is listed twice"),
                ));
            }
        }
        if p.perplexity.is_none()
            && p.generation.is_none()
            && p.multiple_choice.is_none()
            && p.reward.is_none()
            && p.latency.is_none()
        {
            problems.push(
                Problem::new(FieldPath::default(), "no task to evaluate")
                    .hint("add one or more of `perplexity`, `generation`, `multiple_choice`, `reward`, `latency`"),
            );
        }
        if p.batch_size == 0 {
            problems.push(Problem::new(key("batch_size"), "must be at least 1"));
        }
        if let Some(g) = &p.generation {
            if let Some(problem) =
                crate::data::render::check_source(key("generation").then("source"), &g.source)
            {
                problems.push(problem);
            }
            if g.max_new_tokens == 0 {
                problems.push(Problem::new(
                    key("generation").then("max_new_tokens"),
                    "must be at least 1",
                ));
            }
            if matches!(g.format, Format::Preference | Format::Text) {
                problems.push(
                    Problem::new(
                        key("generation").then("format"),
                        "generation needs conversations with a reference reply",
                    )
                    .hint("use `alpaca`, `sharegpt`, `openai` or `auto`"),
                );
            }
        }
        if let Some(c) = &p.multiple_choice
            && let Some(problem) =
                crate::data::render::check_source(key("multiple_choice").then("source"), &c.source)
        {
            problems.push(problem);
        }
        if let Some(l) = &p.latency {
            for (name, v) in [
                ("prompt_tokens", l.prompt_tokens),
                ("new_tokens", l.new_tokens),
                ("runs", l.runs),
            ] {
                if v == 0 {
                    problems.push(Problem::new(
                        key("latency").then(name),
                        "must be at least 1",
                    ));
                }
            }
        }
        problems
    }

    fn check_inputs(&self, p: &EvaluateParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let stage_of = |dir: &Path| crate::data::artifact::read_info(dir).map(|i| i.stage);
        if let Some(dir) = inputs.get("perplexity.dataset") {
            match stage_of(dir) {
                Ok(s @ (Stage::Rm | Stage::Kto)) => problems.push(
                    Problem::new(
                        FieldPath::key("perplexity").then("dataset"),
                        format!("holds `stage: {}` data", s.name()),
                    )
                    .hint("perplexity needs a dataset with `stage: pt` or `sft`"),
                ),
                Ok(_) => {}
                Err(e) => problems.push(Problem::new(
                    FieldPath::key("perplexity").then("dataset"),
                    format!("{e:#}"),
                )),
            }
        }
        if let Some(dir) = inputs.get("reward.dataset") {
            match stage_of(dir) {
                Ok(Stage::Rm) => {}
                Ok(s) => problems.push(
                    Problem::new(
                        FieldPath::key("reward").then("dataset"),
                        format!("holds `stage: {}` data, not preference pairs", s.name()),
                    )
                    .hint("reward accuracy needs a dataset with `stage: rm`"),
                ),
                Err(e) => problems.push(Problem::new(
                    FieldPath::key("reward").then("dataset"),
                    format!("{e:#}"),
                )),
            }
        }
        for i in 0..p.models.len() {
            let field = FieldPath::key("models").at(i);
            if let Some(dir) = inputs.get(&field.to_string())
                && let Err(e) = ModelArtifact::open(dir)
            {
                problems.push(Problem::new(field, format!("{e:#}")));
            }
        }
        problems
    }

    fn run(&self, p: &EvaluateParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let get = |field: &str| cx.input(field).map(Path::to_path_buf);
        let inputs = Inputs {
            models: (0..p.models.len())
                .map(|i| get(&format!("models[{i}]")))
                .collect::<anyhow::Result<_>>()?,
            perplexity: p
                .perplexity
                .as_ref()
                .map(|_| get("perplexity.dataset"))
                .transpose()?,
            reward: p
                .reward
                .as_ref()
                .map(|_| get("reward.dataset"))
                .transpose()?,
            generation: cx.inputs().get("generation.source").cloned(),
            multiple_choice: cx.inputs().get("multiple_choice.source").cloned(),
        };
        let progress = cx.progress().for_step(cx.step_name());
        let results = evaluate(p, &inputs, cx.out_dir(), cx.numerics(), &progress)?;
        let several = results.len() > 1;
        for r in &results {
            for (name, value) in r.headline() {
                let name = if several {
                    format!("{}.{name}", r.label)
                } else {
                    name.to_string()
                };
                cx.metric(&name, value);
            }
        }
        Ok(())
    }
}
