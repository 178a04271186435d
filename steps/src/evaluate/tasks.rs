//! The evaluation tasks, each on one model: perplexity over trained tokens, multiple-choice scoring by
//! the logits of the option letters, greedy generation, reward scores from a value head (or, without one,
//! the replies' mean log-probabilities), and latency.
//!
//! Everything here is generic over the burn backend; the data they read is prepared on the host once
//! for all models ([`Question`], [`GenSample`], the dataset splits).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::data::artifact::{Example, TokenizedDataset, collate};
use crate::data::format::Message;
use lf_model::ValueHead;
use lf_model::generate::{GenerateOptions, Sampling, generate};
use lf_model::llama::{ForwardInput, int_tensor};
use lf_model::{Llama, TokenizerBundle};

/// Positions of one batch whose logits are computed at once (bounds memory to
/// `batch · CHUNK · vocab` floats).
const CHUNK: usize = 128;

/// Sum of the negative log-likelihoods of the trained tokens, and their number.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Nll {
    /// Σ −log p(token), in nats.
    pub sum: f64,
    /// Number of tokens scored.
    pub tokens: usize,
}

impl Nll {
    /// Mean NLL per token.
    pub fn mean(&self) -> f64 {
        self.sum / self.tokens.max(1) as f64
    }

    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
}

/// Checks that every token id of the first `rows` rows is inside the model's vocabulary.
pub fn check_ids(ds: &TokenizedDataset, rows: usize, vocab: usize) -> anyhow::Result<()> {
    for i in 0..rows {
        let ids: Vec<u32> = match ds.example(i) {
            Example::Single(s) => s.input_ids,
            Example::Pair {
                chosen: a,
                rejected: b,
            }
            | Example::Feedback {
                completion: a,
                kl: b,
            } => a.input_ids.into_iter().chain(b.input_ids).collect(),
        };
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            anyhow::bail!(
                "row {i} of the dataset has token id {bad}, outside the model's vocabulary of {vocab}"
            );
        }
    }
    Ok(())
}

fn ints(rows: usize, cols: usize, v: &[u32]) -> Vec<Vec<i64>> {
    (0..rows)
        .map(|r| {
            v[r * cols..(r + 1) * cols]
                .iter()
                .map(|&x| i64::from(x))
                .collect()
        })
        .collect()
}

/// The NLL of the trained tokens of the first `rows` rows of a `pt`/`sft` split: each token whose
/// label is not `-100` is predicted from the tokens before it (labels are aligned with the ids, so
/// position `p` predicts `labels[p + 1]`), with packed rows kept apart by their segment ids.
pub fn perplexity<B: Backend>(
    model: &Llama<B>,
    ds: &TokenizedDataset,
    rows: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Nll> {
    let device = model.device();
    let mut total = Nll::default();
    let idx: Vec<usize> = (0..rows).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let examples: Vec<Example> = chunk.iter().map(|&i| ds.example(i)).collect();
        let b = collate(&examples, ds.info().pad_id);
        let [n, cols] = b.shape;
        if cols < 2 {
            progress(chunk.len());
            continue;
        }
        let input = ForwardInput::new(int_tensor(&ints(n, cols, &b.input_ids), &device))
            .with_positions(int_tensor(&ints(n, cols, &b.position_ids), &device))
            .with_segments(int_tensor(&ints(n, cols, &b.segment_ids), &device));
        let hidden = model.forward_hidden(input, None);
        // Position p (0..cols-1) predicts labels[p + 1].
        let mut start = 0;
        while start < cols - 1 {
            let len = CHUNK.min(cols - 1 - start);
            let mut targets = vec![0i64; n * len];
            let mut mask = vec![false; n * len];
            for r in 0..n {
                for k in 0..len {
                    let label = b.labels[r * cols + start + k + 1];
                    if label >= 0 {
                        targets[r * len + k] = i64::from(label);
                        mask[r * len + k] = true;
                    }
                }
            }
            if mask.iter().any(|&m| m) {
                let logits = model
                    .logits(hidden.clone().narrow(1, start, len))
                    .cast(DType::F32);
                let logp = burn::tensor::activation::log_softmax(logits, 2);
                let idx =
                    Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [n, len, 1]), &device);
                let picked = logp
                    .gather(2, idx)
                    .into_data()
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("cannot read log-probabilities back: {e:?}"))?;
                for (lp, m) in picked.iter().zip(&mask) {
                    if *m {
                        total.sum -= f64::from(*lp);
                        total.tokens += 1;
                    }
                }
            }
            start += len;
        }
        progress(chunk.len());
    }
    Ok(total)
}

