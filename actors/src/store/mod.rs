//! The one redb database that holds all durable state: `<state-dir>/sync.redb`.
//!
//! [`Store::open`] opens it over redb's file backend. [`Store::open_with_backend`]
//! opens it over any redb `StorageBackend` a factory builds for the file's path (the
//! storage-fault tests wrap the file backend to fail or cut power on demand); the
//! store keeps the factory and builds every reopen after an I/O error with it too.
//!
//! # On-disk layout
//!
//! Every table, its key, its value and who writes it, is in `schema`, with the one
//! function that creates them; modules import their tables from there, and the store
//! imports no actor.
//!
//! Values are JSON, encoded and decoded in one place (`codec`), so a record written by
//! one version can be read (or skipped with a warning, H1) by another; `meta.schema`
//! names the layout version. The two `scan_*`
//! tables are the walk's rescan cache (`scanner::walk::cache`): a versioned binary encoding,
//! since a cold scan writes one row per workspace, and a row that does not decode is
//! ignored and rebuilt, never an error. Losing them costs reads, never a dispatch.
//!
//! # Ownership
//!
//! Each table is written only by the actor that owns it (others read: the metrics
//! collector, a doctor), with two exceptions made on purpose. The consequences of a
//! delivery outcome are written by the Queue, in the one commit that records the
//! outcome, through the Ledger's and History's table functions (`ledger::mark`,
//! `history::append_in`), and the Queue's enqueue reads the ledger in the commit
//! that inserts (`ledger::covers`): "delivered" is then one fact changed in one
//! transaction, not three copies kept in step by message order. And an import (the
//! `import` module) writes several actors' tables through their table functions, in
//! one commit, before any actor runs. The meta table's markers are the store's own
//! ([`Store::set_marker`]).
//!
//! The actors share one `Arc<Database>` because redb allows one writer per file;
//! write transactions are short (one batch each) so they never wait on each other for
//! long.
//!
//! # Crash semantics
//!
//! - A commit with `Durability::Immediate` (the default) is on disk when `commit`
//!   returns. Every commit that acknowledges an enqueue to a caller is immediate.
//! - A delivery outcome is one immediate commit (queue rows and counters, ledger
//!   marks, dead letters, the history record): after a crash it is on disk whole, or
//!   not at all and the entry is still queued (sent again with the same idempotency
//!   key: the only duplicate is the request in flight, R1; see `queue`). A commit
//!   that fails is held and retried, never followed by a new request.
//! - History records of pulls and the `sync_state` flags the History sets itself
//!   commit with `Durability::None`: they become durable with the next immediate
//!   commit (losing one costs a line of history, never a dispatch).
//! - After a crash redb repairs the file on the next open. A file redb cannot open at
//!   all is reported ([`OpenError::Corrupt`]) and never wiped.
//! - After an I/O error (a full disk), redb refuses every later transaction of that
//!   handle until the database is reopened. The store then closes it, and the next
//!   read or write reopens (and repairs) it: once there is room again, work goes on
//!   without a restart. The failed operation itself reports its error; nothing it
//!   would have acknowledged was.
//! - The file lock makes a second process fail fast ([`OpenError::InUse`], R2).
//!
//! # Giving space back
//!
//! redb reuses freed pages but never shrinks the file by itself: after a backlog of
//! 100,000 dispatches is delivered, the file keeps its high-water mark. [`Store::compact`]
//! runs redb's `Database::compact`, which moves live pages down and truncates the file.
//! It needs `&mut Database` while the actors share one `Arc<Database>`: it takes the
//! store's lock (so nobody can begin a transaction meanwhile) and succeeds only when
//! that `Arc` is unique, i.e. no transaction of any thread is open; otherwise it
//! answers [`Compaction::Busy`] at once and the caller tries again later. Holding the
//! lock, it blocks other users of the store for as long as it runs, which is why it
//! runs only when worth it ([`Store::compact_if_sparse`]: a file of at least
//! [`COMPACT_MIN_FILE_BYTES`] whose free space is at least [`SPARSE_FACTOR`] times its
//! live data): at open, and when the Queue empties after a backlog (nothing is waiting
//! to be delivered then).
//!
//! Crash semantics: redb compacts in a series of two-phase, durable commits, each one
//! a consistent database. A `kill -9` mid-compaction leaves the last of them (and a
//! file somewhere between the two sizes); the next open repairs it like after any
//! crash. Nothing committed before the compaction is lost (`tests/compaction.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::{OpenError, StoreError};
use redb::{
    CompactionError, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase,
    StorageBackend, StorageError, WriteTransaction,
};

pub(crate) mod codec;
pub(crate) mod schema;

use schema::META;

/// File name of the database inside the state dir.
pub const DATABASE_FILE: &str = "sync.redb";

