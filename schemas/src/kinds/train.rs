//! The parameters every training kind (`pretrain`, `sft`, `rm`, `dpo`, `kto`) shares: what to train,
//! how to optimise, how often to log, evaluate and checkpoint; and those of preference optimisation
//! (`dpo`) and KTO (`kto`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Input, Params};

/// Calls `$callback! { $args ; fields { ... } }` with the fields every training kind shares, so
/// that [`TrainParams`] and the parameter types of the preference kinds ([`DpoParams`]) list them
/// once. (serde's `flatten` would lose `deny_unknown_fields` and the source spans of errors.)
macro_rules! with_train_fields {
    ($callback:ident ! { $($args:tt)* }) => {
        $callback! { $($args)* ; fields {
    /// The model to train: a step whose artifact is a model (a `download`, `model`, `pretrain`,
    /// `sft`, `rm`, `dpo` or `kto` step), or a local folder or `.gguf` file. A Hugging Face folder, a
    /// folder with one `.gguf` file (dequantised to f32; under LoRA its quantised projections stay
    /// in their blocks), or a LoRA artifact (its adapter is merged into its base first).
    pub model: String,
    /// The tokenized data: a `dataset` step, prepared with this model's tokenizer (`stage: pt` for
    /// `pretrain`, `stage: sft` for `sft`, `stage: rm` for `rm` and `dpo`, `stage: kto` for `kto`).
    /// Its validation split, if any, is evaluated.
    pub dataset: String,
    /// What is trained: `full` (every weight), `freeze` (the last layers only, see `freeze`) or
    /// `lora` (low-rank adapters beside the frozen weights, see `lora`). Default: `full` for
    /// `pretrain`, `lora` for `sft`, `rm`, `dpo` and `kto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuning_type: Option<FinetuningType>,
    /// Settings of `finetuning_type: freeze`.
    #[serde(default)]
    pub freeze: FreezeParams,
    /// Settings of `finetuning_type: lora`.
    #[serde(default)]
    pub lora: LoraParams,
    /// Train LoRA on a quantised copy of the model's projections (QLoRA): `4` (NF4 or FP4 blocks
    /// of 64 weights with absmax scales, see `quantization_type`) or `8` (row-wise absmax int8). The
    /// frozen projections stay quantised in memory and are dequantised one layer at a time inside
    /// the forward and backward passes; the adapter, embeddings, norms and LM head stay in the
    /// compute dtype. `finetuning_type: lora` only. A GGUF model whose projections are quantised
    /// (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) always trains on its own blocks, without this key. Default:
    /// off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_bit: Option<u8>,
    /// The 4-bit data type of `quantization_bit: 4`: `nf4` (default; QLoRA's NormalFloat) or `fp4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_type: Option<QuantizationType>,
    /// Quantise the 4-bit scales too (8 bits, blocks of 256), as QLoRA does: about 0.4 bits less
    /// per weight. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_quantization: Option<bool>,
    /// Peak learning rate. Default 5e-5.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// How the learning rate moves after warmup: `linear` (default; down to 0 at the last step),
    /// `cosine` (half a cosine down to 0) or `constant`.
    #[serde(default)]
    pub lr_scheduler: LrScheduler,
    /// Warmup as a fraction of the optimizer steps (rounded up). Default 0. Ignored when
    /// `warmup_steps` is set.
    #[serde(default)]
    pub warmup_ratio: f64,
    /// Warmup in optimizer steps: the learning rate rises linearly from 0. Default 0 (see
    /// `warmup_ratio`).
    #[serde(default)]
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay (`p ← p·(1 − lr·wd)`), applied to weight matrices and
    /// embeddings but not to biases and norm weights, as the transformers Trainer does. Default 0.
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
    /// Passes over the training split (may be fractional). Default 3. Ignored when `max_steps` is
    /// set.
    #[serde(default = "default_epochs")]
    pub epochs: f64,
    /// Stop after this many optimizer steps (the data repeats as needed). Default: from `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Seed of the data order (reshuffled every epoch), the LoRA initialisation and dropout.
    /// Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Write a line to `logs/metrics.jsonl` every this many optimizer steps. Default 10. Does not
    /// change the result.
    #[serde(default = "default_logging_steps")]
    pub logging_steps: usize,
    /// Evaluate on the validation split every this many steps (and always at the end). Default 0:
    /// at the end only. Does not change the result.
    #[serde(default)]
    pub eval_steps: usize,
    /// Checkpoint to the scratch folder every this many optimizer steps, for resuming a killed run;
    /// 0 turns checkpoints off. Default 100. Does not change the result.
    #[serde(default = "default_save_steps")]
    pub save_steps: usize,
        } }
    };
}

