//! `command`: a program of the user's with declared inputs and an output folder, like a DVC stage.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Input, Params};

/// Runs a program that reads declared inputs and writes its artifact into `$LF_OUT`.
///
/// The program runs in the manifest's folder with these environment variables: `LF_OUT` (the folder to
/// write the artifact into; it starts empty), `LF_SCRATCH` (a folder that survives a kill, for
/// checkpoints; removed once the step succeeds), and `LF_INPUT_<NAME>` for each input (`NAME` upper-cased,
/// `-` becoming `_`), and `TMPDIR` (a private temp folder). On Linux it runs sandboxed: it may write only
/// to those folders and has no network, unless the step says `network: true` or `sandbox: false`. The
/// cache key holds the command line, `env`, these two switches when not at their defaults, and the
/// content hashes of the inputs: files the program reads without declaring them are not tracked.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The command: a string run by `sh -c`, or a list of program and arguments run directly.
    pub run: CommandLine,
    /// Inputs by name: another step's name, or a local file or folder.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Whether the program may use the network. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network: bool,
    /// Whether the program runs sandboxed (writes only to `$LF_OUT`, `$LF_SCRATCH` and `$TMPDIR`).
    /// Default true; `false` lets it write anywhere you can, untracked.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub sandbox: bool,
}

// The switches stay out of the serialized parameters (and so the cache key) at their defaults: keys
// of steps written before they existed did not move.
fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// A command line.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandLine {
    /// Run by `sh -c`.
    Shell(String),
    /// Program and arguments.
    Argv(Vec<String>),
}

impl Params for CommandParams {
    fn inputs(&self) -> Vec<Input> {
        self.inputs
            .iter()
            .map(|(name, target)| {
                Input::step_or_path(FieldPath::key("inputs").then(name.clone()), target.clone())
            })
            .collect()
    }
}
