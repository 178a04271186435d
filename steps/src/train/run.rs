//! The training loop every training kind shares (`pretrain`, `sft`, `rm`, `dpo`): resume from the last
//! checkpoint, run optimizer steps, log, evaluate, checkpoint, and write the artifact. What differs
//! between kinds is the [`Objective`] (how rows become a loss) and, for `dpo`, the reference
//! log-probabilities computed before the first step.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use burn::module::AutodiffModule as _;
use burn::tensor::ElementConversion as _;
use burn::tensor::backend::{AutodiffBackend, Backend};
use lf_engine::StepContext;
use lf_schemas::kinds::TrainParams;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::FinetuningType;
use serde_json::{Value as Json, json};

use super::artifact::{BaseOut, write_full, write_lora};
use super::check;
use super::checkpoint::{self, CheckpointState, StepRecord};
use super::objective::{Dpo, Kto, Lm, Objective, Rm};
use super::order::DataOrder;
use super::params::{FreezeSpec, Method};
use super::plot;
use super::pref::{KtoConfig, PrefConfig};
use super::reference::Reference;
use super::schedule::Schedule;
use super::trainer::{AdamW, Trainer};
use crate::data::{Split, TokenizedDataset};
use lf_model::backend::{TrainingTask, run_training};
use lf_model::linear::LoraConfig;
use lf_model::llama::BuildOptions;
use lf_model::load::SaveDtype;
use lf_model::value_head::{VALUE_HEAD, ValueHead};
use lf_model::{ArtifactKind, Dtype, Llama, ModelArtifact, rng};

/// Training steps of one process run one at a time: they would compete for the same cores (or GPU),
/// and burn's random state (LoRA dropout) is global to the process, so two at once would make each
/// other's dropout masks depend on timing.
static TRAINING: Mutex<()> = Mutex::new(());

const MIB: f64 = 1024.0 * 1024.0;

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

/// What a training step optimises.
#[derive(Debug, Clone)]
pub enum Task {
    /// Next-token prediction (`pretrain`, `sft`).
    Lm,
    /// A reward model: a value head and the pairwise loss (`rm`).
    Rm,
    /// Preference optimisation (`dpo`).
    Dpo {
        /// The loss.
        cfg: PrefConfig,
        /// Another reference model than the starting one.
        ref_model: Option<Box<ModelArtifact>>,
    },
    /// KTO (`kto`).
    Kto {
        /// The loss.
        cfg: KtoConfig,
        /// Another reference model than the starting one.
        ref_model: Option<Box<ModelArtifact>>,
    },
}

/// Runs a `pretrain` (`stage: pt`) or `sft` step.
pub fn run(
    p: &TrainParams,
    stage: Stage,
    default: FinetuningType,
    cx: &mut StepContext<'_>,
) -> anyhow::Result<()> {
    run_task(p, stage, default, Task::Lm, cx).map(|_| ())
}

/// Runs a training step of any kind: `stage` is the stage of its data, `task` what it optimises.
pub fn run_task(
    p: &TrainParams,
    stage: Stage,
    default: FinetuningType,
    task: Task,
    cx: &mut StepContext<'_>,
) -> anyhow::Result<Summary> {
    let finetuning = finetuning_type(p, default);
    let model_dir = cx.input("model")?;
    let data_dir = cx.input("dataset")?;
    let source = ModelArtifact::open(model_dir)?;
    let train = TokenizedDataset::open(data_dir, Split::Train)?;
    anyhow::ensure!(
        train.info().stage == stage,
        "the dataset has stage `{}`, this step trains on stage `{}` data",
        train.info().stage.name(),
        stage.name()
    );
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
    // Resolved by the engine: a concrete device and dtype, part of the step's key.
    let (device, dtype) = (numerics.device, numerics.dtype);
    let _guard = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let job = Job {
        p,
        finetuning,
        method: method(p, finetuning),
        source,
        train,
        val,
        order,
        schedule,
        task,
        cx,
    };
    run_training(device, dtype, job)?
}

