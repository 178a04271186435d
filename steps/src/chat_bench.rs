//! `lf bench generate`: prompt-processing and greedy decoding throughput of a model, with the prompt
//! and shapes of `scripts/bench/generate_hf.py` (the transformers baseline): a 128-token prompt cut
//! from a fixed English text, then 64 new tokens with no stop at EOS, median of 3 runs after a warm-up.
//!
//! `--model` is required (a Hugging Face folder, a GGUF file or an lf model artifact); `--size` is the
//! number of new tokens (default 64).

use anyhow::Context as _;
use burn::tensor::backend::Backend;
use lf_engine::cli::BenchArgs;
use serde_json::{Value as Json, json};

use crate::train::bench::peak_rss_mib;
use lf_model::ModelArtifact;
use lf_model::backend::{Dtype, InferenceTask, compute_dtype, resolve_device, run_inference};
use lf_model::generate::bench_generation;

/// The text the prompt is cut from: the one `scripts/bench/generate_hf.py` uses.
const PROMPT_TEXT: &str = "The history of machine learning begins with early work on perceptrons and \
    statistical pattern recognition. Over the decades, researchers developed new algorithms, larger \
    datasets and faster hardware. ";
/// Prompt tokens.
const PROMPT_TOKENS: usize = 128;
/// Timed runs after one warm-up.
const RUNS: usize = 3;

/// Runs the benchmark.
pub fn generate(args: &BenchArgs) -> anyhow::Result<Json> {
    let path = args.model.clone().context(
        "`lf bench generate` needs a model\nhint: lf bench generate --model .models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-models.sh fetches it)",
    )?;
    let resolved = resolve_device(args.device)?;
    let dtype = compute_dtype(Dtype::Auto, resolved);
    let source = ModelArtifact::open(&path)?;
    let new_tokens = args.size.unwrap_or(64) as usize;
    let mut out = run_inference(args.device, dtype, Task { source, new_tokens })??;
    out["model"] = json!(path.display().to_string());
    out["device"] = json!(resolved.to_string());
    out["dtype"] = json!(dtype.to_string());
    Ok(out)
}

struct Task {
    source: ModelArtifact,
    new_tokens: usize,
}

impl InferenceTask for Task {
    type Output = anyhow::Result<Json>;

    fn run<B: Backend>(self, device: B::Device, dtype: Dtype) -> anyhow::Result<Json> {
        let tokenizer = self.source.tokenizer()?;
        let model = self.source.load::<B>(&device, dtype)?.merge_lora();
        let seed = tokenizer.encode(PROMPT_TEXT, false)?;
        anyhow::ensure!(
            !seed.is_empty(),
            "the tokenizer gave no tokens for the prompt"
        );
        let r = bench_generation(&model, &seed, PROMPT_TOKENS, self.new_tokens, RUNS)?;
        Ok(json!({
            "benchmark": "generate",
            "prompt_tokens": r.prompt_tokens,
            "new_tokens": r.new_tokens,
            "runs": r.runs,
            "prefill_tokens_per_s": r.prompt_tokens_per_sec,
            "decode_tokens_per_s": r.gen_tokens_per_sec,
            "first_tokens": r.first_tokens,
            "threads": rayon::current_num_threads(),
            "peak_rss_mib": peak_rss_mib(),
        }))
    }
}
