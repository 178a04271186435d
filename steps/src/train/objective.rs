//! What each training kind optimises, as the one thing the shared loop ([`super::run`]) does not know:
//! how rows become a batch, and a batch a loss. [`Lm`] is the causal-LM loss of `pretrain` and `sft`,
//! [`Rm`] the pairwise loss of a reward model's value head, [`Dpo`] the preference losses of `dpo`,
//! [`Kto`] KTO's loss on replies marked desirable or not.
//!
//! A loss is a sum over the batch's *units* (trained tokens for [`Lm`], pairs for [`Rm`] and
//! [`Dpo`], examples for [`Kto`]); the loop divides by the units of the whole accumulated batch.
//! Other numbers an objective reports (rewards, accuracy) are sums over units too, logged as means,
//! or sums over some of them, logged as means over those ([`Objective::denominator`]).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use burn::module::Module as _;

use super::loss::{FeedbackBatch, LmBatch, PairBatch, lm_loss_sum, row_logps};
use super::pref::{
    KtoConfig, PairLogps, PrefConfig, kl_estimate, kto_loss, pairwise_loss, preference_loss,
};
use super::reference::Reference;
use crate::data::{Split, TokenizedDataset, collate};
use lf_model::Llama;
use lf_model::ValueHead;

/// Sums of an objective's numbers over a batch's units, by name.
pub type Stats = Vec<(&'static str, f64)>;

/// A training objective.
pub trait Objective {
    /// A prepared micro-batch.
    type Batch;

    /// The stage name written to `trainer_state.json` (LLaMA-Factory's: `pt`, `sft`, `rm`, `dpo`).
    fn stage(&self) -> &'static str;

    /// Whether the loss is a per-token NLL (so its exponential, the perplexity, is worth logging).
    fn is_nll(&self) -> bool {
        false
    }

    /// Prepares rows `rows` of `data` (split `split`).
    fn prepare(&self, split: Split, data: &TokenizedDataset, rows: &[usize]) -> Self::Batch;

    /// The units the batch's loss is a sum over.
    fn units(&self, batch: &Self::Batch) -> usize;

    /// For a number that sums over some of the units only, the number that counts those units: its
    /// mean is taken over them rather than over all units. None for the others.
    fn denominator(&self, _name: &str) -> Option<&'static str> {
        None
    }

    /// Tokens in the batch (padding excluded), for throughput.
    fn tokens(&self, batch: &Self::Batch) -> usize;

    /// The summed loss of the batch (a one-element tensor) and its other numbers; `None` when the batch
    /// has no unit.
    fn loss<C: Backend>(
        &self,
        model: &Llama<C>,
        head: Option<&ValueHead<C>>,
        batch: &Self::Batch,
    ) -> Option<(Tensor<C, 1>, Stats)>;
}

/// The causal-LM loss over trained tokens (`pretrain`, `sft`).
pub struct Lm {
    /// `pt` or `sft`.
    pub stage: &'static str,
    /// Pass position and segment ids (neat packing).
    pub packed: bool,
}

impl Objective for Lm {
    type Batch = LmBatch;

    fn stage(&self) -> &'static str {
        self.stage
    }

    fn is_nll(&self) -> bool {
        true
    }

    fn prepare(&self, _split: Split, data: &TokenizedDataset, rows: &[usize]) -> LmBatch {
        let examples: Vec<_> = rows.iter().map(|&i| data.example(i)).collect();
        LmBatch::new(&collate(&examples, data.info().pad_id), self.packed)
    }

    fn units(&self, batch: &LmBatch) -> usize {
        batch.n_scored()
    }

    fn tokens(&self, batch: &LmBatch) -> usize {
        batch.tokens
    }

    fn loss<C: Backend>(
        &self,
        model: &Llama<C>,
        _head: Option<&ValueHead<C>>,
        batch: &LmBatch,
    ) -> Option<(Tensor<C, 1>, Stats)> {
        lm_loss_sum(model, batch).map(|l| (l, Vec::new()))
    }
}