struct Job<'a, 'c> {
    p: &'a TrainParams,
    finetuning: FinetuningType,
    method: Method,
    source: ModelArtifact,
    train: TokenizedDataset,
    val: Option<TokenizedDataset>,
    order: DataOrder,
    schedule: Schedule,
    task: Task,
    cx: &'a mut StepContext<'c>,
}

/// A deterministic seed for micro-batch `micro` of step `step`.
fn step_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut r = rng::Rng::for_stream(seed, &format!("train.step.{step}.{micro}"));
    r.next_u64()
}

/// The reference log-probabilities of a `dpo` or `kto` step: from the scratch folder when an earlier
/// (interrupted) run computed them, else computed with `model` and saved there.
fn reference<B: Backend>(
    job: &Job<'_, '_>,
    model: impl FnOnce() -> anyhow::Result<Llama<B>>,
) -> anyhow::Result<Reference> {
    let scratch = job.cx.scratch_dir();
    match Reference::load(scratch, job.train.len(), job.val.as_ref().map(|v| v.len())) {
        Ok(Some(r)) => {
            tracing::info!("using the reference log-probabilities of an earlier run");
            return Ok(r);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("ignoring saved reference log-probabilities: {e:#}"),
    }
    let model = model()?;
    let rows = job.train.len() + job.val.as_ref().map_or(0, |v| v.len());
    let unit = match job.train.info().stage {
        Stage::Kto => "reference rows",
        _ => "reference pairs",
    };
    let bar = job.cx.progress().bar(rows as u64, unit);
    let r = Reference::compute(
        &model,
        &job.train,
        job.val.as_ref(),
        job.p.batch_size,
        |n| bar.inc(n as u64),
    );
    bar.finish_and_clear();
    r.save(scratch)
        .context("cannot save the reference log-probabilities")?;
    Ok(r)
}

impl TrainingTask for Job<'_, '_> {
    type Output = anyhow::Result<Summary>;

    fn run<B: AutodiffBackend>(self, device: B::Device, dtype: Dtype) -> anyhow::Result<Summary> {
        // Another reference model is used (and dropped) before the policy is loaded, so the two are
        // never in memory together.
        let mut early_reference = None;
        let other_reference = match &self.task {
            Task::Dpo {
                cfg,
                ref_model: Some(r),
            } if cfg.loss.needs_reference() => Some(r),
            Task::Kto {
                ref_model: Some(r), ..
            } => Some(r),
            _ => None,
        };
        if let Some(r) = other_reference {
            early_reference = Some(reference::<B::InnerBackend>(&self, || {
                let loaded = r.load::<B::InnerBackend>(&device, dtype)?;
                Ok(loaded.merge_lora())
            })?);
        }
        // LoRA keeps a GGUF base's quantised projections in their blocks (the same values as
        // dequantised at load, in a fraction of the memory) and quantises the others when asked
        // (QLoRA).
        let quantization = check::quantization(self.p);
        let options = BuildOptions {
            quantize: quantization,
            keep_quantized: matches!(self.method, Method::Lora(_)),
        };
        let loaded = self.source.load_with::<B>(&device, dtype, options)?;
        // A LoRA input is merged into its base: training continues from the function it computes.
        // The merged projections are dense again; they are quantised like the others.
        let mut model = loaded.merge_lora();
        if let Some(spec) = quantization {
            model = model.quantize_linears(spec);
        }
        let (dense, quantized) = model.linear_bytes();
        if quantized > 0 {
            tracing::info!(
                "frozen projections: {:.1} MiB quantised{}, {:.1} MiB dense",
                quantized as f64 / MIB,
                quantization.map(|q| format!(" ({q})")).unwrap_or_default(),
                dense as f64 / MIB
            );
        }
        let trainer = Trainer::new(model, &self.method, adamw(self.p), self.p.seed)
            .context("cannot prepare the model for training")?;
        let packed = self.train.info().neat_packing;
        match self.task.clone() {
            Task::Lm => {
                let stage = self.train.info().stage.name();
                train_loop(self, trainer, Lm { stage, packed }, dtype)
            }
            Task::Rm => {
                let hidden = trainer.model.config.hidden_size;
                // A head beside the weights (of a full model) or the adapter (of a LoRA artifact)
                // carries on; a GGUF base never has one.
                let existing = match self.source.kind {
                    ArtifactKind::Hf => Some(self.source.base_dir().join(VALUE_HEAD)),
                    ArtifactKind::Lora => Some(self.source.root.join(VALUE_HEAD)),
                    ArtifactKind::Gguf => None,
                }
                .filter(|p| p.is_file());
                let head = match existing {
                    Some(path) => ValueHead::read(&path, hidden, &device)?,
                    None => ValueHead::init(hidden, self.p.seed, &device),
                };
                let trainer = trainer.with_value_head(head);
                train_loop(self, trainer, Rm, dtype)
            }
            Task::Dpo { cfg, .. } => {
                let reference = match early_reference {
                    Some(r) => Some(r),
                    // The starting model, before any step: for LoRA the base with the (fresh) adapters
                    // switched off, sharing its weights with the policy.
                    None if cfg.loss.needs_reference() => {
                        Some(reference::<B::InnerBackend>(&self, || {
                            Ok(trainer.model.valid().without_lora())
                        })?)
                    }
                    None => None,
                };
                train_loop(self, trainer, Dpo { cfg, reference }, dtype)
            }
            Task::Kto { cfg, .. } => {
                let reference = match early_reference {
                    Some(r) => r,
                    None => reference::<B::InnerBackend>(&self, || {
                        Ok(trainer.model.valid().without_lora())
                    })?,
                };
                train_loop(self, trainer, Kto { cfg, reference }, dtype)
            }
        }
    }
}

/// Means of `stats` (sums over `units`, or over the units another stat counts: see
/// [`Objective::denominator`]) by name. A mean over no unit is left out.
fn means<O: Objective>(
    obj: &O,
    stats: &BTreeMap<&'static str, f64>,
    units: usize,
) -> BTreeMap<String, f64> {
    stats
        .iter()
        .filter_map(|(k, v)| {
            let n = match obj.denominator(k) {
                Some(d) => stats.get(d).copied().unwrap_or(0.0),
                None => units.max(1) as f64,
            };
            (n > 0.0).then(|| (k.to_string(), v / n))
        })
        .collect()
}

/// How many of `steps` report each metric (a step whose batch had no desirable reply reports no
/// `rewards/chosen`, say): the denominators of their means.
fn metric_counts<'a>(steps: impl Iterator<Item = &'a StepRecord>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for h in steps {
        for k in h.metrics.keys() {
            *counts.entry(k.as_str()).or_default() += 1;
        }
    }
    counts
}

