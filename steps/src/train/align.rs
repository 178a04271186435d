//! Tests of the alignment objectives on a tiny model: the value head scores the last real token, a step
//! lowers the reward model's loss, the LoRA reference (adapters off) is the base model, and DPO starts
//! at `log 2` and moves the policy toward the chosen replies, KTO starts at `λ/2` and raises the
//! desirable replies' log-probabilities over the undesirable ones'. The losses themselves are checked
//! against hand-computed values in [`super::pref`].

use burn::module::AutodiffModule as _;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion as _, Tensor};
use lf_schemas::kinds::train::PrefLoss;

use super::loss::{FeedbackBatch, PairBatch};
use super::loss::{IGNORE, LmBatch, row_logps};
use super::objective::{Dpo, Kto, Objective, Rm};
use super::params::Method;
use super::pref::{KtoConfig, PrefConfig};
use super::reference::{Reference, SplitLogps};
use super::trainer::{AdamW, Trainer};
use crate::data::{Batch, Split};
use lf_model::ValueHead;
use lf_model::linear::LoraConfig;
use lf_model::{CpuAutodiff, CpuDevice, Dtype, Llama, load_model};

type AD = CpuAutodiff;

fn tiny() -> Llama<AD> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/llama");
    load_model::<AD>(&dir, &CpuDevice, Dtype::F32)
        .unwrap()
        .model
}

/// Rows of (prompt, reply) token ids, right-padded with 0; only the reply is trained.
fn rows(seqs: &[(&[u32], &[u32])]) -> Batch {
    let cols = seqs.iter().map(|(p, r)| p.len() + r.len()).max().unwrap();
    let n = seqs.len();
    let mut b = Batch {
        shape: [n, cols],
        input_ids: vec![0; n * cols],
        labels: vec![IGNORE; n * cols],
        attention_mask: vec![0; n * cols],
        position_ids: vec![0; n * cols],
        segment_ids: vec![0; n * cols],
    };
    for (r, (prompt, reply)) in seqs.iter().enumerate() {
        for (t, &id) in prompt.iter().chain(reply.iter()).enumerate() {
            let at = r * cols + t;
            b.input_ids[at] = id;
            b.labels[at] = if t >= prompt.len() { id as i32 } else { IGNORE };
            b.attention_mask[at] = 1;
            b.position_ids[at] = t as u32;
            b.segment_ids[at] = 1;
        }
    }
    b
}

/// Two pairs sharing their prompts: chosen rows first, then rejected, as `collate` lays them out.
fn pairs() -> PairBatch {
    let b = rows(&[
        (&[1, 5, 9, 13], &[20, 21, 22, 2]),
        (&[1, 7, 3], &[30, 31, 2]),
        (&[1, 5, 9, 13], &[40, 41, 2]),
        (&[1, 7, 3], &[50, 51, 52, 53, 2]),
    ]);
    PairBatch {
        lm: LmBatch::new(&b, false),
        split: Split::Train,
        rows: vec![0, 1],
        margins: Vec::new(),
    }
}

fn values<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn the_value_head_scores_the_last_real_token() {
    let model = tiny().valid();
    let head = ValueHead::<lf_model::Cpu>::init(64, 7, &CpuDevice);
    let padded = pairs().lm;
    let scores = values(head.score(&model, padded.input(&CpuDevice), &padded.lens));
    // Each row alone, unpadded: its score is the head applied to its last hidden state.
    let b = rows(&[
        (&[1, 5, 9, 13], &[20, 21, 22, 2]),
        (&[1, 7, 3], &[30, 31, 2]),
        (&[1, 5, 9, 13], &[40, 41, 2]),
        (&[1, 7, 3], &[50, 51, 52, 53, 2]),
    ]);
    let cols = padded.shape[1];
    for (r, &got) in scores.iter().enumerate() {
        let len = padded.lens[r];
        let one = rows(&[(&b.input_ids[r * cols..r * cols + len], &[])]);
        let alone = LmBatch::new(&one, false);
        let hidden = model.forward_hidden(alone.input(&CpuDevice), None);
        let last = hidden
            .narrow(1, len - 1, 1)
            .reshape([1, 64])
            .cast(DType::F32);
        let w = head.weight.val().transpose();
        let want = (lf_model::ops::matmul(last, w) + head.bias.val().unsqueeze::<2>())
            .into_scalar()
            .elem::<f32>();
        assert!((got - want).abs() < 1e-5, "row {r}: {got} vs {want}");
    }
    // Padding does not change a row's score: the last real token is scored, not the last column.
    assert_eq!(padded.lens, vec![8, 6, 7, 8]);
}

