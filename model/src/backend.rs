//! The concrete burn backends lf runs on, and the device and dtype choices code above passes around.
//!
//! Model code is generic over `B: Backend`; only the entry points (a step's `run`, `lf chat`) pick a
//! concrete backend. They do it through [`run_inference`] or [`run_training`], which turn a runtime
//! [`DeviceChoice`] and [`Dtype`] into a monomorphised call of a task's generic `run`.

use std::fmt;
use std::str::FromStr;

use burn::tensor::DType;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// The CPU backend: burn's pure-Rust `Flex` backend (f32 by default; bf16 tensors are supported).
pub type Cpu = burn::backend::Flex;
/// The device of [`Cpu`] (a unit struct: `CpuDevice` is also its value).
pub use burn::backend::flex::FlexDevice as CpuDevice;
/// [`Cpu`] with automatic differentiation, for training.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The CUDA backend with f32 as its default float type.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;
/// The CUDA backend with bf16 as its default float type.
#[cfg(feature = "cuda")]
pub type CudaBf16 = burn::backend::Cuda<half::bf16, i32>;
/// The device of the CUDA backends.
#[cfg(feature = "cuda")]
pub type CudaDevice = burn::backend::cuda::CudaDevice;

/// Where to run: the CPU, a CUDA GPU, or CUDA when it is compiled in and present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The CPU backend.
    Cpu,
    /// The first CUDA device; an error when lf was built without the `cuda` feature.
    Cuda,
    /// CUDA when compiled in and a GPU is present, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown device `{other}`; expected `cpu`, `cuda` or `auto`"
            )),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        })
    }
}

/// The device a [`DeviceChoice`] resolved to on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedDevice {
    /// The CPU.
    Cpu,
    /// CUDA device with this index.
    Cuda(usize),
}

impl fmt::Display for ResolvedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Whether this build has the CUDA backend compiled in.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// Whether an NVIDIA GPU driver is visible on this machine (cheap check, no CUDA call).
pub fn cuda_present() -> bool {
    std::path::Path::new("/dev/nvidia0").exists()
        || std::path::Path::new("/proc/driver/nvidia/version").exists()
}

impl DeviceChoice {
    /// Resolves `auto` and checks that `cuda` is available.
    pub fn resolve(self) -> anyhow::Result<ResolvedDevice> {
        match self {
            Self::Cpu => Ok(ResolvedDevice::Cpu),
            Self::Cuda if !CUDA_COMPILED => anyhow::bail!(
                "device `cuda` requested but lf was built without CUDA\nhint: rebuild with `--features cuda`, or use `--device cpu`"
            ),
            Self::Cuda => Ok(ResolvedDevice::Cuda(0)),
            Self::Auto if CUDA_COMPILED && cuda_present() => Ok(ResolvedDevice::Cuda(0)),
            Self::Auto => Ok(ResolvedDevice::Cpu),
        }
    }
}

/// The floating-point type weights and activations are kept in.
///
/// Norms, softmax and RoPE tables are computed in f32 whatever this is, as transformers does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    /// The burn dtype.
    pub fn burn(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!("unknown dtype `{other}`; expected `f32` or `bf16`")),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// Work that runs on any backend (inference). [`run_inference`] picks the backend.
///
/// The backend's default float type stays f32 even for [`Dtype::Bf16`]: the model creates its
/// tensors in the requested dtype explicitly, while conversions that rely on the default (integer
/// positions to floats for RoPE) stay exact.
pub trait InferenceTask {
    /// What the task returns.
    type Output;
    /// Runs the task on backend `B`.
    fn run<B: Backend>(self, device: B::Device, dtype: Dtype) -> Self::Output;
}

/// Work that needs gradients. [`run_training`] picks the backend and wraps it in `Autodiff`.
pub trait TrainingTask {
    /// What the task returns.
    type Output;
    /// Runs the task on the autodiff backend `B`.
    fn run<B: AutodiffBackend>(self, device: B::Device, dtype: Dtype) -> Self::Output;
}

/// Runs `task` on the backend `device` resolves to.
pub fn run_inference<T: InferenceTask>(
    device: DeviceChoice,
    dtype: Dtype,
    task: T,
) -> anyhow::Result<T::Output> {
    match device.resolve()? {
        ResolvedDevice::Cpu => Ok(task.run::<Cpu>(CpuDevice, dtype)),
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(i) => Ok(task.run::<Cuda>(CudaDevice::new(i), dtype)),
        #[cfg(not(feature = "cuda"))]
        ResolvedDevice::Cuda(_) => unreachable!("resolve() refuses cuda without the feature"),
    }
}

/// Runs `task` on the autodiff version of the backend `device` resolves to.
pub fn run_training<T: TrainingTask>(
    device: DeviceChoice,
    dtype: Dtype,
    task: T,
) -> anyhow::Result<T::Output> {
    match device.resolve()? {
        ResolvedDevice::Cpu => Ok(task.run::<CpuAutodiff>(CpuDevice, dtype)),
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(i) => {
            Ok(task.run::<burn::backend::Autodiff<Cuda>>(CudaDevice::new(i), dtype))
        }
        #[cfg(not(feature = "cuda"))]
        ResolvedDevice::Cuda(_) => unreachable!("resolve() refuses cuda without the feature"),
    }
}
