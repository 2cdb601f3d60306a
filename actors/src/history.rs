//! History: a bounded log of syncs, and the last push/pull times.
//!
//! Records are keyed by a monotonic `u64`, so "newest N" is a range read and trimming
//! pops from the front; nothing is ever rewritten whole (Go defect 3). A record that
//! does not decode is skipped with a warning (H1): history is for people, and a bad
//! line must not hide the others.

use actix::prelude::*;
use redb::{Durability, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::error::StoreError;
use crate::messages::{ReadSyncState, RecentRecords, Record, SetAuthFailed, SyncState};
use crate::store::codec::{decode, decode_or_warn, encode};
use crate::store::schema::{HISTORY, SYNC_STATE};
use crate::store::Store;
use crate::sync_record::{Direction, SyncRecord};
use crate::time::Timestamp;

const STATE_KEY: &str = "state";

/// How many records are kept by default.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// Owns the `history` and `sync_state` tables.
pub struct History {
    /// The shared database. Besides this actor, the Queue writes these tables (in an
    /// outcome's commit, `append_in`) and an import does (before any actor runs).
    store: Store,
    /// Newest records kept.
    limit: usize,
}

impl History {
    /// A History keeping the newest `limit` records (at least one).
    pub fn new(store: Store, limit: usize) -> Self {
        History {
            store,
            limit: limit.max(1),
        }
    }

    fn update_state(
        &self,
        operation: &'static str,
        change: impl FnOnce(&mut SyncState),
    ) -> Result<(), StoreError> {
        self.store.write(operation, Durability::None, |txn| {
            let mut table = txn.open_table(SYNC_STATE)?;
            let mut state = read_state(&table)?;
            change(&mut state);
            table.insert(STATE_KEY, encode(&state).as_slice())?;
            Ok(())
        })
    }
}

fn read_state(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<SyncState, redb::Error> {
    Ok(match table.get(STATE_KEY)? {
        Some(bytes) => decode(bytes.value()).unwrap_or_else(|e| {
            log::warn!("sync state does not decode ({e}); reading it as empty");
            SyncState::default()
        }),
        None => SyncState::default(),
    })
}

impl Actor for History {
    type Context = Context<Self>;
}

impl History {
    /// Appends `records` in one transaction (see [`append_in`]). Non-durable: a pull's
    /// record is made durable by the Puller's cache commit; a push's is written by the
    /// Queue in the commit of its outcome, not here.
    fn append(&self, records: &[SyncRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.store.write("record a sync", Durability::None, |txn| {
            append_in(txn, records, self.limit)
        })
    }
}

/// Appends `records` inside `txn`, trims to the newest `limit`, and moves the last
/// push/pull times (a push or pull also clears `auth_failed`). The Queue calls this in
/// the commit of a delivery outcome.
pub(crate) fn append_in(
    txn: &WriteTransaction,
    records: &[SyncRecord],
    limit: usize,
) -> Result<(), redb::Error> {
    let limit = limit.max(1) as u64;
    let mut history = txn.open_table(HISTORY)?;
    let next = history.last()?.map_or(0, |(k, _)| k.value() + 1);
    for (key, record) in (next..).zip(records) {
        history.insert(key, encode(record).as_slice())?;
    }
    while history.len()? > limit {
        history.pop_first()?;
    }
    drop(history);
    let mut table = txn.open_table(SYNC_STATE)?;
    let mut state = read_state(&table)?;
    for record in records {
        match record.direction {
            Direction::Push => {
                state.last_push_at = Some(record.synced_at);
                state.auth_failed = false;
            }
            Direction::Pull => {
                state.last_pull_at = Some(record.synced_at);
                state.auth_failed = false;
            }
            Direction::DeadLetter => {}
        }
    }
    table.insert(STATE_KEY, encode(&state).as_slice())?;
    Ok(())
}

/// Sets `auth_failed` inside `txn` (a 401/403 outcome, in its commit).
pub(crate) fn set_auth_failed_in(txn: &WriteTransaction, failed: bool) -> Result<(), redb::Error> {
    let mut table = txn.open_table(SYNC_STATE)?;
    let mut state = read_state(&table)?;
    if state.auth_failed != failed {
        state.auth_failed = failed;
        table.insert(STATE_KEY, encode(&state).as_slice())?;
    }
    Ok(())
}

impl Handler<Record> for History {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, Record(record): Record, _: &mut Self::Context) -> Self::Result {
        self.append(std::slice::from_ref(&record))
    }
}

impl Handler<SetAuthFailed> for History {
    type Result = Result<(), StoreError>;

    fn handle(
        &mut self,
        SetAuthFailed(failed): SetAuthFailed,
        _: &mut Self::Context,
    ) -> Self::Result {
        self.update_state("record an auth failure", |state| state.auth_failed = failed)
    }
}

impl Handler<RecentRecords> for History {
    type Result = Result<Vec<SyncRecord>, StoreError>;

    fn handle(&mut self, msg: RecentRecords, _: &mut Self::Context) -> Self::Result {
        self.store.read("read history", |txn| {
            let history = txn.open_table(HISTORY)?;
            let limit = msg.limit.unwrap_or(usize::MAX);
            let mut newest_first = Vec::new();
            for row in history.iter()?.rev() {
                if newest_first.len() >= limit {
                    break;
                }
                let (key, value) = row?;
                newest_first.extend(decode_or_warn::<SyncRecord>(
                    "history record",
                    key.value(),
                    value.value(),
                ));
            }
            newest_first.reverse();
            Ok(newest_first)
        })
    }
}

impl Handler<ReadSyncState> for History {
    type Result = Result<SyncState, StoreError>;

    fn handle(&mut self, _: ReadSyncState, _: &mut Self::Context) -> Self::Result {
        read_sync_state(&self.store)
    }
}

/// The last push/pull times and `auth_failed` as committed: what [`ReadSyncState`]
/// answers, and what the metrics collector reads at each scrape.
pub(crate) fn read_sync_state(store: &Store) -> Result<SyncState, StoreError> {
    store.read("read sync state", |txn| {
        read_state(&txn.open_table(SYNC_STATE)?)
    })
}

/// Merges `imported` records into the history inside `txn` (an import: see the
/// `import` module), records already held skipped, the newest `limit` kept. The table
/// is rewritten in time order rather than appended to: trimming pops the front, and
/// older imported records appended after newer local ones would push those out.
/// Answers how many were added.
pub(crate) fn merge_in(
    txn: &WriteTransaction,
    imported: Vec<SyncRecord>,
    limit: usize,
) -> Result<usize, redb::Error> {
    let mut history = txn.open_table(HISTORY)?;
    let mut records = Vec::new();
    for row in history.iter()? {
        let (key, value) = row?;
        // One that does not decode is dropped: the history is rewritten below.
        records.extend(decode_or_warn::<SyncRecord>(
            "history record",
            key.value(),
            value.value(),
        ));
    }
    let mut added = 0;
    for record in imported {
        if !records.contains(&record) {
            records.push(record);
            added += 1;
        }
    }
    // Stable: records with the same second keep their file order.
    records.sort_by_key(|r| r.synced_at);
    let keep = records.len().saturating_sub(limit.max(1));
    history.retain(|_, _| false)?;
    for (key, record) in records.iter().skip(keep).enumerate() {
        history.insert(key as u64, encode(record).as_slice())?;
    }
    Ok(added)
}

/// Carries imported last push/pull times over inside `txn`; a time only ever moves
/// forward, so a newer local sync is never hidden by an older imported one.
pub(crate) fn carry_times_in(
    txn: &WriteTransaction,
    last_push_at: Option<Timestamp>,
    last_pull_at: Option<Timestamp>,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(SYNC_STATE)?;
    let mut state = read_state(&table)?;
    state.last_push_at = state.last_push_at.max(last_push_at);
    state.last_pull_at = state.last_pull_at.max(last_pull_at);
    table.insert(STATE_KEY, encode(&state).as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Warnings logged by this test binary (a logger is process-wide: set once).
    static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let line = format!("{} {}", record.level(), record.args());
            LOGGED.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
        fn flush(&self) {}
    }

    fn capture_warnings() {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Warn);
    }

    fn logged(needle: &str) -> bool {
        LOGGED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|line| line.starts_with("WARN") && line.contains(needle))
    }

    fn record(n: u64) -> SyncRecord {
        SyncRecord {
            agent_id: format!("agent-{n}"),
            fleet_node_id: Some(n as i64),
            direction: Direction::Push,
            payload_size: 100 + n,
            items_count: n,
            synced_at: Timestamp::from_unix_millis(1_776_000_000_000 + n as i64 * 1000),
        }
    }

    #[actix::test]
    async fn h1_corrupt_history_record_is_skipped_with_warning() {
        capture_warnings();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::new(store.clone(), 10).start();
        for n in 0..3 {
            history.send(Record(record(n))).await.unwrap().unwrap();
        }
        // Damage the middle record behind the actor's back.
        store
            .write("corrupt a record", Durability::Immediate, |txn| {
                txn.open_table(HISTORY)?
                    .insert(1u64, b"{not json".as_slice())?;
                Ok(())
            })
            .unwrap();

        let read = history
            .send(RecentRecords { limit: None })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, [record(0), record(2)]);
        assert!(logged("history record 1 does not decode"));
        // A limit counts the records that decode.
        let newest = history
            .send(RecentRecords { limit: Some(2) })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(newest, [record(0), record(2)]);
        // History goes on after the bad record.
        history.send(Record(record(3))).await.unwrap().unwrap();
        let read = history
            .send(RecentRecords { limit: None })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, [record(0), record(2), record(3)]);
    }

    #[actix::test]
    async fn h1_corrupt_sync_state_reads_as_empty_with_warning_and_is_rewritten() {
        capture_warnings();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::new(store.clone(), 10).start();
        store
            .write("corrupt the state", Durability::Immediate, |txn| {
                txn.open_table(SYNC_STATE)?
                    .insert(STATE_KEY, b"\xff\x00".as_slice())?;
                Ok(())
            })
            .unwrap();
        let state = history.send(ReadSyncState).await.unwrap().unwrap();
        assert_eq!(state, SyncState::default());
        assert!(logged("sync state does not decode"));
        history.send(Record(record(1))).await.unwrap().unwrap();
        let state = history.send(ReadSyncState).await.unwrap().unwrap();
        assert_eq!(state.last_push_at, Some(record(1).synced_at));
    }

    #[actix::test]
    async fn h1_fresh_store_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(Store::open(dir.path()).unwrap(), 10).start();
        let read = history
            .send(RecentRecords { limit: None })
            .await
            .unwrap()
            .unwrap();
        assert!(read.is_empty());
        let state = history.send(ReadSyncState).await.unwrap().unwrap();
        assert_eq!(state, SyncState::default());
    }
}
