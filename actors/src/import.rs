//! State brought in from elsewhere (the Go agent's sync files, read by the
//! `agent-sync` crate's legacy import; test fixtures), written in ONE durable commit
//! through the tables' own functions: queue entries as a requeue inserts them, ledger
//! marks as a delivery makes them, history records and times, context items, and a
//! marker. A crash or a failed commit leaves either all of it or none of it, and a
//! marker set in the same commit ([`Import::set_marker`]) makes "done once" part of
//! the same fact.
//!
//! Only on a store no actor runs over yet (before [`SyncActors::start`]). The Ledger,
//! History and Puller keep nothing in memory, but the Queue does: the tail entry new
//! dispatches may join (reopened from disk at start) and decoded copies of sealed
//! entries, kept in step with its own commits only. Entries imported behind a running
//! Queue would sit after that tail while it still took new dispatches, which would
//! then be sent first. Started after the commit, every actor reads what it wrote.
//!
//! [`SyncActors::start`]: crate::SyncActors::start

use redb::{Durability, ReadableTable, WriteTransaction};
use serde_json::Value;

use crate::entry::QueueEntry;
use crate::error::StoreError;
use crate::queue::ImportedEntries;
use crate::store::schema::{LEDGER, META};
use crate::store::Store;
use crate::sync_record::SyncRecord;
use crate::time::Timestamp;

/// One write transaction bringing state in; every method writes inside it, and
/// nothing is visible (or durable) before [`Import::commit`]'s body returns `Ok`.
pub struct Import<'txn> {
    /// The transaction every table is written in.
    txn: &'txn WriteTransaction,
}

impl Import<'_> {
    /// Runs `body` in one write transaction over `store` and commits it durably;
    /// an error from `body` (or from the commit) writes nothing. Call it before any
    /// actor runs over `store` (see the module docs).
    pub fn commit<T>(
        store: &Store,
        body: impl FnOnce(&Import<'_>) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        store.write("import state", Durability::Immediate, |txn| {
            body(&Import { txn })
        })
    }

    /// The one-time marker `name` in `meta`, as committed so far.
    pub fn marker(&self, name: &str) -> Result<Option<Vec<u8>>, redb::Error> {
        let meta = self.txn.open_table(META)?;
        let value = meta.get(name)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    /// Sets the one-time marker `name` in `meta`, in this commit.
    pub fn set_marker(&self, name: &str, value: &[u8]) -> Result<(), redb::Error> {
        self.txn.open_table(META)?.insert(name, value)?;
        Ok(())
    }

    /// Queues `entries` at the tail, in order, each sealed under a fresh seq and
    /// idempotency key, keeping its attempts, times and fingerprints; a scanned
    /// dispatch whose version is already queued, refused or delivered (the ledger as
    /// this commit leaves it) is left out, so nothing imported is sent twice.
    pub fn queue_entries(&self, entries: Vec<QueueEntry>) -> Result<ImportedEntries, redb::Error> {
        crate::queue::tables::import_in(self.txn, entries)
    }

    /// Marks each `(id, fingerprint)` as delivered, unless a newer version of it is.
    pub fn ledger_marks(&self, fingerprints: &[(String, String)]) -> Result<(), redb::Error> {
        let mut ledger = self.txn.open_table(LEDGER)?;
        for (id, fingerprint) in fingerprints {
            crate::ledger::mark(&mut ledger, id, fingerprint)?;
        }
        Ok(())
    }

    /// Merges `records` into the history in time order, those already held skipped,
    /// the newest `limit` kept. Answers how many were added.
    pub fn history_records(
        &self,
        records: Vec<SyncRecord>,
        limit: usize,
    ) -> Result<usize, redb::Error> {
        crate::history::merge_in(self.txn, records, limit)
    }

    /// Carries last push/pull times over; each only moves forward.
    pub fn sync_times(
        &self,
        last_push_at: Option<Timestamp>,
        last_pull_at: Option<Timestamp>,
    ) -> Result<(), redb::Error> {
        crate::history::carry_times_in(self.txn, last_push_at, last_pull_at)
    }

    /// Seeds the context cache with `items` (at most `max_items` kept): cached items
    /// win by `id`, identical ones are not added twice. Answers how many were added.
    pub fn context_items(&self, items: Vec<Value>, max_items: usize) -> Result<usize, redb::Error> {
        crate::puller::import_in(self.txn, items, max_items)
    }
}