#[test]
fn a_step_lowers_the_reward_model_loss() {
    let batch = pairs();
    let mut t = Trainer::new(tiny(), &Method::Full, AdamW::default(), 0)
        .unwrap()
        .with_value_head(ValueHead::init(64, 0, &CpuDevice));
    assert_eq!(
        t.trained_names().last().map(String::as_str),
        Some("v_head.summary.bias")
    );
    let mut losses = Vec::new();
    for _ in 0..3 {
        let (loss, stats) = Rm.loss(&t.model, t.head.as_ref(), &batch).unwrap();
        losses.push(t.backward(loss, 2.0));
        assert_eq!(stats.len(), 4);
        t.step(1e-3, 1.0);
    }
    let (after, _) = Rm
        .loss(
            &t.model.valid(),
            t.head.as_ref().map(|h| h.valid()).as_ref(),
            &batch,
        )
        .unwrap();
    let after = after.into_scalar().elem::<f64>() / 2.0;
    assert!(after < losses[0] / 2.0 - 1e-3, "{losses:?} → {after}");
}

#[test]
fn margins_raise_the_reward_model_loss_by_the_formula() {
    // −log σ(d − m) with the data's margins m.
    let model = tiny().valid();
    let head = ValueHead::<lf_model::Cpu>::init(64, 5, &CpuDevice);
    let plain = pairs();
    let with = PairBatch {
        margins: vec![0.5, 2.0],
        ..pairs()
    };
    let scores = values(head.score(&model, plain.lm.input(&CpuDevice), &plain.lm.lens));
    let want: f64 = (0..2)
        .map(|i| {
            let d = f64::from(scores[i] - scores[2 + i]) - [0.5, 2.0][i];
            (1.0 + (-d).exp()).ln()
        })
        .sum();
    let (got, _) = Rm.loss(&model, Some(&head), &with).unwrap();
    let got = got.into_scalar().elem::<f64>();
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    let (base, _) = Rm.loss(&model, Some(&head), &plain).unwrap();
    assert!(base.into_scalar().elem::<f64>() < got);
}

fn lora() -> Method {
    Method::Lora(LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: vec!["all-linear".into()],
    })
}

#[test]
fn the_lora_reference_is_the_base_model() {
    let batch = pairs().lm;
    let base = values(row_logps(&tiny().valid(), &batch));
    let mut t = Trainer::new(tiny(), &lora(), AdamW::default(), 1).unwrap();
    // Move the adapters away from zero, so the policy differs from its base.
    for _ in 0..2 {
        let n = batch.n_scored() as f64;
        t.accumulate(&batch, n).unwrap();
        t.step(5e-2, 0.0);
    }
    let policy = values(row_logps(&t.model.valid(), &batch));
    assert!(
        policy.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3),
        "{policy:?} vs {base:?}"
    );
    let reference = values(row_logps(&t.model.valid().without_lora(), &batch));
    assert_eq!(reference, base, "the adapters-off model must be the base");
}

fn dpo(loss: PrefLoss, reference: Option<Reference>) -> Dpo {
    Dpo {
        cfg: PrefConfig {
            loss,
            beta: 0.1,
            label_smoothing: 0.0,
            gamma: 0.5,
            ftx: 0.0,
        },
        reference,
    }
}

fn reference_of(model: &Llama<lf_model::Cpu>, batch: &PairBatch) -> Reference {
    let v = values(row_logps(model, &batch.lm));
    Reference {
        train: SplitLogps {
            chosen: v[..2].to_vec(),
            rejected: v[2..].to_vec(),
        },
        val: None,
    }
}

#[test]
fn dpo_starts_at_log_2_and_learns_the_preference() {
    let batch = pairs();
    let mut t = Trainer::new(tiny(), &lora(), AdamW::default(), 1).unwrap();
    let obj = dpo(
        PrefLoss::Sigmoid,
        Some(reference_of(&t.model.valid().without_lora(), &batch)),
    );
    let mut first = None;
    let mut margins = Vec::new();
    for _ in 0..4 {
        let (loss, stats) = obj.loss(&t.model, None, &batch).unwrap();
        let value = t.backward(loss, 2.0) / 2.0;
        first.get_or_insert(value);
        let margin = stats
            .iter()
            .find(|(k, _)| *k == "rewards/margins")
            .unwrap()
            .1;
        margins.push(margin / 2.0);
        t.step(2e-2, 1.0);
    }
    // The policy is its reference before the first step: Δ = 0 and the loss is log 2.
    let first = first.unwrap();
    assert!((first - std::f64::consts::LN_2).abs() < 1e-6, "{first}");
    assert!(margins[0].abs() < 1e-6, "{margins:?}");
    assert!(margins[3] > margins[0] + 1e-3, "{margins:?}");
}

