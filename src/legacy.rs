//! Legacy import (design.md §7.2): carries the Go agent's sync state over into
//! redb, once, so a fleet can switch without losing its queue.
//!
//! The Go agent kept five JSON files in its sync dir:
//!
//! | file           | Go type                     | goes to                         |
//! |----------------|-----------------------------|---------------------------------|
//! | `queue.json`   | `[]syncQueuedPush`          | Queue ([`ImportEntries`])       |
//! | `ledger.json`  | `map[string]string`         | Ledger ([`MarkSynced`])         |
//! | `records.json` | `[]SyncRecord`              | History ([`ImportRecords`])     |
//! | `status.json`  | `syncStatusState`           | History ([`ImportSyncState`])   |
//! | `context.json` | `[]map[string]any`          | Puller ([`ImportContext`])      |
//!
//! Go wrote times with `time.Time`'s JSON form (RFC 3339 with nanoseconds and the
//! local offset; the zero time `0001-01-01T00:00:00Z` means unset) and numbers read
//! back through `map[string]any` are floats (`runs: 2.0`). Both are read tolerantly.
//!
//! Rules:
//! - The files are only read, never written, moved or deleted.
//! - Everything is parsed before anything is written: a file that is not the JSON
//!   shape Go wrote fails the import as a whole, naming the file.
//! - Each queued dispatch gets its fingerprint here, once, from its `updated_at` and
//!   `runs` (the only place a fingerprint is derived from JSON), keyed by its `id`
//!   (`workspace` when it has none), so delivering it marks the Ledger.
//! - Once: a `legacy_import` marker in the store's `meta` table is written last; a
//!   second import finds it and imports nothing. Should the process die between the
//!   writes and the marker, a rerun is safe: records, times, context and the ledger
//!   merge idempotently, and queue entries already held are not queued again.

mod parse;

use std::fmt;
use std::path::{Path, PathBuf};

use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::messages::{
    ImportContext, ImportEntries, ImportRecords, ImportSyncState, ListQueue, MarkSynced,
    ReadMarker, WriteMarker,
};
use agent_sync_actors::time::{Clock, Timestamp};
use agent_sync_actors::SyncError;
use serde::Serialize;

use crate::service::SyncService;

pub use parse::{
    parse_context, parse_ledger, parse_queue, parse_records, parse_status, LegacyState,
};

/// Name of the `meta` marker that says the import ran.
pub const MARKER: &str = "legacy_import";

/// The Go agent's queue of pushes.
pub const QUEUE_FILE: &str = "queue.json";
/// The Go agent's ledger: dispatch id -> fingerprint.
pub const LEDGER_FILE: &str = "ledger.json";
/// The Go agent's sync history.
pub const RECORDS_FILE: &str = "records.json";
/// The Go agent's last push/pull times.
pub const STATUS_FILE: &str = "status.json";
/// The Go agent's cached context.
pub const CONTEXT_FILE: &str = "context.json";

/// What an import did (or, when `already_imported`, that it did nothing).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// The directory read.
    pub from: PathBuf,
    /// True when an earlier import ran: nothing was imported this time.
    pub already_imported: bool,
    /// Which of the five files were found.
    pub files: Vec<String>,
    /// Queue entries added.
    pub queue_entries: usize,
    /// Dispatches in those entries.
    pub queued_dispatches: usize,
    /// Ledger pairs (id, fingerprint) marked.
    pub ledger_entries: usize,
    /// History records added.
    pub history_records: usize,
    /// Context items added to the cache.
    pub context_items: usize,
    /// The imported last push time (`null` when unset).
    pub last_push_at: Option<Timestamp>,
    /// The imported last pull time (`null` when unset).
    pub last_pull_at: Option<Timestamp>,
    /// Elements left out: not objects, unknown directions, unreadable times, exact
    /// duplicate dispatches (Go queued the whole scan again on every offline push).
    pub skipped: usize,
}

