//! Llama-family decoder models written with burn: configuration, weights, tokenizer, generation.
//!
//! The principal type in this module is [`Llama`], a decoder-only transformer covering the
//! `llama`, `mistral`, `qwen2` and `qwen3` architectures of Hugging Face transformers. It is generic
//! over the burn [`Backend`](burn::tensor::backend::Backend), so training code can run it on
//! `Autodiff<B>` and inference code on the plain backend.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`config`]: [`ModelConfig`], read from a HF `config.json` or GGUF metadata and written back.
//! - [`load`]: weights from a HF safetensors directory (single or sharded) or a `.gguf` file, saving
//!   to a HF directory, and seeded random initialisation.
//! - [`gguf`]: our own GGUF reader and the dequantisation of its block formats.
//! - [`gguf_tokenizer`]: a `tokenizers::Tokenizer` rebuilt from GGUF metadata.
//! - [`llama`]: the decoder ([`Llama`], [`ForwardInput`], [`KvCache`]).
//! - [`linear`]: the linear layer with a frozen-able base and an optional LoRA adapter.
//! - [`generate`]: sampling with a KV cache, stop conditions and streaming.
//! - [`ops`]: the one matmul every layer goes through, plus the small numeric kernels.
//! - [`backend`]: the concrete backends (CPU, CUDA), device and dtype choices.
//!
//! Design notes live in `docs/design/model.md`.

pub mod backend;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod linear;
pub mod llama;
pub mod load;
pub mod ops;
pub mod rng;
pub mod rope;

#[cfg(test)]
mod tests;

pub use backend::{Cpu, CpuAutodiff, CpuDevice, DeviceChoice, Dtype};
pub use config::{Arch, ModelConfig, RopeScaling};
pub use error::{Error, Result};
pub use generate::{GenerateOptions, GenerateOutput, Sampling, generate};
pub use gguf_tokenizer::{TokenizerBundle, tokenizer_from_gguf};
pub use linear::{BaseWeight, Linear, LoraAdapter, LoraConfig};
pub use llama::{ForwardInput, KvCache, Llama};
pub use load::{LoadedModel, SaveDtype, load_model, load_tokenizer, save_hf};
