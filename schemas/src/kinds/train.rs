//! The parameters `pretrain` and `sft` share: what to train, how to optimise, how often to log, evaluate
//! and checkpoint.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Input, Params};

/// Trains a model on a tokenized dataset and writes the result as a model artifact: a Hugging Face
/// folder with the full weights (`finetuning_type: full` or `freeze`), or a LoRA adapter in PEFT's layout
/// with its base model beside it in `base/` (`finetuning_type: lora`).
///
/// The optimiser is AdamW with PyTorch's semantics; the learning rate follows a schedule with warmup;
/// gradients are clipped by their global norm and accumulated over micro-batches, the loss normalised
/// by the trained tokens of the whole accumulated batch. Checkpoints go to the step's scratch folder
/// every `save_steps`: a killed run resumes from the last one and ends with the same weights, bit for
/// bit on the CPU, as an uninterrupted run. `logging_steps`, `eval_steps` and `save_steps` do not change
/// the result and are not part of the cache key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// The model to train: a step whose artifact is a model (a `download`, `model`, `pretrain` or `sft`
    /// step), or a local folder or `.gguf` file. A Hugging Face folder, a folder with one `.gguf` file
    /// (dequantised to f32), or a LoRA artifact (its adapter is merged into its base first).
    pub model: String,
    /// The tokenized data: a `dataset` step, prepared with this model's tokenizer (`stage: pt` for
    /// `pretrain`, `stage: sft` for `sft`). Its validation split, if any, is evaluated.
    pub dataset: String,
    /// What is trained: `full` (every weight), `freeze` (the last layers only, see `freeze`) or `lora`
    /// (low-rank adapters beside the frozen weights, see `lora`). Default: `full` for `pretrain`, `lora`
    /// for `sft`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuning_type: Option<FinetuningType>,
    /// Settings of `finetuning_type: freeze`.
    #[serde(default)]
    pub freeze: FreezeParams,
    /// Settings of `finetuning_type: lora`.
    #[serde(default)]
    pub lora: LoraParams,
    /// Peak learning rate. Default 5e-5.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// How the learning rate moves after warmup: `linear` (default; down to 0 at the last step),
    /// `cosine` (half a cosine down to 0) or `constant`.
    #[serde(default)]
    pub lr_scheduler: LrScheduler,
    /// Warmup as a fraction of the optimizer steps (rounded up). Default 0. Ignored when `warmup_steps`
    /// is set.
    #[serde(default)]
    pub warmup_ratio: f64,
    /// Warmup in optimizer steps: the learning rate rises linearly from 0. Default 0 (see
    /// `warmup_ratio`).
    #[serde(default)]
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay (`p ← p·(1 − lr·wd)`), applied to weight matrices and embeddings
    /// but not to biases and norm weights, as the transformers Trainer does. Default 0.
    #[serde(default)]
    pub weight_decay: f64,
    /// AdamW's β₁. Default 0.9.
    #[serde(default = "default_beta1")]
    pub adam_beta1: f64,
    /// AdamW's β₂. Default 0.999.
    #[serde(default = "default_beta2")]
    pub adam_beta2: f64,
    /// AdamW's ε. Default 1e-8.
    #[serde(default = "default_eps")]
    pub adam_epsilon: f64,
    /// Clip gradients to this global L2 norm (PyTorch's `clip_grad_norm_`); 0 turns clipping off.
    /// Default 1.0.
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Sequences per micro-batch. Default 4.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default 1.
    #[serde(default = "default_one")]
    pub gradient_accumulation_steps: usize,
    /// Passes over the training split (may be fractional). Default 3. Ignored when `max_steps` is set.
    #[serde(default = "default_epochs")]
    pub epochs: f64,
    /// Stop after this many optimizer steps (the data repeats as needed). Default: from `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Seed of the data order (reshuffled every epoch), the LoRA initialisation and dropout. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Write a line to `logs/metrics.jsonl` every this many optimizer steps. Default 10. Does not change
    /// the result.
    #[serde(default = "default_logging_steps")]
    pub logging_steps: usize,
    /// Evaluate on the validation split every this many steps (and always at the end). Default 0: at
    /// the end only. Does not change the result.
    #[serde(default)]
    pub eval_steps: usize,
    /// Checkpoint to the scratch folder every this many optimizer steps, for resuming a killed run;
    /// 0 turns checkpoints off. Default 100. Does not change the result.
    #[serde(default = "default_save_steps")]
    pub save_steps: usize,
}

