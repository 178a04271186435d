//! The envelope of a pipeline manifest: name, variables, numerics and named steps.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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
    /// Folders outside the manifest's folder that steps may read local files from (relative to the
    /// manifest's folder, or absolute). A local path a step reads must lie under the manifest's folder
    /// or under one of these, so that a manifest from elsewhere cannot copy your files into the store.
    #[serde(default)]
    pub allow_outside: Vec<String>,
    /// The steps, by name. A step refers to another step's output by its name.
    pub steps: BTreeMap<String, serde_json::Value>,
}

// Its doc comment is the schema's description (`schemas/pipeline.schema.json`): change both together.
// The names are lowercase everywhere (manifests, `--device`, cache keys, lockfiles, `Display`, `FromStr`).
/// Where numeric work runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
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

// Like `Device`: the doc comment is in the schema, and the names are lowercase everywhere.
/// Floating-point type.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
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

impl Device {
    /// Every device, in the order `--help` lists them.
    pub const ALL: [Device; 3] = [Device::Auto, Device::Cpu, Device::Cuda];

    /// The name used in manifests, on the command line and in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl Dtype {
    /// Every dtype, in the order `--help` lists them.
    pub const ALL: [Dtype; 3] = [Dtype::Auto, Dtype::F32, Dtype::Bf16];

    /// The name used in manifests, on the command line and in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Auto => "auto",
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a name written by `Display`; anything else is an error naming the choices.
impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Device, String> {
        Device::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown device `{s}`; expected `auto`, `cpu` or `cuda`"))
    }
}

/// Parses a name written by `Display`; anything else is an error naming the choices.
impl FromStr for Dtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Dtype, String> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown dtype `{s}`; expected `auto`, `f32` or `bf16`"))
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn one_name_per_value_everywhere() {
        for d in Device::ALL {
            let json = serde_json::to_value(d).unwrap();
            assert_eq!(json, d.as_str());
            assert_eq!(d.to_string(), d.as_str());
            assert_eq!(d.as_str().parse::<Device>(), Ok(d));
            assert_eq!(d.to_possible_value().unwrap().get_name(), d.as_str());
            assert_eq!(serde_json::from_value::<Device>(json).unwrap(), d);
        }
        for d in Dtype::ALL {
            let json = serde_json::to_value(d).unwrap();
            assert_eq!(json, d.as_str());
            assert_eq!(d.to_string(), d.as_str());
            assert_eq!(d.as_str().parse::<Dtype>(), Ok(d));
            assert_eq!(d.to_possible_value().unwrap().get_name(), d.as_str());
            assert_eq!(serde_json::from_value::<Dtype>(json).unwrap(), d);
        }
        assert_eq!(Device::value_variants(), Device::ALL);
        assert_eq!(Dtype::value_variants(), Dtype::ALL);
    }

    #[test]
    fn unknown_names_are_errors_not_defaults() {
        assert_eq!(
            "gpu".parse::<Device>(),
            Err("unknown device `gpu`; expected `auto`, `cpu` or `cuda`".to_string())
        );
        assert!("CPU".parse::<Device>().is_err());
        assert!("".parse::<Device>().is_err());
        assert_eq!(
            "fp16".parse::<Dtype>(),
            Err("unknown dtype `fp16`; expected `auto`, `f32` or `bf16`".to_string())
        );
    }
}
