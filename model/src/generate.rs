//! Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, repetition
//! penalty, seeded), batched prompts, stop on EOS ids or stop strings, a per-token callback, and
//! prompt / generation throughput.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::gguf::tokenizer::TokenizerBundle;
use crate::llama::{ForwardInput, Llama, int_tensor};
use crate::rng::Rng;

/// How the next token is chosen. `temperature == 0` means greedy (argmax).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// Softmax temperature; 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: off).
    pub top_p: f32,
    /// HF repetition penalty over prompt and generated tokens (1: off).
    pub repetition_penalty: f32,
    /// Seed of the sampling RNG.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::greedy()
    }
}

impl Sampling {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks that every setting is a finite number in its range: `temperature ≥ 0`,
    /// `0 < top_p ≤ 1`, `repetition_penalty > 0`.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, value: f32, range: &str| {
            Err(Error::Request(format!(
                "{what} is {value}; it must be {range}"
            )))
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "the temperature",
                self.temperature,
                "a number ≥ 0 (0: greedy)",
            );
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return bad("top_p", self.top_p, "in (0, 1] (1: off)");
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(
                "the repetition penalty",
                self.repetition_penalty,
                "a number > 0 (1: off)",
            );
        }
        Ok(())
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Upper bound on new tokens per prompt.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// Generation of a row ends after one of these ids (the id is kept in the output).
    pub eos_ids: Vec<u32>,
    /// Generation of a row ends once its new text contains one of these (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Id used to left-pad shorter prompts of a batch.
    pub pad_id: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 128,
            sampling: Sampling::greedy(),
            eos_ids: Vec::new(),
            stop_strings: Vec::new(),
            pad_id: 0,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS id was generated.
    Eos,
    /// A stop string appeared.
    StopString,
    /// `max_new_tokens` was reached.
    Length,
    /// The caller stopped generation (its token callback returned `false`).
    Cancelled,
}

/// Generated tokens and timings.
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// New tokens of each prompt (EOS / the stop-string tokens included).
    pub tokens: Vec<Vec<u32>>,
    /// Why each row stopped.
    pub finish: Vec<FinishReason>,
    /// Prompt tokens processed (padding excluded).
    pub prompt_tokens: usize,
    /// Seconds of the prompt pass (it also yields each row's first new token).
    pub prompt_secs: f64,
    /// New tokens produced by the decode steps after the prompt pass.
    pub decode_tokens: usize,
    /// Seconds of the decode steps.
    pub decode_secs: f64,
}

impl GenerateOutput {
    /// Prompt processing throughput (0 when nothing was timed).
    pub fn prompt_tokens_per_sec(&self) -> f64 {
        per_sec(self.prompt_tokens, self.prompt_secs)
    }

    /// Generation throughput (decode steps only; 0 when there were none).
    pub fn gen_tokens_per_sec(&self) -> f64 {
        per_sec(self.decode_tokens, self.decode_secs)
    }
}

fn per_sec(tokens: usize, secs: f64) -> f64 {
    if tokens == 0 || secs <= 0.0 {
        0.0
    } else {
        tokens as f64 / secs
    }
}

