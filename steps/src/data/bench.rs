//! `lf bench tokenize`: encoding speed on 100k generated alpaca-style rows, the same rows
//! `scripts/bench/tokenize_hf.py` encodes with Python's `tokenizers`, so the numbers compare.
//!
//! These print numbers; nothing asserts on them (tests must not time things).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use rayon::prelude::*;
use serde_json::{Value as Json, json};
use sha2::Digest as _;

use super::chat::ChatTemplate;
use super::encode::{Encoder, Outcome, Settings};
use super::format::{Conversation, Message, Role, Sample};
use super::tokenizer::ModelTokenizer;

/// The words rows are made of (as in `tokenize_hf.py`).
const WORDS: &[&str] = &[
    "the",
    "model",
    "data",
    "learning",
    "train",
    "token",
    "language",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "that",
    "by",
    "this",
    "as",
    "explain",
    "write",
    "describe",
    "list",
    "summarize",
    "translate",
    "function",
    "code",
    "python",
    "rust",
    "memory",
    "fast",
    "small",
    "large",
    "network",
    "neural",
    "gradient",
    "loss",
    "optimizer",
    "batch",
    "sequence",
    "attention",
    "layer",
    "weight",
    "matrix",
    "vector",
    "example",
    "question",
    "answer",
    "story",
    "city",
    "river",
    "mountain",
    "history",
    "science",
    "music",
    "friend",
    "computer",
    "system",
    "simple",
    "important",
    "quickly",
    "carefully",
    "because",
    "however",
    "서울",
    "한국어",
    "学习",
    "数据",
    "café",
    "naïve",
    "emoji🙂",
    "2024",
    "3.14",
    "C++",
    "e-mail",
    "don't",
    "it's",
];

/// SplitMix64, the generator `tokenize_hf.py` specifies.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value below `n` (modulo bias accepted, as in the script).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn words(rng: &mut SplitMix64, k: u64) -> String {
    let mut out: Vec<String> = Vec::with_capacity(k as usize);
    for j in 0..k {
        let mut w = WORDS[rng.below(WORDS.len() as u64) as usize].to_string();
        if j != k - 1 && rng.below(10) == 0 {
            w.push(',');
        }
        out.push(w);
    }
    out.join(" ")
}

/// One generated row: instruction, input (maybe empty), output.
pub struct GenRow {
    /// The question.
    pub instruction: String,
    /// Extra input, or empty.
    pub input: String,
    /// The answer.
    pub output: String,
}

impl GenRow {
    /// The text the Python script tokenizes.
    pub fn text(&self) -> String {
        let mut t = format!("### Instruction:\n{}\n\n", self.instruction);
        if !self.input.is_empty() {
            t.push_str(&format!("### Input:\n{}\n\n", self.input));
        }
        t.push_str("### Response:\n");
        t.push_str(&self.output);
        t
    }
}

/// `n` rows from `seed`, exactly as `tokenize_hf.py` generates them.
pub fn gen_rows(n: usize, seed: u64) -> Vec<GenRow> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let k = 4 + rng.below(12);
            let text = words(&mut rng, k);
            let mut chars = text.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            let mut instruction: String = first.into_iter().chain(chars).collect();
            instruction.push('?');
            let has_input = rng.below(2) == 1;
            let input = if has_input {
                let k = 3 + rng.below(18);
                words(&mut rng, k) + "."
            } else {
                String::new()
            };
            let k = 20 + rng.below(101);
            let mut output = words(&mut rng, k) + ".";
            if rng.below(4) == 0 {
                output = format!("{output} {}", rng.below(100_000));
            }
            GenRow {
                instruction,
                input,
                output,
            }
        })
        .collect()
}

