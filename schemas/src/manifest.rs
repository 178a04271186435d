//! The envelope of a pipeline manifest: name, variables, numerics and named steps.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pipeline manifest. The engine parses it itself (to point at errors); this type documents it and
/// drives the generated schema. Each entry of `steps` is an object with a `kind` and that kind's
/// parameters.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The pipeline's name: names its `runs/<name>/` folder. Letters, digits, `-` and `_`.
    pub name: String,
    /// What the pipeline is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Variables usable in any string value as `{{ vars.NAME }}` (minijinja, undefined variables are
    /// errors). `lf run --var NAME=VALUE` overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Where training and inference run. Default `auto`: CUDA when lf was built with it and a GPU is
    /// present, else CPU.
    #[serde(default)]
    pub device: Device,
    /// Floating-point type of training and inference. Default `auto`: f32 on CPU, bf16 on CUDA.
    #[serde(default)]
    pub dtype: Dtype,
    /// The steps, by name. A step refers to another step's output by its name.
    pub steps: BTreeMap<String, serde_json::Value>,
}

/// Where numeric work runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA if available, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU (needs lf built with `--features cuda`).
    Cuda,
}

/// Floating-point type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// f32 on CPU, bf16 on CUDA.
    #[default]
    Auto,
    /// 32-bit floats.
    F32,
    /// bfloat16 (CUDA only).
    Bf16,
}
