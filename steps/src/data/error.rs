//! Errors of reading and converting data, each naming the file and row at fault.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a row comes from: a file (as the user knows it) and a position in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file, e.g. `identity/identity.json` (step and file) or `builtin:identity`.
    pub file: Arc<str>,
    /// The position in the file.
    pub pos: Pos,
}

/// A position in a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pos {
    /// The n-th element (1-based) of a JSON array or a Parquet file.
    Row(usize),
    /// A line (1-based) of a JSONL, CSV or text file.
    Line(usize),
    /// The whole file.
    File,
}

impl Pos {
    /// The row or line number; `None` for the whole file.
    pub fn number(self) -> Option<usize> {
        match self {
            Pos::Row(n) | Pos::Line(n) => Some(n),
            Pos::File => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Pos::Row(n) => write!(f, "`{}` row {n}", self.file),
            Pos::Line(n) => write!(f, "`{}:{n}`", self.file),
            Pos::File => write!(f, "`{}`", self.file),
        }
    }
}

/// A problem with a dataset's files or rows.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file cannot be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A row (or the file) is not what its format needs.
    #[error("{at}: {message}{}", hint_line(.hint))]
    Malformed {
        /// Where.
        at: Origin,
        /// What is wrong.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// A row lacks a column its format needs.
    #[error("{at}: no column `{column}`\nhint: its columns are {available}{}", .extra.as_deref().map(|e| format!("; {e}")).unwrap_or_default())]
    MissingColumn {
        /// Where.
        at: Origin,
        /// The column.
        column: String,
        /// The row's columns, listed.
        available: String,
        /// More advice.
        extra: Option<String>,
    },
    /// A template placeholder has no value.
    #[error("{at}: `{variable}` is undefined\nhint: defined variables are {defined}")]
    Undefined {
        /// Where.
        at: Origin,
        /// The placeholder's variable.
        variable: String,
        /// The defined variables, listed.
        defined: String,
    },
    /// Finding the data files failed.
    #[error("{message}{}", hint_line(.hint))]
    Files {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
}

fn hint_line(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("\nhint: {h}"),
        None => String::new(),
    }
}

impl DataError {
    /// A malformed row.
    pub fn row(at: &Origin, message: impl Into<String>) -> DataError {
        DataError::Malformed {
            at: at.clone(),
            message: message.into(),
            hint: None,
        }
    }

    /// A malformed row, with a hint.
    pub fn row_hint(at: &Origin, message: impl Into<String>, hint: impl Into<String>) -> DataError {
        DataError::Malformed {
            at: at.clone(),
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// `a`, `b` and `c`: names in backticks, listed in prose.
pub fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let items: Vec<String> = items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect();
    match items.len() {
        0 => "(none)".to_string(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}
