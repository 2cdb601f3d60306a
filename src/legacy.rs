//! Legacy import (design.md §7.2): carries the Go agent's sync state over into
//! redb, once, so a fleet can switch without losing its queue.
//!
//! The Go agent kept five JSON files in its sync dir:
//!
//! | file           | Go type                     | goes to (table)                       |
//! |----------------|-----------------------------|---------------------------------------|
//! | `queue.json`   | `[]syncQueuedPush`          | `queue` ([`Import::queue_entries`])   |
//! | `ledger.json`  | `map[string]string`         | `ledger` ([`Import::ledger_marks`])   |
//! | `records.json` | `[]SyncRecord`              | `history` ([`Import::history_records`]) |
//! | `status.json`  | `syncStatusState`           | `sync_state` ([`Import::sync_times`]) |
//! | `context.json` | `[]map[string]any`          | `context` ([`Import::context_items`]) |
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
//! - One commit ([`Import::commit`]): the queue entries, ledger marks, history
//!   records, times, context and the `legacy_import` marker in the store's `meta`
//!   table are written in one durable transaction. A crash or a failed commit leaves
//!   none of it, and a rerun imports everything; once it committed, a rerun finds the
//!   marker and imports nothing.
//! - Before any actor runs: [`import`] opens the state itself, so it fails (in use)
//!   while a service holds it, in this process or another, and the actors started
//!   after it read what it wrote. That is why it is safe to write the Queue's tables
//!   without the Queue: a running Queue keeps its tail entry in memory, and entries
//!   written behind it would break its order (see `agent_sync_actors::import`).

mod parse;

use std::fmt;
use std::path::{Path, PathBuf};

use agent_sync_actors::import::Import;
use agent_sync_actors::time::{Clock, Timestamp};
use agent_sync_actors::{Store, SyncError};
use serde::Serialize;

use crate::config::SyncConfig;
use crate::service::StartError;

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
    /// Queued dispatches left out because that version is already queued, refused or
    /// delivered here (by this agent-sync, or by Go's ledger): sent again, they would
    /// be duplicate records on the platform.
    pub already_held: usize,
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
    /// The state could not be opened (another process holds it, it is corrupt, or
    /// the config would not start a service either).
    Start(StartError),
    /// Writing into the store failed: nothing was imported.
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
            LegacyError::Start(e) => e.fmt(f),
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

impl From<StartError> for LegacyError {
    fn from(e: StartError) -> Self {
        LegacyError::Start(e)
    }
}

/// Imports the Go agent's sync state from `from` into the state dir of `config`
/// (design.md §7.2), once: a second call reports `already_imported` and writes
/// nothing. The files are never modified. It opens the state itself, so it must run
/// before (never beside) a service on the same state: it fails with
/// [`StartError::InUse`] while one holds it.
pub fn import(config: &SyncConfig, from: &Path) -> Result<ImportReport, LegacyError> {
    // Refused like any command that opens the state, though the import sends nothing.
    config.platform.validate().map_err(StartError::from)?;
    let store = Store::open(&config.state_dir).map_err(StartError::from)?;
    import_into(&store, config, from)
}

/// [`import`] into an open `store`, in one commit, with `config`'s agent id (for
/// entries that name none) and its history and context limits. No actor may run
/// over `store` yet (see the module docs). Reading the files is blocking; they are
/// small and this runs once.
pub fn import_into(
    store: &Store,
    config: &SyncConfig,
    from: &Path,
) -> Result<ImportReport, LegacyError> {
    let mut report = ImportReport {
        from: from.to_path_buf(),
        ..ImportReport::default()
    };
    if store.marker(MARKER)?.is_some() {
        report.already_imported = true;
        return Ok(report);
    }
    let state = LegacyState::read(from, &config.agent_id, Clock::system().now())?;
    report.files = state.files.clone();
    report.skipped = state.skipped;
    if state.files.is_empty() {
        // Nothing to import yet: no marker, so a later import can still run.
        return Ok(report);
    }
    let imported = Import::commit(store, |import| {
        let mut report = report;
        // Checked again in the commit that sets it: "imported once" is one fact.
        if import.marker(MARKER)?.is_some() {
            return Ok(ImportReport {
                from: report.from,
                already_imported: true,
                ..ImportReport::default()
            });
        }
        report.ledger_entries = state.ledger.len();
        import.ledger_marks(&state.ledger)?;
        report.history_records = import.history_records(state.records, config.history_limit)?;
        report.last_push_at = state.last_push_at;
        report.last_pull_at = state.last_pull_at;
        import.sync_times(state.last_push_at, state.last_pull_at)?;
        report.context_items = import.context_items(state.context, config.max_context_items)?;
        let queued = import.queue_entries(state.entries)?;
        report.queue_entries = queued.entries;
        report.queued_dispatches = queued.dispatches;
        report.already_held = queued.already_held;
        import.set_marker(MARKER, &serde_json::to_vec(&report).unwrap_or_default())?;
        Ok(report)
    })?;
    Ok(imported)
}
