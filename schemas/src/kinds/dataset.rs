//! `dataset`: rows loaded, rendered through a chat template, tokenized, masked, packed and split; the
//! training-ready data of one model.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::template::source_input;
use crate::{FieldPath, Input, Params};

/// The files of a model artifact that tokenization depends on: changing the weights of a model does
/// not re-tokenize its data.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "*.gguf",
];

/// Loads one or more datasets, converts their rows into conversations, preference pairs or plain text,
/// renders conversations through a chat template, tokenizes with the model's tokenizer, marks which
/// tokens are trained, and writes train/validation splits that training steps read directly.
///
/// The artifact holds `info.json` (counts, special token ids, template, tokenizer fingerprint),
/// `train.safetensors`, `val.safetensors` (when `val_size` > 0) and `preview.jsonl`; see
/// `docs/steps/dataset.md` for the layout. Rows that cannot be used (too long, no reply, empty) are
/// dropped, counted in `info.json` and reported as metrics; a malformed row is an error naming its file
/// and row.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetParams {
    /// The step whose artifact holds the model's tokenizer: a Hugging Face folder with `tokenizer.json`
    /// (and `tokenizer_config.json`), or a folder with one `.gguf` file. Only the tokenizer files count
    /// for the cache key.
    pub model: String,
    /// The data, concatenated (or interleaved, see `mix`) in this order.
    pub datasets: Vec<DatasetSource>,
    /// What the data is for: `sft` (default; conversations, trained on the replies), `pt` (plain text,
    /// concatenated and cut into `cutoff_len` blocks), `rm` (preference pairs, for reward models and
    /// DPO) or `kto` (single replies marked desirable or not by a `kto_tag` column, for `kto`;
    /// preference pairs are unpaired into one desirable and one undesirable row).
    #[serde(default)]
    pub stage: Stage,
    /// The chat template: `auto` (default; the model's own `chat_template`) or a built-in one:
    /// `chatml` (or `qwen`, the same), `llama3`, `llama2`, `mistral`, `default`, `empty`. Unused by
    /// `pt`.
    #[serde(default)]
    pub template: TemplateName,
    /// Extra variables for the chat template, e.g. `{enable_thinking: false}`. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_vars: BTreeMap<String, Json>,
    /// The longest sequence in tokens. Default 2048.
    #[serde(default = "default_cutoff_len")]
    pub cutoff_len: usize,
    /// What happens to a row longer than `cutoff_len`: `drop` (default) or `cut` (keep its first
    /// `cutoff_len` tokens; dropped anyway if no trained token is left).
    #[serde(default)]
    pub truncation: Truncation,
    /// Train on the prompt tokens too, not only the replies. Default false.
    #[serde(default)]
    pub train_on_prompt: bool,
    /// Train on the last reply of each conversation only; earlier replies are context. Default false.
    #[serde(default)]
    pub mask_history: bool,
    /// Pack several rows into each sequence of up to `cutoff_len` tokens (greedy first-fit by
    /// decreasing length). Default false.
    #[serde(default)]
    pub packing: bool,
    /// Packing without attention across the packed rows: sequences carry segment ids and position ids
    /// that restart at each row. Implies `packing`. Default false.
    #[serde(default)]
    pub neat_packing: bool,
    /// The validation split: a fraction of the rows (below 1) or a number of rows (1 or more). Rows are
    /// chosen by a seeded hash of their content, so editing one row moves at most that row. Default 0
    /// (no validation split).
    #[serde(default)]
    pub val_size: f64,
    /// Seed of the validation split, the shuffle and the interleaving. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Shuffle the training rows (seeded). Default true.
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// How several datasets combine: `concat` (default), `interleave` (draw from the datasets with
    /// their `probability` until the first runs out) or `interleave_all` (until all have been used
    /// once; the shorter ones repeat).
    #[serde(default)]
    pub mix: Mix,
}

/// One dataset of a [`DatasetParams`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSource {
    /// Where the rows come from: a built-in data set (`builtin:identity`, `builtin:identity_pref`,
    /// `builtin:identity_eval`, `builtin:corpus`, `builtin:mc_eval`), the name of a step whose artifact
    /// holds data files (a `template` or `download` step), or a local file or folder. Files are JSON,
    /// JSONL, CSV, Parquet or plain text.
    pub source: String,
    /// Which files inside a step's artifact or a folder: a path or a glob (`data/train-*.parquet`).
    /// Matching files are read in name order. Default: the only data file there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The row format: `auto` (default; detected from the columns of the first row), `alpaca`,
    /// `sharegpt`, `openai`, `preference` (chosen/rejected pairs, in alpaca or sharegpt/openai form) or
    /// `text`.
    #[serde(default)]
    pub format: Format,
    /// Column names, when they differ from the defaults of the format (as in LLaMA-Factory's
    /// `dataset_info.json`).
    #[serde(default, skip_serializing_if = "Columns::is_empty")]
    pub columns: Columns,
    /// Keys and role names inside sharegpt/openai messages, when they differ from the defaults.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// The name of an entry of the `dataset_info.json` in `source` (a folder or artifact, or the path of
    /// the `dataset_info.json` itself): its `file_name`, `formatting`, `ranking`, `columns` and `tags`
    /// are used, and `file`, `format`, `columns` and `tags` must not be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_info: Option<String>,
    /// Use only the first this many rows. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples: Option<usize>,
    /// The weight of this dataset when `mix` interleaves. Default: equal weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

