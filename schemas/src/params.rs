//! The contract between a step kind's parameters and the engine: what the step reads.

use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Parameters of one step kind.
pub trait Params: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The other steps' artifacts and the local files this step reads. Each becomes an edge of the DAG (a
    /// step) or a content hash in the cache key (a file).
    fn inputs(&self) -> Vec<Input> {
        Vec::new()
    }

    /// Top-level parameters that do not change the step's results (log and checkpoint intervals), left
    /// out of the cache key.
    const VOLATILE: &'static [&'static str] = &[];
}

/// One thing a step reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Where in the parameters the reference is written, e.g. `model` or `datasets[1]`.
    pub field: FieldPath,
    /// What it refers to.
    pub target: Target,
    /// Glob patterns (relative paths inside the artifact or folder): when not empty, only the matching
    /// files count for the cache key, e.g. the tokenizer files of a model, not its weights. The step
    /// still sees the whole artifact.
    pub files: Vec<String>,
}

impl Input {
    /// A reference that must name another step.
    pub fn step(field: FieldPath, name: impl Into<String>) -> Input {
        Input {
            field,
            target: Target::Step(name.into()),
            files: Vec::new(),
        }
    }

    /// A reference to another step if one has that name, else a local file or folder.
    pub fn step_or_path(field: FieldPath, text: impl Into<String>) -> Input {
        Input {
            field,
            target: Target::StepOrPath(text.into()),
            files: Vec::new(),
        }
    }

    /// A local file or folder (relative to the manifest's folder).
    pub fn path(field: FieldPath, path: impl Into<String>) -> Input {
        Input {
            field,
            target: Target::Path(path.into()),
            files: Vec::new(),
        }
    }

    /// Keys the input by the files matching `patterns` only (see [`Input::files`]).
    pub fn only_files(mut self, patterns: &[&str]) -> Input {
        self.files = patterns.iter().map(|p| p.to_string()).collect();
        self
    }
}

/// What an [`Input`] refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The artifact of the named step.
    Step(String),
    /// A step name, or failing that a path.
    StepOrPath(String),
    /// A local file or folder.
    Path(String),
}

/// A path into a step's parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Seg>);

/// One segment of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

impl FieldPath {
    /// A top-level key.
    pub fn key(key: impl Into<String>) -> FieldPath {
        FieldPath(vec![Seg::Key(key.into())])
    }

    /// This path extended with a key.
    pub fn then(mut self, key: impl Into<String>) -> FieldPath {
        self.0.push(Seg::Key(key.into()));
        self
    }

    /// This path extended with an index.
    pub fn at(mut self, index: usize) -> FieldPath {
        self.0.push(Seg::Index(index));
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_display_like_accessors() {
        let p = FieldPath::key("datasets").at(1).then("source");
        assert_eq!(p.to_string(), "datasets[1].source");
    }
}
