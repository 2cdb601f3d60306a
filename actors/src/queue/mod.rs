//! The Queue: the only owner of queued pushes. It enqueues, coalesces, deduplicates,
//! orders, leases, decides backoff, dead-letters and persists.
//!
//! - this file: the actor, its state and its message handlers;
//! - `tables`: its redb tables and every change to them;
//! - `policy`: the decisions as pure functions (classify, split, jittered backoff,
//!   coalescing);
//! - `resident`: decoded copies of sealed entries, so the head is leased and its
//!   report applied without decoding it again.
//!
//! # Invariants
//!
//! 1. **Nothing acknowledged is lost.** An [`Enqueue`] is answered only after the
//!    commit holding it is durable (`Durability::Immediate`). Group commit: every
//!    enqueue waiting in the mailbox when the first one arrived is committed in the
//!    same transaction, so 10,000 messages cost a handful of fsyncs, not 10,000.
//! 2. **Entries are requests.** A new dispatch joins the tail entry while that entry
//!    has the same agent and fleet node, was never leased (so never sent), and stays
//!    within `max_batch` dispatches and `max_request_bytes` of body (P11). Otherwise
//!    it starts a new entry. An entry is sealed when first leased. At start the last
//!    entry is reopened when it is not the head and was never attempted or split
//!    (`reopen_tail`, argued in design.md §4.3), so one-dispatch CLI calls share
//!    entries. So `queue` lists exactly the requests that will be sent, each with the
//!    idempotency key minted with it.
//! 3. **FIFO by `seq`, one lease at a time.** Entries are keyed by a monotonic `seq`
//!    (`queue_meta.next_seq`, never reused). Only the head is leased, and only while no
//!    other lease is out; the Pusher sends it and [`Report`]s the outcome, which is
//!    durable before the next lease. So one request is in flight, ever.
//! 4. **One copy per (id, fingerprint).** `queue_keys` maps `id \x1f fingerprint` of
//!    every scanned dispatch held in `queue` or `dead_letters` to its seq. The enqueue
//!    drops a scanned dispatch held there or covered by the ledger, read in the
//!    transaction that inserts (P8), so no overlap of scans, host pushes and
//!    deliveries can queue a delivered or refused dispatch again. Entries keep their
//!    scanned keys by position ([`crate::entry::ScannedKey`]).
//! 5. **The Queue alone decides, in one commit.** The Pusher reports a
//!    [`DeliveryOutcome`]; the Queue classifies it (`policy::classify`) and writes
//!    every consequence in one durable commit: queue rows and counters, the ledger
//!    marks of what was delivered, dead letters, the history record, `auth_failed`:
//!    - 2xx: the part is removed (the entry when it was the last part);
//!    - network, 408, 429, 5xx but 501, 3xx: `attempts += 1`,
//!      `next_attempt = now + max(jitter(backoff(attempts)), Retry-After)`;
//!    - 401/403: the same, never dropped, reported as `auth_failed`;
//!    - 413 on more than one dispatch: the part splits in two halves in place
//!      (keys `<key>.1`, `<key>.2`), so FIFO position is kept;
//!    - any other 4xx: the part moves to `dead_letters`, the drain goes on.
//!
//!    A commit that fails holds the outcome with its lease (`Held`): nothing is
//!    leased or sent until it commits (retried with backoff; a retry first checks
//!    whether the failed commit landed after all).
//! 6. **Counters are transactional.** `queue_meta.dispatches` changes in the same
//!    transaction as the rows it counts, so status never scans the queue.
//!
//! 7. **Space is given back.** When a report empties the queue and the file has grown
//!    past a floor since the last look, the Queue asks the store to compact it if free
//!    pages clearly outweigh live data (`store`, "Giving space back"). It runs after
//!    the reply to that report, between messages, so nothing is in flight and nothing
//!    is waiting to be sent; an enqueue that arrives meanwhile waits for it. A
//!    compaction that finds a transaction open (a scan's snapshot) is tried again a
//!    second later. The floor is then set to one and a half times the file's size, so
//!    a large but dense database is not measured after every delivery.
//!
//! # Crash semantics
//!
//! A lease is memory only: after a crash the leased entry is simply still queued (the
//! head, sealed) and is sent again, with the same idempotency key. Because each
//! outcome is durable before the next lease, that one request is the only one a
//! `kill -9` or a power cut can make us send twice (R1). A graceful stop lets the
//! request in flight finish and commits its outcome first, so it re-sends nothing
//! (R3); only an outcome still held when the process stops (the disk refused every
//! try until the shutdown deadline) is sent again, and that is logged at error.

