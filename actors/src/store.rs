//! The one redb database that holds all durable state: `<state-dir>/sync.redb`.
//!
//! # On-disk layout
//!
//! | table            | key            | value                         | owner   |
//! |------------------|----------------|-------------------------------|---------|
//! | `meta`           | `&str`         | JSON                          | Store   |
//! | `ledger`         | dispatch id    | fingerprint                   | Ledger  |
//! | `queue`          | `seq: u64`     | JSON [`QueueEntry`]           | Queue   |
//! | `queue_keys`     | `id \x1f fp`   | `seq` holding it              | Queue   |
//! | `queue_meta`     | `&str`         | `u64` counters                | Queue   |
//! | `dead_letters`   | `seq: u64`     | JSON [`DeadLetter`]           | Queue   |
//! | `history`        | `u64`          | JSON [`SyncRecord`]           | History |
//! | `sync_state`     | `&str`         | JSON (last push/pull, auth)   | History |
//! | `context`        | `&str`         | JSON array of context items   | Puller  |
//!
//! Values are JSON so a record written by one version can be read (or skipped with a
//! warning, H1) by another; `meta.schema` names the layout version.
//!
//! # Ownership
//!
//! Each table is opened only by the actor that owns it. The actors share one
//! `Arc<Database>` because redb allows one writer per file; write transactions are
//! short (one batch each) so they never wait on each other for long.
//!
//! # Crash semantics
//!
//! - A commit with `Durability::Immediate` (the default) is on disk when `commit`
//!   returns. Every commit that acknowledges an enqueue to a caller is immediate.
//! - The Ledger and History commit with `Durability::None`; their writes become
//!   durable with the next immediate commit to the same file. The Pusher records a
//!   delivery as Ledger -> History -> Queue(remove, immediate), so after a crash
//!   either all three are on disk, or none is and the entry is still queued (it is
//!   sent again with the same idempotency key: the only duplicate is the request in
//!   flight, R1; see `queue`).
//! - After a crash redb repairs the file on the next open. A file redb cannot open at
//!   all is reported ([`OpenError::Corrupt`]) and never wiped.
//! - After an I/O error (a full disk), redb refuses every later transaction of that
//!   handle until the database is reopened. The store then closes it, and the next
//!   read or write reopens (and repairs) it: once there is room again, work goes on
//!   without a restart. The failed operation itself reports its error; nothing it
//!   would have acknowledged was.
//! - The file lock makes a second process fail fast ([`OpenError::InUse`], R2).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, StorageError,
    TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{OpenError, StoreError};

/// File name of the database inside the state dir.
pub const DATABASE_FILE: &str = "sync.redb";

/// Version of the table layout above.
const SCHEMA_VERSION: &str = "1";

