//! `template`: dataset rows with `{{ placeholders }}` rendered from values the manifest gives.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::{FieldPath, Input, Params};

/// Renders every string of a dataset's rows as a minijinja template, with `vars` as its variables, and
/// writes the rows back in the same file format.
///
/// Undefined placeholders are errors: the message names the file, the row and the variable, and lists
/// the defined ones. Strings without `{{` or `{%` are copied unchanged; other values (numbers, booleans)
/// are never touched. The manifest's own `{{ vars.x }}` references are resolved by the engine first, so a
/// manifest passes its variables on with `vars: {name: "{{ vars.name }}"}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateParams {
    /// Where the rows come from: a built-in data set (`builtin:identity`, `builtin:identity_pref`,
    /// `builtin:identity_eval`, `builtin:corpus`, `builtin:mc_eval`), the name of a step whose artifact
    /// holds data files, or a local file or folder (relative to the manifest). Files are JSON (an array
    /// of objects), JSONL, CSV or plain text (`.txt`, rendered as one template).
    pub source: String,
    /// Which files inside a step's artifact or a folder to render: a path or a glob such as
    /// `data/*.jsonl`. Default: the artifact's only data file (an error if it has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The template variables, e.g. `{name: Lumi, author: the lf authors}`. Default: none.
    #[serde(default)]
    pub vars: BTreeMap<String, Json>,
}

/// The prefix of built-in data sets.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// The input of a `source` parameter: none for a built-in data set, else a step or a local path.
pub fn source_input(field: FieldPath, source: &str) -> Option<Input> {
    if source.starts_with(BUILTIN_PREFIX) {
        None
    } else {
        Some(Input::step_or_path(field, source))
    }
}

impl Params for TemplateParams {
    fn inputs(&self) -> Vec<Input> {
        source_input(FieldPath::key("source"), &self.source)
            .map(|input| match &self.file {
                Some(file) => input.only_files(&[file.as_str()]),
                None => input,
            })
            .into_iter()
            .collect()
    }
}
