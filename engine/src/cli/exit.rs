//! How `lf` ends: the exit status every command returns ([`Exit`]) and the error that carries one
//! ([`Failure`]).
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a step or another operation failed at run time (a failed step, `--locked` drift, a corrupted store, I/O) |
//! | 2 | usage: an invalid manifest, a step or benchmark name that does not exist, bad argument values; nothing ran |
//!
//! Any error converts into a [`Failure`] with status 1, so `?` keeps runtime failures at 1; usage errors
//! are made with [`Failure::usage`], or [`Failure::reported`] when their diagnostics are printed already.

use std::fmt::Display;
use std::process::ExitCode;

/// The exit status of `lf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Success.
    Ok = 0,
    /// A step or another operation failed.
    Failed = 1,
    /// An invalid manifest or usage: nothing ran.
    Usage = 2,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Why a command stopped early: the status to exit with, and the error to print unless the command printed
/// its diagnostics itself.
#[derive(Debug)]
pub(crate) struct Failure {
    exit: Exit,
    error: Option<anyhow::Error>,
}

/// What commands return: the status, or why they stopped early.
pub(crate) type Result<T = Exit> = std::result::Result<T, Failure>;

impl Failure {
    /// A usage error (exit status 2), printed as `error: {message}`.
    pub(crate) fn usage(message: impl Display) -> Failure {
        Failure {
            exit: Exit::Usage,
            error: Some(anyhow::anyhow!("{message}")),
        }
    }

    /// A failure whose diagnostics are on stderr already.
    pub(crate) fn reported(exit: Exit) -> Failure {
        Failure { exit, error: None }
    }

    /// The status this failure exits with.
    #[cfg(test)]
    pub(crate) fn exit(&self) -> Exit {
        self.exit
    }

    /// Prints the error with its causes (`error: …: …`) unless it was printed already; returns the status.
    pub(crate) fn report(self) -> Exit {
        if let Some(e) = &self.error {
            eprintln!("error: {e:#}");
        }
        self.exit
    }
}

/// Any other error is a runtime failure: exit status 1.
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure {
            exit: Exit::Failed,
            error: Some(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_ripgreps() {
        assert_eq!(Exit::Ok as u8, 0);
        assert_eq!(Exit::Failed as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(ExitCode::from(Exit::Usage), ExitCode::from(2));
        assert_eq!(ExitCode::from(Exit::Ok), ExitCode::SUCCESS);
    }

    #[test]
    fn errors_are_failures_unless_marked_as_usage() {
        let io = std::io::Error::other("disk on fire");
        assert_eq!(Failure::from(io).exit(), Exit::Failed);
        assert_eq!(Failure::from(anyhow::anyhow!("boom")).exit(), Exit::Failed);
        let usage = Failure::usage("no step is named `x`");
        assert_eq!(usage.exit(), Exit::Usage);
        assert_eq!(
            usage.error.as_ref().map(|e| format!("{e:#}")).as_deref(),
            Some("no step is named `x`")
        );
        let reported = Failure::reported(Exit::Usage);
        assert!(reported.error.is_none());
        assert_eq!(reported.report(), Exit::Usage);
    }

    #[test]
    fn context_is_kept_in_the_message() {
        use anyhow::Context as _;
        let failure: Failure = std::fs::read("/nonexistent/lf")
            .context("cannot read `/nonexistent/lf`")
            .unwrap_err()
            .into();
        let message = format!("{:#}", failure.error.unwrap());
        assert!(
            message.starts_with("cannot read `/nonexistent/lf`: "),
            "{message}"
        );
    }
}
