//! `dpo`: preference optimisation on chosen/rejected pairs (a `dataset` of `stage: rm`): DPO, IPO and
//! hinge against a frozen reference, or the reference-free ORPO and SimPO; LoRA by default.
//!
//! The reference's log-probabilities are computed once, before the first step, with the starting model
//! (for LoRA the base with the adapters switched off) or `ref_model`, and kept in the scratch folder
//! ([`crate::train::reference`]). The losses are in [`crate::train::pref`]; the loop is `sft`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::kinds::DpoParams;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::FinetuningType;

use crate::train::pref::PrefConfig;
use crate::train::{check, run};
use lf_model::ModelArtifact;

/// The `dpo` step kind.
pub struct Dpo;

/// The loss settings of `p`.
pub fn pref_config(p: &DpoParams) -> PrefConfig {
    PrefConfig {
        loss: p.pref_loss,
        beta: p.pref_beta,
        label_smoothing: p.dpo_label_smoothing,
        gamma: p.simpo_gamma,
        ftx: p.pref_ftx,
    }
}

impl Step for Dpo {
    type Params = DpoParams;
    const KIND: &'static str = "dpo";
    // 2: matrix products and sums in a fixed order on every CPU (lf_model::fixed_order).
    // 3: fused CPU kernels for RMSNorm, RoPE, attention softmax, SwiGLU and the LM loss (lf_model::fused).
    const VERSION: u32 = 3;
    const ABOUT: &'static str = "preference optimisation on chosen/rejected pairs (DPO, IPO, hinge, ORPO, SimPO; full, freeze or LoRA); resumable";
    const NUMERIC: bool = true;

    fn check(&self, p: &DpoParams) -> Vec<Problem> {
        let mut problems = check::check_params(&p.train(), FinetuningType::Lora);
        problems.extend(check::check_pref(p));
        problems
    }

    fn check_inputs(&self, p: &DpoParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let train = p.train();
        let ft = run::finetuning_type(&train, FinetuningType::Lora);
        let mut problems = check::check_inputs(&train, Self::KIND, Stage::Rm, ft, inputs);
        problems.extend(check::check_reference(
            p.ref_model.as_deref(),
            &p.dataset,
            inputs,
        ));
        problems
    }

    fn run(&self, p: &DpoParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let ref_model = match (&p.ref_model, p.pref_loss.needs_reference()) {
            (Some(_), true) => Some(Box::new(ModelArtifact::open(cx.input("ref_model")?)?)),
            _ => None,
        };
        let task = run::Task::Dpo {
            cfg: pref_config(p),
            ref_model,
        };
        run::run_task(&p.train(), Stage::Rm, FinetuningType::Lora, task, cx).map(|_| ())
    }
}
