//! `sft`: supervised fine-tuning on conversations (a `dataset` of `stage: sft`); LoRA by default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::kinds::SftParams;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::FinetuningType;

use crate::train::{check, run};

/// The `sft` step kind.
pub struct Sft;

impl Step for Sft {
    type Params = SftParams;
    const KIND: &'static str = "sft";
    // 2: matrix products and sums in a fixed order on every CPU (lf_model::fixed_order).
    // 3: fused CPU kernels for RMSNorm, RoPE, attention softmax, SwiGLU and the LM loss (lf_model::fused).
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "fine-tune a model on conversations (full, freeze or LoRA); resumable";
    const NUMERIC: bool = true;

    fn check(&self, p: &SftParams) -> Vec<Problem> {
        check::check_params(p, FinetuningType::Lora)
    }

    fn check_inputs(&self, p: &SftParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let ft = run::finetuning_type(p, FinetuningType::Lora);
        check::check_inputs(p, Self::KIND, Stage::Sft, ft, inputs)
    }

    fn run(&self, p: &SftParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        run::run(p, Stage::Sft, FinetuningType::Lora, cx)
    }
}
