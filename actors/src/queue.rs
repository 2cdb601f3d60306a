//! The Queue: the only owner of queued pushes. It enqueues, deduplicates, orders,
//! leases, decides backoff, dead-letters and persists.
//!
//! # Invariants
//!
//! 1. **Nothing acknowledged is lost.** An [`Enqueue`] is answered only after the
//!    commit holding it is durable (`Durability::Immediate`). Group commit: every
//!    enqueue waiting in the mailbox when the first one arrived is committed in the
//!    same transaction, so 10,000 messages cost a handful of fsyncs, not 10,000.
//! 2. **FIFO by `seq`.** Entries are keyed by a monotonic `seq` (`queue_meta.next_seq`,
//!    never reused). Only a window starting at the head is leased, one window at a
//!    time; the Pusher sends it in order and reports it in one [`ReportWindow`].
//! 3. **One copy per (id, fingerprint).** `queue_keys` maps `id \x1f fingerprint` of
//!    every scanned dispatch held in `queue` or `dead_letters` to its seq, so scanning
//!    while the platform is down never queues the same dispatch twice (P8), and a
//!    dead-lettered dispatch is not re-queued by the next scan.
//! 4. **The Queue alone decides.** The Pusher reports a [`DeliveryOutcome`]; the
//!    Queue classifies it (DESIGN 5) and persists the consequence in one commit:
//!    - 2xx: the part is removed (the entry when it was the last part);
//!    - network, 408, 429, 5xx but 501, 3xx: `attempts += 1`,
//!      `next_attempt = now + max(backoff, Retry-After)`; the drain stops;
//!    - 401/403: the same, never dropped, reported as `auth_failed`;
//!    - 413 on more than one dispatch: the part splits in two halves in place
//!      (keys `<key>.1`, `<key>.2`), so FIFO position is kept;
//!    - any other 4xx: the part moves to `dead_letters`, the drain goes on.
//! 5. **Counters are transactional.** `queue_meta.dispatches` changes in the same
//!    transaction as the rows it counts, so status never scans the queue.
//!
//! # Crash semantics
//!
//! A lease is memory only: after a crash the leased window is simply still queued and
//! is sent again, with the same idempotency keys. That is the only source of duplicates
//! (R1): at most `lease_window` entries, or what the Pusher delivered in its window
//! time budget, whichever is less. `lease_window = 1` re-sends only the entry in flight.

use std::time::Duration;

use actix::prelude::*;
use redb::{
    Durability, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;

use crate::backoff;
use crate::error::StoreError;
use crate::messages::*;
use crate::model::{dispatch_id, DeadLetter, Dispatch, EntryPart, QueueEntry};
use crate::store::{decode, encode, Store};
use crate::time::{Clock, Timestamp};

/// `seq` -> JSON [`QueueEntry`].
pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// `seq` -> JSON [`DeadLetter`].
pub(crate) const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// `id \x1f fingerprint` -> seq of the entry or dead letter holding it.
pub(crate) const QUEUE_KEYS: TableDefinition<&str, u64> = TableDefinition::new("queue_keys");
/// Counters: `next_seq`, `dispatches`.
pub(crate) const QUEUE_META: TableDefinition<&str, u64> = TableDefinition::new("queue_meta");

const NEXT_SEQ: &str = "next_seq";
const DISPATCHES: &str = "dispatches";

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(QUEUE)?;
    txn.open_table(DEAD_LETTERS)?;
    txn.open_table(QUEUE_KEYS)?;
    txn.open_table(QUEUE_META)?;
    Ok(())
}

/// Default dispatches per entry (P11).
pub const DEFAULT_MAX_BATCH: usize = 100;

/// How the Queue batches and leases.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Most dispatches in one entry (one POST).
    pub max_batch: usize,
    /// A lease not reported within this time is given up (the Pusher died).
    pub lease_timeout: Duration,
    /// Most entries the Pusher leases, sends in order and reports with one durable
    /// commit: bounds both the fsyncs per delivery and the duplicates after a crash.
    pub lease_window: usize,
}

/// Default entries per leased window.
pub const DEFAULT_LEASE_WINDOW: usize = 32;

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch: DEFAULT_MAX_BATCH,
            lease_timeout: Duration::from_secs(120),
            lease_window: DEFAULT_LEASE_WINDOW,
        }
    }
}

/// An enqueue waiting for the group commit, and where its answer goes.
type PendingEnqueue = (Enqueue, oneshot::Sender<Result<EnqueueReceipt, StoreError>>);

