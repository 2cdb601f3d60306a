//! Error types, one per kind of operation, each saying what to do about it.
//!
//! - [`OpenError`]: opening the state (in use, corrupt, unreadable).
//! - [`StoreError`]: a read or commit of the open database failed (its cause is the
//!   `source()`).
//! - [`EncodeError`]: a value of ours would not encode as JSON (a bug).
//! - [`DispatchError`]: the host handed in dispatches we refuse to queue.
//! - [`SyncError`]: what a push or pull request can fail with, as a whole.
//! - [`PlatformConfigError`]: an API URL we will not talk to, or a proxy we cannot use.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Opening `<state-dir>/sync.redb` failed.
#[derive(Debug)]
pub enum OpenError {
    /// Another process holds the database lock (R2).
    InUse {
        /// The state directory.
        dir: PathBuf,
    },
    /// The file exists but is not a database redb can open; it is left untouched (R4).
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// The state directory or file could not be created or read.
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::InUse { dir } => write!(
                f,
                "state in {} is in use by another agent-sync process",
                dir.display()
            ),
            OpenError::Corrupt { path, detail } => write!(
                f,
                "the sync database {} cannot be opened ({detail}); it was left untouched: \
                 move it aside to start with an empty state, or restore it from a backup",
                path.display()
            ),
            OpenError::Io { path, source } => write!(
                f,
                "cannot open {}: {source}; check that the state dir exists and is writable",
                path.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A read or write of the open database failed. Nothing was acknowledged that was
/// not committed: the caller may retry the whole operation.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// What we were doing, e.g. "enqueue dispatches".
    pub operation: &'static str,
    /// What failed underneath; also the error's `source()`.
    pub cause: StoreCause,
}

/// What a [`StoreError`] failed on. Shared (`Arc`) so one failed group commit can be
/// reported to every caller waiting for it.
#[derive(Debug, Clone)]
pub enum StoreCause {
    /// redb refused: the database, its file or the disk under it.
    Database(Arc<redb::Error>),
    /// The file system refused, outside redb (e.g. measuring the file).
    Io(Arc<std::io::Error>),
    /// Nothing was tried: the actor holding the store stopped, or was not wired.
    Unavailable(String),
}

impl StoreError {
    /// A redb error, with the operation it interrupted.
    pub fn database(operation: &'static str, error: impl Into<redb::Error>) -> Self {
        StoreError {
            operation,
            cause: StoreCause::Database(Arc::new(error.into())),
        }
    }

    /// A file-system error outside redb.
    pub fn io(operation: &'static str, error: std::io::Error) -> Self {
        StoreError {
            operation,
            cause: StoreCause::Io(Arc::new(error)),
        }
    }

    /// The operation could not be tried at all, for the reason given.
    pub fn unavailable(operation: &'static str, why: impl fmt::Display) -> Self {
        StoreError {
            operation,
            cause: StoreCause::Unavailable(why.to_string()),
        }
    }
}

impl fmt::Display for StoreCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreCause::Database(e) => e.fmt(f),
            StoreCause::Io(e) => e.fmt(f),
            StoreCause::Unavailable(why) => f.write_str(why),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            StoreCause::Unavailable(why) => {
                write!(f, "could not {}: {why}; retry", self.operation)
            }
            cause => write!(
                f,
                "could not {} in the sync database: {cause}; check free disk space and \
                 that the state dir is writable, then retry",
                self.operation
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            StoreCause::Database(e) => Some(e.as_ref()),
            StoreCause::Io(e) => Some(e.as_ref()),
            StoreCause::Unavailable(_) => None,
        }
    }
}

