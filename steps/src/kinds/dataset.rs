//! `dataset`: loads, renders, tokenizes, masks, packs and splits data for one model (see
//! [`crate::data`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::FieldPath;
use lf_schemas::kinds::DatasetParams;
use lf_schemas::kinds::dataset::{Mix, Stage};

use crate::data::build::{Inputs, build};
use crate::data::builtin;

/// The `dataset` step kind.
pub struct Dataset;

impl Step for Dataset {
    type Params = DatasetParams;
    const KIND: &'static str = "dataset";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "load, template, tokenize, mask and pack training data for one model's tokenizer";

    fn check(&self, p: &DatasetParams) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = FieldPath::key;
        if p.datasets.is_empty() {
            problems.push(
                Problem::new(key("datasets"), "no datasets")
                    .hint("for example `datasets: [{source: builtin:identity}]`"),
            );
        }
        if p.cutoff_len < 2 {
            problems.push(Problem::new(key("cutoff_len"), "must be at least 2"));
        }
        if !(p.val_size.is_finite() && p.val_size >= 0.0) {
            problems.push(Problem::new(
                key("val_size"),
                "must be a fraction below 1 or a count of rows",
            ));
        } else if p.val_size >= 1.0 && p.val_size.fract() != 0.0 {
            problems.push(Problem::new(
                key("val_size"),
                format!(
                    "{} is neither a fraction below 1 nor a whole count",
                    p.val_size
                ),
            ));
        }
        if p.stage != Stage::Sft {
            for (field, on) in [
                ("train_on_prompt", p.train_on_prompt),
                ("mask_history", p.mask_history),
            ] {
                if on {
                    problems.push(Problem::new(
                        key(field),
                        format!("applies to stage `sft` only, not `{}`", p.stage.name()),
                    ));
                }
            }
        }
        if matches!(p.stage, Stage::Rm | Stage::Kto) && (p.packing || p.neat_packing) {
            problems.push(Problem::new(
                key(if p.packing { "packing" } else { "neat_packing" }),
                if p.stage == Stage::Rm {
                    "preference pairs cannot be packed"
                } else {
                    "KTO rows cannot be packed"
                },
            ));
        }
        if p.stage == Stage::Pt && p.packing {
            problems.push(
                Problem::new(
                    key("packing"),
                    "pretraining text is always packed into blocks",
                )
                .hint("leave `packing` out; `neat_packing` keeps documents apart"),
            );
        }
        for (i, d) in p.datasets.iter().enumerate() {
            let at = || key("datasets").at(i);
            if let Some(problem) = crate::data::render::check_source(at().then("source"), &d.source)
            {
                problems.push(problem);
            }
            if d.dataset_info.is_some() {
                if builtin::is_builtin(&d.source) {
                    problems.push(Problem::new(
                        at().then("dataset_info"),
                        "needs a folder or a `dataset_info.json` as `source`",
                    ));
                }
                let given: Vec<&str> = [
                    ("file", d.file.is_some()),
                    ("format", d.format != Default::default()),
                    ("columns", !d.columns.is_empty()),
                    ("tags", !d.tags.is_empty()),
                ]
                .into_iter()
                .filter_map(|(n, on)| on.then_some(n))
                .collect();
                for name in given {
                    problems.push(Problem::new(
                        at().then(name),
                        "comes from the `dataset_info` entry; leave it out",
                    ));
                }
            }
            if let Some(prob) = d.probability {
                if p.mix == Mix::Concat {
                    problems.push(
                        Problem::new(at().then("probability"), "applies when `mix` interleaves")
                            .hint("set `mix: interleave` or `mix: interleave_all`"),
                    );
                } else if !(prob.is_finite() && prob > 0.0) {
                    problems.push(Problem::new(
                        at().then("probability"),
                        "must be a positive number",
                    ));
                }
            }
            if d.max_samples == Some(0) {
                problems.push(Problem::new(at().then("max_samples"), "must be at least 1"));
            }
        }
        problems
    }

    fn check_inputs(&self, _p: &DatasetParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let Some(model) = inputs.get("model") else {
            return Vec::new();
        };
        let has_gguf = || matches!(lf_model::load::find_gguf(model), Ok(Some(_)));
        if model.is_dir() && !model.join("tokenizer.json").is_file() && !has_gguf() {
            return vec![
                Problem::new(
                    FieldPath::key("model"),
                    "the model's artifact has no tokenizer (`tokenizer.json` or a `.gguf` file)",
                )
                .hint("point `model` at a `download` of a model, or a `tokenizer` step"),
            ];
        }
        Vec::new()
    }

    fn run(&self, p: &DatasetParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let inputs = Inputs {
            model: cx.input("model")?.to_path_buf(),
            sources: p
                .datasets
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if builtin::is_builtin(&d.source) {
                        Ok(None)
                    } else {
                        cx.input(&format!("datasets[{i}].source"))
                            .map(|p| Some(p.to_path_buf()))
                    }
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let info = build(
            p,
            &inputs,
            cx.out_dir(),
            &cx.progress().for_step(cx.step_name()),
        )?;
        cx.metric("rows", info.rows);
        cx.metric("dropped", info.dropped_total());
        for (name, split) in &info.splits {
            cx.metric(&format!("{name}_rows"), split.rows);
            cx.metric(&format!("{name}_tokens"), split.tokens);
        }
        if let Some(train) = info.splits.get("train") {
            cx.metric("trained_tokens", train.trained_tokens);
        }
        Ok(())
    }
}