fn host_f32<C: Backend>(t: Tensor<C, 1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

fn host_values<C: Backend>(t: Tensor<C, 1>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Reward-side numbers of a batch of pairs: `accuracy` (chosen scored higher), `margin` (chosen minus
/// rejected), and the chosen and rejected scores, as sums over pairs under `names`.
fn pair_stats(chosen: &[f64], rejected: &[f64], names: [&'static str; 4]) -> Stats {
    let wins = chosen.iter().zip(rejected).filter(|(c, r)| c > r).count();
    let margin: f64 = chosen.iter().zip(rejected).map(|(c, r)| c - r).sum();
    vec![
        (names[0], wins as f64),
        (names[1], margin),
        (names[2], chosen.iter().sum()),
        (names[3], rejected.iter().sum()),
    ]
}

/// A reward model: a value head scores each sequence at its last token, trained with the pairwise loss
/// `−log σ(r_chosen − r_rejected − margin)` (the margin is 0 unless the data has a margin column).
pub struct Rm;

impl Objective for Rm {
    type Batch = PairBatch;

    fn stage(&self) -> &'static str {
        "rm"
    }

    fn prepare(&self, split: Split, data: &TokenizedDataset, rows: &[usize]) -> PairBatch {
        PairBatch::new(split, data, rows)
    }

    fn units(&self, batch: &PairBatch) -> usize {
        batch.pairs()
    }

    fn tokens(&self, batch: &PairBatch) -> usize {
        batch.lm.tokens
    }

    fn loss<C: Backend>(
        &self,
        model: &Llama<C>,
        head: Option<&ValueHead<C>>,
        batch: &PairBatch,
    ) -> Option<(Tensor<C, 1>, Stats)> {
        let k = batch.pairs();
        if k == 0 {
            return None;
        }
        let head = head.expect("a reward model has a value head");
        let scores = head.score(model, batch.lm.input(&model.device()), &batch.lm.lens);
        let chosen = scores.clone().narrow(0, 0, k);
        let rejected = scores.narrow(0, k, k);
        let stats = pair_stats(
            &host_values(chosen.clone().detach()),
            &host_values(rejected.clone().detach()),
            ["accuracy", "margin", "scores/chosen", "scores/rejected"],
        );
        Some((pairwise_loss(chosen, rejected, &batch.margins).sum(), stats))
    }
}

/// Preference optimisation (`dpo`): the policy's reply log-probabilities against the reference's.
pub struct Dpo {
    /// The loss.
    pub cfg: PrefConfig,
    /// The reference's log-probabilities (none for `orpo` and `simpo`).
    pub reference: Option<Reference>,
}

impl Objective for Dpo {
    type Batch = PairBatch;

    fn stage(&self) -> &'static str {
        "dpo"
    }

    fn prepare(&self, split: Split, data: &TokenizedDataset, rows: &[usize]) -> PairBatch {
        PairBatch::new(split, data, rows)
    }

    fn units(&self, batch: &PairBatch) -> usize {
        batch.pairs()
    }

    fn tokens(&self, batch: &PairBatch) -> usize {
        batch.lm.tokens
    }

    fn loss<C: Backend>(
        &self,
        model: &Llama<C>,
        _head: Option<&ValueHead<C>>,
        batch: &PairBatch,
    ) -> Option<(Tensor<C, 1>, Stats)> {
        let k = batch.pairs();
        if k == 0 {
            return None;
        }
        let logps = row_logps(model, &batch.lm);
        let lens = batch.lm.scored_per_row();
        let policy = PairLogps {
            chosen: logps.clone().narrow(0, 0, k),
            rejected: logps.narrow(0, k, k),
            chosen_len: lens[..k].to_vec(),
            rejected_len: lens[k..].to_vec(),
        };
        let reference = self
            .reference
            .as_ref()
            .map(|r| r.rows(batch.split, &batch.rows));
        let out = preference_loss(
            &self.cfg,
            &policy,
            reference
                .as_ref()
                .map(|(c, r)| (c.as_slice(), r.as_slice())),
        );
        let mut stats = pair_stats(
            &host_values(out.chosen_rewards),
            &host_values(out.rejected_rewards),
            [
                "rewards/accuracies",
                "rewards/margins",
                "rewards/chosen",
                "rewards/rejected",
            ],
        );
        stats.push((
            "logps/chosen",
            host_values(policy.chosen.detach()).iter().sum(),
        ));
        stats.push((
            "logps/rejected",
            host_values(policy.rejected.detach()).iter().sum(),
        ));
        Some((out.losses.sum(), stats))
    }
}

/// KTO (`kto`): each example's reply against the reference, around the micro-batch's KL estimate.
pub struct Kto {
    /// The loss settings.
    pub cfg: KtoConfig,
    /// The reference's log-probabilities: per row, its own reply's (`chosen`) and the mismatched
    /// reply's (`rejected`).
    pub reference: Reference,
}

impl Objective for Kto {
    type Batch = FeedbackBatch;

    fn stage(&self) -> &'static str {
        "kto"
    }

    fn prepare(&self, split: Split, data: &TokenizedDataset, rows: &[usize]) -> FeedbackBatch {
        FeedbackBatch::new(split, data, rows)
    }

    fn units(&self, batch: &FeedbackBatch) -> usize {
        batch.rows.len()
    }

    fn denominator(&self, name: &str) -> Option<&'static str> {
        match name {
            "rewards/chosen" | "logps/chosen" => Some("fraction/chosen"),
            "rewards/rejected" | "logps/rejected" => Some("fraction/rejected"),
            _ => None,
        }
    }

    fn tokens(&self, batch: &FeedbackBatch) -> usize {
        batch.completions.tokens + batch.kl.tokens
    }

    fn loss<C: Backend>(
        &self,
        model: &Llama<C>,
        _head: Option<&ValueHead<C>>,
        batch: &FeedbackBatch,
    ) -> Option<(Tensor<C, 1>, Stats)> {
        let k = batch.rows.len();
        if k == 0 {
            return None;
        }
        let (ref_own, ref_kl) = self.reference.rows(batch.split, &batch.rows);
        // The KL estimate is a constant of the loss: the mismatched replies go through the policy
        // without gradients (TRL's `torch.no_grad()`).
        let policy_kl = host_f32(row_logps(&model.clone().no_grad(), &batch.kl));
        let kl = kl_estimate(&policy_kl, &ref_kl);
        let policy = row_logps(model, &batch.completions);
        let lens = batch.completions.scored_per_row();
        let out = kto_loss(
            &self.cfg,
            policy.clone(),
            &lens,
            &ref_own,
            kl,
            &batch.desirable,
        );
        let rewards = host_values(out.rewards);
        let logps = host_values(policy.detach());
        let sum = |v: &[f64], want: bool| -> f64 {
            v.iter()
                .zip(&batch.desirable)
                .filter(|(_, d)| **d == want)
                .map(|(x, _)| x)
                .sum()
        };
        let chosen = batch.desirable.iter().filter(|d| **d).count();
        let stats = vec![
            ("kl", kl * k as f64),
            ("rewards/chosen", sum(&rewards, true)),
            ("rewards/rejected", sum(&rewards, false)),
            ("logps/chosen", sum(&logps, true)),
            ("logps/rejected", sum(&logps, false)),
            // Counts of desirable and undesirable examples: logged as their shares of the batch,
            // and the denominators of the means above.
            ("fraction/chosen", chosen as f64),
            ("fraction/rejected", (k - chosen) as f64),
        ];
        Some((out.losses.sum(), stats))
    }
}
