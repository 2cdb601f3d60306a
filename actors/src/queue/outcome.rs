//! A reported outcome: classified and written with all its consequences in one
//! durable commit (invariant 5), then the lease released. A commit that fails holds
//! the outcome with its lease, so nothing is leased or sent until a retry commits it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use redb::Durability;
use tokio::sync::oneshot;

use super::tables::{OutcomeContext, QueueTables};
use super::Queue;
use crate::error::StoreError;
use crate::messages::{Decision, Report};

/// First wait before an outcome whose commit failed is committed again; it doubles
/// up to [`HELD_RETRY_MAX`].
const HELD_RETRY_FIRST: Duration = Duration::from_millis(100);

/// Longest wait between two tries of a held outcome's commit (a full disk frees up
/// on an operator's time, not ours).
const HELD_RETRY_MAX: Duration = Duration::from_secs(10);

/// An outcome the platform gave whose commit failed: held, with the lease, until it
/// commits. Meanwhile nothing is leased, so nothing is sent again.
pub(super) struct Held {
    /// The report as the Pusher sent it.
    pub(super) report: Report,
    /// Who waits for its decision (the Pusher's drain).
    pub(super) replies: Vec<oneshot::Sender<Result<Decision, StoreError>>>,
    /// Failed commits so far (drives the wait before the next try).
    pub(super) failures: u32,
}

impl Queue {
    /// Applies one outcome and all its consequences in one durable commit, then
    /// releases the lease; also says whether the queue is empty afterwards. On error
    /// the lease stays out. `recheck`: an earlier commit of this outcome failed and
    /// may have landed (see `tables::OutcomeContext`).
    fn report(&mut self, msg: &Report, recheck: bool) -> Result<(Decision, bool), StoreError> {
        let leased = self
            .lease
            .as_ref()
            .filter(|lease| lease.entry.seq == msg.seq)
            .map(|lease| Arc::clone(&lease.entry));
        let cx = OutcomeContext {
            now: self.clock.now(),
            spread: &mut self.spread,
            history_limit: self.history_limit,
            payload_size: msg.payload_size,
            recheck,
        };
        let result =
            self.store
                .write("record a delivery outcome", Durability::Immediate, |txn| {
                    let mut tables = QueueTables::open(txn)?;
                    let decision = tables.apply(msg.seq, leased.as_deref(), &msg.outcome, cx)?;
                    Ok((decision, tables.is_empty()?))
                })?;
        if leased.is_some() {
            self.lease = None;
        }
        Ok(result)
    }

    /// Tries the held outcome's commit again; on success its waiters get the decision
    /// and leasing resumes, else the next try is scheduled further out.
    fn retry_held(&mut self, ctx: &mut Context<Self>) {
        let Some(held) = self.held.take() else {
            return;
        };
        match self.report(&held.report, true) {
            Ok((decision, empty)) => {
                log::info!(
                    "recorded the outcome of entry {} after {} failed commit(s)",
                    held.report.seq,
                    held.failures
                );
                for reply in held.replies {
                    let _ = reply.send(Ok(decision.clone()));
                }
                self.after_outcome(empty, ctx);
                self.wake();
            }
            Err(e) => self.hold(held, &e, ctx),
        }
    }

    /// Keeps `held` (one more failed commit, `e`) with its lease and schedules the
    /// next try of its commit.
    fn hold(&mut self, mut held: Held, e: &StoreError, ctx: &mut Context<Self>) {
        held.failures = held.failures.saturating_add(1);
        let wait = held_retry_wait(held.failures);
        log::warn!(
            "could not record the outcome of entry {} ({e}); holding it and trying again in \
             {:.1}s: nothing is sent meanwhile",
            held.report.seq,
            wait.as_secs_f64()
        );
        self.held = Some(held);
        ctx.run_later(wait, |act, ctx| act.retry_held(ctx));
    }
}

/// The wait before the `failures`-th retry of a held outcome's commit.
fn held_retry_wait(failures: u32) -> Duration {
    HELD_RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(HELD_RETRY_MAX)
}

impl Handler<Report> for Queue {
    type Result = ResponseFuture<Result<Decision, StoreError>>;

    fn handle(&mut self, msg: Report, ctx: &mut Self::Context) -> Self::Result {
        if let Some(held) = self.held.as_mut().filter(|h| h.report.seq == msg.seq) {
            // The same outcome again (a caller that gave up waiting): wait with it.
            let (reply, answer) = oneshot::channel();
            held.replies.push(reply);
            return Box::pin(held_answer(answer));
        }
        let leased = self.lease.as_ref().is_some_and(|l| l.entry.seq == msg.seq);
        let result = match self.report(&msg, false) {
            Ok((decision, empty)) => {
                self.after_outcome(empty, ctx);
                Ok(decision)
            }
            Err(e) if leased && self.held.is_none() => {
                let (reply, answer) = oneshot::channel();
                let held = Held {
                    report: msg,
                    replies: vec![reply],
                    failures: 0,
                };
                self.hold(held, &e, ctx);
                return Box::pin(held_answer(answer));
            }
            Err(e) => Err(e),
        };
        Box::pin(async move { result })
    }
}

/// The decision of a held outcome, once committed.
async fn held_answer(
    answer: oneshot::Receiver<Result<Decision, StoreError>>,
) -> Result<Decision, StoreError> {
    answer.await.unwrap_or_else(|_| {
        Err(StoreError::unavailable(
            "record a delivery outcome",
            "the queue stopped before the outcome could be recorded",
        ))
    })
}
