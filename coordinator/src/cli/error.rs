//! What a `lem` command ends with: an [`Outcome`] when it ran to the end (success, a
//! partial result, an interrupt) or a [`CliError`] when it stopped. `main` prints the
//! error once and maps both to the documented exit codes.

use crate::embedded::EmbeddedError;
use crate::store::StoreError;
use std::process::ExitCode;

/// Exit codes, stable for scripts.
pub mod exit {
    pub const OK: u8 = 0;
    /// The run or command failed (model, IO, store, inference).
    pub const FAILURE: u8 = 1;
    /// Bad usage or invalid config (also clap's own code).
    pub const USAGE: u8 = 2;
    /// Finished, but something asked for is incomplete (partial aggregate, invalid grid
    /// points written, some batch configs failed).
    pub const PARTIAL: u8 = 3;
    /// Interrupted by Ctrl+C / SIGTERM; state saved, resumable.
    pub const INTERRUPTED: u8 = 130;
}

/// A command that ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    /// Done, but something asked for is incomplete.
    Partial,
    /// Stopped by Ctrl+C / SIGTERM with the state saved.
    Interrupted,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Outcome::Success => exit::OK,
            Outcome::Partial => exit::PARTIAL,
            Outcome::Interrupted => exit::INTERRUPTED,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or input: a wrong flag value, an invalid config, a model that cannot be
    /// used. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command could not do its work. Exit 1.
    #[error("{0}")]
    Failure(String),
    /// Writing the output failed (a closed pipe ends the command quietly).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }
    pub fn failure(msg: impl Into<String>) -> Self {
        CliError::Failure(msg.into())
    }

    /// The exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> ExitCode {
        let code = match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Store(StoreError::UnknownExperiment { .. })
            | CliError::Store(StoreError::AmbiguousExperiment { .. })
            | CliError::Store(StoreError::NoStore { .. }) => exit::USAGE,
            CliError::Embedded(e) if e.is_unsupported() => exit::USAGE,
            _ => exit::FAILURE,
        };
        ExitCode::from(code)
    }

    /// True when a closed pipe (`lem results show X | head -1`) is anywhere in the
    /// error's chain: the reader has gone, so the command ends quietly with success.
    pub fn is_broken_pipe(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return true;
                }
            }
            next = e.source();
        }
        false
    }
}

/// `println!` that returns a write error instead of panicking on it (closed pipe): use
/// inside functions whose error type converts from `std::io::Error`.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock())?;
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

pub(crate) use {out, outln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_found_through_the_chain() {
        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed");
        assert!(CliError::Output(pipe).is_broken_pipe());
        let other = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no");
        assert!(!CliError::Output(other).is_broken_pipe());
        assert!(!CliError::usage("bad flag").is_broken_pipe());
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let code = |e: CliError| format!("{:?}", e.exit_code());
        assert_eq!(
            code(CliError::usage("x")),
            format!("{:?}", ExitCode::from(2))
        );
        assert_eq!(
            code(CliError::failure("x")),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            format!("{:?}", Outcome::Partial.exit_code()),
            format!("{:?}", ExitCode::from(3))
        );
        assert_eq!(
            format!("{:?}", Outcome::Interrupted.exit_code()),
            format!("{:?}", ExitCode::from(130))
        );
    }
}
