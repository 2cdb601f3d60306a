//! Enqueues: gathered while the mailbox holds more, then committed together in one
//! durable transaction (invariant 1), each caller answered after it; and the
//! requeue of dead letters, written after the open tail is sealed.

use actix::prelude::*;
use redb::Durability;
use tokio::sync::oneshot;

use super::tables::QueueTables;
use super::Queue;
use crate::error::StoreError;
use crate::messages::{Enqueue, EnqueueReceipt, Requeue, RequeueReport};

/// An enqueue waiting for the group commit, and where its answer goes.
pub(super) type PendingEnqueue = (Enqueue, oneshot::Sender<Result<EnqueueReceipt, StoreError>>);

impl Queue {
    /// Commits every pending enqueue in one durable transaction.
    pub(super) fn commit_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let now = self.clock.now();
        let caps = self.caps();
        // Work on a copy of the open tail: a failed commit leaves the stored one as it
        // was, so the copy is dropped with it.
        let mut tail = self.open_tail.take();
        let mut sealed = Vec::new();
        let (messages, replies): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let result = self
            .store
            .write("enqueue dispatches", Durability::Immediate, |txn| {
                QueueTables::open(txn)?.enqueue_group(
                    messages.into_iter(),
                    &mut tail,
                    &mut sealed,
                    caps,
                    now,
                )
            });
        match result {
            Ok(receipts) => {
                self.open_tail = tail;
                for open in sealed {
                    self.resident.keep(open.entry, open.body_bytes);
                }
                let queued = receipts.iter().any(|r| r.dispatches > 0);
                for (reply, receipt) in replies.into_iter().zip(receipts) {
                    let _ = reply.send(Ok(receipt));
                }
                if queued {
                    self.wake();
                }
            }
            Err(e) => {
                // Every caller gets the error and reports it; logging it too would put
                // a second copy first on a CLI's stderr.
                log::debug!("group commit failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Runs `body` on the tables in a durable commit; the open tail is sealed first,
    /// since `body` adds entries after it.
    fn write_entries<T>(
        &mut self,
        operation: &'static str,
        body: impl FnOnce(&mut QueueTables) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        self.commit_pending();
        if let Some(open) = self.open_tail.take() {
            self.resident.keep(open.entry, open.body_bytes);
        }
        self.store.write(operation, Durability::Immediate, |txn| {
            body(&mut QueueTables::open(txn)?)
        })
    }
}

impl Handler<Enqueue> for Queue {
    type Result = ResponseFuture<Result<EnqueueReceipt, StoreError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        if self.pending.is_empty() {
            // Runs after the mailbox is drained: one commit for everything waiting.
            ctx.notify(CommitPending);
        }
        self.pending.push((msg, reply));
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(StoreError::unavailable(
                    "enqueue dispatches",
                    "the queue stopped before committing",
                ))
            })
        })
    }
}

/// Internal: commit the enqueues gathered so far.
#[derive(Message)]
#[rtype(result = "()")]
struct CommitPending;

impl Handler<CommitPending> for Queue {
    type Result = ();

    fn handle(&mut self, _: CommitPending, _: &mut Self::Context) {
        self.commit_pending();
    }
}

impl Handler<Requeue> for Queue {
    type Result = Result<RequeueReport, StoreError>;

    fn handle(&mut self, msg: Requeue, _: &mut Self::Context) -> Self::Result {
        let report = self.write_entries("requeue dead letters", |t| t.requeue(msg.seqs))?;
        if !report.requeued.is_empty() {
            self.wake();
        }
        Ok(report)
    }
}