/// A value of ours could not be encoded as JSON: a bug, never the disk's fault.
#[derive(Debug, Clone)]
pub struct EncodeError {
    /// What was being encoded, e.g. "a push body".
    pub what: &'static str,
    /// serde_json's error.
    pub source: Arc<serde_json::Error>,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not encode {} as JSON ({}); this is a bug in agent-sync, please report it",
            self.what, self.source
        )
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Host-provided dispatches that are refused before anything is queued (R4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchError {
    /// Element `index` of the list is not a JSON object.
    NotAnObject {
        /// Zero-based position in the list.
        index: usize,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// The input is not a JSON array of objects at all.
    NotAnArray {
        /// What was wrong.
        detail: String,
    },
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::NotAnObject { index, found } => write!(
                f,
                "dispatch {index} is {found}, not a JSON object; nothing was queued"
            ),
            DispatchError::NotAnArray { detail } => write!(
                f,
                "dispatches must be a JSON array of objects ({detail}); nothing was queued"
            ),
        }
    }
}

impl std::error::Error for DispatchError {}

/// Why a push, pull or other service request failed as a whole.
#[derive(Debug, Clone)]
pub enum SyncError {
    /// Malformed host dispatches; nothing was queued.
    Invalid(DispatchError),
    /// The database failed; nothing unacknowledged was lost.
    Store(StoreError),
    /// A request body could not be encoded (a bug); nothing was sent.
    Encode(EncodeError),
    /// An actor is gone (the service is stopping or stopped).
    Stopped,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Invalid(e) => e.fmt(f),
            SyncError::Store(e) => e.fmt(f),
            SyncError::Encode(e) => e.fmt(f),
            SyncError::Stopped => f.write_str("the sync service is stopped; start it again"),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Invalid(e) => Some(e),
            SyncError::Store(e) => Some(e),
            SyncError::Encode(e) => Some(e),
            SyncError::Stopped => None,
        }
    }
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        SyncError::Store(e)
    }
}

impl From<DispatchError> for SyncError {
    fn from(e: DispatchError) -> Self {
        SyncError::Invalid(e)
    }
}

impl From<actix::MailboxError> for SyncError {
    fn from(_: actix::MailboxError) -> Self {
        SyncError::Stopped
    }
}

/// The platform URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformConfigError {
    /// Not an `http://` or `https://` URL with a host.
    InvalidUrl {
        /// The URL as given.
        url: String,
    },
    /// Plain HTTP to a host that is not loopback would send the token in clear.
    InsecureUrl {
        /// The URL as given.
        url: String,
    },
    /// A proxy setting (`HTTPS_PROXY`, `HTTP_PROXY`) agent-sync cannot use.
    InvalidProxy {
        /// The setting without its credentials (`user:password@` is `<redacted>@`).
        proxy: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for PlatformConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformConfigError::InvalidUrl { url } => write!(
                f,
                "API URL {url:?} is not an http(s) URL with a host, e.g. https://api.example.com"
            ),
            PlatformConfigError::InsecureUrl { url } => write!(
                f,
                "refusing plain http to a non-loopback host ({url}): the token would travel \
                 unencrypted; use https, or set `allow_insecure_http` if you really mean it"
            ),
            PlatformConfigError::InvalidProxy { proxy, reason } => {
                write!(f, "the proxy {proxy:?} cannot be used: {reason}")
            }
        }
    }
}

impl std::error::Error for PlatformConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_store_error_keeps_its_redb_cause_as_its_source() {
        let e = StoreError::database("enqueue dispatches", redb::Error::PreviousIo);
        let source = e.source().expect("a source");
        assert!(source.downcast_ref::<redb::Error>().is_some(), "{source:?}");
        assert!(e.to_string().contains("check free disk space"), "{e}");
        let wrapped = SyncError::Store(e);
        assert!(wrapped.source().is_some());
    }

    #[test]
    fn an_encoding_failure_is_not_blamed_on_the_disk() {
        let source = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let e = SyncError::Encode(EncodeError {
            what: "a push body",
            source: Arc::new(source),
        });
        assert!(!e.to_string().contains("disk"), "{e}");
        assert!(e.source().is_some());
        let stopped = StoreError::unavailable("enqueue dispatches", "the queue stopped");
        assert!(stopped.source().is_none());
        assert!(!stopped.to_string().contains("disk"), "{stopped}");
    }
}