mod policy;
mod resident;
mod tables;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use redb::{Durability, ReadableTable, ReadableTableMetadata};
use tokio::sync::oneshot;

pub use policy::{Jitter, PushBody, DEFAULT_MAX_REQUEST_BYTES};

use crate::dispatch::DispatchKey;
use crate::entry::{DeadLetter, QueueEntry};
use crate::error::StoreError;
use crate::messages::*;
use crate::store::schema::{DEAD_LETTERS, QUEUE, QUEUE_META};
use crate::store::{decode, decode_or_warn, Compaction, Store, COMPACT_MIN_FILE_BYTES};
use crate::time::{Clock, Timestamp};
use policy::{Caps, OpenTail, Spread};
use resident::Resident;
use tables::{OutcomeContext, QueueTables, DISPATCHES};

/// Default dispatches per entry (P11).
pub const DEFAULT_MAX_BATCH: usize = 100;

/// How long a compaction that found a transaction open waits before trying again.
const COMPACT_RETRY: Duration = Duration::from_secs(1);

/// First wait before an outcome whose commit failed is committed again; it doubles
/// up to [`HELD_RETRY_MAX`].
const HELD_RETRY_FIRST: Duration = Duration::from_millis(100);

/// Longest wait between two tries of a held outcome's commit (a full disk frees up
/// on an operator's time, not ours).
const HELD_RETRY_MAX: Duration = Duration::from_secs(10);

/// How the Queue batches, leases and spreads retries.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Most dispatches in one entry (one POST).
    pub max_batch: usize,
    /// Most bytes of request body in one entry; a single larger dispatch still gets
    /// an entry of its own.
    pub max_request_bytes: usize,
    /// A lease not reported within this time is given up (the Pusher died).
    pub lease_timeout: Duration,
    /// How retry delays are spread.
    pub jitter: Jitter,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch: DEFAULT_MAX_BATCH,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            lease_timeout: Duration::from_secs(120),
            jitter: Jitter::Random,
        }
    }
}

/// An enqueue waiting for the group commit, and where its answer goes.
type PendingEnqueue = (Enqueue, oneshot::Sender<Result<EnqueueReceipt, StoreError>>);

/// The one lease out.
#[derive(Debug)]
struct Leased {
    /// The entry as handed to the Pusher: its report is applied to this copy.
    entry: Arc<QueueEntry>,
    /// When the lease lapses (the Pusher died without reporting).
    expires: Timestamp,
}

/// An outcome the platform gave whose commit failed: held, with the lease, until it
/// commits. Meanwhile nothing is leased, so nothing is sent again.
struct Held {
    /// The report as the Pusher sent it.
    report: Report,
    /// Who waits for its decision (the Pusher's drain).
    replies: Vec<oneshot::Sender<Result<Decision, StoreError>>>,
    /// Failed commits so far (drives the wait before the next try).
    failures: u32,
}

/// Where [`Queue::head`] found the head.
enum Head {
    /// The open tail (kept decoded by the Queue).
    OpenTail,
    /// A resident copy.
    Resident(Arc<QueueEntry>),
    /// Read from its row.
    Decoded(QueueEntry),
}

/// Owns `queue`, `queue_keys`, `queue_meta` and `dead_letters`.
pub struct Queue {
    /// The shared database.
    store: Store,
    /// Caps and lease timeout.
    config: QueueConfig,
    /// Source of "now" for backoff decisions.
    clock: Clock,
    /// Jitter for retry delays.
    spread: Spread,
    /// Told when work becomes due (the Pusher).
    waker: Option<Recipient<QueueChanged>>,
    /// The leased entry and when the lease lapses.
    lease: Option<Leased>,
    /// The leased entry's outcome, known but not yet committed: the lease stays out
    /// (and never lapses) until it is.
    held: Option<Held>,
    /// The tail entry new dispatches may still join; `None` once it is leased.
    open_tail: Option<OpenTail>,
    /// Sealed entries kept decoded for their lease (bounded; see `resident`).
    resident: Resident,
    /// Enqueues received since the last group commit.
    pending: Vec<PendingEnqueue>,
    /// The file size from which an emptied queue makes the Queue look at free space.
    compact_floor: u64,
    /// A compaction check is scheduled (after a report, or a retry).
    compact_pending: bool,
    /// Newest history records kept (the History's limit).
    history_limit: usize,
}

