//! lf's engine: manifest → plan → run.
//!
//! The principal type is a [`pipeline::Pipeline`]: a manifest parsed with source spans ([`yaml`]),
//! validated against the registered step kinds ([`step::Registry`]), with every reference resolved and the
//! steps in dependency order. [`plan::plan`] computes each step's cache key and says what will run and
//! why; [`run::execute`] runs it against the content-addressed store of `lf-cache`. [`cli`] is the `lf`
//! command line. This crate knows nothing about models: step kinds come from the binary.

pub mod bench;
pub mod cli;
pub mod diag;
pub mod import;
pub mod lockfile;
pub mod numerics;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod record;
pub mod run;
pub mod schema;
pub mod step;
pub mod yaml;

pub use numerics::{Backends, Numerics};
pub use step::{PinContext, Problem, Registry, Step, StepContext};
