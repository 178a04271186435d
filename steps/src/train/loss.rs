//! The causal language-modelling loss, as transformers computes it: the logits at position `t` are
//! scored against the label at `t + 1`, labels of `-100` are ignored, and the loss is a token-level sum
//! that the caller divides by the trained tokens of the whole (accumulated) batch.
//!
//! Only the positions that are scored go through the LM head: the hidden states are gathered first, so
//! the `[tokens, vocab]` logits of prompts and padding are never formed. [`LmBatch`] and [`PairBatch`]
//! are the collated batches the losses read.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::data::{Batch, Example, Split, TokenizedDataset, collate};
use lf_model::ops;
use lf_model::{ForwardInput, Llama};

/// The label that is not trained.
pub const IGNORE: i32 = -100;

/// A collated batch with its scored positions, on the host.
///
/// # Shapes
/// - `ids`, `positions`, `segments`: `[rows, cols]`, row-major
/// - `scored`, `targets`: `[n]`
#[derive(Debug, Clone)]
pub struct LmBatch {
    /// `[rows, cols]`.
    pub shape: [usize; 2],
    /// Token ids.
    pub ids: Vec<i64>,
    /// Explicit positions and segments (neat packing only: otherwise positions are `0..cols` and
    /// right padding cannot affect the real tokens under a causal mask).
    pub packed: Option<(Vec<i64>, Vec<i64>)>,
    /// Flat indices `row·cols + t` of the positions whose next token is trained.
    pub scored: Vec<i64>,
    /// The token each scored position must predict.
    pub targets: Vec<i64>,
    /// Tokens in the batch (padding excluded), for throughput.
    pub tokens: usize,
    /// Tokens of each row (padding excluded).
    pub lens: Vec<usize>,
}

impl LmBatch {
    /// Prepares a collated batch; `packed` passes position and segment ids to the model.
    pub fn new(batch: &Batch, packed: bool) -> LmBatch {
        let [rows, cols] = batch.shape;
        let mut scored = Vec::new();
        let mut targets = Vec::new();
        for r in 0..rows {
            for t in 0..cols.saturating_sub(1) {
                let label = batch.labels[r * cols + t + 1];
                if label != IGNORE {
                    scored.push((r * cols + t) as i64);
                    targets.push(i64::from(label));
                }
            }
        }
        LmBatch {
            shape: [rows, cols],
            ids: batch.input_ids.iter().map(|&x| i64::from(x)).collect(),
            packed: packed.then(|| {
                (
                    batch.position_ids.iter().map(|&x| i64::from(x)).collect(),
                    batch.segment_ids.iter().map(|&x| i64::from(x)).collect(),
                )
            }),
            scored,
            targets,
            tokens: batch.attention_mask.iter().filter(|&&m| m != 0).count(),
            lens: (0..rows)
                .map(|r| {
                    batch.attention_mask[r * cols..(r + 1) * cols]
                        .iter()
                        .filter(|&&m| m != 0)
                        .count()
                })
                .collect(),
        }
    }

    /// Number of scored positions (the loss's denominator contribution).
    pub fn n_scored(&self) -> usize {
        self.scored.len()
    }

    /// The number of scored positions of each row.
    pub fn scored_per_row(&self) -> Vec<usize> {
        let mut n = vec![0; self.shape[0]];
        for &i in &self.scored {
            n[i as usize / self.shape[1]] += 1;
        }
        n
    }

    /// The model input.
    pub fn input<B: Backend>(&self, device: &B::Device) -> ForwardInput<B> {
        let int2 = |v: &[i64]| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), self.shape), device)
        };
        let mut input = ForwardInput::new(int2(&self.ids));
        if let Some((pos, seg)) = &self.packed {
            input = input.with_positions(int2(pos)).with_segments(int2(seg));
        }
        input
    }
}

/// The summed cross-entropy of the scored positions (f32), as a one-element tensor; `None` when no
/// position is scored.
pub fn lm_loss_sum<B: Backend>(model: &Llama<B>, batch: &LmBatch) -> Option<Tensor<B, 1>> {
    let n = batch.n_scored();
    if n == 0 {
        return None;
    }
    let device = model.device();
    let [rows, cols] = batch.shape;
    let hidden = model.forward_hidden(batch.input(&device), None);
    let width = hidden.dims()[2];
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(batch.scored.clone(), [n]), &device);
    let picked = hidden.reshape([rows * cols, width]).select(0, idx);
    Some(-scored_logps(model, picked, &batch.targets).sum())
}

/// `log p(target)` of each picked hidden row (f32) through the model's LM head. On the CPU the head
/// and the log-probabilities are one operation that never keeps the `[n, vocab]` logits
/// ([`lf_model::fused::head_logps`]); elsewhere, the logits then [`token_logps`].
///
/// # Shapes
/// - `picked`: `[n, width]`
/// - output: `[n]`
fn scored_logps<B: Backend>(
    model: &Llama<B>,
    picked: Tensor<B, 2>,
    targets: &[i64],
) -> Tensor<B, 1> {
    let picked = match model.head_weight() {
        Some(weight) => match lf_model::fused::head_logps(picked, weight, targets) {
            Ok(logps) => return logps,
            Err((picked, _)) => picked,
        },
        None => picked,
    };
    let [n, width] = picked.dims();
    let logits = model.logits(picked.reshape([1, n, width]));
    let vocab = logits.dims()[2];
    token_logps(ops::cast(logits.reshape([n, vocab]), DType::F32), targets)
}