/// Owns `queue`, `queue_keys`, `queue_meta` and `dead_letters`.
pub struct Queue {
    /// The shared database.
    store: Store,
    /// Batch size and lease timeout.
    config: QueueConfig,
    /// Source of "now" for backoff decisions.
    clock: Clock,
    /// Told when work becomes due (the Pusher).
    waker: Option<Recipient<QueueChanged>>,
    /// The leased window (seqs) and when the lease lapses.
    lease: Option<(Vec<u64>, Timestamp)>,
    /// Enqueues received since the last group commit.
    pending: Vec<PendingEnqueue>,
}

impl Queue {
    /// A Queue over `store`.
    pub fn new(store: Store, config: QueueConfig, clock: Clock) -> Self {
        Queue {
            store,
            config: QueueConfig {
                max_batch: config.max_batch.max(1),
                lease_window: config.lease_window.max(1),
                ..config
            },
            clock,
            waker: None,
            lease: None,
            pending: Vec::new(),
        }
    }

    fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.do_send(QueueChanged);
        }
    }

    /// Commits every pending enqueue in one durable transaction.
    fn commit_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let now = self.clock.now();
        let max_batch = self.config.max_batch;
        let result = self
            .store
            .write("enqueue dispatches", Durability::Immediate, |txn| {
                let mut tables = QueueTables::open(txn)?;
                pending
                    .iter()
                    .map(|(msg, _)| tables.enqueue(msg, max_batch, now))
                    .collect::<Result<Vec<_>, _>>()
            });
        let created = match result {
            Ok(receipts) => {
                let created = receipts.iter().any(|r| r.entries > 0);
                for ((_, reply), receipt) in pending.into_iter().zip(receipts) {
                    let _ = reply.send(Ok(receipt));
                }
                created
            }
            Err(e) => {
                // Every caller gets the error and reports it; logging it too would put
                // a second copy first on a CLI's stderr.
                log::debug!("group commit failed: {e}");
                for (_, reply) in pending {
                    let _ = reply.send(Err(e.clone()));
                }
                false
            }
        };
        if created {
            self.wake();
        }
    }

    fn lease_window(&mut self, max: usize) -> Result<LeasedWindow, StoreError> {
        let now = self.clock.now();
        if let Some((_, expires)) = &self.lease {
            if now < *expires {
                return Ok(LeasedWindow::InFlight);
            }
            log::warn!("a lease on the queue head was never reported; leasing it again");
            self.lease = None;
        }
        let window = self.due_from_head(max.max(1), now)?;
        let Some(head) = window.first() else {
            return Ok(LeasedWindow::Empty);
        };
        if let Some(until) = head.next_attempt.filter(|t| *t > now) {
            return Ok(LeasedWindow::Waiting { until });
        }
        let seqs = window.iter().map(|e| e.seq).collect();
        self.lease = Some((seqs, now.saturating_add(self.config.lease_timeout)));
        Ok(LeasedWindow::Ready(window))
    }

    /// Up to `max` entries from the head, stopping before the first one after the head
    /// that is not due. An entry that does not decode is skipped with a warning and left
    /// in place: never lost, never blocking.
    fn due_from_head(&self, max: usize, now: Timestamp) -> Result<Vec<QueueEntry>, StoreError> {
        self.store.read("read the queue head", |txn| {
            let queue = txn.open_table(QUEUE)?;
            let mut window: Vec<QueueEntry> = Vec::new();
            for row in queue.iter()? {
                let (seq, bytes) = row?;
                let entry = match decode::<QueueEntry>(bytes.value()) {
                    Ok(entry) => entry,
                    Err(e) => {
                        log::warn!("queue entry {} does not decode ({e}); skipped", seq.value());
                        continue;
                    }
                };
                let due = entry.next_attempt.is_none_or(|t| t <= now);
                if !window.is_empty() && !due {
                    break;
                }
                window.push(entry);
                if window.len() >= max || !due {
                    break;
                }
            }
            Ok(window)
        })
    }

    /// The first entry that decodes.
    fn head(&self) -> Result<Option<QueueEntry>, StoreError> {
        Ok(self
            .due_from_head(1, Timestamp::from_unix_millis(i64::MAX))?
            .pop())
    }

    /// Applies one outcome; the rest of a leased window stays leased.
    fn report(&mut self, seq: u64, outcome: DeliveryOutcome) -> Result<Decision, StoreError> {
        if let Some((seqs, _)) = &mut self.lease {
            seqs.retain(|leased| *leased != seq);
            if seqs.is_empty() {
                self.lease = None;
            }
        }
        let now = self.clock.now();
        self.store
            .write("record a delivery outcome", Durability::Immediate, |txn| {
                QueueTables::open(txn)?.apply(seq, &outcome, now)
            })
    }

    /// Applies outcomes in order, in one durable commit, and releases the lease.
    fn report_window(
        &mut self,
        outcomes: &[(u64, DeliveryOutcome)],
    ) -> Result<Vec<Decision>, StoreError> {
        self.lease = None;
        let now = self.clock.now();
        self.store
            .write("record delivery outcomes", Durability::Immediate, |txn| {
                let mut tables = QueueTables::open(txn)?;
                outcomes
                    .iter()
                    .map(|(seq, outcome)| tables.apply(*seq, outcome, now))
                    .collect()
            })
    }
}

