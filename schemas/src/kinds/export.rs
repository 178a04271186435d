//! `export`: a model artifact (full weights, GGUF, or a LoRA adapter with its base) written as a Hugging
//! Face folder with merged weights, and on request as a PEFT adapter, GGUF files and an Ollama
//! `Modelfile`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::TemplateName;
use crate::{FieldPath, Input, Params};

/// Writes a model as a Hugging Face folder that transformers, vLLM or lf load: `config.json`,
/// `generation_config.json`, the tokenizer files (with the chat template) and the weights as
/// safetensors, sharded by `max_shard_size` with a `model.safetensors.index.json`. A LoRA adapter is
/// merged into its base first (`W + B·A·alpha/r`, computed in f32 on the host, so the bytes are the
/// same on every machine).
///
/// On request it also writes the adapter alone in PEFT's layout (`adapter/`), GGUF files that llama.cpp
/// loads (`model-<type>.gguf`: F16, BF16, F32, Q8_0, the 4/5-bit types, the k-quants and llama.cpp's
/// `q4_k_m`/`q5_k_m` mixes; llama.cpp's tensor names, its Q/K row
/// permutation, the tokenizer and chat template in the metadata), and an Ollama `Modelfile` next to
/// them. See `docs/steps/export.md` for the artifact's layout.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// The model: a step whose artifact is a model (`download`, `model`, `pretrain`, `sft`, ...) or a
    /// local folder: a Hugging Face folder, a folder with one `.gguf` file, or a LoRA artifact
    /// (`adapter_config.json` + `adapter_model.safetensors` with its base model in `base/`).
    pub model: String,
    /// Element type of the safetensors weights: `auto` (default: the dtype the model was stored in,
    /// `torch_dtype` of its `config.json`; f32 for GGUF input), `f32`, `f16` or `bf16`.
    #[serde(default)]
    pub dtype: ExportDtype,
    /// The largest safetensors file, e.g. `5GB` (default), `500MB`, `2GiB` or a number of bytes. A model
    /// that does not fit in one file is split into `model-00001-of-0000N.safetensors`, ... with a
    /// `model.safetensors.index.json`; a tensor larger than the limit gets a file of its own.
    #[serde(default = "default_max_shard_size")]
    pub max_shard_size: String,
    /// The chat template written with the tokenizer: `auto` (default: the model's own) or one of lf's
    /// built-in templates (`chatml`, `llama3`, `llama2`, `mistral`, `default`, `empty`), e.g. the one
    /// the model was fine-tuned with.
    #[serde(default)]
    pub template: TemplateName,
    /// Also write the LoRA adapter alone, in PEFT's layout, under `adapter/`
    /// (`adapter_config.json` and `adapter_model.safetensors`, f32). The model must be a LoRA
    /// artifact. Default false.
    #[serde(default)]
    pub adapter: bool,
    /// GGUF files to write, one per type: any of `f16`, `bf16`, `f32`, `q8_0`, `q4_0`, `q4_1`,
    /// `q5_0`, `q5_1`, `q4_k`, `q5_k`, `q6_k`, and llama.cpp's mixes `q4_k_m` and `q5_k_m` (e.g.
    /// `[f16, q4_k_m]`). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gguf: Vec<GgufType>,
    /// Write an Ollama `Modelfile` for the first GGUF file (needs `gguf`). Default false.
    #[serde(default)]
    pub ollama: bool,
}

fn default_max_shard_size() -> String {
    "5GB".into()
}

/// Element type of exported safetensors weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportDtype {
    /// The dtype the model was stored in (`torch_dtype`), else f32.
    #[default]
    Auto,
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// A GGUF tensor type for the weight matrices (norms and other vectors stay F32, as llama.cpp's
/// converter does).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GgufType {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// 32-bit float.
    F32,
    /// 8-bit blocks of 32 weights with one f16 scale (`ggml`'s Q8_0); matrices whose rows are not a
    /// multiple of 32 fall back to F16.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 weights with one f16 scale (`ggml`'s Q4_0, symmetric); matrices whose
    /// rows are not a multiple of 32 fall back to F16.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 4-bit blocks of 32 weights with an f16 scale and minimum (`ggml`'s Q4_1).
    #[serde(rename = "q4_1")]
    Q4_1,
    /// 5-bit blocks of 32 weights with one f16 scale (`ggml`'s Q5_0).
    #[serde(rename = "q5_0")]
    Q5_0,
    /// 5-bit blocks of 32 weights with an f16 scale and minimum (`ggml`'s Q5_1).
    #[serde(rename = "q5_1")]
    Q5_1,
    /// Every matrix in `ggml`'s Q4_K (super-blocks of 256 weights, 6-bit sub-block scales and
    /// minimums), as `llama-quantize --pure … Q4_K_S` writes it; rows not a multiple of 256 fall back
    /// to Q5_0, as llama.cpp's do.
    #[serde(rename = "q4_k")]
    Q4_K,
    /// Every matrix in `ggml`'s Q5_K; rows not a multiple of 256 fall back to Q5_1.
    #[serde(rename = "q5_k")]
    Q5_K,
    /// Every matrix in `ggml`'s Q6_K (6-bit, i8 sub-block scales); rows not a multiple of 256 fall
    /// back to Q8_0.
    #[serde(rename = "q6_k")]
    Q6_K,
    /// llama.cpp's Q4_K_M mix: Q4_K, with the output projection in Q6_K and `attn_v` and `ffn_down`
    /// of a third of the layers (the first and last eighth, and every third between) in Q6_K.
    #[serde(rename = "q4_k_m")]
    Q4_K_M,
    /// llama.cpp's Q5_K_M mix: Q5_K, with the same tensors as Q4_K_M's in Q6_K.
    #[serde(rename = "q5_k_m")]
    Q5_K_M,
}

impl GgufType {
    /// The name used in manifests and file names (`f16`, `q8_0`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgufType::F16 => "f16",
            GgufType::Bf16 => "bf16",
            GgufType::F32 => "f32",
            GgufType::Q8_0 => "q8_0",
            GgufType::Q4_0 => "q4_0",
            GgufType::Q4_1 => "q4_1",
            GgufType::Q5_0 => "q5_0",
            GgufType::Q5_1 => "q5_1",
            GgufType::Q4_K => "q4_k",
            GgufType::Q5_K => "q5_k",
            GgufType::Q6_K => "q6_k",
            GgufType::Q4_K_M => "q4_k_m",
            GgufType::Q5_K_M => "q5_k_m",
        }
    }
}

impl Params for ExportParams {
    fn inputs(&self) -> Vec<Input> {
        vec![Input::step_or_path(
            FieldPath::key("model"),
            self.model.clone(),
        )]
    }
}
