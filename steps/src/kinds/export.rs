//! `export`: a model (a Hugging Face folder, a GGUF file, or a LoRA adapter with its base) written as a
//! Hugging Face folder with merged weights, and on request as a PEFT adapter, GGUF files and an Ollama
//! `Modelfile` (the work is in [`crate::export`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lf_engine::{Problem, Step, StepContext};
use lf_model::ModelArtifact;
use lf_schemas::FieldPath;
use lf_schemas::kinds::ExportParams;

use crate::export::{export, hf};

/// The `export` step kind.
pub struct Export;

impl Step for Export {
    type Params = ExportParams;
    const KIND: &'static str = "export";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "write a model as a Hugging Face folder (LoRA merged, sharded safetensors), and optionally a PEFT adapter, GGUF files and an Ollama Modelfile";

    fn check(&self, p: &ExportParams) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(e) = hf::parse_size(&p.max_shard_size) {
            problems.push(Problem::new(FieldPath::key("max_shard_size"), e));
        }
        let mut seen = BTreeSet::new();
        for (i, t) in p.gguf.iter().enumerate() {
            if !seen.insert(t.name()) {
                problems.push(Problem::new(
                    FieldPath::key("gguf").at(i),
                    format!("`{}` is listed twice", t.name()),
                ));
            }
        }
        if p.ollama && p.gguf.is_empty() {
            problems.push(
                Problem::new(FieldPath::key("ollama"), "needs a GGUF file to point at")
                    .hint("add `gguf: [q8_0]` (or `f16`)"),
            );
        }
        problems
    }

    fn check_inputs(&self, p: &ExportParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let Some(model) = inputs.get("model") else {
            return Vec::new();
        };
        match ModelArtifact::open(model) {
            Err(e) => vec![Problem::new(FieldPath::key("model"), format!("{e:#}"))],
            Ok(a) if p.adapter && a.adapter.is_none() => vec![
                Problem::new(FieldPath::key("adapter"), "the model has no LoRA adapter")
                    .hint("`adapter: true` needs a model trained with `finetuning_type: lora`"),
            ],
            Ok(_) => Vec::new(),
        }
    }

    fn run(&self, p: &ExportParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let model_dir = cx.input("model")?.to_path_buf();
        let progress = cx.progress().for_step(cx.step_name());
        let info = export(p, &model_dir, cx.out_dir(), &progress)?;
        cx.metric("parameters", info.weights.parameters);
        cx.metric("safetensors_files", info.weights.files.len());
        cx.metric("bytes", info.weights.total_size);
        for g in &info.gguf {
            cx.metric(&format!("gguf_{}_bytes", g.ty.name()), g.bytes);
        }
        for note in &info.notes {
            tracing::warn!("{note}");
        }
        Ok(())
    }
}
