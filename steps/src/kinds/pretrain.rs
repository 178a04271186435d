//! `pretrain`: trains a model on plain text (a `dataset` of `stage: pt`); full weights by default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::kinds::PretrainParams;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::FinetuningType;

use crate::train::{check, run};

/// The `pretrain` step kind.
pub struct Pretrain;

impl Step for Pretrain {
    type Params = PretrainParams;
    const KIND: &'static str = "pretrain";
    // 2: matrix products and sums in a fixed order on every CPU (lf_model::fixed_order).
    // 3: fused CPU kernels for RMSNorm, RoPE, attention softmax, SwiGLU and the LM loss (lf_model::fused).
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "train a model on plain text (next-token prediction on every token); resumable";
    const NUMERIC: bool = true;

    fn check(&self, p: &PretrainParams) -> Vec<Problem> {
        check::check_params(p, FinetuningType::Full)
    }

    fn check_inputs(&self, p: &PretrainParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let ft = run::finetuning_type(p, FinetuningType::Full);
        check::check_inputs(p, Self::KIND, Stage::Pt, ft, inputs)
    }

    fn run(&self, p: &PretrainParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        run::run(p, Stage::Pt, FinetuningType::Full, cx)
    }
}