/// Column names of a dataset (`None`: the format's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    /// alpaca: the instruction (default `instruction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// alpaca: the input appended to the instruction after a newline (default `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// alpaca: the reply (default `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// alpaca: earlier turns as a list of `[instruction, reply]` pairs (default `history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// sharegpt/openai: the message list (default `conversations` for sharegpt, `messages` for
    /// openai).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<String>,
    /// The system prompt (default `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Tool definitions, a JSON list or a string holding one (default `tools`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<String>,
    /// preference: the preferred reply (default `chosen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// preference: the rejected reply (default `rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// preference: a number by which the chosen reply should out-score the rejected one, for reward
    /// models (Llama 2's margin loss). Default: no margin column (an explicit name is needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<String>,
    /// text: the text (default `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `stage: kto`: whether the row's last reply is desirable, a boolean (default `kto_tag`;
    /// LLaMA-Factory's `columns.kto_tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kto_tag: Option<String>,
}

impl Columns {
    /// Whether no column is renamed.
    pub fn is_empty(&self) -> bool {
        *self == Columns::default()
    }
}

/// Keys and role names inside sharegpt/openai messages (`None`: the format's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    /// The key of a message's role (sharegpt `from`, openai `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_tag: Option<String>,
    /// The key of a message's text (sharegpt `value`, openai `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_tag: Option<String>,
    /// The user's role name (sharegpt `human`, openai `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_tag: Option<String>,
    /// The assistant's role name (sharegpt `gpt`, openai `assistant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_tag: Option<String>,
    /// The role name of tool results (sharegpt `observation`, openai `tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation_tag: Option<String>,
    /// The role name of the assistant's function calls (`function_call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_tag: Option<String>,
    /// The system role name (`system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_tag: Option<String>,
}

impl Tags {
    /// Whether no tag is renamed.
    pub fn is_empty(&self) -> bool {
        *self == Tags::default()
    }
}

/// Training stage a dataset is prepared for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Pretraining: plain text, every token trained.
    Pt,
    /// Supervised fine-tuning: conversations, replies trained.
    #[default]
    Sft,
    /// Pairwise: chosen and rejected replies to one prompt (reward modelling, DPO).
    Rm,
    /// Unpaired feedback: one reply per prompt, marked desirable or undesirable (KTO).
    Kto,
}

impl Stage {
    /// The name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Pt => "pt",
            Stage::Sft => "sft",
            Stage::Rm => "rm",
            Stage::Kto => "kto",
        }
    }
}

/// A chat template choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TemplateName {
    /// The model's own `chat_template`.
    #[default]
    Auto,
    /// `<|im_start|>role\n…<|im_end|>\n` (Qwen, SmolLM, many others).
    Chatml,
    /// The same as `chatml`.
    Qwen,
    /// Llama 3 headers and `<|eot_id|>`.
    Llama3,
    /// `<s>[INST] <<SYS>>…<</SYS>> … [/INST] reply </s>`.
    Llama2,
    /// `<s>[INST] … [/INST]reply</s>`, the system prompt prepended to the first user turn.
    Mistral,
    /// Plain `User:` / `Assistant:` lines, the reply ended by the EOS token.
    Default,
    /// The messages' text only, each reply ended by the EOS token.
    Empty,
}

impl TemplateName {
    /// Every built-in template (all but `auto`).
    pub const BUILTIN: &[TemplateName] = &[
        TemplateName::Chatml,
        TemplateName::Llama3,
        TemplateName::Llama2,
        TemplateName::Mistral,
        TemplateName::Default,
        TemplateName::Empty,
    ];

    /// The name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            TemplateName::Auto => "auto",
            TemplateName::Chatml => "chatml",
            TemplateName::Qwen => "qwen",
            TemplateName::Llama3 => "llama3",
            TemplateName::Llama2 => "llama2",
            TemplateName::Mistral => "mistral",
            TemplateName::Default => "default",
            TemplateName::Empty => "empty",
        }
    }
}

/// A row format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detected from the first row's columns.
    #[default]
    Auto,
    /// `{instruction, input, output, system?, history?}`.
    Alpaca,
    /// `{conversations: [{from, value}], system?, tools?}`.
    Sharegpt,
    /// `{messages: [{role, content}], tools?}`.
    Openai,
    /// `chosen` and `rejected` replies to one prompt given in alpaca or sharegpt/openai form.
    Preference,
    /// `{text}` rows, or a plain-text file (documents separated by blank lines).
    Text,
}

/// What to do with a row longer than `cutoff_len`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    /// Leave the row out (counted as dropped).
    #[default]
    Drop,
    /// Keep its first `cutoff_len` tokens.
    Cut,
}

/// How several datasets combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mix {
    /// One after the other.
    #[default]
    Concat,
    /// Drawn at random by `probability` until the first dataset runs out.
    Interleave,
    /// Drawn at random by `probability` until every dataset has been used up once.
    InterleaveAll,
}

fn default_cutoff_len() -> usize {
    2048
}

fn default_seed() -> u64 {
    42
}

fn default_true() -> bool {
    true
}

impl Params for DatasetParams {
    fn inputs(&self) -> Vec<Input> {
        let mut inputs = vec![
            Input::step(FieldPath::key("model"), self.model.clone()).only_files(TOKENIZER_FILES),
        ];
        for (i, d) in self.datasets.iter().enumerate() {
            let field = FieldPath::key("datasets").at(i).then("source");
            if let Some(input) = source_input(field, &d.source) {
                inputs.push(match (&d.file, &d.dataset_info) {
                    (Some(file), None) => input.only_files(&[file.as_str()]),
                    _ => input,
                });
            }
        }
        inputs
    }
}
