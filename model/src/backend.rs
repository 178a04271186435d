//! The concrete burn backends lf runs on, and the device and dtype choices code above passes around.
//!
//! Model code is generic over `B: Backend`; only the entry points (a step's `run`, `lf chat`) pick a
//! concrete backend. They do it through [`run_inference`] or [`run_training`], which turn a runtime
//! [`Device`] and [`Dtype`] into a monomorphised call of a task's generic `run`.

use std::fmt;

use burn::tensor::DType;
use burn::tensor::backend::{AutodiffBackend, Backend};
pub use lf_schemas::{Device, Dtype};

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

/// The device a [`Device`] resolved to on this machine.
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

/// Resolves `auto` and checks that `cuda` is available.
pub fn resolve_device(device: Device) -> anyhow::Result<ResolvedDevice> {
    match device {
        Device::Cpu => Ok(ResolvedDevice::Cpu),
        Device::Cuda if !CUDA_COMPILED => anyhow::bail!(
            "device `cuda` requested but lf was built without CUDA\nhint: rebuild with `--features cuda`, or use `--device cpu`"
        ),
        Device::Cuda => Ok(ResolvedDevice::Cuda(0)),
        Device::Auto if CUDA_COMPILED && cuda_present() => Ok(ResolvedDevice::Cuda(0)),
        Device::Auto => Ok(ResolvedDevice::Cpu),
    }
}

/// The floating-point type weights and activations are kept in on `device`: `auto` is bf16 on a GPU and
/// f32 on the CPU (as the manifest's `dtype: auto` is).
///
/// Norms, softmax and RoPE tables are computed in f32 whatever this is, as transformers does.
pub fn compute_dtype(dtype: Dtype, device: ResolvedDevice) -> Dtype {
    match (dtype, device) {
        (Dtype::Auto, ResolvedDevice::Cuda(_)) => Dtype::Bf16,
        (Dtype::Auto, ResolvedDevice::Cpu) => Dtype::F32,
        (d, _) => d,
    }
}

/// The burn dtype of a compute dtype (`auto`, which [`run_inference`] and [`run_training`] resolve
/// before a task sees it, is f32).
pub fn burn_dtype(dtype: Dtype) -> DType {
    match dtype {
        Dtype::F32 | Dtype::Auto => DType::F32,
        Dtype::Bf16 => DType::BF16,
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
    device: Device,
    dtype: Dtype,
    task: T,
) -> anyhow::Result<T::Output> {
    let device = resolve_device(device)?;
    let dtype = compute_dtype(dtype, device);
    match device {
        ResolvedDevice::Cpu => Ok(task.run::<Cpu>(CpuDevice, dtype)),
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(i) => Ok(task.run::<Cuda>(CudaDevice::new(i), dtype)),
        #[cfg(not(feature = "cuda"))]
        ResolvedDevice::Cuda(_) => unreachable!("resolve() refuses cuda without the feature"),
    }
}

/// Runs `task` on the autodiff version of the backend `device` resolves to.
pub fn run_training<T: TrainingTask>(
    device: Device,
    dtype: Dtype,
    task: T,
) -> anyhow::Result<T::Output> {
    let device = resolve_device(device)?;
    let dtype = compute_dtype(dtype, device);
    match device {
        ResolvedDevice::Cpu => Ok(task.run::<CpuAutodiff>(CpuDevice, dtype)),
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(i) => {
            Ok(task.run::<burn::backend::Autodiff<Cuda>>(CudaDevice::new(i), dtype))
        }
        #[cfg(not(feature = "cuda"))]
        ResolvedDevice::Cuda(_) => unreachable!("resolve() refuses cuda without the feature"),
    }
}