/// Version of the table layout above.
const SCHEMA_VERSION: &str = "1";

/// Page cache for an embedded component: small, the working set is the queue head.
const DEFAULT_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// A smaller file is never compacted: too little to give back.
pub const COMPACT_MIN_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A file is compacted when its free space is at least this many times its live data.
pub const SPARSE_FACTOR: u64 = 2;

/// What [`Store::compact`] and [`Store::compact_if_sparse`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    /// Compacted: the file's size before and after.
    Compacted {
        /// Bytes before.
        before: u64,
        /// Bytes after.
        after: u64,
    },
    /// Not worth it: the file is small, or free space does not clearly outweigh live
    /// data.
    Dense {
        /// The file's size.
        file_bytes: u64,
        /// Bytes of pages in use (not measured below [`COMPACT_MIN_FILE_BYTES`]: then
        /// the file's size).
        live_bytes: u64,
    },
    /// A transaction was open (a scan's snapshot, another thread's commit): try later.
    Busy,
}

/// Opens the database file at a path: redb's file backend, or a backend a caller's
/// factory builds ([`Store::open_with_backend`]). Kept by the store, since a reopen
/// after an I/O error must use the same backend as the first open.
type Opener = Arc<dyn Fn(&Path) -> Result<Database, DatabaseError> + Send + Sync>;

/// A handle on the open database, cheap to clone and shared by the actors.
#[derive(Clone)]
pub struct Store {
    /// The database; redb serialises writers internally. `None` after an I/O error
    /// closed it, until the next use reopens it.
    db: Arc<Mutex<Option<Arc<Database>>>>,
    /// The state dir, for messages.
    dir: PathBuf,
    /// How the file is opened, at first and on every reopen after an I/O error.
    opener: Opener,
}

/// A [`Store`] that does not keep the database open: what outlives the actors (a
/// metrics collector in a host's registry) holds this, so that a stopped service still
/// frees the file for another process.
#[derive(Clone)]
pub struct WeakStore {
    /// The database handle, while some [`Store`] still holds it.
    db: Weak<Mutex<Option<Arc<Database>>>>,
    /// The state dir, for messages.
    dir: PathBuf,
    /// How the file is reopened after an I/O error.
    opener: Opener,
}

impl WeakStore {
    /// The store, while the service that opened it still runs.
    pub fn upgrade(&self) -> Option<Store> {
        Some(Store {
            db: self.db.upgrade()?,
            dir: self.dir.clone(),
            opener: self.opener.clone(),
        })
    }
}

