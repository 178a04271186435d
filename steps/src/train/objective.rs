//! What each training kind optimises, as the one thing the shared loop ([`super::run`]) does not know:
//! how rows become a batch, and a batch a loss. [`Lm`] is the causal-LM loss of `pretrain` and `sft`,
//! [`Rm`] the pairwise loss of a reward model's value head, [`Dpo`] the preference losses of `dpo`.
//!
//! A loss is a sum over the batch's *units* (trained tokens for [`Lm`], pairs otherwise); the loop
//! divides by the units of the whole accumulated batch. Other numbers an objective reports (rewards,
//! accuracy) are sums over units too, logged as means.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::loss::{LmBatch, PairBatch, lm_loss_sum, row_logps};
use super::pref::{PairLogps, PrefConfig, pairwise_loss, preference_loss};
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
