//! Training: the loop `pretrain`, `sft`, `rm` and `dpo` share, and the pieces it is made of.
//!
//! The principal type is [`Trainer`]: a [`Llama`](lf_model::Llama) on an autodiff backend with some
//! parameters marked trainable (full, freeze or LoRA, see [`params::Method`]), gradient accumulation,
//! clipping by the global norm and AdamW with PyTorch's semantics. [`run::run`] drives it for a step:
//! data order, learning-rate schedule, logs, evaluation, checkpoints, the artifact.
//!
//! - [`params`]: every parameter by its Hugging Face name, and which ones a method trains.
//! - [`loss`]: the shifted causal-LM cross-entropy over the trained tokens, and per-row log-probabilities.
//! - [`objective`]: what each kind optimises (LM loss, reward model, preference losses).
//! - [`pref`]: the preference losses (DPO, IPO, hinge, ORPO, SimPO) and the reward model's loss.
//! - [`reference`]: the reference log-probabilities of `dpo`, computed once and kept for resuming.
//! - [`trainer`]: [`Trainer`] and [`AdamW`].
//! - [`schedule`]: learning-rate schedules with warmup.
//! - [`order`]: which rows make up each step, a pure function of (seed, step).
//! - [`init`]: the config of a seeded random model.
//! - [`checkpoint`]: atomic checkpoints in the scratch folder, for exact resumption.
//! - [`artifact`]: writing results (full weights, or a LoRA adapter with its base).
//! - [`check`]: problems found before training starts.
//! - [`plot`]: the loss curve PNG.
//! - [`bench`]: `lf bench train`.
//!
//! The design is described in `docs/steps/sft.md` (artifact layouts, resume semantics), `docs/steps/rm.md`
//! and `docs/steps/dpo.md`.

pub mod artifact;
pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod init;
pub mod loss;
pub mod objective;
pub mod order;
pub mod params;
pub mod plot;
pub mod pref;
pub mod reference;
pub mod run;
pub mod schedule;
pub mod trainer;

#[cfg(test)]
mod align;
#[cfg(test)]
mod tests;

pub use trainer::{AdamW, Trainer};
