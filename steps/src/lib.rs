//! lf's step kinds and the machine-learning pieces they share.
//!
//! The principal item is [`registry`]: the one list of every step kind the `lf` binary knows. Each kind is
//! a module implementing [`lf_engine::Step`] for the parameter type of the same name in `lf-schemas`.
//! Adding a kind is one module here, its parameters in `lf-schemas`, and one line in [`KINDS`].

pub mod command;
pub mod download;
pub mod files;
pub mod hub;

use std::path::Path;

use lf_engine::cli::{App, BenchArgs, ChatArgs, Extensions};
use lf_engine::step::DynStep;
use lf_engine::{Backends, Numerics, Registry};
use serde_json::Value as Json;

/// Every step kind, in the order `lf kinds` lists them.
pub const KINDS: &[&dyn DynStep] = &[&download::Download, &command::Command];

/// The registry of [`KINDS`].
pub fn registry() -> Registry {
    Registry::new(KINDS)
}

/// The application the `lf` binary runs: the kinds, the embedded default pipeline, and the commands that
/// need models.
pub fn app(quickstart: &'static str) -> App {
    App {
        registry: registry(),
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

    fn chat(&self, _model: &Path, _args: &ChatArgs, _numerics: &Numerics) -> anyhow::Result<()> {
        anyhow::bail!("`lf chat` is not available in this build yet")
    }

    fn preview(&self, kind: &str, _artifact: &Path, _rows: usize) -> anyhow::Result<()> {
        anyhow::bail!("steps of kind `{kind}` have nothing to preview")
    }

    fn bench(&self, _name: &str, _args: &BenchArgs) -> Option<anyhow::Result<Json>> {
        None
    }

    fn bench_names(&self) -> Vec<&'static str> {
        Vec::new()
    }
}
