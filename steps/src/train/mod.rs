//! Training: the loop `pretrain` and `sft` share, and the pieces it is made of.
//!
//! The principal type is [`Trainer`]: a [`Llama`](crate::model::Llama) on an autodiff backend with some
//! parameters marked trainable (full, freeze or LoRA, see [`params::Method`]), gradient accumulation,
//! clipping by the global norm and AdamW with PyTorch's semantics. [`run::run`] drives it for a step:
//! data order, learning-rate schedule, logs, evaluation, checkpoints, the artifact.
//!
//! - [`params`]: every parameter by its Hugging Face name, and which ones a method trains.
//! - [`loss`]: the shifted causal-LM cross-entropy over the trained tokens.
//! - [`trainer`]: [`Trainer`] and [`AdamW`].
//! - [`schedule`]: learning-rate schedules with warmup.
//! - [`order`]: which rows make up each step, a pure function of (seed, step).
//! - [`checkpoint`]: atomic checkpoints in the scratch folder, for exact resumption.
//! - [`artifact`]: reading model sources (HF, GGUF, LoRA artifacts) and writing results.
//! - [`check`]: problems found before training starts.
//! - [`plot`]: the loss curve PNG.
//! - [`bench`]: `lf bench train`.
//!
//! The design is described in `docs/steps/sft.md` (artifact layouts, resume semantics).

pub mod artifact;
pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod loss;
pub mod order;
pub mod params;
pub mod plot;
pub mod run;
pub mod schedule;
pub mod trainer;

#[cfg(test)]
mod tests;

pub use artifact::{ModelSource, load_any};
pub use trainer::{AdamW, Trainer};
