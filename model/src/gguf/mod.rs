//! GGUF, llama.cpp's model file format: our own reader and writer, the GGML block formats, llama.cpp's
//! tensor names, model metadata and the tokenizer a file describes.
//!
//! The principal type is [`GgufFile`]. Every read is bounds-checked against the file: a truncated or
//! corrupted file gives [`Error::Gguf`](crate::Error::Gguf), never a panic or a huge allocation.
//!
//! - [`read`]: header, metadata key/values, tensor infos and alignment.
//! - [`quant`]: dequantisation of the block formats, and encoding to the types lf writes.
//! - [`kquant`]: the k-quant formats (Q4_K, Q5_K, Q6_K): super-blocks of 256 with quantised scales.
//! - [`names`]: Hugging Face ↔ llama.cpp tensor names, the Q/K permutation, [`GgufSource`].
//! - [`metadata`]: [`ModelConfig`](crate::ModelConfig) from a file's metadata.
//! - [`tokenizer`]: a `tokenizers::Tokenizer` rebuilt from `tokenizer.ggml.*`.
//! - [`write`]: metadata values and whole files, as GGUF v3 stores them.

pub mod kquant;
pub mod metadata;
pub mod names;
pub mod quant;
pub mod read;
pub mod tokenizer;
pub mod write;

#[cfg(test)]
mod tests;

pub use names::{GgufSource, gguf_arch, gguf_tensor_name, permute_rows, unpermute_rows};
pub use quant::{GgmlType, dequantize, encode, quantize_q8_0};
pub use read::{GgufFile, GgufValue, TensorInfo};
pub use write::{encode_str, write_gguf};