/// Layout version and one-time markers (legacy import).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Page cache for an embedded component: small, the working set is the queue head.
const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A handle on the open database, cheap to clone and shared by the actors.
#[derive(Clone)]
pub struct Store {
    /// The database; redb serialises writers internally. `None` after an I/O error
    /// closed it, until the next use reopens it.
    db: Arc<Mutex<Option<Arc<Database>>>>,
    /// The state dir, for messages.
    dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (creating if missing) `<state_dir>/sync.redb` and makes sure every table
    /// exists.
    pub fn open(state_dir: &Path) -> Result<Store, OpenError> {
        std::fs::create_dir_all(state_dir).map_err(|source| OpenError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DATABASE_FILE);
        let db = open_database(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => OpenError::InUse {
                dir: state_dir.to_path_buf(),
            },
            // redb reports a file that is not a database as InvalidData, and one cut
            // short inside its header as UnexpectedEof: both are corrupt, not I/O.
            DatabaseError::Storage(StorageError::Io(source))
                if !matches!(
                    source.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                OpenError::Io {
                    path: path.clone(),
                    source,
                }
            }
            other => OpenError::Corrupt {
                path: path.clone(),
                detail: other.to_string(),
            },
        })?;
        let store = Store {
            db: Arc::new(Mutex::new(Some(Arc::new(db)))),
            dir: state_dir.to_path_buf(),
        };
        store
            .write("create the tables", Durability::Immediate, |txn| {
                let mut meta = txn.open_table(META)?;
                meta.insert("schema", SCHEMA_VERSION.as_bytes())?;
                drop(meta);
                crate::ledger::create_tables(txn)?;
                crate::queue::create_tables(txn)?;
                crate::history::create_tables(txn)?;
                crate::puller::create_tables(txn)?;
                Ok(())
            })
            .map_err(|e| OpenError::Corrupt {
                path,
                detail: e.detail,
            })?;
        Ok(store)
    }

    /// The state directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `body` in one write transaction and commits it with `durability`.
    pub(crate) fn write<T>(
        &self,
        operation: &'static str,
        durability: Durability,
        body: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let db = self.database(operation)?;
        let result = (|| {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            let value = body(&txn)?;
            txn.commit()?;
            Ok(value)
        })();
        self.settle(operation, db, result)
    }

    /// Runs `body` in one read transaction (a consistent snapshot).
    pub(crate) fn read<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let db = self.database(operation)?;
        let result = db
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(|txn| body(&txn));
        self.settle(operation, db, result)
    }

    fn cell(&self) -> MutexGuard<'_, Option<Arc<Database>>> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open database, reopened (and repaired by redb) if an I/O error closed it.
    fn database(&self, operation: &'static str) -> Result<Arc<Database>, StoreError> {
        let mut cell = self.cell();
        if let Some(db) = cell.as_ref() {
            return Ok(db.clone());
        }
        let path = self.dir.join(DATABASE_FILE);
        let db = Arc::new(open_database(&path).map_err(|e| {
            StoreError::new(operation, format!("reopening after an I/O error: {e}"))
        })?);
        log::info!("reopened the sync database {}", path.display());
        *cell = Some(db.clone());
        Ok(db)
    }

    /// Passes `result` on; after an I/O error, closes `db` so the next use reopens it
    /// (redb would refuse everything else with "previous I/O error" until then).
    fn settle<T>(
        &self,
        operation: &'static str,
        db: Arc<Database>,
        result: Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if matches!(error, redb::Error::Io(_) | redb::Error::PreviousIo) {
            let mut cell = self.cell();
            // Only the last holders (the cell and `db`) may close it: redb releases the
            // file lock once every handle is gone.
            if cell.as_ref().is_some_and(|open| Arc::ptr_eq(open, &db))
                && Arc::strong_count(&db) == 2
            {
                *cell = None;
                drop(db);
                // The caller reports the error itself; this only explains the reopen.
                log::info!(
                    "the sync database hit an I/O error ({error}); it is reopened on next use"
                );
            }
        }
        Err(StoreError::new(operation, error))
    }

    /// Reads a one-time marker from `meta` (e.g. that a legacy import ran).
    pub fn marker(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("read a marker", |txn| {
            let meta = txn.open_table(META)?;
            Ok(meta.get(name)?.map(|v| v.value().to_vec()))
        })
    }

    /// Sets a one-time marker in `meta`, durably.
    pub fn set_marker(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write("write a marker", Durability::Immediate, |txn| {
            txn.open_table(META)?.insert(name, value)?;
            Ok(())
        })
    }
}

fn open_database(path: &Path) -> Result<Database, DatabaseError> {
    let mut builder = Database::builder();
    builder.set_cache_size(DEFAULT_CACHE_BYTES);
    // redb may panic on a file altered behind its back; a corrupt file must be an
    // error the operator can act on, never a crash (R4).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path))).unwrap_or_else(
        |_| {
            Err(DatabaseError::Storage(StorageError::Corrupted(
                "redb could not read the file".into(),
            )))
        },
    )
}

/// Encodes a value for a table.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own types into a Vec cannot fail: no maps with non-string keys.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a value from a table.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_the_same_state_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(e @ OpenError::InUse { .. }) => {
                assert!(e
                    .to_string()
                    .contains("in use by another agent-sync process"))
            }
            other => panic!("expected InUse, got {other:?}"),
        }
    }

    #[test]
    fn garbage_database_is_reported_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        let garbage = vec![0x5au8; 8192];
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }
}
