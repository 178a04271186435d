//! The training loop of `pretrain` and `sft`: resume from the last checkpoint, run optimizer steps,
//! log, evaluate, checkpoint, and write the artifact.

use std::fs;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use burn::tensor::backend::AutodiffBackend;
use lf_engine::StepContext;
use lf_schemas::kinds::TrainParams;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::FinetuningType;
use serde_json::{Value as Json, json};

use super::artifact::{BaseOut, ModelSource, write_full, write_lora};
use super::checkpoint::{self, CheckpointState, StepRecord};
use super::loss::LmBatch;
use super::order::DataOrder;
use super::params::{FreezeSpec, Method};
use super::plot;
use super::schedule::Schedule;
use super::trainer::{AdamW, Trainer};
use crate::data::{Split, TokenizedDataset, collate};
use crate::model::backend::{DeviceChoice, TrainingTask, run_training};
use crate::model::linear::LoraConfig;
use crate::model::load::SaveDtype;
use crate::model::{Dtype, rng};

/// Training steps of one process run one at a time: they would compete for the same cores (or GPU),
/// and burn's random state (LoRA dropout) is global to the process, so two at once would make each
/// other's dropout masks depend on timing.
static TRAINING: Mutex<()> = Mutex::new(());

/// The finetuning type `p` asks for, with the kind's default.
pub fn finetuning_type(p: &TrainParams, default: FinetuningType) -> FinetuningType {
    p.finetuning_type.unwrap_or(default)
}

/// The training method `p` describes.
pub fn method(p: &TrainParams, finetuning: FinetuningType) -> Method {
    match finetuning {
        FinetuningType::Full => Method::Full,
        FinetuningType::Freeze => Method::Freeze(FreezeSpec {
            trainable_layers: p.freeze.trainable_layers,
            trainable_modules: p.freeze.trainable_modules.clone(),
            extra_modules: p.freeze.extra_modules.clone(),
        }),
        FinetuningType::Lora => Method::Lora(LoraConfig {
            rank: p.lora.rank,
            alpha: p.lora.alpha(),
            dropout: p.lora.dropout,
            rslora: p.lora.rslora,
            targets: p
                .lora
                .target
                .iter()
                .map(|t| {
                    if t == "all" {
                        "all-linear".to_string()
                    } else {
                        t.clone()
                    }
                })
                .collect(),
        }),
    }
}

/// AdamW settings of `p`.
pub fn adamw(p: &TrainParams) -> AdamW {
    AdamW {
        beta1: p.adam_beta1,
        beta2: p.adam_beta2,
        eps: p.adam_epsilon,
        weight_decay: p.weight_decay,
        decay_all: false,
    }
}

/// What a run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Optimizer steps.
    pub steps: usize,
    /// Mean of the step losses.
    pub train_loss: f64,
    /// The last step's loss.
    pub final_loss: f64,
    /// Validation loss at the end.
    pub eval_loss: Option<f64>,
    /// Trained scalars.
    pub trainable_params: usize,
    /// Training throughput of this process (tokens per second, padding excluded).
    pub tokens_per_s: f64,
    /// The step training resumed from, if it did.
    pub resumed_from: Option<usize>,
}