/// Which weights training changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FinetuningType {
    /// Every weight.
    Full,
    /// Only some layers and modules (see `freeze`); the rest stays bit-identical.
    Freeze,
    /// Low-rank adapters beside the frozen weights.
    Lora,
}

impl FinetuningType {
    /// The name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            FinetuningType::Full => "full",
            FinetuningType::Freeze => "freeze",
            FinetuningType::Lora => "lora",
        }
    }
}

/// Settings of `finetuning_type: freeze` (LLaMA-Factory's `freeze_*` arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeParams {
    /// How many decoder layers are trained: `n > 0` the last `n`, `n < 0` the first `-n`. Default 2.
    #[serde(default = "default_trainable_layers")]
    pub trainable_layers: i64,
    /// Which parts of those layers are trained: `all` (default), or any of `self_attn`, `mlp`,
    /// `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`, `input_layernorm`,
    /// `post_attention_layernorm`.
    #[serde(default = "default_all")]
    pub trainable_modules: Vec<String>,
    /// Modules outside the layers that are trained too: any of `embed_tokens`, `norm`, `lm_head`.
    /// Default: none.
    #[serde(default)]
    pub extra_modules: Vec<String>,
}

impl Default for FreezeParams {
    fn default() -> Self {
        FreezeParams {
            trainable_layers: default_trainable_layers(),
            trainable_modules: default_all(),
            extra_modules: Vec::new(),
        }
    }
}

/// Settings of `finetuning_type: lora` (peft's `LoraConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraParams {
    /// Rank `r` of the adapters. Default 8.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// `lora_alpha`: the adapter's output is scaled by `alpha / rank` (`alpha / sqrt(rank)` with
    /// `rslora`). Default: twice the rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Dropout on the adapters' input during training. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// The projections that get adapters: `all` (default; every linear layer of the decoder layers), or
    /// any of `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`.
    #[serde(default = "default_all")]
    pub target: Vec<String>,
    /// Rank-stabilised LoRA (scale `alpha / sqrt(rank)`). Default false.
    #[serde(default)]
    pub rslora: bool,
}

impl Default for LoraParams {
    fn default() -> Self {
        LoraParams {
            rank: default_rank(),
            alpha: None,
            dropout: 0.0,
            target: default_all(),
            rslora: false,
        }
    }
}

impl LoraParams {
    /// `alpha`, defaulting to twice the rank.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(2.0 * self.rank as f64)
    }
}

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    /// Linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Half a cosine from the peak to 0.
    Cosine,
    /// The peak learning rate throughout.
    Constant,
}

fn default_lr() -> f64 {
    5e-5
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_batch_size() -> usize {
    4
}
fn default_one() -> usize {
    1
}
fn default_epochs() -> f64 {
    3.0
}
fn default_seed() -> u64 {
    42
}
fn default_logging_steps() -> usize {
    10
}
fn default_save_steps() -> usize {
    100
}
fn default_trainable_layers() -> i64 {
    2
}
fn default_all() -> Vec<String> {
    vec!["all".to_string()]
}
fn default_rank() -> usize {
    8
}

impl Params for TrainParams {
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::step_or_path(FieldPath::key("model"), self.model.clone()),
            Input::step(FieldPath::key("dataset"), self.dataset.clone()),
        ]
    }

    const VOLATILE: &'static [&'static str] = &["logging_steps", "eval_steps", "save_steps"];
}
