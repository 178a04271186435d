//! The error type of the model module: every way reading a config, weights or a GGUF file can fail.

use std::path::PathBuf;

/// Result with the model module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while reading, converting or writing a model.
///
/// Corrupted or truncated files always end up here, never in a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot access `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config, index) could not be parsed.
    #[error("cannot parse `{path}`")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file is malformed.
    #[error("invalid safetensors file `{path}`")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A GGUF file is malformed or truncated.
    #[error("invalid GGUF file{}: {msg}", fmt_path(path))]
    Gguf {
        /// The file, when known.
        path: Option<PathBuf>,
        /// What is wrong, with the byte offset where it helps.
        msg: String,
    },
    /// The model configuration is invalid or asks for something we do not implement.
    #[error("invalid model config{}: {msg}", fmt_path(path))]
    Config {
        /// The file, when known.
        path: Option<PathBuf>,
        /// What is wrong.
        msg: String,
    },
    /// The checkpoint lacks a tensor the architecture needs.
    #[error("missing tensor `{name}`{}", fmt_path(path))]
    MissingTensor {
        /// HF name of the tensor.
        name: String,
        /// The checkpoint.
        path: Option<PathBuf>,
    },
    /// A tensor has another shape than the config implies.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        /// HF name of the tensor.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found in the checkpoint.
        got: Vec<usize>,
    },
    /// A feature of the file or request that this implementation does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A generation request the model cannot serve (a prompt past its context, a sampling
    /// setting out of range); the message says which and why.
    #[error("{0}")]
    Request(String),
}

fn fmt_path(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" `{}`", p.display()),
        None => String::new(),
    }
}

impl Error {
    /// A [`Error::Config`] without a path.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config {
            path: None,
            msg: msg.into(),
        }
    }

    /// A [`Error::Gguf`] without a path.
    pub fn gguf(msg: impl Into<String>) -> Self {
        Error::Gguf {
            path: None,
            msg: msg.into(),
        }
    }

    /// Attaches `path` to errors that can carry one and lack it.
    pub fn at(self, at: impl Into<PathBuf>) -> Self {
        match self {
            Error::Gguf { path: None, msg } => Error::Gguf {
                path: Some(at.into()),
                msg,
            },
            Error::Config { path: None, msg } => Error::Config {
                path: Some(at.into()),
                msg,
            },
            Error::MissingTensor { name, path: None } => Error::MissingTensor {
                name,
                path: Some(at.into()),
            },
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