impl Queue {
    /// A Queue over `store`.
    pub fn new(store: Store, config: QueueConfig, clock: Clock) -> Self {
        Queue {
            store,
            config: QueueConfig {
                max_batch: config.max_batch.max(1),
                max_request_bytes: config.max_request_bytes.max(1),
                ..config
            },
            clock,
            spread: Spread::new(config.jitter),
            waker: None,
            lease: None,
            held: None,
            open_tail: None,
            resident: Resident::default(),
            pending: Vec::new(),
            compact_floor: COMPACT_MIN_FILE_BYTES,
            compact_pending: false,
            history_limit: crate::history::DEFAULT_HISTORY_LIMIT,
        }
    }

    fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.do_send(QueueChanged);
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            max_batch: self.config.max_batch,
            max_request_bytes: self.config.max_request_bytes,
        }
    }

    /// Commits every pending enqueue in one durable transaction.
    fn commit_pending(&mut self) {
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

    /// Leases the head if it is due and no lease is out; a leased entry is sealed.
    fn lease_next(&mut self) -> Result<Lease, StoreError> {
        let now = self.clock.now();
        if self.held.is_some() {
            return Ok(Lease::InFlight);
        }
        if let Some(lease) = &self.lease {
            if now < lease.expires {
                return Ok(Lease::InFlight);
            }
            log::warn!("a lease on the queue head was never reported; leasing it again");
            self.lease = None;
        }
        let Some(head) = self.head_to_lease()? else {
            return Ok(Lease::Empty);
        };
        if let Some(until) = head.next_attempt.filter(|t| *t > now) {
            return Ok(Lease::Waiting { until });
        }
        self.lease = Some(Leased {
            entry: Arc::clone(&head),
            expires: now.saturating_add(self.config.lease_timeout),
        });
        Ok(Lease::Ready(head))
    }

    /// The head entry, about to be leased: the open tail or a resident copy when it is
    /// one of those (no read of its row beyond the key), else the first row that
    /// decodes; one that does not is skipped with a warning and left in place: never
    /// lost, never blocking. The head leaves the open tail (sealed) or `resident`; a
    /// head that is backing off is never either, since both hold only fresh entries.
    fn head_to_lease(&mut self) -> Result<Option<Arc<QueueEntry>>, StoreError> {
        let first = self.store.read("read the queue head", |txn| {
            let queue = txn.open_table(QUEUE)?;
            for row in queue.iter()? {
                let (seq, bytes) = row?;
                let seq = seq.value();
                if self.open_tail.as_ref().is_some_and(|t| t.entry.seq == seq) {
                    return Ok(Some(Head::OpenTail));
                }
                if let Some(entry) = self.resident.take(seq) {
                    return Ok(Some(Head::Resident(entry)));
                }
                if let Some(entry) = decode_or_warn("queue entry", seq, bytes.value()) {
                    return Ok(Some(Head::Decoded(entry)));
                }
            }
            Ok(None)
        })?;
        Ok(first.and_then(|head| match head {
            Head::OpenTail => self.open_tail.take().map(|t| Arc::new(t.entry)),
            Head::Resident(entry) => Some(entry),
            Head::Decoded(entry) => Some(Arc::new(entry)),
        }))
    }

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

    /// After a committed outcome: an emptied queue may give space back.
    fn after_outcome(&mut self, empty: bool, ctx: &mut Context<Self>) {
        if empty && !self.compact_pending {
            // After this reply and whatever is already in the mailbox.
            self.compact_pending = true;
            ctx.notify(MaybeCompact);
        }
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

    /// Keeps the newest `limit` history records when an outcome is recorded (the
    /// History's own limit: the Queue writes the record in the outcome's commit).
    pub fn with_history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit.max(1);
        self
    }

    /// Compacts the file if the queue's emptying left it sparse (invariant 7).
    fn maybe_compact(&mut self, ctx: &mut Context<Self>) {
        self.compact_pending = false;
        if !self.pending.is_empty() || self.lease.is_some() {
            return;
        }
        let Ok(bytes) = self.store.file_bytes() else {
            return;
        };
        if bytes < self.compact_floor {
            return;
        }
        let floor = |bytes: u64| COMPACT_MIN_FILE_BYTES.max(bytes.saturating_add(bytes / 2));
        match self.store.compact_if_sparse() {
            Ok(Compaction::Compacted { before, after }) => {
                log::info!(
                    "compacted the sync database after a backlog: {before} -> {after} bytes"
                );
                self.compact_floor = floor(after);
            }
            Ok(Compaction::Dense { file_bytes, .. }) => self.compact_floor = floor(file_bytes),
            Ok(Compaction::Busy) => {
                self.compact_pending = true;
                ctx.run_later(COMPACT_RETRY, |act, ctx| act.maybe_compact(ctx));
            }
            Err(e) => {
                log::warn!("{e}");
                self.compact_floor = floor(bytes);
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

/// The wait before the `failures`-th retry of a held outcome's commit.
fn held_retry_wait(failures: u32) -> Duration {
    HELD_RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(HELD_RETRY_MAX)
}

impl Queue {
    /// The tail entry as stored, reopened when it can never have been sent (invariant
    /// 2): it is not the head (only the head is ever leased, and an entry becomes the
    /// head only once everything before it is gone), it was never attempted or split,
    /// and it was queued here, not requeued or imported. Separate processes queueing
    /// one dispatch each then share entries.
    fn reopen_tail(&mut self) -> Result<(), StoreError> {
        let tail = self.store.read("read the queue tail", |txn| {
            let queue = txn.open_table(QUEUE)?;
            // The head is the first entry that decodes, as leasing finds it.
            let mut head = None;
            for row in queue.iter()? {
                let (seq, bytes) = row?;
                if decode::<QueueEntry>(bytes.value()).is_ok() {
                    head = Some(seq.value());
                    break;
                }
            }
            let Some((seq, bytes)) = queue.last()? else {
                return Ok(None);
            };
            let seq = seq.value();
            if head.is_none_or(|head| head >= seq) {
                return Ok(None);
            }
            Ok(decode_or_warn::<QueueEntry>(
                "queue entry",
                seq,
                bytes.value(),
            ))
        })?;
        self.open_tail = tail
            .filter(|e| {
                !e.sealed && e.attempts == 0 && e.parts.is_empty() && e.next_attempt.is_none()
            })
            .map(OpenTail::new);
        Ok(())
    }
}

impl Actor for Queue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A deep mailbox lets many concurrent enqueues share one group commit.
        ctx.set_mailbox_capacity(1024);
        if let Err(e) = self.reopen_tail() {
            // Only coalescing is lost: new dispatches start an entry of their own.
            log::debug!("the queue tail stays sealed: {e}");
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(held) = &self.held {
            log::error!(
                "stopped before the outcome of entry {} could be recorded (the disk \
                 refused it {} time(s)); it will be sent again after the restart",
                held.report.seq,
                held.failures
            );
        }
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

impl Handler<LeaseNext> for Queue {
    type Result = Result<Lease, StoreError>;

    fn handle(&mut self, _: LeaseNext, _: &mut Self::Context) -> Self::Result {
        // An enqueue answered but not yet committed must not be invisible to a lease.
        self.commit_pending();
        self.lease_next()
    }
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

/// Gives the lease back unsent: the Pusher was told to stop after it leased.
impl Handler<ReleaseLease> for Queue {
    type Result = ();

    fn handle(&mut self, msg: ReleaseLease, _: &mut Self::Context) {
        if self.held.is_none() && self.lease.as_ref().is_some_and(|l| l.entry.seq == msg.seq) {
            self.lease = None;
        }
    }
}

/// Internal: the queue emptied; give space back if it is worth it.
#[derive(Message)]
#[rtype(result = "()")]
struct MaybeCompact;

impl Handler<MaybeCompact> for Queue {
    type Result = ();

    fn handle(&mut self, _: MaybeCompact, ctx: &mut Self::Context) {
        self.maybe_compact(ctx);
    }
}

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

impl Handler<ImportEntries> for Queue {
    type Result = Result<usize, StoreError>;

    fn handle(&mut self, msg: ImportEntries, _: &mut Self::Context) -> Self::Result {
        let count = msg.entries.len();
        self.write_entries("import queue entries", |tables| {
            msg.entries
                .into_iter()
                .try_for_each(|entry| tables.push_entry(entry).map(drop))
        })?;
        if count > 0 {
            self.wake();
        }
        Ok(count)
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

impl Handler<SetWaker> for Queue {
    type Result = ();

    fn handle(&mut self, SetWaker(waker): SetWaker, _: &mut Self::Context) {
        self.waker = Some(waker);
    }
}
