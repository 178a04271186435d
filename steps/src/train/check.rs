//! The problems a training step can have before it starts: values the types allow but training cannot
//! use ([`check_params`]), and mismatches between the parameters, the model and the data
//! ([`check_inputs`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lf_engine::Problem;
use lf_schemas::FieldPath;
use lf_schemas::kinds::dataset::Stage;
use lf_schemas::kinds::train::{FinetuningType, PrefLoss, QuantizationType};
use lf_schemas::kinds::{DpoParams, KtoParams, TrainParams};

use super::params::{EXTRA_MODULES, LAYER_MODULES, LINEAR_MODULES};
use crate::data::artifact::read_info;
use crate::data::tokenizer_fingerprint;
use lf_model::ModelArtifact;
use lf_model::gguf::GgufFile;
use lf_model::gguf::quant::can_dequantize;
use lf_model::load::ModelFormat;
use lf_model::quant::{FourBit, QuantSpec};

fn key(k: &str) -> FieldPath {
    FieldPath::key(k)
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks values the types cannot express (`default`: the kind's finetuning type).
pub fn check_params(p: &TrainParams, default: FinetuningType) -> Vec<Problem> {
    let mut out = check_quantization(p, p.finetuning_type.unwrap_or(default));
    let mut positive = |field: &str, v: f64| {
        if !(v.is_finite() && v > 0.0) {
            out.push(Problem::new(
                key(field),
                format!("must be a positive number, got {v}"),
            ));
        }
    };
    positive("learning_rate", p.learning_rate);
    positive("adam_epsilon", p.adam_epsilon);
    if p.max_steps.is_none() {
        positive("epochs", p.epochs);
    }
    for (field, v) in [("adam_beta1", p.adam_beta1), ("adam_beta2", p.adam_beta2)] {
        if !(0.0..1.0).contains(&v) {
            out.push(Problem::new(
                key(field),
                format!("must be in [0, 1), got {v}"),
            ));
        }
    }
    for (field, v) in [
        ("weight_decay", p.weight_decay),
        ("max_grad_norm", p.max_grad_norm),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            out.push(Problem::new(
                key(field),
                format!("must be 0 or more, got {v}"),
            ));
        }
    }
    if !(0.0..=1.0).contains(&p.warmup_ratio) {
        out.push(Problem::new(
            key("warmup_ratio"),
            format!("must be in [0, 1], got {}", p.warmup_ratio),
        ));
    }
    for (field, v) in [
        ("batch_size", p.batch_size),
        ("gradient_accumulation_steps", p.gradient_accumulation_steps),
    ] {
        if v == 0 {
            out.push(Problem::new(key(field), "must be at least 1"));
        }
    }
    if p.max_steps == Some(0) {
        out.push(
            Problem::new(key("max_steps"), "must be at least 1")
                .hint("leave it out to train for `epochs`"),
        );
    }
    let lora = &p.lora;
    let lf = || key("lora");
    if lora.rank == 0 {
        out.push(Problem::new(lf().then("rank"), "must be at least 1"));
    }
    if let Some(a) = lora.alpha
        && !(a.is_finite() && a > 0.0)
    {
        out.push(Problem::new(
            lf().then("alpha"),
            format!("must be a positive number, got {a}"),
        ));
    }
    if !(0.0..1.0).contains(&lora.dropout) {
        out.push(Problem::new(
            lf().then("dropout"),
            format!("must be in [0, 1), got {}", lora.dropout),
        ));
    }
    if lora.target.is_empty() {
        out.push(
            Problem::new(lf().then("target"), "names no module")
                .hint(format!("use `all`, or some of {}", list(&LINEAR_MODULES))),
        );
    }
    for (i, t) in lora.target.iter().enumerate() {
        if t != "all" && !LINEAR_MODULES.contains(&t.as_str()) {
            out.push(
                Problem::new(
                    lf().then("target").at(i),
                    format!("`{t}` matches no linear module of the model"),
                )
                .hint(format!(
                    "the model's linear modules are {}; `all` adapts every one of them",
                    list(&LINEAR_MODULES)
                )),
            );
        }
    }
    let fz = || key("freeze");
    if p.freeze.trainable_layers == 0 {
        out.push(
            Problem::new(fz().then("trainable_layers"), "must not be 0")
                .hint("a positive number trains the last layers, a negative one the first"),
        );
    }
    for (i, m) in p.freeze.trainable_modules.iter().enumerate() {
        if m != "all" && !LAYER_MODULES.contains(&m.as_str()) {
            out.push(
                Problem::new(
                    fz().then("trainable_modules").at(i),
                    format!("`{m}` is not a module of a decoder layer"),
                )
                .hint(format!("use `all`, or some of {}", list(&LAYER_MODULES))),
            );
        }
    }
    for (i, m) in p.freeze.extra_modules.iter().enumerate() {
        if !EXTRA_MODULES.contains(&m.as_str()) {
            out.push(
                Problem::new(
                    fz().then("extra_modules").at(i),
                    format!("`{m}` is not a module outside the layers"),
                )
                .hint(format!("use some of {}", list(&EXTRA_MODULES))),
            );
        }
    }
    out
}

/// The quantisation keys: a known bit width, LoRA only, 4-bit settings with 4 bits.
fn check_quantization(p: &TrainParams, finetuning: FinetuningType) -> Vec<Problem> {
    let mut out = Vec::new();
    match p.quantization_bit {
        None => {
            for (field, set) in [
                ("quantization_type", p.quantization_type.is_some()),
                ("double_quantization", p.double_quantization.is_some()),
            ] {
                if set {
                    out.push(
                        Problem::new(key(field), "has no effect without `quantization_bit: 4`")
                            .hint("add `quantization_bit: 4`, or remove it"),
                    );
                }
            }
        }
        Some(bits) if bits != 4 && bits != 8 => out.push(
            Problem::new(
                key("quantization_bit"),
                format!("{bits}-bit quantisation is not supported"),
            )
            .hint("use 4 (NF4 or FP4 blocks, QLoRA) or 8 (row-wise int8)"),
        ),
        Some(bits) => {
            if finetuning != FinetuningType::Lora {
                out.push(
                    Problem::new(
                        key("quantization_bit"),
                        format!(
                            "quantised training needs `finetuning_type: lora`, not `{}`",
                            finetuning.name()
                        ),
                    )
                    .hint("a quantised model is frozen: LoRA trains adapters beside it (QLoRA); set `finetuning_type: lora` or remove `quantization_bit`"),
                );
            }
            if bits == 8 {
                for (field, set) in [
                    ("quantization_type", p.quantization_type.is_some()),
                    ("double_quantization", p.double_quantization.is_some()),
                ] {
                    if set {
                        out.push(
                            Problem::new(key(field), "applies to `quantization_bit: 4` only")
                                .hint("8-bit quantisation is row-wise int8; remove this key"),
                        );
                    }
                }
            }
        }
    }
    out
}

/// The quantisation `p` asks for, if any (after [`check_params`] accepted it).
pub fn quantization(p: &TrainParams) -> Option<QuantSpec> {
    let kind = match p.quantization_type.unwrap_or_default() {
        QuantizationType::Nf4 => FourBit::Nf4,
        QuantizationType::Fp4 => FourBit::Fp4,
    };
    let double = p.double_quantization.unwrap_or(true);
    p.quantization_bit
        .and_then(|bits| QuantSpec::from_bits(bits, kind, double).ok())
}

/// Problems of a GGUF model for training: types lf cannot read, and `quantization_bit` on projections
/// the file stores quantised already.
fn check_gguf(p: &TrainParams, file: &Path) -> Vec<Problem> {
    let mut out = Vec::new();
    let gguf = match GgufFile::open(file) {
        Ok(g) => g,
        Err(e) => {
            out.push(Problem::new(key("model"), format!("{e:#}")));
            return out;
        }
    };
    let mut unreadable: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut quantized_projection = None;
    for t in gguf.tensors() {
        if !can_dequantize(t.ggml_type) {
            unreadable
                .entry(t.ggml_type.to_string())
                .or_default()
                .push(t.name.clone());
        } else if t.ggml_type.block().0 > 1 && t.name.starts_with("blk.") {
            quantized_projection.get_or_insert((t.name.clone(), t.ggml_type));
        }
    }
    for (ty, names) in unreadable {
        out.push(
            Problem::new(
                key("model"),
                format!(
                    "`{}` stores {} tensor(s) as {ty} (e.g. `{}`), which lf cannot dequantise",
                    file.display(),
                    names.len(),
                    names[0]
                ),
            )
            .hint("lf reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K; convert the file (llama.cpp's `llama-quantize`) or use the Hugging Face model"),
        );
    }
    if let (Some(bits), Some((name, ty))) = (p.quantization_bit, quantized_projection) {
        out.push(
            Problem::new(
                key("quantization_bit"),
                format!(
                    "`{}` is quantised already (`{name}` is {ty}); LoRA trains on its own blocks",
                    file.display()
                ),
            )
            .hint(format!(
                "remove `quantization_bit: {bits}`: the file's quantisation is used as it is"
            )),
        );
    }
    out
}

/// Checks the parameters against the model and the dataset (`kind` is the step kind, `stage` what it
/// trains on; `finetuning` the resolved finetuning type).
pub fn check_inputs(
    p: &TrainParams,
    kind: &str,
    stage: Stage,
    finetuning: FinetuningType,
    inputs: &BTreeMap<String, PathBuf>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let (Some(model_dir), Some(data_dir)) = (inputs.get("model"), inputs.get("dataset")) else {
        return out;
    };
    let source = match ModelArtifact::open(model_dir) {
        Ok(s) => s,
        Err(e) => {
            out.push(Problem::new(key("model"), format!("{e:#}")).hint(
                "point `model` at a Hugging Face folder, a `.gguf` file, or a training step's artifact",
            ));
            return out;
        }
    };
    let config = Some(source.config.clone());
    if let ModelFormat::Gguf(file) = &source.base {
        out.extend(check_gguf(p, file));
    }
    let bnb = source
        .config_json
        .as_ref()
        .and_then(|j| j.pointer("/quantization_config/quant_method"))
        .and_then(|m| m.as_str())
        == Some("bitsandbytes");
    if let (Some(bits), true) = (p.quantization_bit, bnb) {
        out.push(
            Problem::new(
                key("quantization_bit"),
                format!(
                    "`{}` is a bitsandbytes checkpoint, quantised already; LoRA trains on its own blocks",
                    p.model
                ),
            )
            .hint(format!(
                "remove `quantization_bit: {bits}`: the checkpoint's quantisation is used as it is"
            )),
        );
    }
    match read_info(data_dir) {
        Err(e) => out.push(
            Problem::new(key("dataset"), format!("{e:#}"))
                .hint("`dataset` must name a `dataset` step"),
        ),
        Ok(info) => {
            if info.stage != stage {
                let what = match stage {
                    Stage::Rm => "preference pairs",
                    Stage::Kto => "replies marked desirable or not",
                    Stage::Sft => "conversations",
                    Stage::Pt => "plain text",
                };
                out.push(
                    Problem::new(
                        key("dataset"),
                        format!(
                            "`{}` was prepared for stage `{}`, but `{kind}` trains on stage `{}` data",
                            p.dataset,
                            info.stage.name(),
                            stage.name()
                        ),
                    )
                    .hint(format!(
                        "set `stage: {}` on the dataset step (`{kind}` trains on {what})",
                        stage.name()
                    )),
                );
            }
            match tokenizer_fingerprint(source.tokenizer_path()) {
                Ok(fp) if fp != info.tokenizer_fingerprint => out.push(
                    Problem::new(
                        key("dataset"),
                        format!(
                            "`{}` was tokenized with another tokenizer than `{}`'s (fingerprint {} vs {})",
                            p.dataset,
                            p.model,
                            short(&info.tokenizer_fingerprint),
                            short(&fp)
                        ),
                    )
                    .hint(format!(
                        "set `model: {}` on the dataset step, so it tokenizes with this model's tokenizer",
                        p.model
                    )),
                ),
                Ok(_) => {}
                Err(e) => out.push(Problem::new(
                    key("model"),
                    format!("cannot read the model's tokenizer: {e:#}"),
                )),
            }
            if let Some(c) = &config
                && info.vocab_size > c.vocab_size
            {
                out.push(Problem::new(
                    key("dataset"),
                    format!(
                        "the data's vocabulary has {} tokens, the model's embedding only {}",
                        info.vocab_size, c.vocab_size
                    ),
                ));
            }
        }
    }
    if let Some(c) = &config
        && finetuning == FinetuningType::Freeze
    {
        let n = p.freeze.trainable_layers.unsigned_abs() as usize;
        if n > c.num_hidden_layers {
            out.push(Problem::new(
                key("freeze").then("trainable_layers"),
                format!(
                    "asks for {n} layers, but the model has {}",
                    c.num_hidden_layers
                ),
            ));
        }
        if p.freeze.extra_modules.iter().any(|m| m == "lm_head") && c.tie_word_embeddings {
            out.push(
                Problem::new(
                    key("freeze").then("extra_modules"),
                    "the model has no separate `lm_head`: it shares `embed_tokens`",
                )
                .hint("train `embed_tokens` instead"),
            );
        }
    }
    out
}

/// Checks the preference settings of a `dpo` step.
pub fn check_pref(p: &DpoParams) -> Vec<Problem> {
    let mut out = Vec::new();
    if !(p.pref_beta.is_finite() && p.pref_beta > 0.0) {
        out.push(
            Problem::new(
                key("pref_beta"),
                format!("must be a positive number, got {}", p.pref_beta),
            )
            .hint("DPO's β is usually between 0.01 and 0.5; 0.1 is the default"),
        );
    }
    if !(0.0..0.5).contains(&p.dpo_label_smoothing) {
        out.push(Problem::new(
            key("dpo_label_smoothing"),
            format!("must be in [0, 0.5), got {}", p.dpo_label_smoothing),
        ));
    } else if p.dpo_label_smoothing > 0.0
        && !matches!(p.pref_loss, PrefLoss::Sigmoid | PrefLoss::Simpo)
    {
        out.push(
            Problem::new(
                key("dpo_label_smoothing"),
                format!("is not used by `pref_loss: {}`", p.pref_loss.name()),
            )
            .hint("label smoothing applies to `sigmoid` and `simpo`"),
        );
    }
    if !(p.pref_ftx.is_finite() && p.pref_ftx >= 0.0) {
        out.push(Problem::new(
            key("pref_ftx"),
            format!("must be 0 or more, got {}", p.pref_ftx),
        ));
    }
    if !p.simpo_gamma.is_finite() {
        out.push(Problem::new(
            key("simpo_gamma"),
            format!("must be a number, got {}", p.simpo_gamma),
        ));
    }
    if p.ref_model.is_some() && !p.pref_loss.needs_reference() {
        out.push(
            Problem::new(
                key("ref_model"),
                format!(
                    "`pref_loss: {}` uses no reference model",
                    p.pref_loss.name()
                ),
            )
            .hint("remove `ref_model`, or use `sigmoid`, `ipo` or `hinge`"),
        );
    }
    out
}

/// Checks the settings of a `kto` step.
pub fn check_kto(p: &KtoParams) -> Vec<Problem> {
    let mut out = Vec::new();
    if !(p.pref_beta.is_finite() && p.pref_beta > 0.0) {
        out.push(
            Problem::new(
                key("pref_beta"),
                format!("must be a positive number, got {}", p.pref_beta),
            )
            .hint("KTO's β is usually between 0.01 and 0.5; 0.1 is the default"),
        );
    }
    for (name, w) in [
        ("kto_chosen_weight", p.kto_chosen_weight),
        ("kto_rejected_weight", p.kto_rejected_weight),
    ] {
        if !(w.is_finite() && w > 0.0) {
            out.push(
                Problem::new(key(name), format!("must be a positive number, got {w}")).hint(
                    "the KTO paper keeps λ_D·(desirable rows) / (λ_U·(undesirable rows)) between 1 and 4/3; 1 is the default",
                ),
            );
        }
    }
    if !(p.pref_ftx.is_finite() && p.pref_ftx >= 0.0) {
        out.push(Problem::new(
            key("pref_ftx"),
            format!("must be 0 or more, got {}", p.pref_ftx),
        ));
    }
    out
}

/// Checks that the reference model of a `dpo` or `kto` step (`ref_model`, if given) reads the data
/// as the policy does.
pub fn check_reference(
    ref_model: Option<&str>,
    dataset: &str,
    inputs: &BTreeMap<String, PathBuf>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let (Some(ref_dir), Some(data_dir)) = (inputs.get("ref_model"), inputs.get("dataset")) else {
        return out;
    };
    let source = match ModelArtifact::open(ref_dir) {
        Ok(s) => s,
        Err(e) => {
            out.push(Problem::new(key("ref_model"), format!("{e:#}")));
            return out;
        }
    };
    if let (Ok(info), Ok(fp)) = (
        read_info(data_dir),
        tokenizer_fingerprint(source.tokenizer_path()),
    ) && fp != info.tokenizer_fingerprint
    {
        out.push(
            Problem::new(
                key("ref_model"),
                format!(
                    "`{}` has another tokenizer than the one `{dataset}` was tokenized with",
                    ref_model.unwrap_or_default(),
                ),
            )
            .hint("the reference must share the policy's tokenizer"),
        );
    }
    out
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}