/// Applies the HF repetition penalty to `logits` for every id in `seen`.
fn repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = std::collections::HashSet::new();
    for &id in seen {
        if let Some(l) = logits.get_mut(id as usize)
            && done.insert(id)
        {
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

/// Index of the largest value (the first one on ties, like `torch.argmax`).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Picks the next token from one row of logits.
pub fn sample_token(logits: &mut [f32], history: &[u32], s: &Sampling, rng: &mut Rng) -> u32 {
    repetition_penalty(logits, history, s.repetition_penalty);
    if s.is_greedy() {
        return argmax(logits) as u32;
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if s.top_k > 0 && s.top_k < idx.len() {
        idx.truncate(s.top_k);
    }
    let max = logits[idx[0]];
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (f64::from(logits[i] - max) / f64::from(s.temperature)).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if s.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (k, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= f64::from(s.top_p) {
                keep = k + 1;
                break;
            }
        }
        idx.truncate(keep);
        probs.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let u = rng.next_f64();
    let mut cum = 0.0;
    for (k, p) in probs.iter().enumerate() {
        cum += p;
        if u < cum {
            return idx[k] as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

fn logits_rows<B: Backend>(logits: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [b, v] = logits.dims();
    let data = logits.cast(DType::F32).into_data();
    let flat: Vec<f32> = data.to_vec::<f32>().unwrap_or_else(|_| vec![0.0; b * v]);
    flat.chunks(v).map(<[f32]>::to_vec).collect()
}

/// Generates continuations of `prompts` (token ids, not padded).
///
/// `on_token(row, id)` is called for each new token as soon as it is chosen. `tokenizer` is needed
/// only for `stop_strings`.
pub fn generate<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    tokenizer: Option<&TokenizerBundle>,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<GenerateOutput> {
    generate_until(model, prompts, opts, tokenizer, &mut |row, id| {
        on_token(row, id);
        true
    })
}

/// [`generate`], where `on_token(row, id)` returning `false` ends that row at once (finish reason
/// [`FinishReason::Cancelled`]): a server stops decoding for a client that went away.
pub fn generate_until<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    tokenizer: Option<&TokenizerBundle>,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<GenerateOutput> {
    let b = prompts.len();
    let device = model.device();
    let mut out = GenerateOutput {
        tokens: vec![Vec::new(); b],
        finish: vec![FinishReason::Length; b],
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        prompt_secs: 0.0,
        decode_tokens: 0,
        decode_secs: 0.0,
    };
    opts.sampling.validate()?;
    if b == 0 {
        return Ok(out);
    }
    if let Some(p) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::config(format!("prompt {p} is empty")));
    }
    let vocab = model.config.vocab_size;
    if let Some(id) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(Error::Request(format!(
            "token id {id} is outside the model's vocabulary ({vocab} tokens)\nhint: the tokenizer does not belong to this model"
        )));
    }
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let max_len = *lens.iter().max().unwrap_or(&0);
    // The context bounds the prompt and what is generated after it: positions past it have no
    // trained meaning, and the KV cache of a request stays proportional to the context.
    let context = model.config.max_position_embeddings;
    if max_len >= context {
        return Err(Error::Request(format!(
            "the prompt has {max_len} tokens; the model's context holds {context}, so at most {} fit with room for an answer\nhint: shorten the prompt (or the conversation so far)",
            context.saturating_sub(1)
        )));
    }
    if opts.max_new_tokens == 0 {
        return Ok(out);
    }
    let max_new_tokens = opts.max_new_tokens.min(context - max_len);
    let padded = lens.iter().any(|&l| l != max_len);
    let mut rngs: Vec<Rng> = (0..b)
        .map(|i| Rng::for_stream(opts.sampling.seed, &format!("generate.row{i}")))
        .collect();
    let mut history: Vec<Vec<u32>> = prompts.to_vec();
    let mut done = vec![false; b];
    let mut cache = model.new_cache();

    // Prompt pass: left-pad, padding in segment 0, prompts in segment 1, positions from 0.
    let start = Instant::now();
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut row = vec![opts.pad_id; max_len - p.len()];
            row.extend(p);
            row
        })
        .collect();
    let mut input = ForwardInput::from_rows(&ids, &device);
    if padded {
        let positions: Vec<Vec<i64>> = lens
            .iter()
            .map(|&l| {
                let pad = max_len - l;
                (0..max_len).map(|j| j.saturating_sub(pad) as i64).collect()
            })
            .collect();
        let segments: Vec<Vec<i64>> = lens
            .iter()
            .map(|&l| (0..max_len).map(|j| i64::from(j >= max_len - l)).collect())
            .collect();
        input = input
            .with_positions(int_tensor(&positions, &device))
            .with_segments(int_tensor(&segments, &device));
    }
    let mut rows = logits_rows(model.forward_last(input, Some(&mut cache)));
    out.prompt_secs = start.elapsed().as_secs_f64();

    let decode_start = Instant::now();
    let mut step = 0;
    loop {
        let mut next = vec![opts.pad_id; b];
        for i in 0..b {
            if done[i] {
                continue;
            }
            let tok = sample_token(&mut rows[i], &history[i], &opts.sampling, &mut rngs[i]);
            next[i] = tok;
            history[i].push(tok);
            out.tokens[i].push(tok);
            if step > 0 {
                out.decode_tokens += 1;
            }
            if !on_token(i, tok) {
                done[i] = true;
                out.finish[i] = FinishReason::Cancelled;
            } else if opts.eos_ids.contains(&tok) {
                done[i] = true;
                out.finish[i] = FinishReason::Eos;
            } else if !opts.stop_strings.is_empty()
                && let Some(tk) = tokenizer
            {
                let text = tk.decode(&out.tokens[i], false)?;
                if opts.stop_strings.iter().any(|s| text.contains(s.as_str())) {
                    done[i] = true;
                    out.finish[i] = FinishReason::StopString;
                }
            }
            if !done[i] && out.tokens[i].len() >= max_new_tokens {
                done[i] = true;
            }
        }
        step += 1;
        if done.iter().all(|&d| d) {
            break;
        }
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(
                next.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(),
                [b, 1],
            ),
            &device,
        );
        let mut input = ForwardInput::new(ids);
        if padded {
            let pos: Vec<Vec<i64>> = lens
                .iter()
                .zip(&out.tokens)
                .map(|(&l, t)| vec![(l + t.len() - 1) as i64])
                .collect();
            input = input.with_positions(int_tensor(&pos, &device));
        }
        rows = logits_rows(model.forward_last(input, Some(&mut cache)));
    }
    out.decode_secs = if step > 1 {
        decode_start.elapsed().as_secs_f64()
    } else {
        0.0
    };
    Ok(out)
}

