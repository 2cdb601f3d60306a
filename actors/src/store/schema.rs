//! Every table of `sync.redb`, in one place, and the one function that creates them.
//! The modules that read and write a table import its definition from here; the
//! store itself imports no actor. "imports" below means the `import` module: state
//! brought in, in one commit, before any actor runs.
//!
//! | table            | key              | value                          | written by |
//! |------------------|------------------|--------------------------------|------------|
//! | `meta`           | `&str`           | JSON                           | Store (layout version, markers); imports (their marker) |
//! | `ledger`         | dispatch id      | newest fingerprint delivered   | Queue (a delivery's commit); imports |
//! | `queue`          | `seq: u64`       | JSON [`QueueEntry`](crate::entry::QueueEntry) | Queue; imports |
//! | `queue_keys`     | `id \x1f fp`     | `seq` holding it               | Queue |
//! | `queue_meta`     | `&str`           | `u64` counters                 | Queue |
//! | `dead_letters`   | `seq: u64`       | JSON [`DeadLetter`](crate::entry::DeadLetter) | Queue |
//! | `history`        | `u64`            | JSON [`SyncRecord`](crate::sync_record::SyncRecord) | Queue (pushes), History (pulls); imports |
//! | `sync_state`     | `&str`           | JSON (last push/pull, auth)    | Queue (pushes), History; imports |
//! | `context`        | `&str`           | JSON array of context items    | Puller; imports |
//! | `scan_dirs`      | dir, `/` as `\0` | binary: signature, children    | Scanner (`scanner::walk::cache`) |
//! | `scan_workspaces`| name, `/` as `\0`| binary: signature, known state  | Scanner (`scanner::walk::cache`) |

use redb::{TableDefinition, WriteTransaction};

/// Layout version and one-time markers (a legacy import, the health probe's write).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Dispatch id -> fingerprint last delivered.
pub(crate) const LEDGER: TableDefinition<&str, &str> = TableDefinition::new("ledger");
/// `seq` -> JSON [`QueueEntry`](crate::entry::QueueEntry).
pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// `seq` -> JSON [`DeadLetter`](crate::entry::DeadLetter).
pub(crate) const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// `id \x1f fingerprint` -> seq of the entry or dead letter holding it.
pub(crate) const QUEUE_KEYS: TableDefinition<&str, u64> = TableDefinition::new("queue_keys");
/// Counters: `next_seq`, `dispatches`.
pub(crate) const QUEUE_META: TableDefinition<&str, u64> = TableDefinition::new("queue_meta");
/// Monotonic id -> JSON [`SyncRecord`](crate::sync_record::SyncRecord).
pub(crate) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// `"state"` -> JSON [`SyncState`](crate::messages::SyncState).
pub(crate) const SYNC_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_state");
/// `"items"` -> JSON array of the cached context.
pub(crate) const CONTEXT: TableDefinition<&str, &[u8]> = TableDefinition::new("context");
/// Directory (key) -> signature and child directories (the rescan cache).
pub(crate) const SCAN_DIRS: TableDefinition<&str, &[u8]> = TableDefinition::new("scan_dirs");
/// Workspace name (key) -> signature of its `status.json` and what it held.
pub(crate) const SCAN_WORKSPACES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("scan_workspaces");

/// Creates every table that does not exist yet (a fresh state), in `txn`.
pub(crate) fn create_all(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(LEDGER)?;
    txn.open_table(QUEUE)?;
    txn.open_table(DEAD_LETTERS)?;
    txn.open_table(QUEUE_KEYS)?;
    txn.open_table(QUEUE_META)?;
    txn.open_table(HISTORY)?;
    txn.open_table(SYNC_STATE)?;
    txn.open_table(CONTEXT)?;
    txn.open_table(SCAN_DIRS)?;
    txn.open_table(SCAN_WORKSPACES)?;
    Ok(())
}