/// Runs a `pretrain` (`stage: pt`) or `sft` step.
pub fn run(
    p: &TrainParams,
    stage: Stage,
    default: FinetuningType,
    cx: &mut StepContext<'_>,
) -> anyhow::Result<()> {
    let finetuning = finetuning_type(p, default);
    let model_dir = cx.input("model")?;
    let data_dir = cx.input("dataset")?;
    let source = ModelSource::detect(model_dir)?;
    let train = TokenizedDataset::open(data_dir, Split::Train)?;
    let val = if train.info().splits.contains_key(Split::Val.name()) {
        Some(TokenizedDataset::open(data_dir, Split::Val)?)
    } else {
        None
    };
    let order = DataOrder::new(
        train.len(),
        p.batch_size,
        p.gradient_accumulation_steps,
        p.epochs,
        p.max_steps,
        p.seed,
    )?;
    let schedule = Schedule {
        peak: p.learning_rate,
        kind: p.lr_scheduler,
        warmup: Schedule::warmup_steps(p.warmup_steps, p.warmup_ratio, order.total_steps),
        total: order.total_steps,
    };
    let numerics = cx.numerics();
    let device = if numerics.device == "cuda" {
        DeviceChoice::Cuda
    } else {
        DeviceChoice::Cpu
    };
    let dtype = if numerics.dtype == "bf16" {
        Dtype::Bf16
    } else {
        Dtype::F32
    };
    let _guard = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let job = Job {
        p,
        stage,
        finetuning,
        method: method(p, finetuning),
        source,
        train,
        val,
        order,
        schedule,
        cx,
    };
    let summary = run_training(device, dtype, job)??;
    let _ = summary;
    Ok(())
}

struct Job<'a, 'c> {
    p: &'a TrainParams,
    stage: Stage,
    finetuning: FinetuningType,
    method: Method,
    source: ModelSource,
    train: TokenizedDataset,
    val: Option<TokenizedDataset>,
    order: DataOrder,
    schedule: Schedule,
    cx: &'a mut StepContext<'c>,
}

/// A deterministic seed for micro-batch `micro` of step `step`.
fn step_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut r = rng::Rng::for_stream(seed, &format!("train.step.{step}.{micro}"));
    r.next_u64()
}

impl TrainingTask for Job<'_, '_> {
    type Output = anyhow::Result<Summary>;

