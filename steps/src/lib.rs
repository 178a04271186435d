//! lf's step kinds and the machine-learning pieces they share.
//!
//! The principal item is [`kinds::KINDS`]: the one list of every step kind the `lf` binary knows. Each
//! kind is a file of [`kinds`] implementing [`lf_engine::Step`] for the parameter type of the same name
//! in `lf-schemas`; the libraries it uses ([`data`], [`train`], [`export`], [`evaluate`]) never import
//! a kind. Adding a kind is one file in `kinds/`, its parameters in `lf-schemas`, and one line in
//! [`kinds::KINDS`].

pub mod chat;
pub mod chat_bench;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod files;
pub mod hub;
pub mod kinds;
pub mod sandbox;
pub mod train;

pub use kinds::{KINDS, registry};

use std::path::Path;

use lf_engine::cli::{App, BenchArgs, ChatArgs, Extensions};
use lf_engine::{Backends, Numerics};
use serde_json::Value as Json;

/// The application the `lf` binary runs: the kinds, the embedded default pipeline, and the commands that
/// need models.
pub fn app(quickstart: &'static str) -> App {
    App {
        registry: kinds::registry(),
        quickstart,
        extensions: Box::new(Ml),
    }
}

/// The ML-side commands (`lf chat`, `lf preview`, model benchmarks).
struct Ml;

impl Extensions for Ml {
    fn backends(&self) -> Backends {
        Backends {
            cuda_compiled: cfg!(feature = "cuda"),
            cuda_present: Path::new("/dev/nvidia0").exists()
                || Path::new("/proc/driver/nvidia/version").exists(),
        }
    }

    fn chat(&self, model: &Path, args: &ChatArgs, numerics: &Numerics) -> anyhow::Result<()> {
        chat::chat(chat::ChatOptions {
            model: model.to_owned(),
            prompt: args.prompt.clone(),
            system: args.system.clone(),
            sampling: lf_model::generate::Sampling {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                repetition_penalty: args.repetition_penalty,
                seed: args.seed,
            },
            max_new_tokens: args.max_new_tokens,
            stop: Vec::new(),
            device: numerics.device,
            dtype: numerics.dtype,
        })
    }

    fn preview(&self, kind: &str, artifact: &Path, rows: usize) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match kind {
            "dataset" => {
                data::preview::dataset(artifact, rows, data::preview::Style::detect(), &mut out)
            }
            "template" => data::preview::template(artifact, rows, &mut out),
            "tokenizer" => data::preview::tokenizer(artifact, &mut out),
            _ => anyhow::bail!("steps of kind `{kind}` have nothing to preview"),
        }
    }

    fn bench(&self, name: &str, args: &BenchArgs) -> Option<anyhow::Result<Json>> {
        match name {
            "tokenize" => Some(data::bench::tokenize(
                args.size.unwrap_or(100_000) as usize,
                args.model.as_deref(),
            )),
            "train" => Some(train::bench::train(args)),
            "generate" => Some(chat_bench::generate(args)),
            _ => None,
        }
    }

    fn bench_names(&self) -> Vec<&'static str> {
        vec!["tokenize", "train", "generate"]
    }
}
