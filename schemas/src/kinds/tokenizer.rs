//! `tokenizer`: a byte-level BPE tokenizer trained on text, with a chat template, for models built
//! from scratch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::TemplateName;
use super::template::source_input;
use crate::{FieldPath, Input, Params};

/// Trains a byte-level BPE tokenizer (GPT-2 style: every byte is a token, so nothing is ever unknown)
/// on text, and writes it as a Hugging Face tokenizer folder: `tokenizer.json`, `tokenizer_config.json`
/// (with the chat template and the bos/eos/pad tokens) and `special_tokens_map.json`.
///
/// Training is deterministic: the same text and parameters give a byte-identical `tokenizer.json`
/// (merges are ranked by count, ties broken by the pair's token ids, so no seed is involved).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizerParams {
    /// The training text: a built-in data set (`builtin:corpus`, or any other `builtin:` set), the name
    /// of a step whose artifact holds data files, or a local file or folder. Plain-text files are used
    /// whole; from JSON, JSONL and CSV rows every string value is used.
    pub source: String,
    /// Which files inside a step's artifact or a folder: a path or a glob. Default: every data file
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The vocabulary size, special tokens included. Default 4096. Training stops earlier when no pair
    /// of tokens occurs `min_frequency` times.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// How often a pair must occur to be merged. Default 2.
    #[serde(default = "default_min_frequency")]
    pub min_frequency: u64,
    /// Extra special tokens, added after `<|endoftext|>` and the template's own (ids 0, 1, …).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub special_tokens: Vec<String>,
    /// The chat template written into `tokenizer_config.json`: `chatml` (default; adds the special
    /// tokens `<|im_start|>` and `<|im_end|>`, and makes `<|im_end|>` the EOS token), `llama3`,
    /// `llama2`, `mistral`, `default` or `empty`.
    #[serde(default = "default_template")]
    pub template: TemplateName,
}

fn default_vocab_size() -> usize {
    4096
}

fn default_min_frequency() -> u64 {
    2
}

fn default_template() -> TemplateName {
    TemplateName::Chatml
}

impl Params for TokenizerParams {
    fn inputs(&self) -> Vec<Input> {
        let field = FieldPath::key("source");
        source_input(field, &self.source)
            .map(|input| match &self.file {
                Some(file) => input.only_files(&[file.as_str()]),
                None => input,
            })
            .into_iter()
            .collect()
    }
}