fn default_tokenizer() -> PathBuf {
    let here = Path::new("tests/fixtures/smollm2/tokenizer");
    if here.is_dir() {
        return here.to_path_buf();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/tokenizer")
}

/// Runs the benchmark: `rows` rows, the tokenizer of `model` (a folder or a `tokenizer.json`;
/// default SmolLM2's fixture).
pub fn tokenize(rows: usize, model: Option<&Path>) -> anyhow::Result<Json> {
    let path = model
        .map(Path::to_path_buf)
        .unwrap_or_else(default_tokenizer);
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.clone()
    };
    let tok = ModelTokenizer::load(&dir)
        .with_context(|| format!("cannot load the tokenizer in `{}`", dir.display()))?;
    let t0 = Instant::now();
    let generated = gen_rows(rows, 42);
    let texts: Vec<String> = generated.iter().map(GenRow::text).collect();
    let gen_s = t0.elapsed().as_secs_f64();
    let digest = hex(&sha2::Sha256::digest(texts.join("\n").as_bytes()));

    let enc_err = |e: tokenizers::Error| anyhow::anyhow!("encoding failed: {e}");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    tok.tokenizer
        .encode_batch(refs[..refs.len().min(1000)].to_vec(), false)
        .map_err(enc_err)?;
    let t0 = Instant::now();
    let encodings = tok
        .tokenizer
        .encode_batch(refs.clone(), false)
        .map_err(enc_err)?;
    let batch_s = t0.elapsed().as_secs_f64();
    let total: usize = encodings.iter().map(|e| e.len()).sum();
    let id_sum: u64 = encodings
        .iter()
        .flat_map(|e| e.get_ids())
        .map(|&i| i as u64)
        .sum();
    let first_ids: Vec<u32> = encodings
        .first()
        .map(|e| e.get_ids().iter().take(16).copied().collect())
        .unwrap_or_default();
    drop(encodings);

    let n_seq = rows.min(20_000);
    let t0 = Instant::now();
    let mut seq_tokens = 0;
    for t in &refs[..n_seq] {
        seq_tokens += tok.tokenizer.encode(*t, false).map_err(enc_err)?.len();
    }
    let seq_s = t0.elapsed().as_secs_f64();

    // The whole sft encoding of lf's dataset step: chat template, reply spans, labels.
    let template_source = tok
        .chat_template
        .clone()
        .unwrap_or_else(|| super::chat::BUILTINS[0].source.to_string());
    let template = ChatTemplate::new(&template_source, &tok.tokens, &Default::default())?;
    let settings = Settings {
        stage: lf_schemas::kinds::dataset::Stage::Sft,
        cutoff_len: 1 << 20,
        truncation: lf_schemas::kinds::dataset::Truncation::Drop,
        train_on_prompt: false,
        mask_history: false,
    };
    let encoder = Encoder::new(&tok, Some(&template), settings);
    let samples: Vec<Sample> = generated
        .iter()
        .map(|r| {
            let mut prompt = r.instruction.clone();
            if !r.input.is_empty() {
                prompt.push('\n');
                prompt.push_str(&r.input);
            }
            Sample::Chat(Conversation {
                messages: vec![
                    Message::new(Role::User, prompt),
                    Message::new(Role::Assistant, r.output.clone()),
                ],
                tools: None,
            })
        })
        .collect();
    let t0 = Instant::now();
    let sft_tokens: usize = samples
        .par_iter()
        .map(|s| match encoder.encode(s) {
            Outcome::Seq { seq, .. } => seq.ids.len(),
            _ => 0,
        })
        .sum();
    let sft_s = t0.elapsed().as_secs_f64();

    Ok(json!({
        "bench": "tokenize",
        "tokenizers_version": "0.22 (Rust crate)",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "rayon_threads": rayon::current_num_threads(),
        "tokenizer": path.display().to_string(),
        "rows": rows,
        "seed": 42,
        "rows_sha256": digest,
        "total_tokens": total,
        "token_id_sum": id_sum,
        "first_row": texts.first(),
        "first_row_ids_head": first_ids,
        "gen_rows_s": round3(gen_s),
        "encode_batch_s": round3(batch_s),
        "encode_batch_rows_per_s": round1(rows as f64 / batch_s),
        "encode_batch_tokens_per_s": round1(total as f64 / batch_s),
        "sequential_rows": n_seq,
        "sequential_s": round3(seq_s),
        "sequential_rows_per_s": round1(n_seq as f64 / seq_s),
        "sequential_tokens_per_s": round1(seq_tokens as f64 / seq_s),
        "sft_encode_rows": rows,
        "sft_encode_s": round3(sft_s),
        "sft_encode_rows_per_s": round1(rows as f64 / sft_s),
        "sft_encode_tokens_per_s": round1(sft_tokens as f64 / sft_s),
        "sft_encode_note": "render with the model's chat template + reply spans + labels + prompt-prefix check, all cores",
    }))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_well_formed() {
        let a = gen_rows(50, 42);
        let b = gen_rows(50, 42);
        assert_eq!(
            a.iter().map(GenRow::text).collect::<Vec<_>>(),
            b.iter().map(GenRow::text).collect::<Vec<_>>()
        );
        for r in &a {
            assert!(r.instruction.ends_with('?'));
            assert!(r.output.contains('.'));
        }
        assert!(a[0].text().starts_with("### Instruction:\n"));
    }
}
