//! Data for training: reading dataset files, chat templates, tokenization with label masks, packing,
//! and the tokenized artifact that training steps read.
//!
//! The principal type for training code is [`TokenizedDataset`]: it opens the artifact of a `dataset`
//! step, yields [`Example`]s, and [`collate`] pads them into a [`Batch`] of plain row-major vectors (no
//! burn types here). [`tokenizer_fingerprint`] lets training refuse data tokenized with another
//! tokenizer.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`render`]: `{{ placeholders }}` in rows rendered with the manifest's variables (`template`).
//! - [`bpe`]: training a byte-level BPE tokenizer on text (`tokenizer`).
//! - [`files`]: finding data files (built-in, a step's artifact, a local path) and reading their rows.
//! - [`format`]: rows in alpaca, sharegpt, openai, preference or text form, made into [`Sample`]s.
//! - [`chat`]: chat templates (a model's own, rendered like transformers does, or a built-in one).
//! - [`tokenizer`]: a model's tokenizer and special tokens, from `tokenizer.json` or a GGUF file.
//! - [`encode`]: samples made into token ids and labels (which tokens are trained).
//! - [`pack`]: the validation split, shuffling and packing.
//! - [`build`]: all of the above for one `dataset` step.
//! - [`artifact`]: writing and reading the artifact (`info.json`, `*.safetensors`, `preview.jsonl`).
//! - [`preview`]: `lf preview` of `template` and `dataset` artifacts.
//! - [`bench`]: `lf bench tokenize`.
//!
//! The format of the artifact is documented in `docs/steps/dataset.md`.

pub mod artifact;
pub mod bench;
pub mod bpe;
pub mod build;
pub mod builtin;
pub mod chat;
pub mod encode;
pub mod error;
pub mod files;
pub mod format;
pub mod pack;
pub mod parquet;
pub mod preview;
pub mod render;
pub mod tokenizer;

pub use artifact::{Batch, DatasetInfo, Example, Sequence, Split, TokenizedDataset, collate};
pub use error::DataError;
pub use format::{Message, Role, Sample};
pub use tokenizer::{ModelTokenizer, tokenizer_fingerprint};
