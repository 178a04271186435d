//! The numerics environment (device, dtype, backend) that numeric steps' results depend on.

use lf_schemas::{Device, Dtype};
use serde::{Deserialize, Serialize};

/// Where and in what precision numeric steps run. Part of the cache key of every numeric step: results
/// computed on another backend or dtype are different results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numerics {
    /// `cpu` or `cuda`.
    pub device: String,
    /// `f32` or `bf16`.
    pub dtype: String,
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
            (Dtype::Auto, true) | (Dtype::Bf16, true) => "bf16",
            (Dtype::Auto, false) | (Dtype::F32, _) => "f32",
            (Dtype::Bf16, false) => {
                return Err("`dtype: bf16` is supported on CUDA only; use `f32` on the CPU".into());
            }
        };
        Ok(Numerics {
            device: if cuda { "cuda" } else { "cpu" }.into(),
            dtype: dtype.into(),
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
            "cpu"
        );
        assert!(cpu_only.resolve(Device::Cuda, Dtype::Auto).is_err());
        let gpu = Backends {
            cuda_compiled: true,
            cuda_present: true,
        };
        let n = gpu.resolve(Device::Auto, Dtype::Auto).unwrap();
        assert_eq!((n.device.as_str(), n.dtype.as_str()), ("cuda", "bf16"));
        assert!(gpu.resolve(Device::Cpu, Dtype::Bf16).is_err());
    }
}