/// Throughput of [`generate`] on one synthetic prompt: `prompt_len` tokens (ids cycling through
/// `seed_ids`), then `new_tokens` greedy tokens with no EOS. Runs once to warm up, then `runs`
/// times, and reports the median prompt and generation rates.
pub fn bench_generation<B: Backend>(
    model: &Llama<B>,
    seed_ids: &[u32],
    prompt_len: usize,
    new_tokens: usize,
    runs: usize,
) -> Result<BenchResult> {
    let prompt: Vec<u32> = seed_ids.iter().copied().cycle().take(prompt_len).collect();
    let opts = GenerateOptions {
        max_new_tokens: new_tokens,
        ..Default::default()
    };
    let (mut prompt_rates, mut gen_rates) = (Vec::new(), Vec::new());
    let mut first_tokens = Vec::new();
    for run in 0..=runs.max(1) {
        let out = generate(
            model,
            std::slice::from_ref(&prompt),
            &opts,
            None,
            &mut |_, _| {},
        )?;
        first_tokens = out.tokens[0].iter().take(16).copied().collect();
        if run > 0 {
            prompt_rates.push(out.prompt_tokens_per_sec());
            gen_rates.push(out.gen_tokens_per_sec());
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(BenchResult {
        prompt_tokens: prompt_len,
        new_tokens,
        runs: prompt_rates.len(),
        prompt_tokens_per_sec: median(prompt_rates),
        gen_tokens_per_sec: median(gen_rates),
        first_tokens,
    })
}

/// What [`bench_generation`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Prompt length.
    pub prompt_tokens: usize,
    /// New tokens per run.
    pub new_tokens: usize,
    /// Timed runs (after one warm-up).
    pub runs: usize,
    /// Median prompt-processing rate.
    pub prompt_tokens_per_sec: f64,
    /// Median generation rate (decode steps).
    pub gen_tokens_per_sec: f64,
    /// The first (up to 16) generated ids, to compare runs and implementations.
    pub first_tokens: Vec<u32>,
}