/// How the Queue reads a delivery outcome (DESIGN section 5).
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Delivered,
    Transient { unauthorized: bool },
    TooLarge,
    Rejected { status: u16 },
}

fn classify(outcome: &DeliveryOutcome, part_len: usize) -> Class {
    match *outcome {
        DeliveryOutcome::Delivered { .. } => Class::Delivered,
        DeliveryOutcome::Network { .. } => Class::Transient {
            unauthorized: false,
        },
        DeliveryOutcome::Status { status, .. } => match status {
            401 | 403 => Class::Transient { unauthorized: true },
            413 if part_len > 1 => Class::TooLarge,
            408 | 429 => Class::Transient {
                unauthorized: false,
            },
            501 => Class::Rejected { status },
            400..=599 if status < 500 => Class::Rejected { status },
            // 5xx but 501; and 1xx/3xx, which a well-behaved platform never sends here:
            // keep the entry rather than lose it.
            _ => Class::Transient {
                unauthorized: false,
            },
        },
    }
}

/// Replaces the next part with its two halves, first half `ceil(n/2)`.
fn split_next_part(entry: &mut QueueEntry) {
    let len = entry.next_part_len();
    let suffix = entry
        .parts
        .first()
        .map(|p| p.key_suffix.clone())
        .unwrap_or_default();
    let first = len.div_ceil(2);
    let halves = [
        EntryPart {
            len: first,
            key_suffix: format!("{suffix}.1"),
        },
        EntryPart {
            len: len - first,
            key_suffix: format!("{suffix}.2"),
        },
    ];
    if entry.parts.is_empty() {
        entry.parts = halves.to_vec();
    } else {
        entry.parts.splice(0..1, halves);
    }
}

/// The Queue's tables open in one write transaction.
struct QueueTables<'txn> {
    queue: Table<'txn, u64, &'static [u8]>,
    dead: Table<'txn, u64, &'static [u8]>,
    keys: Table<'txn, &'static str, u64>,
    meta: Table<'txn, &'static str, u64>,
}