/// Logits of the last position of each prompt (left-padded into batches of `batch`).
///
/// # Shapes
/// - output: `[prompts][vocab]`
pub fn last_logits<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    pad_id: u32,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<f32>>> {
    let device = model.device();
    let mut out = Vec::with_capacity(prompts.len());
    for group in prompts.chunks(batch.max(1)) {
        let max_len = group.iter().map(Vec::len).max().unwrap_or(0);
        anyhow::ensure!(max_len > 0, "empty prompt");
        let padded = group.iter().any(|p| p.len() != max_len);
        let ids: Vec<Vec<u32>> = group
            .iter()
            .map(|p| {
                let mut row = vec![pad_id; max_len - p.len()];
                row.extend(p);
                row
            })
            .collect();
        let mut input = ForwardInput::from_rows(&ids, &device);
        if padded {
            let positions: Vec<Vec<i64>> = group
                .iter()
                .map(|p| {
                    let pad = max_len - p.len();
                    (0..max_len).map(|j| j.saturating_sub(pad) as i64).collect()
                })
                .collect();
            let segments: Vec<Vec<i64>> = group
                .iter()
                .map(|p| {
                    (0..max_len)
                        .map(|j| i64::from(j >= max_len - p.len()))
                        .collect()
                })
                .collect();
            input = input
                .with_positions(int_tensor(&positions, &device))
                .with_segments(int_tensor(&segments, &device));
        }
        let logits = model.forward_last(input, None).cast(DType::F32);
        let [b, v] = logits.dims();
        let flat = logits
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read logits back: {e:?}"))?;
        out.extend((0..b).map(|r| flat[r * v..(r + 1) * v].to_vec()));
        progress(group.len());
    }
    Ok(out)
}

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Its subject (`elementary_science`), or empty.
    pub subject: String,
    /// The question.
    pub question: String,
    /// The options, labelled A, B, ... in order.
    pub choices: Vec<String>,
    /// The index of the right option.
    pub answer: usize,
}

/// The letter of option `i`.
pub fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

impl Question {
    /// The question as MMLU writes it, ending with `Answer:` (and ` X` plus a blank line for a
    /// solved example).
    pub fn format(&self, solved: bool) -> String {
        let mut s = format!("{}\n", self.question.trim());
        for (i, c) in self.choices.iter().enumerate() {
            s += &format!("{}. {}\n", letter(i), c.trim());
        }
        s += "Answer:";
        if solved {
            s += &format!(" {}\n\n", letter(self.answer));
        }
        s
    }
}

/// A 64-bit hash of `(seed, a, b)` for seeded, order-independent choices.
fn rank(seed: u64, a: usize, b: usize) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"lf-mc-shots");
    h.update(&seed.to_le_bytes());
    h.update(&(a as u64).to_le_bytes());
    h.update(&(b as u64).to_le_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap())
}

/// The indices of the solved examples shown before question `i`: `shots` other questions, those of
/// the same subject first, each group ordered by a seeded hash of `(seed, i, j)`.
pub fn exemplars(questions: &[Question], i: usize, shots: usize, seed: u64) -> Vec<usize> {
    let mut others: Vec<usize> = (0..questions.len()).filter(|&j| j != i).collect();
    others.sort_by_key(|&j| {
        (
            questions[j].subject != questions[i].subject,
            rank(seed, i, j),
        )
    });
    others.truncate(shots);
    others
}

/// The few-shot prompt of question `i` (MMLU's format).
pub fn mc_prompt(questions: &[Question], i: usize, shots: usize, seed: u64) -> String {
    let q = &questions[i];
    let about = q.subject.replace('_', " ");
    let mut s = if about.trim().is_empty() {
        "The following are multiple choice questions (with answers).\n\n".to_string()
    } else {
        format!("The following are multiple choice questions (with answers) about {about}.\n\n")
    };
    for j in exemplars(questions, i, shots, seed) {
        s += &questions[j].format(true);
    }
    s += &q.format(false);
    s
}

/// How the option letters are read from the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letters {
    /// The token of each option letter.
    pub ids: Vec<u32>,
    /// Whether the tokens are `" A"`… (true) or `"A"`… after a prompt ending in `"Answer: "`.
    pub with_space: bool,
}

/// The single tokens of `" A"`, `" B"`, …: or, when the tokenizer has none for some letter, of
/// `"A"`, `"B"`, … (the prompt then ends with a space).
pub fn letter_tokens(tk: &TokenizerBundle, n: usize) -> anyhow::Result<Letters> {
    for with_space in [true, false] {
        let mut ids = Vec::new();
        for i in 0..n {
            let text = if with_space {
                format!(" {}", letter(i))
            } else {
                letter(i).to_string()
            };
            match tk.encode(&text, false)?.as_slice() {
                [one] => ids.push(*one),
                _ => break,
            }
        }
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if ids.len() == n && distinct.len() == n {
            return Ok(Letters { ids, with_space });
        }
    }
    anyhow::bail!(
        "the tokenizer has no single tokens for the option letters A..{}",
        letter(n - 1)
    )
}