#[test]
fn reference_free_losses_train_without_a_reference() {
    let batch = pairs();
    for loss in [PrefLoss::Orpo, PrefLoss::Simpo] {
        let mut t = Trainer::new(tiny(), &Method::Full, AdamW::default(), 0).unwrap();
        let obj = dpo(loss, None);
        let mut losses = Vec::new();
        for _ in 0..3 {
            let (l, _) = obj.loss(&t.model, None, &batch).unwrap();
            losses.push(t.backward(l, 2.0));
            t.step(1e-3, 1.0);
        }
        assert!(losses[2] < losses[0], "{loss:?}: {losses:?}");
    }
}

#[test]
fn a_lora_model_merged_on_an_autodiff_backend_trains_again() {
    // What `dpo` (or `sft`) does with a LoRA artifact as its `model`: merge, then train anew.
    let batch = pairs().lm;
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        rslora: false,
        targets: vec!["q_proj".into()],
    };
    let merged = tiny().with_lora(&cfg, 3).unwrap().merge_lora();
    let mut t = Trainer::new(merged, &lora(), AdamW::default(), 1).unwrap();
    let n = batch.n_scored() as f64;
    assert!(t.accumulate(&batch, n).unwrap().is_finite());
    t.step(1e-3, 1.0);
}

/// Four replies to two prompts, the first two desirable; each KL sequence pairs a prompt with a reply
/// to the other prompt.
fn feedback() -> FeedbackBatch {
    let (p1, p2): (&[u32], &[u32]) = (&[1, 5, 9, 13], &[1, 7, 3]);
    let (good1, good2, bad1, bad2): (&[u32], &[u32], &[u32], &[u32]) = (
        &[20, 21, 22, 2],
        &[30, 31, 2],
        &[40, 41, 2],
        &[50, 51, 52, 53, 2],
    );
    FeedbackBatch {
        completions: LmBatch::new(
            &rows(&[(p1, good1), (p2, good2), (p1, bad1), (p2, bad2)]),
            false,
        ),
        kl: LmBatch::new(
            &rows(&[(p1, good2), (p2, good1), (p1, bad2), (p2, bad1)]),
            false,
        ),
        split: Split::Train,
        rows: vec![0, 1, 2, 3],
        desirable: vec![true, true, false, false],
    }
}

#[test]
fn kto_starts_at_half_its_weight_and_learns_what_is_desirable() {
    let batch = feedback();
    let mut t = Trainer::new(tiny(), &lora(), AdamW::default(), 1).unwrap();
    let base = t.model.valid().without_lora();
    let reference = Reference {
        train: SplitLogps {
            chosen: values(row_logps(&base, &batch.completions)),
            rejected: values(row_logps(&base, &batch.kl)),
        },
        val: None,
    };
    let obj = Kto {
        cfg: KtoConfig {
            beta: 0.1,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
            ftx: 0.0,
        },
        reference,
    };
    // Desirable minus undesirable mean log-probability, under the policy.
    let margin = |m: &Llama<lf_model::Cpu>| {
        let v = values(row_logps(m, &batch.completions));
        f64::from(v[0] + v[1] - v[2] - v[3]) / 2.0
    };
    let before = margin(&t.model.valid());
    let mut losses = Vec::new();
    for _ in 0..4 {
        let (loss, _) = obj.loss(&t.model, None, &batch).unwrap();
        losses.push(t.backward(loss, 4.0) / 4.0);
        t.step(2e-2, 1.0);
    }
    // The policy is its reference before the first step: every log-ratio and the KL estimate are 0,
    // and each example's loss is 1 − σ(0).
    assert!((losses[0] - 0.5).abs() < 1e-6, "{losses:?}");
    assert!(losses[3] < losses[0], "{losses:?}");
    let after = margin(&t.model.valid());
    assert!(after > before + 1e-3, "{before} → {after}");
}