impl<'txn> QueueTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(QueueTables {
            queue: txn.open_table(QUEUE)?,
            dead: txn.open_table(DEAD_LETTERS)?,
            keys: txn.open_table(QUEUE_KEYS)?,
            meta: txn.open_table(QUEUE_META)?,
        })
    }

    /// What the Queue decides for one outcome (DESIGN section 5), written in this
    /// transaction.
    fn apply(
        &mut self,
        seq: u64,
        outcome: &DeliveryOutcome,
        now: Timestamp,
    ) -> Result<Decision, redb::Error> {
        let Some(mut entry) = self.entry(seq)? else {
            return Err(redb::Error::Corrupted(format!(
                "entry {seq} is no longer queued"
            )));
        };
        Ok(match classify(outcome, entry.next_part_len()) {
            Class::Delivered => self.deliver_part(&mut entry)?,
            Class::Transient { unauthorized } => {
                let (retry_after, detail) = match outcome {
                    DeliveryOutcome::Status {
                        retry_after,
                        detail,
                        ..
                    } => (*retry_after, detail.clone()),
                    DeliveryOutcome::Network { detail } => (None, detail.clone()),
                    DeliveryOutcome::Delivered { .. } => (None, String::new()),
                };
                entry.attempts = entry.attempts.saturating_add(1);
                let at = backoff::next_attempt(entry.attempts, retry_after, now);
                entry.next_attempt = Some(at);
                entry.last_error = Some(detail);
                self.put_entry(&entry)?;
                Decision::RetryAt { at, unauthorized }
            }
            Class::TooLarge => {
                split_next_part(&mut entry);
                self.put_entry(&entry)?;
                Decision::Split
            }
            Class::Rejected { status } => {
                let detail = match outcome {
                    DeliveryOutcome::Status { detail, .. } => detail.clone(),
                    _ => format!("HTTP {status}"),
                };
                self.dead_letter_part(&mut entry, status, detail, now)?
            }
        })
    }

    fn counter(&self, name: &str) -> Result<u64, redb::Error> {
        Ok(self.meta.get(name)?.map_or(0, |v| v.value()))
    }

    fn add_dispatches(&mut self, added: u64, removed: u64) -> Result<(), redb::Error> {
        let count = self
            .counter(DISPATCHES)?
            .saturating_add(added)
            .saturating_sub(removed);
        self.meta.insert(DISPATCHES, count)?;
        Ok(())
    }

    fn next_seq(&mut self) -> Result<u64, redb::Error> {
        let seq = self.counter(NEXT_SEQ)?.max(1);
        self.meta.insert(NEXT_SEQ, seq + 1)?;
        Ok(seq)
    }

    fn entry(&self, seq: u64) -> Result<Option<QueueEntry>, redb::Error> {
        match self.queue.get(seq)? {
            Some(bytes) => decode(bytes.value())
                .map(Some)
                .map_err(|e| redb::Error::Corrupted(format!("queue entry {seq}: {e}"))),
            None => Ok(None),
        }
    }

    fn put_entry(&mut self, entry: &QueueEntry) -> Result<(), redb::Error> {
        self.queue.insert(entry.seq, encode(entry).as_slice())?;
        Ok(())
    }

    /// Inserts a new entry at the tail; its keys point at it.
    fn push_entry(&mut self, mut entry: QueueEntry) -> Result<u64, redb::Error> {
        entry.seq = self.next_seq()?;
        if entry.idempotency_key.is_empty() {
            entry.idempotency_key = idempotency_key(&entry);
        }
        for (id, fingerprint) in &entry.fingerprints {
            self.keys
                .insert(dedup_key(id, fingerprint).as_str(), entry.seq)?;
        }
        self.add_dispatches(entry.dispatches.len() as u64, 0)?;
        self.put_entry(&entry)?;
        Ok(entry.seq)
    }

    fn enqueue(
        &mut self,
        msg: &Enqueue,
        max_batch: usize,
        now: Timestamp,
    ) -> Result<EnqueueReceipt, redb::Error> {
        let mut receipt = EnqueueReceipt::default();
        let new_entry = |dispatches: Vec<Dispatch>, fingerprints| QueueEntry {
            seq: 0,
            agent_id: msg.agent_id.clone(),
            fleet_node_id: msg.fleet_node_id,
            dispatches,
            fingerprints,
            queued_at: now,
            attempts: 0,
            next_attempt: None,
            last_error: None,
            idempotency_key: String::new(),
            parts: Vec::new(),
        };
        match &msg.batch {
            EnqueueBatch::Host(dispatches) => {
                for chunk in dispatches.chunks(max_batch) {
                    receipt.entries += 1;
                    receipt.dispatches += chunk.len();
                    self.push_entry(new_entry(chunk.to_vec(), Default::default()))?;
                }
            }
            EnqueueBatch::Scanned(scanned) => {
                let mut fresh = Vec::with_capacity(scanned.len());
                for dispatch in scanned {
                    let key = dedup_key(&dispatch.id, &dispatch.fingerprint);
                    if self.keys.get(key.as_str())?.is_some() {
                        receipt.duplicates += 1;
                    } else {
                        // Reserve the key now so a duplicate later in this batch is
                        // caught; `push_entry` points it at the real seq.
                        self.keys.insert(key.as_str(), 0)?;
                        fresh.push(dispatch);
                    }
                }
                for chunk in fresh.chunks(max_batch) {
                    let fingerprints = chunk
                        .iter()
                        .map(|d| (d.id.clone(), d.fingerprint.clone()))
                        .collect();
                    let dispatches = chunk.iter().map(|d| d.record.clone()).collect();
                    receipt.entries += 1;
                    receipt.dispatches += chunk.len();
                    self.push_entry(new_entry(dispatches, fingerprints))?;
                }
            }
        }
        Ok(receipt)
    }

    /// Removes the delivered part; removes the entry when it was the last one.
    fn deliver_part(&mut self, entry: &mut QueueEntry) -> Result<Decision, redb::Error> {
        let delivered = self.take_part(entry, true)?;
        if entry.dispatches.is_empty() {
            self.queue.remove(entry.seq)?;
        } else {
            entry.attempts = 0;
            entry.next_attempt = None;
            entry.last_error = None;
            self.put_entry(entry)?;
        }
        Ok(Decision::Delivered {
            dispatches: delivered.dispatches.len(),
        })
    }

    /// Moves the refused part to `dead_letters` (the whole entry, keeping its seq, when
    /// it is the only part; otherwise the part under a fresh seq).
    fn dead_letter_part(
        &mut self,
        entry: &mut QueueEntry,
        status: u16,
        reason: String,
        now: Timestamp,
    ) -> Result<Decision, redb::Error> {
        let whole = entry.next_part_len() == entry.dispatches.len();
        let mut dead = self.take_part(entry, false)?;
        if whole {
            self.queue.remove(entry.seq)?;
            dead.seq = entry.seq;
        } else {
            dead.seq = self.next_seq()?;
            self.put_entry(entry)?;
        }
        for (id, fingerprint) in &dead.fingerprints {
            self.keys
                .insert(dedup_key(id, fingerprint).as_str(), dead.seq)?;
        }
        let dispatches = dead.dispatches.len();
        let letter = DeadLetter {
            entry: dead,
            status,
            reason,
            dead_at: now,
        };
        self.dead
            .insert(letter.entry.seq, encode(&letter).as_slice())?;
        Ok(Decision::DeadLettered { dispatches, status })
    }

    /// Splits the next part off `entry` as an entry of its own (same agent, its own
    /// key); `forget_keys` drops its dedup keys (delivered) instead of keeping them.
    fn take_part(
        &mut self,
        entry: &mut QueueEntry,
        forget_keys: bool,
    ) -> Result<QueueEntry, redb::Error> {
        let len = entry.next_part_len();
        let key = entry.next_part_key();
        let dispatches: Vec<Dispatch> = entry.dispatches.drain(..len).collect();
        let mut fingerprints = std::collections::BTreeMap::new();
        for id in dispatches.iter().filter_map(dispatch_id) {
            if let Some(fingerprint) = entry.fingerprints.remove(id) {
                if forget_keys {
                    self.keys.remove(dedup_key(id, &fingerprint).as_str())?;
                }
                fingerprints.insert(id.to_string(), fingerprint);
            }
        }
        if !entry.parts.is_empty() {
            entry.parts.remove(0);
        }
        self.add_dispatches(0, dispatches.len() as u64)?;
        Ok(QueueEntry {
            dispatches,
            fingerprints,
            idempotency_key: key,
            parts: Vec::new(),
            ..entry.clone()
        })
    }

    fn requeue(&mut self, seqs: Option<Vec<u64>>) -> Result<RequeueReport, redb::Error> {
        let mut report = RequeueReport::default();
        let selected: Vec<u64> = match seqs {
            Some(seqs) => seqs,
            None => self
                .dead
                .iter()?
                .map(|row| row.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?,
        };
        for seq in selected {
            let Some(bytes) = self.dead.remove(seq)?.map(|v| v.value().to_vec()) else {
                report.missing.push(seq);
                continue;
            };
            let letter: DeadLetter = decode(&bytes)
                .map_err(|e| redb::Error::Corrupted(format!("dead letter {seq}: {e}")))?;
            // A fresh key: a platform that cached its refusal per key would otherwise
            // answer the operator's retry with the same 4xx.
            let entry = QueueEntry {
                attempts: 0,
                next_attempt: None,
                last_error: None,
                parts: Vec::new(),
                idempotency_key: String::new(),
                ..letter.entry
            };
            let new_seq = self.push_entry(entry)?;
            report.requeued.push((seq, new_seq));
        }
        Ok(report)
    }
}

