//! How a command fails: [`CliError`], printed as `error: <message>` on stderr, and
//! the exit codes. Each variant is one way a command can fail, and its message says
//! what to do about it where there is something to do.

use std::fmt;
use std::path::PathBuf;

use agent_sync::actors::{DispatchError, PlatformConfigError, SyncError};
use agent_sync::control::ClientError;
use agent_sync::legacy::LegacyError;
use agent_sync::StartError;

/// Exit code of a success (offline and platform-down pushes included).
pub const EXIT_OK: i32 = 0;
/// Exit code of a local failure (an `error:` line was printed).
pub const EXIT_FAILURE: i32 = 1;

/// A local failure: printed as `error: <message>` and exit code [`EXIT_FAILURE`].
#[derive(Debug)]
pub enum CliError {
    /// The service could not start on the state.
    Start(StartError),
    /// Another process holds the state, and this command needs it to itself.
    StateHeld {
        /// Why the start failed (names the holder's pid when known).
        error: StartError,
        /// What to do about it, for this command.
        advice: &'static str,
    },
    /// A command that must open the state itself was routed elsewhere.
    NeedsTheState {
        /// The command, as written in the message.
        command: &'static str,
    },
    /// The service (this process's) failed the work.
    Sync(SyncError),
    /// The running process behind the control socket failed, or did not answer.
    Control(ClientError),
    /// The legacy import failed.
    Legacy(LegacyError),
    /// `push --dispatches` could not be read; nothing was queued.
    DispatchesUnreadable {
        /// The file, or `None` for stdin.
        file: Option<PathBuf>,
        /// Why.
        error: std::io::Error,
    },
    /// `push --dispatches` is not a JSON array of dispatch objects; nothing was
    /// queued.
    DispatchesInvalid {
        /// `stdin` or the file's name.
        source: String,
        /// What is wrong with it.
        error: DispatchError,
    },
    /// `requeue` named seqs that are not dead letters.
    NoDeadLetter {
        /// The seqs.
        seqs: Vec<u64>,
    },
    /// `man` was asked for a command that does not exist.
    NoSuchCommand {
        /// What was asked for.
        name: String,
        /// Every command that has a man page.
        known: Vec<String>,
    },
    /// The man page could not be rendered.
    ManPage(std::io::Error),
    /// The output could not be written (a closed pipe is not a failure).
    Stdout(std::io::Error),
    /// The daemon could not listen for a stop signal.
    Signal {
        /// `SIGTERM` or `SIGINT`.
        name: &'static str,
        /// Why.
        error: std::io::Error,
    },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The library names its config field; the CLI names its flag.
            CliError::Start(StartError::Platform(PlatformConfigError::InsecureUrl { url })) => {
                write!(
                    f,
                    "refusing plain http to a non-loopback host ({url}): the token would travel \
                     unencrypted; use https, or pass --allow-insecure-http if you really mean it"
                )
            }
            CliError::Start(e) => e.fmt(f),
            CliError::StateHeld { error, advice } => write!(f, "{error}; {advice}"),
            CliError::NeedsTheState { command } => {
                write!(f, "{command} needs the state to itself")
            }
            CliError::Sync(e) => e.fmt(f),
            CliError::Control(e) => e.fmt(f),
            CliError::Legacy(e) => e.fmt(f),
            CliError::DispatchesUnreadable { file: None, error } => {
                write!(f, "cannot read dispatches from stdin: {error}")
            }
            CliError::DispatchesUnreadable {
                file: Some(file),
                error,
            } => write!(
                f,
                "cannot read dispatches file {}: {error}; nothing was queued",
                file.display()
            ),
            CliError::DispatchesInvalid { source, error } => {
                write!(f, "dispatches from {source}: {error}")
            }
            CliError::NoDeadLetter { seqs } => {
                let seqs: Vec<String> = seqs.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "no dead letter with seq {}; see `agent-sync dead-letters`",
                    seqs.join(", ")
                )
            }
            CliError::NoSuchCommand { name, known } => write!(
                f,
                "no command {name:?}; the man pages are: {}",
                known.join(", ")
            ),
            CliError::ManPage(e) => write!(f, "cannot render the man page: {e}"),
            CliError::Stdout(e) => write!(f, "cannot write to stdout: {e}"),
            CliError::Signal { name, error } => write!(f, "cannot listen for {name}: {error}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Start(e) | CliError::StateHeld { error: e, .. } => Some(e),
            CliError::Sync(e) => Some(e),
            CliError::Control(e) => Some(e),
            CliError::Legacy(e) => Some(e),
            CliError::DispatchesInvalid { error, .. } => Some(error),
            CliError::DispatchesUnreadable { error, .. }
            | CliError::ManPage(error)
            | CliError::Stdout(error)
            | CliError::Signal { error, .. } => Some(error),
            CliError::NeedsTheState { .. }
            | CliError::NoDeadLetter { .. }
            | CliError::NoSuchCommand { .. } => None,
        }
    }
}

impl From<StartError> for CliError {
    fn from(e: StartError) -> Self {
        CliError::Start(e)
    }
}

impl From<SyncError> for CliError {
    fn from(e: SyncError) -> Self {
        CliError::Sync(e)
    }
}

impl From<LegacyError> for CliError {
    fn from(e: LegacyError) -> Self {
        CliError::Legacy(e)
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Control(e)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn in_use() -> StartError {
        StartError::InUse {
            dir: PathBuf::from("/state"),
            pid: Some(7),
        }
    }

    #[test]
    fn each_message_says_what_failed_and_what_to_do() {
        let cases = [
            (
                CliError::StateHeld {
                    error: in_use(),
                    advice: "stop that process first",
                },
                "state in /state is in use by another agent-sync process (pid 7); \
                 stop that process first",
            ),
            (
                CliError::NoDeadLetter { seqs: vec![3, 99] },
                "no dead letter with seq 3, 99; see `agent-sync dead-letters`",
            ),
            (
                CliError::DispatchesUnreadable {
                    file: Some(PathBuf::from("/in.json")),
                    error: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                "cannot read dispatches file /in.json: entity not found; nothing was queued",
            ),
            (
                CliError::NeedsTheState { command: "`run`" },
                "`run` needs the state to itself",
            ),
            (
                CliError::Start(StartError::Platform(PlatformConfigError::InsecureUrl {
                    url: "http://example.com".into(),
                })),
                "refusing plain http to a non-loopback host (http://example.com): the token \
                 would travel unencrypted; use https, or pass --allow-insecure-http if you \
                 really mean it",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
