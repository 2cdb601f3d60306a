//! A read-only look at `sync.redb`: opened with redb's `ReadOnlyDatabase` (never
//! created, repaired, compacted or written), every row of the tables that hold JSON
//! decoded, and what the queue holds summed up.
//!
//! The rescan cache (`scan_dirs`, `scan_workspaces`) is not decoded: a row of it that
//! does not decode is rebuilt by the next scan, never an error.

use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, Key, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, StorageError, TableDefinition, TableError, TableHandle,
};
use serde::de::DeserializeOwned;

use crate::entry::{DeadLetter, QueueEntry};
use crate::store::codec::decode;
use crate::store::schema::{CONTEXT, DEAD_LETTERS, HISTORY, QUEUE, SYNC_STATE};
use crate::store::DATABASE_FILE;
use crate::sync_record::SyncRecord;

/// The most rows that do not decode named in an [`Inspection`]; the rest are counted.
const NAMED_BAD_ROWS: usize = 5;

/// What a read-only look at the database found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inspection {
    /// Queue entries that decode.
    pub queued_entries: u64,
    /// Dispatches in them.
    pub queued_dispatches: u64,
    /// The first entry that decodes, oldest first: what goes out next.
    pub head: Option<QueueEntry>,
    /// Dead letters that decode.
    pub dead_letters: u64,
    /// History records that decode.
    pub history_records: u64,
    /// Rows that do not decode, every table together.
    pub bad_rows: u64,
    /// The first few of them, as `table key: error`, for the operator to find.
    pub bad_row_names: Vec<String>,
}

/// Why the database could not be inspected.
#[derive(Debug)]
pub enum InspectError {
    /// There is no `sync.redb`: a fresh state.
    Missing,
    /// A process holds it (a running agent-sync): ask it instead.
    InUse,
    /// It was not closed cleanly; the next agent-sync that opens it repairs it (a
    /// read-only open never does).
    NeedsRepair,
    /// It is not a database redb can read, or a table in it is damaged.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// It could not be read (permissions, I/O).
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        detail: String,
    },
}

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InspectError::Missing => f.write_str("no database yet"),
            InspectError::InUse => f.write_str("the database is held by another process"),
            InspectError::NeedsRepair => {
                f.write_str("the database was not closed cleanly and needs a repair")
            }
            InspectError::Corrupt { path, detail } => {
                write!(f, "{} cannot be read: {detail}", path.display())
            }
            InspectError::Io { path, detail } => {
                write!(f, "{} cannot be read: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for InspectError {}

/// Opens `<state_dir>/sync.redb` read-only and decodes every JSON row. Changes
/// nothing on disk; holds a shared lock on the file while it reads.
pub fn inspect(state_dir: &Path) -> Result<Inspection, InspectError> {
    let path = state_dir.join(DATABASE_FILE);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(InspectError::Missing),
        Err(e) => {
            return Err(InspectError::Io {
                path,
                detail: e.to_string(),
            })
        }
        Ok(_) => {}
    }
    // redb may panic on a file altered behind its back: a corrupt file, not a crash.
    let opened = std::panic::catch_unwind(|| Database::builder().open_read_only(&path))
        .unwrap_or_else(|_| {
            Err(DatabaseError::Storage(StorageError::Corrupted(
                "redb could not read the file".into(),
            )))
        });
    let db = opened.map_err(|e| open_error(&path, e))?;
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_all(&db)));
    let _ = db.close();
    match read {
        Ok(result) => result.map_err(|detail| InspectError::Corrupt { path, detail }),
        Err(_) => Err(InspectError::Corrupt {
            path,
            detail: "redb could not read a table".into(),
        }),
    }
}

/// What a failed read-only open means for the operator.
fn open_error(path: &Path, e: DatabaseError) -> InspectError {
    let path = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen => InspectError::InUse,
        DatabaseError::RepairAborted => InspectError::NeedsRepair,
        DatabaseError::Storage(StorageError::Io(source))
            if !matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            InspectError::Io {
                path,
                detail: source.to_string(),
            }
        }
        other => InspectError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

/// Every JSON table, decoded row by row.
fn read_all(db: &ReadOnlyDatabase) -> Result<Inspection, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let mut found = Inspection::default();
    let mut bad_rows: Vec<String> = Vec::new();
    let mut note_bad = |table: &str, key: String, e: serde_json::Error| {
        bad_rows.push(format!("{table} {key}: {e}"));
    };
    each_row::<u64, QueueEntry>(&txn, QUEUE, "queue", &mut note_bad, |entry| {
        found.queued_entries += 1;
        found.queued_dispatches += entry.dispatches.len() as u64;
        if found.head.is_none() {
            found.head = Some(entry);
        }
    })?;
    each_row::<u64, DeadLetter>(&txn, DEAD_LETTERS, "dead letter", &mut note_bad, |_| {
        found.dead_letters += 1
    })?;
    each_row::<u64, SyncRecord>(&txn, HISTORY, "history record", &mut note_bad, |_| {
        found.history_records += 1
    })?;
    for (definition, name) in [(SYNC_STATE, "sync state"), (CONTEXT, "context")] {
        each_row(
            &txn,
            definition,
            name,
            &mut note_bad,
            |_: serde_json::Value| {},
        )?;
    }
    found.bad_rows = bad_rows.len() as u64;
    found.bad_row_names = bad_rows.into_iter().take(NAMED_BAD_ROWS).collect();
    Ok(found)
}

/// Calls `each` with every row of a JSON table that decodes as `T`, `bad` (with the
/// key as `{:?}` shows it) with the others; a missing table is empty.
fn each_row<K, T>(
    txn: &ReadTransaction,
    definition: TableDefinition<K, &[u8]>,
    what: &str,
    bad: &mut impl FnMut(&str, String, serde_json::Error),
    mut each: impl FnMut(T),
) -> Result<(), String>
where
    K: Key + 'static,
    for<'a> K::SelfType<'a>: std::fmt::Debug,
    T: DeserializeOwned,
{
    let table = match txn.open_table(definition) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(format!("table {}: {e}", definition.name())),
    };
    let rows = table.iter().map_err(|e| e.to_string())?;
    for row in rows {
        let (key, value) = row.map_err(|e| e.to_string())?;
        match decode::<T>(value.value()) {
            Ok(item) => each(item),
            Err(e) => bad(what, format!("{:?}", key.value()), e),
        }
    }
    Ok(())
}