/// Why an import failed. Nothing was written when reading or parsing failed.
#[derive(Debug)]
pub enum LegacyError {
    /// The directory to import from does not exist.
    NotADirectory {
        /// The path given.
        dir: PathBuf,
    },
    /// A file exists but cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not the JSON Go wrote.
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Writing into the store failed.
    Sync(SyncError),
}

impl fmt::Display for LegacyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegacyError::NotADirectory { dir } => write!(
                f,
                "{} is not a directory; pass the Go agent's sync dir with --from",
                dir.display()
            ),
            LegacyError::Read { path, source } => {
                write!(
                    f,
                    "cannot read {}: {source}; nothing was imported",
                    path.display()
                )
            }
            LegacyError::Parse { path, detail } => write!(
                f,
                "{} is not a Go agent sync file ({detail}); nothing was imported",
                path.display()
            ),
            LegacyError::Sync(e) => write!(f, "legacy import: {e}"),
        }
    }
}

impl std::error::Error for LegacyError {}

impl From<SyncError> for LegacyError {
    fn from(e: SyncError) -> Self {
        LegacyError::Sync(e)
    }
}

impl From<agent_sync_actors::StoreError> for LegacyError {
    fn from(e: agent_sync_actors::StoreError) -> Self {
        LegacyError::Sync(SyncError::Store(e))
    }
}

impl From<actix::MailboxError> for LegacyError {
    fn from(e: actix::MailboxError) -> Self {
        LegacyError::Sync(e.into())
    }
}

impl SyncService {
    /// Imports the Go agent's sync state from `dir` (design.md §7.2), once: a second call
    /// reports `already_imported` and writes nothing. The files are never modified.
    /// Reading the files is blocking; they are small and this runs once.
    pub async fn import_legacy(&self, dir: &Path) -> Result<ImportReport, LegacyError> {
        let actors = self.actors();
        let mut report = ImportReport {
            from: dir.to_path_buf(),
            ..ImportReport::default()
        };
        if actors
            .history
            .send(ReadMarker(MARKER.into()))
            .await??
            .is_some()
        {
            report.already_imported = true;
            return Ok(report);
        }
        let agent_id = self.agent_id().to_string();
        let state = LegacyState::read(dir, &agent_id, Clock::system().now())?;
        report.files = state.files.clone();
        report.skipped = state.skipped;
        if state.files.is_empty() {
            // Nothing to import yet: no marker, so a later import can still run.
            return Ok(report);
        }
        let held = actors.queue.send(ListQueue::default()).await??;
        let entries: Vec<QueueEntry> = state
            .entries
            .into_iter()
            .filter(|e| {
                !held.iter().any(|h| {
                    h.agent_id == e.agent_id
                        && h.queued_at == e.queued_at
                        && h.dispatches == e.dispatches
                })
            })
            .collect();
        report.ledger_entries = state.ledger.len();
        actors
            .ledger
            .send(MarkSynced {
                fingerprints: state.ledger,
            })
            .await??;
        report.history_records = actors.history.send(ImportRecords(state.records)).await??;
        report.last_push_at = state.last_push_at;
        report.last_pull_at = state.last_pull_at;
        actors
            .history
            .send(ImportSyncState {
                last_push_at: state.last_push_at,
                last_pull_at: state.last_pull_at,
            })
            .await??;
        report.context_items = actors.puller.send(ImportContext(state.context)).await??;
        report.queued_dispatches = entries.iter().map(|e| e.dispatches.len()).sum();
        report.queue_entries = actors.queue.send(ImportEntries { entries }).await??;
        // Last, and durable: it also makes the Ledger's and History's writes durable.
        let value = serde_json::to_vec(&report).unwrap_or_default();
        actors
            .history
            .send(WriteMarker {
                name: MARKER.into(),
                value,
            })
            .await??;
        Ok(report)
    }
}
