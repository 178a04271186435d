//! `evaluate`: one or more models measured on perplexity, generation quality (BLEU-4, ROUGE),
//! multiple-choice accuracy, reward accuracy and latency, side by side in one table.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{Columns, Format, TemplateName};
use super::template::source_input;
use crate::{FieldPath, Input, Params};

/// Evaluates models and writes `results.json` (every deterministic number, per model), `report.md` (one
/// table, one column per model) and `predictions.jsonl` (what each model generated or chose), with
/// timings under `logs/`. Headline numbers become the step's metrics.
///
/// Each task is optional; give at least one. Every model runs every task, so `models: [base, sft]`
/// compares a model before and after fine-tuning.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// The models, one column each: steps whose artifacts are models, or local folders (a Hugging Face
    /// folder, a folder with one `.gguf` file, or a LoRA artifact with its base in `base/`).
    pub models: Vec<String>,
    /// Sequences per forward pass (perplexity, reward) or per generation batch. Default 8.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Perplexity on tokenized data (a `dataset` step with `stage: pt` or `sft`); only trained tokens
    /// count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<PerplexityTask>,
    /// Generation on held-out conversations, scored against the reference replies with BLEU-4 and
    /// ROUGE-1/2/L.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationTask>,
    /// MMLU-style multiple-choice accuracy, few-shot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_choice: Option<ChoiceTask>,
    /// Reward accuracy on preference pairs (a `dataset` step with `stage: rm`): a pair is right when the
    /// chosen reply scores higher. Models with a value head (`value_head.safetensors`, from an `rm`
    /// step) score a sequence with it; others by the reply's mean log-probability per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<RewardTask>,
    /// Time to first token and generation speed (written under `logs/`, not part of the results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyTask>,
}

/// Perplexity settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerplexityTask {
    /// A `dataset` step (`stage: pt` or `sft`) tokenized with the models' tokenizer.
    pub dataset: String,
    /// Which split: `val` (default) or `train`.
    #[serde(default)]
    pub split: EvalSplit,
    /// Use only the first this many rows. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
}

/// Generation settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationTask {
    /// Held-out conversations: `builtin:NAME`, a step whose artifact holds data files (e.g. a `template`
    /// step rendering `builtin:identity_eval`), or a local file or folder. The last assistant reply of
    /// each conversation is the reference; the messages before it are the prompt.
    pub source: String,
    /// Which file inside a step's artifact or a folder (a path or a glob). Default: the only data file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Row format: `auto` (default), `alpaca`, `sharegpt` or `openai`.
    #[serde(default)]
    pub format: Format,
    /// Column names, when they differ from the format's defaults.
    #[serde(default, skip_serializing_if = "Columns::is_empty")]
    pub columns: Columns,
    /// Use only the first this many rows. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples: Option<usize>,
    /// The most new tokens per reply (greedy decoding; a reply also ends at an EOS token). Default 64.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// The chat template for the prompts: `auto` (default: each model's own, lf's `default` template
    /// for a model without one) or a built-in template name.
    #[serde(default)]
    pub template: TemplateName,
}

/// Multiple-choice settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChoiceTask {
    /// The questions: rows `{subject, question, choices: [4 strings], answer: "A".."D"}`.
    /// Default `builtin:mc_eval`.
    #[serde(default = "default_mc_source")]
    pub source: String,
    /// Which file inside a step's artifact or a folder. Default: the only data file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Solved examples put before each question (drawn, seeded, from the other questions of the same
    /// subject, then from the rest). Default 5.
    #[serde(default = "default_shots")]
    pub shots: usize,
    /// Seed of the choice of examples. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Use only the first this many questions. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples: Option<usize>,
}

/// Reward-accuracy settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardTask {
    /// A `dataset` step with `stage: rm` (preference pairs).
    pub dataset: String,
    /// Which split: `val` (default) or `train`.
    #[serde(default)]
    pub split: EvalSplit,
    /// Use only the first this many pairs. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
}

/// Latency settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyTask {
    /// Prompt length in tokens. Default 128.
    #[serde(default = "default_prompt_tokens")]
    pub prompt_tokens: usize,
    /// New tokens generated per run. Default 32.
    #[serde(default = "default_new_tokens")]
    pub new_tokens: usize,
    /// Timed runs after one warm-up; the median is reported. Default 3.
    #[serde(default = "default_runs")]
    pub runs: usize,
}

/// A split of a `dataset` artifact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// `train.safetensors`.
    Train,
    /// `val.safetensors`.
    #[default]
    Val,
}

fn default_batch_size() -> usize {
    8
}
fn default_max_new_tokens() -> usize {
    64
}
fn default_mc_source() -> String {
    "builtin:mc_eval".into()
}
fn default_shots() -> usize {
    5
}
fn default_seed() -> u64 {
    42
}
fn default_prompt_tokens() -> usize {
    128
}
fn default_new_tokens() -> usize {
    32
}
fn default_runs() -> usize {
    3
}

impl Params for EvaluateParams {
    fn inputs(&self) -> Vec<Input> {
        let mut inputs: Vec<Input> = self
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| Input::step_or_path(FieldPath::key("models").at(i), m.clone()))
            .collect();
        if let Some(p) = &self.perplexity {
            inputs.push(Input::step(
                FieldPath::key("perplexity").then("dataset"),
                p.dataset.clone(),
            ));
        }
        if let Some(r) = &self.reward {
            inputs.push(Input::step(
                FieldPath::key("reward").then("dataset"),
                r.dataset.clone(),
            ));
        }
        let sourced = [
            (
                "generation",
                self.generation.as_ref().map(|g| (&g.source, &g.file)),
            ),
            (
                "multiple_choice",
                self.multiple_choice.as_ref().map(|c| (&c.source, &c.file)),
            ),
        ];
        for (key, task) in sourced {
            if let Some((source, file)) = task
                && let Some(input) = source_input(FieldPath::key(key).then("source"), source)
            {
                inputs.push(match file {
                    Some(f) => input.only_files(&[f.as_str()]),
                    None => input,
                });
            }
        }
        inputs
    }
}