    fn run<B: AutodiffBackend>(self, device: B::Device, dtype: Dtype) -> anyhow::Result<Summary> {
        let Job {
            p,
            stage,
            finetuning,
            method,
            source,
            train,
            val,
            order,
            schedule,
            cx,
        } = self;
        let out = cx.out_dir().to_owned();
        let scratch = cx.scratch_dir().to_owned();
        let logs_dir = out.join("logs");
        fs::create_dir_all(&logs_dir)?;

        let loaded = source.load::<B>(&device, dtype)?;
        // A LoRA input is merged into its base: training continues from the function it computes.
        let model = loaded.merge_lora();
        let mut trainer = Trainer::new(model, &method, adamw(p), p.seed)
            .context("cannot prepare the model for training")?;
        let packed = train.info().neat_packing;
        let pad = train.info().pad_id;

        let mut history: Vec<StepRecord> = Vec::new();
        let mut logs: Vec<Json> = Vec::new();
        let mut start = 0;
        let mut resumed_from = None;
        match checkpoint::load(&scratch) {
            Ok(Some(mut ck)) if ck.state.names == trainer.trained_names() => {
                let steps = ck.state.slot_steps.clone();
                trainer.import_state(&steps, &mut |name, shape| ck.tensor(name, shape))?;
                start = ck.state.step;
                history = ck.state.history;
                logs = ck.state.logs;
                resumed_from = Some(start);
                tracing::info!(step = start, "resuming from the checkpoint");
            }
            Ok(Some(_)) => tracing::warn!("ignoring a checkpoint of other parameters"),
            Ok(None) => {}
            Err(e) => tracing::warn!("ignoring an unreadable checkpoint: {e:#}"),
        }
        let metrics_path = logs_dir.join("metrics.jsonl");
        let mut metrics_file = fs::File::create(&metrics_path)?;
        for line in &logs {
            writeln!(metrics_file, "{line}")?;
        }

        let total = order.total_steps;
        let bar = cx.progress().bar(total as u64, "steps");
        bar.set_position(start as u64);
        let began = Instant::now();
        let mut window_tokens = 0usize;
        let mut run_tokens = 0usize;
        let mut window_start = Instant::now();
        let mut window_losses: Vec<f64> = Vec::new();
        let mut permutation: Option<(usize, Vec<usize>)> = None;

        for step in start..total {
            let epoch = order.epoch_of(step);
            if permutation.as_ref().is_none_or(|(e, _)| *e != epoch) {
                permutation = Some((epoch, order.permutation(epoch)));
            }
            let perm = &permutation.as_ref().expect("set above").1;
            let batches: Vec<LmBatch> = order
                .micro_batches(step, perm)
                .iter()
                .map(|rows| {
                    let examples: Vec<_> = rows.iter().map(|&i| train.example(i)).collect();
                    LmBatch::new(&collate(&examples, pad), packed)
                })
                .collect();
            let denom: usize = batches.iter().map(LmBatch::n_scored).sum();
            let mut loss_sum = 0.0;
            for (j, batch) in batches.iter().enumerate() {
                B::seed(&device, step_seed(p.seed, step, j));
                if let Some(l) = trainer.accumulate(batch, denom.max(1) as f64) {
                    loss_sum += l;
                }
                window_tokens += batch.tokens;
                run_tokens += batch.tokens;
            }
            let lr = schedule.lr(step);
            let grad_norm = trainer.step(lr, p.max_grad_norm);
            let loss = if denom > 0 {
                loss_sum / denom as f64
            } else {
                f64::NAN
            };
            anyhow::ensure!(
                denom == 0 || loss.is_finite(),
                "the loss became {loss} at step {}\nhint: lower `learning_rate`, or check the data",
                step + 1
            );
            history.push(StepRecord {
                step: step + 1,
                loss,
                lr,
                grad_norm,
                tokens: denom,
            });
            window_losses.push(loss);
            let done = step + 1;
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss:.4}"));

            if p.logging_steps > 0 && done.is_multiple_of(p.logging_steps) || done == total {
                let secs = window_start.elapsed().as_secs_f64().max(1e-9);
                let finite: Vec<f64> = window_losses
                    .iter()
                    .copied()
                    .filter(|l| l.is_finite())
                    .collect();
                let line = json!({
                    "step": done,
                    "epoch": round6(order.epochs_done(done)),
                    "loss": finite.iter().sum::<f64>() / finite.len().max(1) as f64,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens_per_s": window_tokens as f64 / secs,
                    "elapsed_s": began.elapsed().as_secs_f64(),
                });
                writeln!(metrics_file, "{line}")?;
                logs.push(line);
                window_tokens = 0;
                window_losses.clear();
                window_start = Instant::now();
            }
            if let Some(val) = &val
                && p.eval_steps > 0
                && done.is_multiple_of(p.eval_steps)
                && done < total
            {
                let loss = evaluate(&trainer, val, p.batch_size, packed);
                let line = json!({
                    "step": done,
                    "epoch": round6(order.epochs_done(done)),
                    "eval_loss": loss,
                    "eval_perplexity": loss.exp(),
                });
                writeln!(metrics_file, "{line}")?;
                logs.push(line);
            }
            if p.save_steps > 0 && done.is_multiple_of(p.save_steps) && done < total {
                let (tensors, slot_steps) = trainer.export_state();
                let state = CheckpointState {
                    version: checkpoint::VERSION,
                    step: done,
                    names: trainer.trained_names(),
                    slot_steps,
                    history: history.clone(),
                    logs: logs.clone(),
                };
                checkpoint::save(&scratch, &state, tensors).context("cannot write a checkpoint")?;
            }
        }
        bar.finish_and_clear();
        let train_secs = began.elapsed().as_secs_f64();

        let eval_loss = val
            .as_ref()
            .map(|val| evaluate(&trainer, val, p.batch_size, packed));
        if let Some(loss) = eval_loss {
            let line = json!({
                "step": total,
                "epoch": round6(order.epochs_done(total)),
                "eval_loss": loss,
                "eval_perplexity": loss.exp(),
            });
            writeln!(metrics_file, "{line}")?;
            logs.push(line);
        }
        drop(metrics_file);

