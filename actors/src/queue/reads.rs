//! What the Queue answers without changing anything: the dedup index, listings,
//! counts and the file's size, as committed (an enqueue answered but not yet
//! committed is committed first, so it never looks absent).

use actix::prelude::*;
use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::{self, DISPATCHES};
use super::Queue;
use crate::dispatch::DispatchKey;
use crate::entry::{DeadLetter, QueueEntry};
use crate::error::StoreError;
use crate::messages::{
    DatabaseSize, HeadSummary, ListDeadLetters, ListQueue, NotQueued, QueueStatus, QueueSummary,
};
use crate::store::codec::decode_or_warn;
use crate::store::schema::{DEAD_LETTERS, QUEUE, QUEUE_META};
use crate::store::Store;

impl Handler<NotQueued> for Queue {
    type Result = Result<Vec<DispatchKey>, StoreError>;

    fn handle(&mut self, msg: NotQueued, _: &mut Self::Context) -> Self::Result {
        // An enqueue answered but not yet committed must not look absent.
        self.commit_pending();
        self.store.read("read the queue's dedup index", |txn| {
            tables::not_held(txn, msg.candidates)
        })
    }
}

impl Handler<DatabaseSize> for Queue {
    type Result = Result<u64, StoreError>;

    fn handle(&mut self, _: DatabaseSize, _: &mut Self::Context) -> Self::Result {
        self.store.file_bytes()
    }
}

impl Handler<ListQueue> for Queue {
    type Result = Result<Vec<QueueEntry>, StoreError>;

    fn handle(&mut self, msg: ListQueue, _: &mut Self::Context) -> Self::Result {
        self.store.read("list the queue", |txn| {
            let queue = txn.open_table(QUEUE)?;
            let mut entries = Vec::new();
            let from = msg.after.map_or(0, |seq| seq.saturating_add(1));
            for row in queue.range(from..)?.take(msg.limit.unwrap_or(usize::MAX)) {
                let (seq, bytes) = row?;
                entries.extend(decode_or_warn("queue entry", seq.value(), bytes.value()));
            }
            Ok(entries)
        })
    }
}

impl Handler<ListDeadLetters> for Queue {
    type Result = Result<Vec<DeadLetter>, StoreError>;

    fn handle(&mut self, msg: ListDeadLetters, _: &mut Self::Context) -> Self::Result {
        self.store.read("list dead letters", |txn| {
            let dead = txn.open_table(DEAD_LETTERS)?;
            let mut letters = Vec::new();
            let from = msg.after.map_or(0, |seq| seq.saturating_add(1));
            for row in dead.range(from..)?.take(msg.limit.unwrap_or(usize::MAX)) {
                let (seq, bytes) = row?;
                letters.extend(decode_or_warn("dead letter", seq.value(), bytes.value()));
            }
            Ok(letters)
        })
    }
}

impl Handler<QueueStatus> for Queue {
    type Result = Result<QueueSummary, StoreError>;

    fn handle(&mut self, _: QueueStatus, _: &mut Self::Context) -> Self::Result {
        self.commit_pending();
        read_summary(&self.store)
    }
}

/// The queue's counts and head as committed: what [`QueueStatus`] answers once the
/// enqueues waiting for their group commit are written, and what the metrics
/// collector reads at each scrape.
pub(crate) fn read_summary(store: &Store) -> Result<QueueSummary, StoreError> {
    store.read("read queue counts", |txn| {
        let queue = txn.open_table(QUEUE)?;
        let mut head = None;
        for row in queue.iter()? {
            let (seq, bytes) = row?;
            if let Some(e) = decode_or_warn::<QueueEntry>("queue entry", seq.value(), bytes.value())
            {
                head = Some(HeadSummary {
                    seq: e.seq,
                    attempts: e.attempts,
                    next_attempt: e.next_attempt,
                    last_error: e.last_error,
                    queued_at: e.queued_at,
                });
                break;
            }
        }
        Ok(QueueSummary {
            entries: queue.len()?,
            dispatches: txn
                .open_table(QUEUE_META)?
                .get(DISPATCHES)?
                .map_or(0, |v| v.value()),
            dead_letters: txn.open_table(DEAD_LETTERS)?.len()?,
            head,
        })
    })
}