/// Defines a training kind's parameter struct: the shared fields, then its own, and
/// `train()` returning the shared part as a [`TrainParams`].
macro_rules! train_params_struct {
    (
        $(#[$sm:meta])*
        pub struct $name:ident { $( $(#[$xm:meta])* pub $x:ident : $xt:ty, )* }
        ; fields { $( $(#[$fm:meta])* pub $f:ident : $ft:ty, )* }
    ) => {
        $(#[$sm])*
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fm])* pub $f : $ft, )*
            $( $(#[$xm])* pub $x : $xt, )*
        }

        impl $name {
            /// The settings every training kind shares.
            pub fn train(&self) -> TrainParams {
                TrainParams { $( $f: self.$f.clone(), )* }
            }
        }
    };
}

with_train_fields!(train_params_struct! {
    /// Trains a model on a tokenized dataset and writes the result as a model artifact: a Hugging
    /// Face folder with the full weights (`finetuning_type: full` or `freeze`), or a LoRA adapter
    /// in PEFT's layout with its base model beside it in `base/` (`finetuning_type: lora`).
    ///
    /// The optimiser is AdamW with PyTorch's semantics; the learning rate follows a schedule with
    /// warmup; gradients are clipped by their global norm and accumulated over micro-batches, the
    /// loss normalised by the trained tokens of the whole accumulated batch. Checkpoints go to the
    /// step's scratch folder every `save_steps`: a killed run resumes from the last one and ends
    /// with the same weights, bit for bit on the CPU, as an uninterrupted run. `logging_steps`,
    /// `eval_steps` and `save_steps` do not change the result and are not part of the cache key.
    pub struct TrainParams {}
});

with_train_fields!(train_params_struct! {
    /// Preference optimisation on chosen/rejected pairs (a `dataset` step with `stage: rm`): DPO
    /// and its variants (IPO, hinge) against a frozen reference model, or the reference-free ORPO
    /// and SimPO. The training settings are those of `sft`; `batch_size` counts pairs.
    ///
    /// The reference is the starting model itself (frozen: its log-probabilities are computed once,
    /// before training, and kept in the step's scratch folder, so a resumed run reuses them) or
    /// another model (`ref_model`). Loss definitions follow TRL's `DPOTrainer` and `CPOTrainer`;
    /// see `docs/steps/dpo.md`.
    pub struct DpoParams {
        /// The reference model: a step whose artifact is a model, or a local folder or `.gguf`
        /// file. Default: the starting model (`model`); for `finetuning_type: lora` that is the
        /// base with the adapter switched off. Not used by `orpo` and `simpo`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ref_model: Option<String>,
        /// The loss: `sigmoid` (default; DPO), `ipo`, `hinge`, `orpo` or `simpo`.
        #[serde(default)]
        pub pref_loss: PrefLoss,
        /// β: how far the policy may move from the reference (DPO's temperature; ORPO's weight of
        /// the odds-ratio term; SimPO's reward scale). Must be positive. Default 0.1.
        #[serde(default = "default_pref_beta")]
        pub pref_beta: f64,
        /// Weight of an SFT term (the mean negative log-likelihood of the chosen reply's tokens)
        /// added to the loss. Default 0. Not used by `orpo`, whose loss has that term already.
        #[serde(default)]
        pub pref_ftx: f64,
        /// Label smoothing of `sigmoid` and `simpo` (conservative DPO: the share of pairs assumed
        /// to be flipped), in [0, 0.5). Default 0.
        #[serde(default)]
        pub dpo_label_smoothing: f64,
        /// SimPO's target margin γ (`simpo` only). Default 0.5.
        #[serde(default = "default_simpo_gamma")]
        pub simpo_gamma: f64,
    }
});

with_train_fields!(train_params_struct! {
    /// KTO (Kahneman-Tversky optimisation) on unpaired feedback: single replies marked desirable or
    /// undesirable (a `dataset` step with `stage: kto`), against a frozen reference model. The
    /// training settings are those of `sft`; `batch_size` counts examples.
    ///
    /// The reference point of the loss is a KL estimate from mismatched pairs (each prompt with
    /// another example's reply), made per micro-batch, as in the KTO paper and TRL's `KTOTrainer`.
    /// The reference's log-probabilities are computed once, before training, and kept in the
    /// step's scratch folder, as for `dpo`; see `docs/steps/kto.md`.
    pub struct KtoParams {
        /// The reference model: a step whose artifact is a model, or a local folder or `.gguf`
        /// file. Default: the starting model (`model`); for `finetuning_type: lora` that is the
        /// base with the adapter switched off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ref_model: Option<String>,
        /// β: how far the policy may move from the reference. Must be positive. Default 0.1.
        #[serde(default = "default_pref_beta")]
        pub pref_beta: f64,
        /// Weight of the loss of desirable examples (λ_D). Positive. Default 1.
        #[serde(default = "default_weight")]
        pub kto_chosen_weight: f64,
        /// Weight of the loss of undesirable examples (λ_U). Positive. Default 1.
        #[serde(default = "default_weight")]
        pub kto_rejected_weight: f64,
        /// Weight of an SFT term (the mean negative log-likelihood of a desirable reply's tokens)
        /// added to the loss of each desirable example. Default 0.
        #[serde(default)]
        pub pref_ftx: f64,
    }
});

/// A preference loss (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrefLoss {
    /// DPO: `−log σ(β·Δ)` with `Δ` the chosen-minus-rejected log-ratio against the reference.
    #[default]
    Sigmoid,
    /// IPO: `(Δ − 1/(2β))²`, on length-averaged log-probabilities.
    Ipo,
    /// `relu(1 − β·Δ)` (SLiC).
    Hinge,
    /// ORPO: the chosen reply's NLL plus `β·(−log σ(log odds ratio))`; no reference.
    Orpo,
    /// SimPO: `−log σ(β·(mean log p(chosen) − mean log p(rejected)) − γ)`; no reference.
    Simpo,
}

impl PrefLoss {
    /// The name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            PrefLoss::Sigmoid => "sigmoid",
            PrefLoss::Ipo => "ipo",
            PrefLoss::Hinge => "hinge",
            PrefLoss::Orpo => "orpo",
            PrefLoss::Simpo => "simpo",
        }
    }

    /// Whether the loss compares against a reference model.
    pub fn needs_reference(self) -> bool {
        matches!(self, PrefLoss::Sigmoid | PrefLoss::Ipo | PrefLoss::Hinge)
    }
}

/// A 4-bit data type (`quantization_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuantizationType {
    /// NormalFloat 4: quantiles of a normal distribution (QLoRA's default).
    #[default]
    Nf4,
    /// 4-bit float (1 sign, 2 exponent, 1 mantissa bit).
    Fp4,
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
    /// How many decoder layers are trained: `n > 0` the last `n`, `n < 0` the first `-n`. Default
    /// 2.
    #[serde(default = "default_trainable_layers")]
    pub trainable_layers: i64,
    /// Which parts of those layers are trained: `all` (default), or any of `self_attn`, `mlp`,
    /// `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`,
    /// `input_layernorm`, `post_attention_layernorm`.
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
    /// The projections that get adapters: `all` (default; every linear layer of the decoder
    /// layers), or any of `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`,
    /// `down_proj`.
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
fn default_pref_beta() -> f64 {
    0.1
}
fn default_simpo_gamma() -> f64 {
    0.5
}
fn default_weight() -> f64 {
    1.0
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

impl Params for KtoParams {
    fn inputs(&self) -> Vec<Input> {
        let mut inputs = self.train().inputs();
        if let Some(r) = &self.ref_model {
            inputs.push(Input::step_or_path(FieldPath::key("ref_model"), r.clone()));
        }
        inputs
    }

    const VOLATILE: &'static [&'static str] = TrainParams::VOLATILE;
}

impl Params for DpoParams {
    fn inputs(&self) -> Vec<Input> {
        let mut inputs = self.train().inputs();
        if let Some(r) = &self.ref_model {
            inputs.push(Input::step_or_path(FieldPath::key("ref_model"), r.clone()));
        }
        inputs
    }

    const VOLATILE: &'static [&'static str] = TrainParams::VOLATILE;
}