/// The shared loop: resume, optimizer steps, logs, evaluation, checkpoints, the artifact.
fn train_loop<B: AutodiffBackend, O: Objective>(
    job: Job<'_, '_>,
    mut trainer: Trainer<B>,
    obj: O,
    dtype: Dtype,
) -> anyhow::Result<Summary> {
    let Job {
        p,
        finetuning,
        method,
        source,
        train,
        val,
        order,
        schedule,
        cx,
        ..
    } = job;
    let device = trainer.model.device();
    let out = cx.out_dir().to_owned();
    let scratch = cx.scratch_dir().to_owned();
    let logs_dir = out.join("logs");
    fs::create_dir_all(&logs_dir)?;

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
    let mut window_first = history.len();
    let mut permutation: Option<(usize, Vec<usize>)> = None;

    for step in start..total {
        let epoch = order.epoch_of(step);
        if permutation.as_ref().is_none_or(|(e, _)| *e != epoch) {
            permutation = Some((epoch, order.permutation(epoch)));
        }
        let perm = &permutation.as_ref().expect("set above").1;
        let batches: Vec<O::Batch> = order
            .micro_batches(step, perm)
            .iter()
            .map(|rows| obj.prepare(Split::Train, &train, rows))
            .collect();
        let denom: usize = batches.iter().map(|b| obj.units(b)).sum();
        let mut loss_sum = 0.0;
        let mut stats: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (j, batch) in batches.iter().enumerate() {
            B::seed(&device, step_seed(p.seed, step, j));
            if let Some((loss, s)) = obj.loss(&trainer.model, trainer.head.as_ref(), batch) {
                loss_sum += trainer.backward(loss, denom.max(1) as f64);
                for (k, v) in s {
                    *stats.entry(k).or_default() += v;
                }
            }
            let tokens = obj.tokens(batch);
            window_tokens += tokens;
            run_tokens += tokens;
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
            metrics: means(&obj, &stats, denom),
        });
        let done = step + 1;
        bar.set_position(done as u64);
        bar.set_message(format!("loss {loss:.4}"));

        if p.logging_steps > 0 && done.is_multiple_of(p.logging_steps) || done == total {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let window = &history[window_first.min(history.len())..];
            let finite: Vec<&StepRecord> = window.iter().filter(|h| h.loss.is_finite()).collect();
            let n = finite.len().max(1) as f64;
            let mut line = json!({
                "step": done,
                "epoch": round6(order.epochs_done(done)),
                "loss": finite.iter().map(|h| h.loss).sum::<f64>() / n,
                "lr": lr,
                "grad_norm": grad_norm,
            });
            let counts = metric_counts(finite.iter().copied());
            let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
            for h in &finite {
                for (k, v) in &h.metrics {
                    *sums.entry(k.as_str()).or_default() += v;
                }
            }
            for (k, v) in sums {
                line[k] = json!(v / counts[k] as f64);
            }
            line["tokens_per_s"] = json!(window_tokens as f64 / secs);
            line["elapsed_s"] = json!(began.elapsed().as_secs_f64());
            writeln!(metrics_file, "{line}")?;
            logs.push(line);
            window_tokens = 0;
            window_first = history.len();
            window_start = Instant::now();
        }
        if let Some(val) = &val
            && p.eval_steps > 0
            && done.is_multiple_of(p.eval_steps)
            && done < total
        {
            let line = eval_line(&obj, &trainer, val, p.batch_size, done, &order);
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

    let final_eval = val
        .as_ref()
        .map(|val| eval_line(&obj, &trainer, val, p.batch_size, total, &order));
    if let Some(line) = &final_eval {
        writeln!(metrics_file, "{line}")?;
        logs.push(line.clone());
    }
    drop(metrics_file);
    let eval_loss = final_eval.as_ref().and_then(|l| l["eval_loss"].as_f64());

    // The artifact.
    // `dtype` is the resolved compute dtype (run_training never passes `auto` on).
    let save = match dtype {
        Dtype::F32 | Dtype::Auto => SaveDtype::F32,
        Dtype::Bf16 => SaveDtype::Bf16,
    };
    let trainable = trainer.trained_params();
    let total_params = trainer.model.config.num_params();
    if let Some(head) = &trainer.head {
        head.save(&out)?;
    }
    match &method {
        Method::Lora(cfg) => {
            // A written base holds the values training used (dequantised); a linked base is the
            // original, so the quantisation training applied to it is recorded beside the adapter.
            let (base, quantization) = match source.kind {
                ArtifactKind::Lora => (BaseOut::Write(&trainer.model, &source), None),
                ArtifactKind::Hf | ArtifactKind::Gguf => {
                    (BaseOut::Link(&source), check::quantization(p))
                }
            };
            write_lora(&trainer.model, cfg, base, quantization, &out)?;
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
    // The objective's numbers over the last epoch (or the whole run, if shorter).
    let last_epoch = &history[history.len().saturating_sub(order.steps_per_epoch)..];
    let counts = metric_counts(last_epoch.iter());
    let mut final_metrics: BTreeMap<String, f64> = BTreeMap::new();
    for h in last_epoch {
        for (k, v) in &h.metrics {
            *final_metrics.entry(k.clone()).or_default() += v / counts[k.as_str()] as f64;
        }
    }
    let mut state = json!({
        "format": "lf-trainer-state",
        "version": 1,
        "stage": obj.stage(),
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
    });
    if obj.is_nll() {
        state["eval_perplexity"] = json!(eval_loss.map(f64::exp));
    } else {
        state["trained_tokens"] = json!(null);
        state["trained_pairs"] = json!(history.iter().map(|h| h.tokens).sum::<usize>());
        state["final_metrics"] = json!(final_metrics);
        if let Some(line) = &final_eval {
            state["eval_metrics"] = line.clone();
        }
    }
    state["log_history"] = json!(history);
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
        if obj.is_nll() {
            cx.metric("eval_perplexity", round6(l.exp()));
        }
    }
    for (k, v) in &final_metrics {
        cx.metric(k, round6(*v));
    }
    if let Some(line) = &final_eval
        && let Some(m) = line.as_object()
    {
        for (k, v) in m {
            if k.starts_with("eval_") && k != "eval_loss" && k != "eval_perplexity" {
                cx.metric(k, v.as_f64().map_or(Json::Null, |x| json!(round6(x))));
            }
        }
    }
    cx.metric("steps", total);
    cx.metric("trainable_params", trainable);
    cx.metric("tokens_per_s", tokens_per_s.round());
    if let Some(s) = resumed_from {
        cx.metric("resumed_from_step", s);
    }
    let _ = device;
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

/// A `metrics.jsonl` line with the objective evaluated on `data` after step `done`.
fn eval_line<B: AutodiffBackend, O: Objective>(
    obj: &O,
    trainer: &Trainer<B>,
    data: &TokenizedDataset,
    batch_size: usize,
    done: usize,
    order: &DataOrder,
) -> Json {
    let (loss, stats) = evaluate_objective(obj, trainer, data, batch_size);
    let mut line = json!({
        "step": done,
        "epoch": round6(order.epochs_done(done)),
        "eval_loss": loss,
    });
    if obj.is_nll() {
        line["eval_perplexity"] = json!(loss.exp());
    }
    for (k, v) in stats {
        line[format!("eval_{k}")] = json!(v);
    }
    line
}

/// The objective's mean loss and numbers over `data`, in order, `batch_size` rows at a time, without
/// gradients.
pub fn evaluate_objective<B: AutodiffBackend, O: Objective>(
    obj: &O,
    trainer: &Trainer<B>,
    data: &TokenizedDataset,
    batch_size: usize,
) -> (f64, BTreeMap<String, f64>) {
    let model = trainer.model.valid();
    let head = trainer.head.as_ref().map(|h| h.valid());
    let (mut sum, mut count) = (0.0, 0usize);
    let mut stats: BTreeMap<&'static str, f64> = BTreeMap::new();
    let rows: Vec<usize> = (0..data.len()).collect();
    for chunk in rows.chunks(batch_size.max(1)) {
        let batch = obj.prepare(data.split(), data, chunk);
        if let Some((loss, s)) = obj.loss(&model, head.as_ref(), &batch) {
            sum += loss.into_scalar().elem::<f64>();
            count += obj.units(&batch);
            for (k, v) in s {
                *stats.entry(k).or_default() += v;
            }
        }
    }
    if count == 0 {
        (f64::NAN, BTreeMap::new())
    } else {
        (sum / count as f64, means(obj, &stats, count))
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
    let lm = Lm {
        stage: data.info().stage.name(),
        packed,
    };
    evaluate_objective(&lm, trainer, data, batch_size).0
}