        // The artifact.
        let save = match dtype {
            Dtype::F32 => SaveDtype::F32,
            Dtype::Bf16 => SaveDtype::Bf16,
        };
        let trainable = trainer.trained_params();
        let total_params = trainer.model.config.num_params();
        match &method {
            Method::Lora(cfg) => {
                let base = match &source {
                    ModelSource::Lora { .. } => BaseOut::Write(&trainer.model, &source),
                    other => BaseOut::Link(other),
                };
                write_lora(&trainer.model, cfg, base, &out)?;
            }
            _ => write_full(trainer.model, &source, &out, save)?,
        }
        let finite: Vec<f64> = history
            .iter()
            .map(|h| h.loss)
            .filter(|l| l.is_finite())
            .collect();
        let train_loss = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
        let final_loss = finite.last().copied().unwrap_or(f64::NAN);
        let state = json!({
            "format": "lf-trainer-state",
            "version": 1,
            "stage": stage.name(),
            "finetuning_type": finetuning.name(),
            "global_step": total,
            "epochs": round6(order.epochs_done(total)),
            "steps_per_epoch": order.steps_per_epoch,
            "train_rows": order.rows,
            "batch_size": p.batch_size,
            "gradient_accumulation_steps": p.gradient_accumulation_steps,
            "warmup_steps": schedule.warmup,
            "trained_tokens": history.iter().map(|h| h.tokens).sum::<usize>(),
            "trainable_params": trainable,
            "total_params": total_params,
            "train_loss": train_loss,
            "final_loss": final_loss,
            "eval_loss": eval_loss,
            "eval_perplexity": eval_loss.map(f64::exp),
            "log_history": history,
        });
        fs::write(
            out.join("trainer_state.json"),
            serde_json::to_string_pretty(&state)? + "\n",
        )?;

        let curve: Vec<(f64, f64)> = history.iter().map(|h| (h.step as f64, h.loss)).collect();
        let val_curve: Vec<(f64, f64)> = logs
            .iter()
            .filter_map(|l| Some((l["step"].as_f64()?, l["eval_loss"].as_f64()?)))
            .collect();
        if let Err(e) = plot::loss_curve(&logs_dir.join("loss.png"), &curve, &val_curve) {
            tracing::warn!("{e:#}");
        }

        let tokens_per_s = run_tokens as f64 / train_secs.max(1e-9);
        cx.metric("train_loss", round6(train_loss));
        cx.metric("final_loss", round6(final_loss));
        if let Some(l) = eval_loss {
            cx.metric("eval_loss", round6(l));
            cx.metric("eval_perplexity", round6(l.exp()));
        }
        cx.metric("steps", total);
        cx.metric("trainable_params", trainable);
        cx.metric("tokens_per_s", tokens_per_s.round());
        if let Some(s) = resumed_from {
            cx.metric("resumed_from_step", s);
        }
        Ok(Summary {
            steps: total,
            train_loss,
            final_loss,
            eval_loss,
            trainable_params: trainable,
            tokens_per_s,
            resumed_from,
        })
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Mean loss over the trained tokens of `data`, in order, `batch_size` rows at a time.
pub fn evaluate<B: AutodiffBackend>(
    trainer: &Trainer<B>,
    data: &TokenizedDataset,
    batch_size: usize,
    packed: bool,
) -> f64 {
    let pad = data.info().pad_id;
    let (mut sum, mut count) = (0.0, 0usize);
    let rows: Vec<usize> = (0..data.len()).collect();
    for chunk in rows.chunks(batch_size.max(1)) {
        let examples: Vec<_> = chunk.iter().map(|&i| data.example(i)).collect();
        let (s, n) = trainer.eval_loss(&LmBatch::new(&collate(&examples, pad), packed));
        sum += s;
        count += n;
    }
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}