fn dedup_key(id: &str, fingerprint: &str) -> String {
    format!("{id}\u{1f}{fingerprint}")
}

/// Unique across databases (time, process, agent, a per-process counter) and stable
/// for the entry's life.
fn idempotency_key(entry: &QueueEntry) -> String {
    static MINTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let minted = MINTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // FNV-1a: tiny, deterministic, good enough to spread agent ids.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let salt = std::process::id()
        .to_le_bytes()
        .into_iter()
        .chain(minted.to_le_bytes());
    for byte in entry.agent_id.bytes().chain(salt) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "as1-{:x}-{hash:016x}-{}",
        entry.queued_at.unix_millis(),
        entry.seq
    )
}

impl Actor for Queue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A deep mailbox lets many concurrent enqueues share one group commit.
        ctx.set_mailbox_capacity(1024);
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
                Err(StoreError::new(
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
        Ok(match self.lease_window(1)? {
            LeasedWindow::Ready(mut entries) => match entries.pop() {
                Some(entry) => Lease::Ready(entry),
                None => Lease::Empty,
            },
            LeasedWindow::Waiting { until } => Lease::Waiting { until },
            LeasedWindow::InFlight => Lease::InFlight,
            LeasedWindow::Empty => Lease::Empty,
        })
    }
}

