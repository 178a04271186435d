//! lf's models: the Llama-family decoder written with burn, and everything that reads or writes a
//! model on disk.
//!
//! The principal types are [`Llama`], a decoder-only transformer covering the `llama`, `mistral`,
//! `qwen2` and `qwen3` architectures of Hugging Face transformers, and [`ModelArtifact`], a model on
//! disk (a Hugging Face folder, a GGUF file, or a LoRA adapter with its base) as every part of lf
//! opens it. `Llama` is generic over the burn [`Backend`](burn::tensor::backend::Backend), so training
//! code runs it on `Autodiff<B>` and inference code on the plain backend.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`artifact`]: [`ModelArtifact`], the one type for a model on disk.
//! - [`config`]: [`ModelConfig`], read from a HF `config.json` or GGUF metadata and written back.
//! - [`load`]: weights from a HF safetensors directory (single or sharded) or a `.gguf` file, saving
//!   to a HF directory, and seeded random initialisation.
//! - [`gguf`]: our own GGUF reader and writer, its block formats, names, metadata and tokenizer.
//! - [`adapter`]: LoRA adapters in PEFT's layout (the one reader and writer).
//! - [`value_head`]: the scalar head of a reward model.
//! - [`llama`]: the decoder ([`Llama`], [`ForwardInput`], [`KvCache`]).
//! - [`linear`]: the linear layer with a frozen-able base and an optional LoRA adapter.
//! - [`quant`]: quantised frozen bases (NF4/FP4/int8 as bitsandbytes stores them, GGUF blocks) and
//!   the product that dequantises them layer by layer (QLoRA).
//! - [`generate`]: sampling with a KV cache, stop conditions and streaming.
//! - [`ops`]: the one matmul every layer goes through, plus the small numeric kernels.
//! - [`backend`]: the concrete backends (CPU, CUDA), device and dtype choices; the `cuda` feature.
//!
//! Nothing here knows about pipelines, steps or the store. Design notes live in
//! `docs/design/model.md`.

pub mod adapter;
pub mod artifact;
pub mod backend;
pub mod config;
pub mod error;
pub mod fixed_order;
pub mod fused;
pub mod generate;
pub mod gguf;
pub mod linear;
pub mod llama;
pub mod load;
pub mod ops;
pub mod quant;
pub mod rng;
pub mod rope;
pub mod value_head;

#[cfg(test)]
mod tests;

pub use adapter::Adapter;
pub use artifact::{ArtifactKind, ModelArtifact};
pub use backend::{Cpu, CpuAutodiff, CpuDevice, Device, Dtype};
pub use config::{Arch, ModelConfig, RopeScaling};
pub use error::{Error, Result};
pub use generate::{GenerateOptions, GenerateOutput, Sampling, generate};
pub use gguf::tokenizer::{TokenizerBundle, tokenizer_from_gguf};
pub use linear::{BaseWeight, Linear, LoraAdapter, LoraConfig};
pub use llama::{ForwardInput, KvCache, Llama};
pub use load::{LoadedModel, SaveDtype, load_model, load_tokenizer, save_hf};
pub use value_head::ValueHead;
