//! The Queue: the only owner of queued pushes. It enqueues, coalesces, deduplicates,
//! orders, leases, decides backoff, dead-letters and persists.
//!
//! - this file: the actor, its state, its start (the tail reopened) and stop;
//! - `enqueue`: the group commit of enqueues (invariant 1), and requeues;
//! - `lease`: leasing the head, one lease at a time (invariant 3);
//! - `outcome`: a report committed with its consequences, or held and retried until
//!   it commits (invariant 5);
//! - `compact`: giving space back when the queue empties (invariant 7);
//! - `reads`: listings and counts, as committed;
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
//!
//! [`Enqueue`]: crate::messages::Enqueue
//! [`Report`]: crate::messages::Report
//! [`DeliveryOutcome`]: crate::messages::DeliveryOutcome

mod compact;
mod enqueue;
mod lease;
mod outcome;
mod policy;
pub(crate) mod reads;
mod resident;
pub(crate) mod tables;
pub use tables::ImportedEntries;

use std::time::Duration;

use actix::prelude::*;
use redb::ReadableTable;

pub use policy::{Jitter, PushBody, DEFAULT_MAX_REQUEST_BYTES};

use crate::entry::QueueEntry;
use crate::error::StoreError;
use crate::messages::{QueueChanged, SetWaker};
use crate::store::codec::{decode, decode_or_warn};
use crate::store::schema::QUEUE;
use crate::store::{Store, COMPACT_MIN_FILE_BYTES};
use crate::time::Clock;
use enqueue::PendingEnqueue;
use lease::Leased;
use outcome::Held;
use policy::{Caps, OpenTail, Spread};
use resident::Resident;

/// Default dispatches per entry (P11).
pub const DEFAULT_MAX_BATCH: usize = 100;

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

    /// Keeps the newest `limit` history records when an outcome is recorded (the
    /// History's own limit: the Queue writes the record in the outcome's commit).
    pub fn with_history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit.max(1);
        self
    }
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

impl Handler<SetWaker> for Queue {
    type Result = ();

    fn handle(&mut self, SetWaker(waker): SetWaker, _: &mut Self::Context) {
        self.waker = Some(waker);
    }
}