/// A held-out conversation: the prompt messages and the reference reply.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSample {
    /// The messages before the reply.
    pub messages: Vec<Message>,
    /// Tools offered, if any.
    pub tools: Option<serde_json::Value>,
    /// The reference reply.
    pub reference: String,
}

/// Greedy continuations of `prompts` (batches of `batch`), stopping at `eos`: the new tokens of each.
pub fn generate_greedy<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    eos: &[u32],
    pad_id: u32,
    max_new_tokens: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<u32>>> {
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: Sampling::greedy(),
        eos_ids: eos.to_vec(),
        stop_strings: Vec::new(),
        pad_id,
    };
    let mut out = Vec::with_capacity(prompts.len());
    for group in prompts.chunks(batch.max(1)) {
        let g = generate(model, group, &opts, None, &mut |_, _| {})?;
        out.extend(g.tokens.into_iter().map(|mut t| {
            if t.last().is_some_and(|x| eos.contains(x)) {
                t.pop();
            }
            t
        }));
        progress(group.len());
    }
    Ok(out)
}

/// The scores of the chosen and rejected sides of the first `rows` pairs of an `rm` split.
pub fn rewards<B: Backend>(
    model: &Llama<B>,
    head: &ValueHead<B>,
    ds: &TokenizedDataset,
    rows: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Vec<(f64, f64)>> {
    let device = model.device();
    let hidden = head.weight.val().dims()[1];
    let w = head.weight.val().reshape([hidden, 1]);
    let bias = head.bias_value()?;
    let mut out = Vec::with_capacity(rows);
    let idx: Vec<usize> = (0..rows).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let examples: Vec<Example> = chunk.iter().map(|&i| ds.example(i)).collect();
        let b = collate(&examples, ds.info().pad_id);
        let [n, cols] = b.shape;
        let lens: Vec<usize> = (0..n)
            .map(|r| {
                b.attention_mask[r * cols..(r + 1) * cols]
                    .iter()
                    .sum::<u32>() as usize
            })
            .collect();
        let input = ForwardInput::new(int_tensor(&ints(n, cols, &b.input_ids), &device))
            .with_positions(int_tensor(&ints(n, cols, &b.position_ids), &device))
            .with_segments(int_tensor(&ints(n, cols, &b.segment_ids), &device));
        let hidden = model.forward_hidden(input, None).cast(DType::F32);
        let h = hidden.dims()[2];
        let values = lf_model::ops::matmul(hidden.reshape([n * cols, h]), w.clone())
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read values back: {e:?}"))?;
        let score = |r: usize| f64::from(values[r * cols + lens[r].max(1) - 1] + bias);
        let pairs = n / 2;
        for k in 0..pairs {
            out.push((score(k), score(pairs + k)));
        }
        progress(chunk.len());
    }
    Ok(out)
}

/// The scores of the chosen and rejected sides of the first `rows` pairs of an `rm` split for a model
/// without a value head: each reply's mean log-probability per token (SimPO's implicit reward, with
/// no reference model).
pub fn reply_logps<B: Backend>(
    model: &Llama<B>,
    ds: &TokenizedDataset,
    rows: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Vec<(f64, f64)>> {
    use crate::train::loss::{LmBatch, row_logps};
    let mut out = Vec::with_capacity(rows);
    let idx: Vec<usize> = (0..rows).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let examples: Vec<Example> = chunk.iter().map(|&i| ds.example(i)).collect();
        let b = LmBatch::new(&collate(&examples, ds.info().pad_id), false);
        let lens = b.scored_per_row();
        let sums = row_logps(model, &b)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read log-probabilities back: {e:?}"))?;
        let mean = |r: usize| f64::from(sums[r]) / lens[r].max(1) as f64;
        let k = chunk.len();
        for i in 0..k {
            out.push((mean(i), mean(k + i)));
        }
        progress(k);
    }
    Ok(out)
}

/// Token ids that make a stand-in prompt for latency runs.
pub fn latency_seed(tk: &TokenizerBundle) -> anyhow::Result<Vec<u32>> {
    let ids = tk.encode(
        "The quick brown fox jumps over the lazy dog while the model measures how fast it reads. ",
        false,
    )?;
    anyhow::ensure!(!ids.is_empty(), "the tokenizer encodes text to nothing");
    Ok(ids)
}