impl Handler<LeaseWindow> for Queue {
    type Result = Result<LeasedWindow, StoreError>;

    fn handle(&mut self, msg: LeaseWindow, _: &mut Self::Context) -> Self::Result {
        self.commit_pending();
        self.lease_window(msg.max)
    }
}

impl Handler<ReportWindow> for Queue {
    type Result = Result<Vec<Decision>, StoreError>;

    fn handle(&mut self, msg: ReportWindow, _: &mut Self::Context) -> Self::Result {
        self.report_window(&msg.outcomes)
    }
}

impl Handler<Report> for Queue {
    type Result = Result<Decision, StoreError>;

    fn handle(&mut self, msg: Report, _: &mut Self::Context) -> Self::Result {
        self.report(msg.seq, msg.outcome)
    }
}

impl Handler<ListQueue> for Queue {
    type Result = Result<Vec<QueueEntry>, StoreError>;

    fn handle(&mut self, msg: ListQueue, _: &mut Self::Context) -> Self::Result {
        self.store.read("list the queue", |txn| {
            let queue = txn.open_table(QUEUE)?;
            let mut entries = Vec::new();
            for row in queue.iter()?.take(msg.limit.unwrap_or(usize::MAX)) {
                let (seq, bytes) = row?;
                match decode(bytes.value()) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => {
                        log::warn!("queue entry {} does not decode ({e}); skipped", seq.value())
                    }
                }
            }
            Ok(entries)
        })
    }
}

impl Handler<ListDeadLetters> for Queue {
    type Result = Result<Vec<DeadLetter>, StoreError>;

    fn handle(&mut self, _: ListDeadLetters, _: &mut Self::Context) -> Self::Result {
        self.store.read("list dead letters", |txn| {
            let dead = txn.open_table(DEAD_LETTERS)?;
            let mut letters = Vec::new();
            for row in dead.iter()? {
                let (seq, bytes) = row?;
                match decode(bytes.value()) {
                    Ok(letter) => letters.push(letter),
                    Err(e) => {
                        log::warn!("dead letter {} does not decode ({e}); skipped", seq.value())
                    }
                }
            }
            Ok(letters)
        })
    }
}

impl Handler<Requeue> for Queue {
    type Result = Result<RequeueReport, StoreError>;

    fn handle(&mut self, msg: Requeue, _: &mut Self::Context) -> Self::Result {
        let report = self
            .store
            .write("requeue dead letters", Durability::Immediate, |txn| {
                QueueTables::open(txn)?.requeue(msg.seqs)
            })?;
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
        self.store
            .write("import queue entries", Durability::Immediate, |txn| {
                let mut tables = QueueTables::open(txn)?;
                for entry in msg.entries {
                    tables.push_entry(QueueEntry {
                        idempotency_key: String::new(),
                        ..entry
                    })?;
                }
                Ok(())
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
        let head = self.head()?.map(|e| HeadSummary {
            seq: e.seq,
            attempts: e.attempts,
            next_attempt: e.next_attempt,
            last_error: e.last_error,
            queued_at: e.queued_at,
        });
        self.store.read("read queue counts", |txn| {
            Ok(QueueSummary {
                entries: txn.open_table(QUEUE)?.len()?,
                dispatches: txn
                    .open_table(QUEUE_META)?
                    .get(DISPATCHES)?
                    .map_or(0, |v| v.value()),
                dead_letters: txn.open_table(DEAD_LETTERS)?.len()?,
                head,
            })
        })
    }
}

impl Handler<SetWaker> for Queue {
    type Result = ();

    fn handle(&mut self, SetWaker(waker): SetWaker, _: &mut Self::Context) {
        self.waker = Some(waker);
    }
}
