//! `rm`: a reward model, trained on preference pairs (a `dataset` of `stage: rm`); LoRA by default.
//!
//! A value head (`value_head.safetensors`, TRL's `v_head.summary`) scores each sequence at its last
//! token; the pairwise loss `−log σ(r_chosen − r_rejected)` trains the head with the model (full, freeze or
//! LoRA). Everything else is `sft`'s loop: see [`crate::train`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::kinds::RmParams;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::FinetuningType;

use crate::train::{check, run};

/// The `rm` step kind.
pub struct Rm;

impl Step for Rm {
    type Params = RmParams;
    const KIND: &'static str = "rm";
    // 2: matrix products and sums in a fixed order on every CPU (lf_model::fixed_order).
    // 3: fused CPU kernels for RMSNorm, RoPE, attention softmax, SwiGLU and the LM loss (lf_model::fused).
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "train a reward model (a value head) on preference pairs (full, freeze or LoRA); resumable";
    const NUMERIC: bool = true;

    fn check(&self, p: &RmParams) -> Vec<Problem> {
        check::check_params(p, FinetuningType::Lora)
    }

    fn check_inputs(&self, p: &RmParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let ft = run::finetuning_type(p, FinetuningType::Lora);
        check::check_inputs(p, Self::KIND, Stage::Rm, ft, inputs)
    }

    fn run(&self, p: &RmParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        run::run_task(p, Stage::Rm, FinetuningType::Lora, run::Task::Rm, cx).map(|_| ())
    }
}