impl std::fmt::Debug for WeakStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakStore").field("dir", &self.dir).finish()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// A handle that does not keep the database open (see [`WeakStore`]).
    pub fn downgrade(&self) -> WeakStore {
        WeakStore {
            db: Arc::downgrade(&self.db),
            dir: self.dir.clone(),
            opener: self.opener.clone(),
        }
    }

    /// Opens (creating if missing) `<state_dir>/sync.redb` and makes sure every table
    /// exists.
    pub fn open(state_dir: &Path) -> Result<Store, OpenError> {
        Self::open_with(state_dir, Arc::new(open_database))
    }

    /// [`open`](Self::open) over the storage backend `factory` builds for the file's
    /// path, at this open and at every reopen after an I/O error (the same cache size,
    /// the same errors: a lock the backend finds held is [`OpenError::InUse`]). A
    /// factory's error is reported like the failed open of a file.
    pub fn open_with_backend<B, F>(state_dir: &Path, factory: F) -> Result<Store, OpenError>
    where
        B: StorageBackend,
        F: Fn(&Path) -> Result<B, DatabaseError> + Send + Sync + 'static,
    {
        Self::open_with(
            state_dir,
            Arc::new(move |path: &Path| open_database_over(|| factory(path))),
        )
    }

    /// [`open`](Self::open) with `opener`, kept for reopens.
    fn open_with(state_dir: &Path, opener: Opener) -> Result<Store, OpenError> {
        // A new dir 0700 and file 0600 whatever the umask; existing ones are left.
        crate::private_state::prepare(state_dir, &[DATABASE_FILE])?;
        let path = state_dir.join(DATABASE_FILE);
        let db = opener(&path).map_err(|e| match e {
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
            opener,
        };
        store
            .write("create the tables", Durability::Immediate, |txn| {
                schema::create_all(txn)?;
                txn.open_table(META)?
                    .insert("schema", SCHEMA_VERSION.as_bytes())?;
                Ok(())
            })
            .map_err(|e| OpenError::Corrupt {
                path,
                detail: e.cause.to_string(),
            })?;
        // Open: existing ones open to group or others are warned about, once.
        crate::private_state::warn_exposed(state_dir);
        // Nothing else holds the database yet: the moment to give space back.
        match store.compact_if_sparse() {
            Ok(Compaction::Compacted { before, after }) => {
                log::info!("compacted the sync database at start: {before} -> {after} bytes")
            }
            Ok(_) => {}
            Err(e) => log::warn!("{e}"),
        }
        Ok(store)
    }

    /// Size of the database file in bytes (`db_bytes` in status).
    pub fn file_bytes(&self) -> Result<u64, StoreError> {
        std::fs::metadata(self.dir.join(DATABASE_FILE))
            .map(|m| m.len())
            .map_err(|e| StoreError::io("measure the database file", e))
    }

    /// Bytes of the pages in use (allocated), from redb's statistics.
    pub fn live_bytes(&self) -> Result<u64, StoreError> {
        let operation = "measure the database";
        let db = self.database(operation)?;
        let result = (|| {
            let txn = db.begin_write()?;
            let stats = txn.stats()?;
            txn.abort()?;
            Ok(stats.allocated_pages() * stats.page_size() as u64)
        })();
        self.settle(operation, db, result)
    }

    /// Compacts the file when free space clearly outweighs live data (see the module
    /// docs); otherwise says why not.
    pub fn compact_if_sparse(&self) -> Result<Compaction, StoreError> {
        let file_bytes = self.file_bytes()?;
        if file_bytes < COMPACT_MIN_FILE_BYTES {
            return Ok(Compaction::Dense {
                file_bytes,
                live_bytes: file_bytes,
            });
        }
        let live_bytes = self.live_bytes()?;
        if file_bytes.saturating_sub(live_bytes) < SPARSE_FACTOR.saturating_mul(live_bytes) {
            return Ok(Compaction::Dense {
                file_bytes,
                live_bytes,
            });
        }
        self.compact()
    }

    /// Compacts the file now, if no transaction is open anywhere (else
    /// [`Compaction::Busy`]); every other user of the store waits meanwhile.
    pub fn compact(&self) -> Result<Compaction, StoreError> {
        let operation = "compact the database";
        let before = self.file_bytes()?;
        let started = std::time::Instant::now();
        {
            let mut cell = self.cell();
            // Unique: no transaction is open, and none can begin while we hold the cell.
            let Some(db) = cell.as_mut().and_then(Arc::get_mut) else {
                return Ok(Compaction::Busy);
            };
            match catch_compact(db) {
                Ok(_) => {}
                Err(
                    CompactionError::TransactionInProgress
                    | CompactionError::EphemeralSavepointExists
                    | CompactionError::PersistentSavepointExists,
                ) => return Ok(Compaction::Busy),
                Err(e) => {
                    // The handle may refuse everything now: the next use reopens (and
                    // repairs) the file, as after any I/O error.
                    *cell = None;
                    return Err(StoreError::database(operation, e));
                }
            }
        }
        let after = self.file_bytes()?;
        log::debug!(
            "compacted {} from {before} to {after} bytes in {:?}",
            DATABASE_FILE,
            started.elapsed()
        );
        Ok(Compaction::Compacted { before, after })
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
        let db = Arc::new((self.opener)(&path).map_err(|e| StoreError::database(operation, e))?);
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
        Err(StoreError::database(operation, error))
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

/// [`open_database`] over the backend `backend` builds: the same cache size, and a
/// panic (a file altered behind redb's back) as a corrupt file.
fn open_database_over<B: StorageBackend>(
    backend: impl FnOnce() -> Result<B, DatabaseError>,
) -> Result<Database, DatabaseError> {
    let mut builder = Database::builder();
    builder.set_cache_size(DEFAULT_CACHE_BYTES);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.create_with_backend(backend()?)
    }))
    .unwrap_or_else(|_| {
        Err(DatabaseError::Storage(StorageError::Corrupted(
            "redb could not read the file".into(),
        )))
    })
}

/// redb's compaction, with a panic (a file altered behind its back) as a storage error.
fn catch_compact(db: &mut Database) -> Result<bool, CompactionError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.compact())).unwrap_or_else(|_| {
        Err(CompactionError::Storage(StorageError::Corrupted(
            "redb panicked while compacting".into(),
        )))
    })
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
    fn a_store_over_a_backend_is_locked_and_reopened_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = built.clone();
        let file_backend = move |path: &Path| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            redb::backends::FileBackend::new(file)
        };
        let store = Store::open_with_backend(dir.path(), file_backend).unwrap();
        store.set_marker("m", b"1").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(OpenError::InUse { .. })
        ));
        // A reopen (as after an I/O error) goes through the factory again.
        *store.cell() = None;
        assert_eq!(store.marker("m").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(built.load(std::sync::atomic::Ordering::SeqCst), 2);
        drop(store);
        let plain = Store::open(dir.path()).unwrap();
        assert_eq!(plain.marker("m").unwrap().as_deref(), Some(&b"1"[..]));
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
