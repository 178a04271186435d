//! Prompt-processing and generation throughput of SmolLM2-135M (the GGUF `scripts/fetch-models.sh`
//! fetches) on the CPU backend: `cargo bench -p lf-model --bench generate`.
//!
//! Environment: `LF_BENCH_MODEL` (model path), `LF_BENCH_PROMPT` (default 128), `LF_BENCH_NEW`
//! (default 64), `LF_BENCH_RUNS` (default 3), `LF_BENCH_DTYPE` (`f32` or `bf16`).

use std::path::PathBuf;

use lf_model::backend::{Cpu, CpuDevice, Dtype};
use lf_model::generate::bench_generation;
use lf_model::{load_model, load_tokenizer};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench targets without `--bench`: a benchmark is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("skipped: run with `cargo bench -p lf-model --bench generate`");
        return Ok(());
    }
    let path = std::env::var_os("LF_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../.models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let dtype: Dtype = std::env::var("LF_BENCH_DTYPE")
        .unwrap_or_else(|_| "f32".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let (prompt_len, new_tokens, runs) = (
        env_usize("LF_BENCH_PROMPT", 128),
        env_usize("LF_BENCH_NEW", 64),
        env_usize("LF_BENCH_RUNS", 3),
    );
    let t0 = std::time::Instant::now();
    let model = load_model::<Cpu>(&path, &CpuDevice, dtype)?.model;
    let load_secs = t0.elapsed().as_secs_f64();
    let tokenizer = load_tokenizer(&path)?;
    // The prompt of scripts/bench/generate_hf.py, the transformers baseline.
    let seed = tokenizer.encode(
        "The history of machine learning begins with early work on perceptrons and \
         statistical pattern recognition. Over the decades, researchers developed \
         new algorithms, larger datasets and faster hardware. ",
        false,
    )?;
    let r = bench_generation(&model, &seed, prompt_len, new_tokens, runs)?;
    println!(
        "{{\"model\": {:?}, \"dtype\": \"{dtype}\", \"load_secs\": {load_secs:.2}, \"threads\": {}, \"result\": {}}}",
        path.display().to_string(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        serde_json::to_string(&r)?
    );
    Ok(())
}
