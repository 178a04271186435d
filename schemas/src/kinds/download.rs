//! `download`: a model or dataset from the Hugging Face hub, or a local file or folder, as an artifact.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Input, Params};

/// Fetches a hub repository (through the standard Hugging Face cache) or takes a local file or folder, and
/// makes it an artifact that other steps can read.
///
/// Exactly one of `repo` and `path` is given. A hub `revision` (branch, tag or commit) is resolved to a
/// commit sha when the pipeline is planned and written to the lockfile; the cache key holds the sha, so a
/// moved branch re-runs the step and an unchanged one does not touch the network.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadParams {
    /// Hub repository id, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// `model` (default) or `dataset`.
    #[serde(default)]
    pub repo_type: RepoType,
    /// Branch, tag or commit sha. Default `main`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Glob patterns of the files to fetch (`*` and `?`; default: every file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Glob patterns of files to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// A local file or folder (relative to the manifest's folder) to use instead of a hub repository. Its
    /// content hash is part of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Kind of hub repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    /// A model repository.
    #[default]
    Model,
    /// A dataset repository.
    Dataset,
}

fn default_revision() -> String {
    "main".into()
}

impl Params for DownloadParams {
    fn inputs(&self) -> Vec<Input> {
        self.path
            .iter()
            .map(|p| Input::path(FieldPath::key("path"), p.clone()))
            .collect()
    }
}
