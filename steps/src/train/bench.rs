//! `lf bench train`: training throughput (tokens per second through forward, backward and AdamW) and
//! the process's peak memory, on random token ids.
//!
//! Without `--model` it trains the quickstart's tiny model (full weights); with `--model PATH` (a Hugging
//! Face folder or GGUF file) it trains LoRA adapters (rank 8, every linear layer) beside the frozen
//! model, its projections stored as `--quantization` says (`nf4`, `fp4`, `int8`, `none`; by default
//! as training stores them: a GGUF file's quantised blocks kept, other models dense). `--size` is the
//! sequence length (default 256); batches hold 4 sequences.

use anyhow::Context as _;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use lf_engine::cli::BenchArgs;
use serde_json::{Value as Json, json};

use super::init::config_for_vocab;
use super::loss::LmBatch;
use super::params::Method;
use super::trainer::{AdamW, Trainer};
use crate::data::Batch;
use lf_model::ModelArtifact;
use lf_model::backend::{TrainingTask, compute_dtype, resolve_device, run_training};
use lf_model::linear::LoraConfig;
use lf_model::llama::BuildOptions;
use lf_model::quant::{FourBit, QuantSpec};
use lf_model::rng::Rng;
use lf_model::{Dtype, Llama, ModelConfig};
use lf_schemas::kinds::ModelParams;

/// Sequences per batch.
const BATCH: usize = 4;
/// Steps run before timing.
const WARMUP: usize = 1;
/// Steps timed.
const STEPS: usize = 4;

/// The model of the embedded quickstart (`pipelines/quickstart.yaml`): its `base` step, with the
/// vocabulary size its `tokenizer` step asks for.
pub fn quickstart_config() -> anyhow::Result<ModelConfig> {
    let manifest = lf_engine::yaml::parse(QUICKSTART)
        .map_err(|e| anyhow::anyhow!("the embedded quickstart: {e:?}"))?
        .to_json();
    let steps = &manifest["steps"];
    let mut base = steps["base"].clone();
    if let Some(map) = base.as_object_mut() {
        map.remove("kind");
    }
    let params: ModelParams =
        serde_json::from_value(base).context("the `base` step of the embedded quickstart")?;
    let vocab = steps["tokenizer"]["vocab_size"]
        .as_u64()
        .context("the quickstart's `tokenizer` step has no `vocab_size`")?;
    Ok(config_for_vocab(&params, vocab as usize))
}

/// The quickstart manifest the binary embeds.
const QUICKSTART: &str = include_str!("../../../pipelines/quickstart.yaml");

/// Runs the benchmark.
pub fn train(args: &BenchArgs) -> anyhow::Result<Json> {
    let device = args.device;
    let resolved = resolve_device(device)?;
    let dtype = compute_dtype(Dtype::Auto, resolved);
    let seq = args.size.unwrap_or(256) as usize;
    let task = Bench {
        source: match &args.model {
            Some(p) => Some(ModelArtifact::open(p)?),
            None => None,
        },
        seq,
        options: build_options(args.quantization.as_deref())?,
    };
    let mut out = run_training(device, dtype, task)??;
    out["device"] = json!(resolved.to_string());
    out["dtype"] = json!(dtype.to_string());
    Ok(out)
}

/// The storage `--quantization` names.
fn build_options(name: Option<&str>) -> anyhow::Result<BuildOptions> {
    let quantize = |spec| BuildOptions {
        quantize: Some(spec),
        keep_quantized: false,
    };
    Ok(match name {
        None => BuildOptions::KEEP_QUANTIZED,
        Some("none") => BuildOptions::default(),
        Some("nf4") => quantize(QuantSpec::FourBit {
            kind: FourBit::Nf4,
            double: true,
        }),
        Some("fp4") => quantize(QuantSpec::FourBit {
            kind: FourBit::Fp4,
            double: true,
        }),
        Some("int8") => quantize(QuantSpec::Int8),
        Some(other) => anyhow::bail!(
            "unknown quantization `{other}`\nhint: use `nf4`, `fp4`, `int8` or `none`"
        ),
    })
}

struct Bench {
    source: Option<ModelArtifact>,
    seq: usize,
    options: BuildOptions,
}

impl TrainingTask for Bench {
    type Output = anyhow::Result<Json>;

    fn run<B: AutodiffBackend>(self, device: B::Device, dtype: Dtype) -> anyhow::Result<Json> {
        let (model, method, name) = match &self.source {
            None => (
                Llama::<B>::init(&quickstart_config()?, 42, &device, dtype)?,
                Method::Full,
                "quickstart tiny llama (full)".to_string(),
            ),
            Some(src) => (
                src.load_with::<B>(&device, dtype, self.options)?
                    .merge_lora(),
                Method::Lora(LoraConfig {
                    rank: 8,
                    alpha: 16.0,
                    dropout: 0.0,
                    rslora: false,
                    targets: vec!["all-linear".into()],
                }),
                format!("{} (LoRA r=8, all linear)", src.tokenizer_path().display()),
            ),
        };
        let vocab = model.config.vocab_size;
        let params = model.config.num_params();
        let (dense_bytes, quantized_bytes) = model.linear_bytes();
        let storage = match (self.source.is_some(), self.options.quantize) {
            (false, _) => "dense".to_string(),
            (true, Some(spec)) => spec.to_string(),
            (true, None) if quantized_bytes > 0 => "GGUF blocks".to_string(),
            (true, None) => "dense".to_string(),
        };
        let mut trainer = Trainer::new(model, &method, AdamW::default(), 42)?;
        let mut rng = Rng::new(7);
        let n = BATCH * self.seq;
        let mut batch = || {
            let ids: Vec<u32> = (0..n)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect();
            let b = Batch {
                shape: [BATCH, self.seq],
                labels: ids.iter().map(|&i| i as i32).collect(),
                input_ids: ids,
                attention_mask: vec![1; n],
                position_ids: vec![0; n],
                segment_ids: vec![1; n],
            };
            LmBatch::new(&b, false)
        };
        let mut one_step = |trainer: &mut Trainer<B>| {
            let b = batch();
            let denom = b.n_scored() as f64;
            trainer.accumulate(&b, denom);
            trainer.step(1e-4, 1.0);
        };
        for _ in 0..WARMUP {
            one_step(&mut trainer);
        }
        let start = Instant::now();
        for _ in 0..STEPS {
            one_step(&mut trainer);
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(json!({
            "benchmark": "train",
            "model": name,
            "params": params,
            "projections": storage,
            "projection_mib": (dense_bytes + quantized_bytes) as f64 / (1024.0 * 1024.0),
            "trainable_params": trainer.trained_params(),
            "batch": BATCH,
            "seq_len": self.seq,
            "steps": STEPS,
            "step_s": secs / STEPS as f64,
            "tokens_per_s": (STEPS * n) as f64 / secs,
            "peak_rss_mib": peak_rss_mib(),
        }))
    }
}

/// The process's peak resident memory in MiB (`VmHWM`), where the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmarked_model_is_the_quickstarts() {
        let c = quickstart_config().unwrap();
        // pipelines/quickstart.yaml: `tokenizer.vocab_size` and the `base` step.
        assert_eq!(c.vocab_size, 2048);
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
            (128, 384, 4)
        );
        assert_eq!(c.num_attention_heads, 4);
    }
}
