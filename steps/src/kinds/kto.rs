//! `kto`: KTO on replies marked desirable or undesirable (a `dataset` of `stage: kto`), against a
//! frozen reference; LoRA by default.
//!
//! The reference's log-probabilities of each row's reply and of its mismatched reply (the KL
//! estimate's) are computed once, before the first step, with the starting model (for LoRA the base
//! with the adapters switched off) or `ref_model`, and kept in the scratch folder
//! ([`crate::train::reference`]). The loss is in [`crate::train::pref`]; the loop is `sft`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::kinds::KtoParams;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::FinetuningType;

use crate::train::pref::KtoConfig;
use crate::train::{check, run};
use lf_model::ModelArtifact;

/// The `kto` step kind.
pub struct Kto;

/// The loss settings of `p`.
pub fn kto_config(p: &KtoParams) -> KtoConfig {
    KtoConfig {
        beta: p.pref_beta,
        desirable_weight: p.kto_chosen_weight,
        undesirable_weight: p.kto_rejected_weight,
        ftx: p.pref_ftx,
    }
}

impl Step for Kto {
    type Params = KtoParams;
    const KIND: &'static str = "kto";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "KTO on replies marked desirable or undesirable, against a frozen reference (full, freeze or LoRA); resumable";
    const NUMERIC: bool = true;

    fn check(&self, p: &KtoParams) -> Vec<Problem> {
        let mut problems = check::check_params(&p.train(), FinetuningType::Lora);
        problems.extend(check::check_kto(p));
        problems
    }

    fn check_inputs(&self, p: &KtoParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        let train = p.train();
        let ft = run::finetuning_type(&train, FinetuningType::Lora);
        let mut problems = check::check_inputs(&train, Self::KIND, Stage::Kto, ft, inputs);
        problems.extend(check::check_reference(
            p.ref_model.as_deref(),
            &p.dataset,
            inputs,
        ));
        problems
    }

    fn run(&self, p: &KtoParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let ref_model = match &p.ref_model {
            Some(_) => Some(Box::new(ModelArtifact::open(cx.input("ref_model")?)?)),
            None => None,
        };
        let task = run::Task::Kto {
            cfg: kto_config(p),
            ref_model,
        };
        run::run_task(&p.train(), Stage::Kto, FinetuningType::Lora, task, cx).map(|_| ())
    }
}