/// The summed log-probability of the scored tokens of each row (f32): `Σₜ log p(targetₜ)` over the
/// positions of the row whose next token is trained. A row without scored positions gets 0.
///
/// # Shapes
/// - output: `[rows]`
pub fn row_logps<B: Backend>(model: &Llama<B>, batch: &LmBatch) -> Tensor<B, 1> {
    let device = model.device();
    let [rows, cols] = batch.shape;
    let n = batch.n_scored();
    if n == 0 {
        return Tensor::zeros([rows], (&device, DType::F32));
    }
    let hidden = model.forward_hidden(batch.input(&device), None);
    let width = hidden.dims()[2];
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(batch.scored.clone(), [n]), &device);
    let picked = hidden.reshape([rows * cols, width]).select(0, idx);
    let token_logps = scored_logps(model, picked, &batch.targets).reshape([n, 1]);
    // Sum per row: a [rows, n] matrix of ones where token j belongs to row r.
    let mut assign = vec![0f32; rows * n];
    for (j, &i) in batch.scored.iter().enumerate() {
        assign[(i as usize / cols) * n + j] = 1.0;
    }
    let assign =
        Tensor::<B, 2>::from_data(TensorData::new(assign, [rows, n]), (&device, DType::F32));
    ops::matmul(assign, token_logps).reshape([rows])
}

/// `log softmax(logits)[target]` of each row (f32). On the CPU, one fused kernel
/// ([`lf_model::fused::token_logps`]), which keeps only the logits for the backward.
///
/// # Shapes
/// - `logits`: `[n, vocab]` (f32)
/// - `targets`: `n` token ids
/// - output: `[n]`
pub fn token_logps<B: Backend>(logits: Tensor<B, 2>, targets: &[i64]) -> Tensor<B, 1> {
    let logits = match lf_model::fused::token_logps(logits, targets) {
        Ok(logps) => return logps,
        Err(logits) => logits,
    };
    let n = targets.len();
    let device = logits.device();
    let targets =
        Tensor::<B, 2, Int>::from_data(TensorData::new(targets.to_vec(), [n, 1]), &device);
    let max = logits.clone().detach().max_dim(1);
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max;
    (logits.gather(1, targets) - lse).reshape([n])
}

/// Pairs of an `rm` dataset, collated: the chosen sequences in rows `0..k`, the rejected ones in
/// `k..2k`.
pub struct PairBatch {
    /// The collated pairs.
    pub lm: LmBatch,
    /// Which split the rows come from.
    pub split: Split,
    /// The rows.
    pub rows: Vec<usize>,
    /// The margin of each pair (empty when the data has none).
    pub margins: Vec<f32>,
}

impl PairBatch {
    /// Prepares rows `rows` of an `rm` split.
    pub fn new(split: Split, data: &TokenizedDataset, rows: &[usize]) -> PairBatch {
        let examples: Vec<_> = rows.iter().map(|&i| data.example(i)).collect();
        let margins: Vec<Option<f32>> = rows.iter().map(|&i| data.margin(i)).collect();
        PairBatch {
            lm: LmBatch::new(&collate(&examples, data.info().pad_id), false),
            split,
            rows: rows.to_vec(),
            margins: if margins.iter().all(Option::is_some) {
                margins.into_iter().flatten().collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The number of pairs.
    pub fn pairs(&self) -> usize {
        self.rows.len()
    }
}

/// Rows of a `kto` split, collated: the completions (trained) and, apart, the prompts with
/// mismatched replies (for the KL estimate, never trained).
pub struct FeedbackBatch {
    /// The conversations with their own replies.
    pub completions: LmBatch,
    /// The prompts with other rows' replies, in the same order.
    pub kl: LmBatch,
    /// Which split the rows come from.
    pub split: Split,
    /// The rows.
    pub rows: Vec<usize>,
    /// Whether each row's reply is desirable.
    pub desirable: Vec<bool>,
}

impl FeedbackBatch {
    /// Prepares rows `rows` of a `kto` split.
    ///
    /// # Panics
    /// If the split is not a `kto` one.
    pub fn new(split: Split, data: &TokenizedDataset, rows: &[usize]) -> FeedbackBatch {
        let (mut completions, mut kl) = (Vec::new(), Vec::new());
        for &i in rows {
            let Example::Feedback { completion, kl: k } = data.example(i) else {
                panic!("row {i} of a kto split is not feedback");
            };
            completions.push(Example::Single(completion));
            kl.push(Example::Single(k));
        }
        let pad = data.info().pad_id;
        FeedbackBatch {
            completions: LmBatch::new(&collate(&completions, pad), false),
            kl: LmBatch::new(&collate(&kl, pad), false),
            split,
            rows: rows.to_vec(),
            desirable: rows
                .iter()
                .map(|&i| data.desirable(i).expect("a kto split marks every row"))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_positions_are_shifted_and_skip_ignored_labels() {
        let batch = Batch {
            shape: [2, 4],
            input_ids: vec![5, 6, 7, 8, 9, 10, 0, 0],
            labels: vec![IGNORE, 6, 7, IGNORE, IGNORE, 10, IGNORE, IGNORE],
            attention_mask: vec![1, 1, 1, 1, 1, 1, 0, 0],
            position_ids: vec![0, 1, 2, 3, 0, 1, 0, 0],
            segment_ids: vec![1, 1, 1, 1, 1, 1, 0, 0],
        };
        let b = LmBatch::new(&batch, false);
        assert_eq!(b.scored, vec![0, 1, 4]);
        assert_eq!(b.targets, vec![6, 7, 10]);
        assert_eq!(b.tokens, 6);
        assert!(b.packed.is_none());
    }
}
