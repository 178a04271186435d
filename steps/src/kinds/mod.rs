//! Every step kind, one file each: the only files that implement [`lf_engine::Step`].
//!
//! A kind reads its typed parameters and input folders and writes its artifact; the work itself lives
//! in the libraries of this crate ([`crate::data`], [`crate::train`], [`crate::export`],
//! [`crate::evaluate`]) and in `lf-model`.

pub mod command;
pub mod dataset;
pub mod download;
pub mod dpo;
pub mod evaluate;
pub mod export;
pub mod kto;
pub mod model;
pub mod pretrain;
pub mod rm;
pub mod sft;
pub mod template;
pub mod tokenizer;

use lf_engine::Registry;
use lf_engine::step::DynStep;

/// Every step kind, in the order `lf kinds` lists them.
pub const KINDS: &[&dyn DynStep] = &[
    &download::Download,
    &command::Command,
    &template::Template,
    &tokenizer::TokenizerStep,
    &dataset::Dataset,
    &model::ModelInit,
    &pretrain::Pretrain,
    &sft::Sft,
    &rm::Rm,
    &dpo::Dpo,
    &kto::Kto,
    &export::Export,
    &evaluate::Evaluate,
];

/// The registry of [`KINDS`].
pub fn registry() -> Registry {
    Registry::new(KINDS)
}
