//! The numerics environment (device, dtype, backend) that numeric steps' results depend on.

use lf_schemas::{Device, Dtype};
use serde::{Deserialize, Serialize};

/// Where and in what precision numeric steps run. Part of the cache key of every numeric step: results
/// computed on another backend or dtype are different results.
///
/// Its JSON (`{"device":"cpu","dtype":"f32","backend":"flex"}`) is in every numeric step's cache key and in
/// lockfiles: keep the field names, their order and the lowercase values, or every cached result moves
/// (a unit test pins the exact bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numerics {
    /// [`Device::Cpu`] or [`Device::Cuda`]: resolved, never `Auto`.
    pub device: Device,
    /// [`Dtype::F32`] or [`Dtype::Bf16`]: resolved, never `Auto`.
    pub dtype: Dtype,
    /// The burn backend that computes (`flex`, `cuda`).
    pub backend: String,
}

/// What the binary was built with, for resolving `auto`.
#[derive(Clone, Copy, Debug)]
pub struct Backends {
    /// Whether lf was built with the `cuda` feature.
    pub cuda_compiled: bool,
    /// Whether a GPU seems present (checked without initialising it).
    pub cuda_present: bool,
}

impl Backends {
    /// Resolves the manifest's choices into concrete numerics.
    pub fn resolve(&self, device: Device, dtype: Dtype) -> Result<Numerics, String> {
        let cuda = match device {
            Device::Cpu => false,
            Device::Cuda if !self.cuda_compiled => {
                return Err(
                    "`device: cuda` needs lf built with CUDA (`cargo build --release --features cuda`)"
                        .into(),
                );
            }
            Device::Cuda => true,
            Device::Auto => self.cuda_compiled && self.cuda_present,
        };
        let dtype = match (dtype, cuda) {
            (Dtype::Auto, true) | (Dtype::Bf16, true) => Dtype::Bf16,
            (Dtype::Auto, false) | (Dtype::F32, _) => Dtype::F32,
            (Dtype::Bf16, false) => {
                return Err("`dtype: bf16` is supported on CUDA only; use `f32` on the CPU".into());
            }
        };
        Ok(Numerics {
            device: if cuda { Device::Cuda } else { Device::Cpu },
            dtype,
            backend: if cuda { "cuda" } else { "flex" }.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_what_is_available() {
        let cpu_only = Backends {
            cuda_compiled: false,
            cuda_present: true,
        };
        assert_eq!(
            cpu_only.resolve(Device::Auto, Dtype::Auto).unwrap().device,
            Device::Cpu
        );
        assert!(cpu_only.resolve(Device::Cuda, Dtype::Auto).is_err());
        let gpu = Backends {
            cuda_compiled: true,
            cuda_present: true,
        };
        let n = gpu.resolve(Device::Auto, Dtype::Auto).unwrap();
        assert_eq!((n.device, n.dtype), (Device::Cuda, Dtype::Bf16));
        assert!(gpu.resolve(Device::Cpu, Dtype::Bf16).is_err());
    }

    #[test]
    fn serialization_is_pinned_because_it_is_in_cache_keys() {
        let backends = Backends {
            cuda_compiled: true,
            cuda_present: true,
        };
        let cpu = backends.resolve(Device::Cpu, Dtype::Auto).unwrap();
        assert_eq!(
            serde_json::to_string(&cpu).unwrap(),
            r#"{"device":"cpu","dtype":"f32","backend":"flex"}"#
        );
        let cuda = backends.resolve(Device::Cuda, Dtype::Auto).unwrap();
        assert_eq!(
            serde_json::to_string(&cuda).unwrap(),
            r#"{"device":"cuda","dtype":"bf16","backend":"cuda"}"#
        );
        // Lockfiles hold it as YAML.
        assert_eq!(
            serde_yaml::to_string(&cpu).unwrap(),
            "device: cpu\ndtype: f32\nbackend: flex\n"
        );
        let back: Numerics =
            serde_json::from_str(r#"{"device":"cuda","dtype":"bf16","backend":"cuda"}"#).unwrap();
        assert_eq!(back, cuda);
        assert!(
            serde_json::from_str::<Numerics>(r#"{"device":"gpu","dtype":"f32","backend":"flex"}"#)
                .is_err()
        );
    }
}
