//! The Queue's redb tables and every change to them, each made inside the caller's
//! write transaction (the Queue commits). A delivery outcome's consequences in the
//! Ledger's and History's tables are written here too, through their table
//! functions, so one outcome is one commit.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::policy::{self, Caps, Class, OpenTail, Spread};
use crate::dispatch::{Dispatch, DispatchKey};
use crate::entry::{DeadLetter, QueueEntry, ScannedKey};
use crate::history;
use crate::ledger;
use crate::messages::{
    Decision, DeliveryOutcome, Enqueue, EnqueueBatch, EnqueueReceipt, RequeueReport,
};
use crate::store::codec::{decode, encode};
use crate::store::schema::{DEAD_LETTERS, LEDGER, QUEUE, QUEUE_KEYS, QUEUE_META};
use crate::sync_record::{Direction, SyncRecord};
use crate::time::Timestamp;

/// Next seq to hand out; seqs are never reused.
const NEXT_SEQ: &str = "next_seq";
/// Dispatches held in `queue`, kept in step with the rows so status never scans.
pub(crate) const DISPATCHES: &str = "dispatches";

/// The candidates whose (id, fingerprint) no entry or dead letter holds, in order.
pub(super) fn not_held(
    txn: &ReadTransaction,
    candidates: Vec<DispatchKey>,
) -> Result<Vec<DispatchKey>, redb::Error> {
    let keys = txn.open_table(QUEUE_KEYS)?;
    let mut fresh = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        if keys
            .get(dedup_key(&candidate.id, &candidate.fingerprint).as_str())?
            .is_none()
        {
            fresh.push(candidate);
        }
    }
    Ok(fresh)
}

/// What an import queued: entries and dispatches added, and dispatches left out
/// because the same version is already queued, refused, or delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportedEntries {
    /// Entries added at the tail.
    pub entries: usize,
    /// Dispatches in those entries.
    pub dispatches: usize,
    /// Scanned dispatches dropped: their (id, fingerprint) was in `queue_keys` or
    /// covered by the ledger (read in this transaction, after any ledger marks the
    /// import made), so queueing them would send them twice.
    pub already_held: usize,
}

/// Queues `entries` at the tail inside `txn`, each as [`QueueTables::push_entry`]
/// inserts it (an import: see the `import` module), minus the scanned dispatches
/// whose version is already queued, refused or delivered, exactly as an enqueue
/// drops them; an entry left with nothing is not queued.
pub(crate) fn import_in(
    txn: &WriteTransaction,
    entries: Vec<QueueEntry>,
) -> Result<ImportedEntries, redb::Error> {
    let mut tables = QueueTables::open(txn)?;
    let mut imported = ImportedEntries::default();
    for mut entry in entries {
        // Positions only mean something in an entry that was never split.
        if entry.parts.is_empty() {
            let mut held = Vec::new();
            for key in &entry.fingerprints {
                if tables.holds(&key.id, &key.fingerprint)? {
                    held.push(key.index);
                }
            }
            imported.already_held += held.len();
            entry.remove_positions(&held);
        }
        if entry.dispatches.is_empty() {
            continue;
        }
        imported.entries += 1;
        imported.dispatches += entry.dispatches.len();
        tables.push_entry(entry)?;
    }
    Ok(imported)
}

/// The Queue's tables open in one write transaction.
pub(super) struct QueueTables<'txn> {
    /// The transaction, for the History's tables (opened only when a record is made).
    txn: &'txn WriteTransaction,
    /// Queued entries by seq.
    queue: Table<'txn, u64, &'static [u8]>,
    /// Refused entries by seq.
    dead: Table<'txn, u64, &'static [u8]>,
    /// The (id, fingerprint) dedup index.
    keys: Table<'txn, &'static str, u64>,
    /// Counters.
    meta: Table<'txn, &'static str, u64>,
    /// The Ledger's table: read by enqueue's dedup, marked by a delivery.
    ledger: Table<'txn, &'static str, &'static str>,
}

/// What one outcome's commit needs besides the entry: when, how retries spread, and
/// the History's size.
pub(super) struct OutcomeContext<'a> {
    /// Now, for backoff and the history record.
    pub now: Timestamp,
    /// Jitter for the retry delay.
    pub spread: &'a mut Spread,
    /// Newest history records kept.
    pub history_limit: usize,
    /// Bytes of the request body, for the history record.
    pub payload_size: u64,
    /// The commit of this outcome failed before and may have landed anyway: check the
    /// stored entry and write nothing when it already shows the outcome.
    pub recheck: bool,
}

impl<'txn> QueueTables<'txn> {
    /// Whether `id` at `fingerprint` must not be queued again: it is queued or
    /// dead-lettered (`queue_keys`), or the ledger holds it or a newer version. Read
    /// in the caller's write transaction, so it sees every commit before it (§4.5).
    fn holds(&self, id: &str, fingerprint: &str) -> Result<bool, redb::Error> {
        Ok(self
            .keys
            .get(dedup_key(id, fingerprint).as_str())?
            .is_some()
            || ledger::covers(&self.ledger, id, fingerprint)?)
    }

    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(QueueTables {
            txn,
            ledger: txn.open_table(LEDGER)?,
            queue: txn.open_table(QUEUE)?,
            dead: txn.open_table(DEAD_LETTERS)?,
            keys: txn.open_table(QUEUE_KEYS)?,
            meta: txn.open_table(QUEUE_META)?,
        })
    }

    /// Queues one group commit's enqueues in order, moving their dispatches in. A
    /// dispatch joins the open `tail` when the policy admits it, else starts a new
    /// entry that becomes the tail; a tail so replaced is pushed to `sealed`. The tail
    /// is written once, at the end. On error the caller discards `tail` and `sealed`
    /// (the transaction is not committed).
    pub(super) fn enqueue_group(
        &mut self,
        messages: impl Iterator<Item = Enqueue>,
        tail: &mut Option<OpenTail>,
        sealed: &mut Vec<OpenTail>,
        caps: Caps,
        now: Timestamp,
    ) -> Result<Vec<EnqueueReceipt>, redb::Error> {
        let mut receipts = Vec::new();
        let mut dirty = false;
        let mut added = 0u64;
        for msg in messages {
            let Enqueue {
                agent_id,
                fleet_node_id,
                batch,
            } = msg;
            let mut receipt = EnqueueReceipt::default();
            let mut place = |tables: &mut Self, dispatch: Dispatch, key: Option<(&str, &str)>| {
                let bytes = dispatch.json_len();
                let seq = match tail
                    .as_mut()
                    .filter(|t| t.admits(&agent_id, fleet_node_id, bytes, caps))
                {
                    Some(open) => {
                        open.push(dispatch, bytes);
                        open.entry.seq
                    }
                    None => {
                        if let Some(old) = tail.take() {
                            if dirty {
                                tables.put_entry(&old.entry)?;
                            }
                            sealed.push(old);
                        }
                        let entry = tables.new_entry(&agent_id, fleet_node_id, now)?;
                        let mut open = OpenTail::new(entry);
                        open.push(dispatch, bytes);
                        receipt.entries += 1;
                        let seq = open.entry.seq;
                        *tail = Some(open);
                        seq
                    }
                };
                if let (Some((id, fingerprint)), Some(open)) = (key, tail.as_mut()) {
                    tables
                        .keys
                        .insert(dedup_key(id, fingerprint).as_str(), seq)?;
                    open.entry.fingerprints.push(ScannedKey {
                        index: open.entry.dispatches.len() - 1,
                        id: id.to_string(),
                        fingerprint: fingerprint.to_string(),
                    });
                }
                dirty = true;
                receipt.dispatches += 1;
                Ok::<_, redb::Error>(())
            };
            match batch {
                EnqueueBatch::Host(dispatches) => {
                    for dispatch in dispatches {
                        place(self, dispatch, None)?;
                    }
                }
                EnqueueBatch::Scanned(scanned) => {
                    for d in scanned {
                        // Read in the transaction that inserts: whatever was queued,
                        // dead-lettered or delivered before this commit is seen, by
                        // whichever path (P8). The key is inserted as the dispatch is
                        // placed, so a duplicate later in the same group is caught too.
                        if self.holds(&d.id, &d.fingerprint)? {
                            receipt.duplicates += 1;
                            continue;
                        }
                        place(self, d.record, Some((&d.id, &d.fingerprint)))?;
                    }
                }
            }
            added += receipt.dispatches as u64;
            receipts.push(receipt);
        }
        if let (Some(open), true) = (tail.as_ref(), dirty) {
            self.put_entry(&open.entry)?;
        }
        self.add_dispatches(added, 0)?;
        Ok(receipts)
    }

    /// A new, empty entry at the tail: its seq and key minted now.
    fn new_entry(
        &mut self,
        agent_id: &str,
        fleet_node_id: Option<i64>,
        now: Timestamp,
    ) -> Result<QueueEntry, redb::Error> {
        let mut entry = QueueEntry {
            seq: self.next_seq()?,
            ..QueueEntry::new(agent_id.to_string(), fleet_node_id, Vec::new(), now)
        };
        entry.idempotency_key = idempotency_key(&entry);
        Ok(entry)
    }

    /// What the Queue decides for one outcome, and all its consequences, written in
    /// this transaction: queue rows and counters, ledger marks, dead letters, the
    /// history record and `auth_failed`. `leased` is the entry as the Queue leased it,
    /// when it still has it: the stored row is then not decoded again (unless
    /// `recheck`).
    pub(super) fn apply(
        &mut self,
        seq: u64,
        leased: Option<&QueueEntry>,
        outcome: &DeliveryOutcome,
        cx: OutcomeContext<'_>,
    ) -> Result<Decision, redb::Error> {
        let stored;
        let entry = match leased.filter(|e| e.seq == seq) {
            Some(entry) if !cx.recheck && self.queue.get(seq)?.is_some() => entry,
            Some(entry) if cx.recheck => {
                if self.entry(seq)?.as_ref() != Some(entry) {
                    // The failed commit landed after all: its outcome is on disk.
                    return Ok(already_applied(entry, outcome, cx.now));
                }
                entry
            }
            _ => {
                stored = self.entry(seq)?.ok_or_else(|| {
                    redb::Error::Corrupted(format!("entry {seq} is no longer queued"))
                })?;
                &stored
            }
        };
        let now = cx.now;
        let decision = match policy::classify(outcome, entry.next_part_len()) {
            Class::Delivered if entry.parts.is_empty() => self.deliver_whole(entry)?,
            Class::Delivered => self.deliver_part(&mut entry.clone())?,
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
                let mut entry = entry.clone();
                entry.attempts = entry.attempts.saturating_add(1);
                let at = policy::retry_at(entry.attempts, retry_after, now, cx.spread);
                entry.next_attempt = Some(at);
                entry.last_error = Some(detail);
                self.put_entry(&entry)?;
                if unauthorized {
                    history::set_auth_failed_in(self.txn, true)?;
                }
                Decision::RetryAt { at, unauthorized }
            }
            Class::TooLarge => {
                let mut entry = entry.clone();
                policy::split_next_part(&mut entry);
                self.put_entry(&entry)?;
                Decision::Split
            }
            Class::Rejected { status } => {
                let detail = match outcome {
                    DeliveryOutcome::Status { detail, .. } => detail.clone(),
                    _ => format!("HTTP {status}"),
                };
                self.dead_letter_part(&mut entry.clone(), status, detail, now)?
            }
        };
        let recorded = match decision {
            Decision::Delivered { dispatches } => Some((Direction::Push, dispatches)),
            Decision::DeadLettered { dispatches, .. } => Some((Direction::DeadLetter, dispatches)),
            Decision::RetryAt { .. } | Decision::Split => None,
        };
        if let Some((direction, items)) = recorded {
            let record = SyncRecord {
                agent_id: entry.agent_id.clone(),
                fleet_node_id: entry.fleet_node_id,
                direction,
                payload_size: cx.payload_size,
                items_count: items as u64,
                synced_at: now.whole_seconds(),
            };
            history::append_in(self.txn, std::slice::from_ref(&record), cx.history_limit)?;
        }
        Ok(decision)
    }

    /// Removes a delivered entry sent whole (the common case): no copy of it is made.
    fn deliver_whole(&mut self, entry: &QueueEntry) -> Result<Decision, redb::Error> {
        self.forget_delivered(&entry.fingerprints)?;
        self.queue.remove(entry.seq)?;
        let dispatches = entry.dispatches.len();
        self.add_dispatches(0, dispatches as u64)?;
        Ok(Decision::Delivered { dispatches })
    }

    /// A delivered part's scanned dispatches leave the dedup index and enter the ledger.
    fn forget_delivered(&mut self, keys: &[ScannedKey]) -> Result<(), redb::Error> {
        for key in keys {
            self.keys
                .remove(dedup_key(&key.id, &key.fingerprint).as_str())?;
            ledger::mark(&mut self.ledger, &key.id, &key.fingerprint)?;
        }
        Ok(())
    }

    /// True when no entry is queued.
    pub(super) fn is_empty(&self) -> Result<bool, redb::Error> {
        Ok(self.queue.is_empty()?)
    }

    fn counter(&self, name: &str) -> Result<u64, redb::Error> {
        Ok(self.meta.get(name)?.map_or(0, |v| v.value()))
    }

    fn add_dispatches(&mut self, added: u64, removed: u64) -> Result<(), redb::Error> {
        if added == 0 && removed == 0 {
            return Ok(());
        }
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

    /// Inserts a whole entry at the tail under a fresh seq and key, sealed for good
    /// (it came from elsewhere: a requeue, an import); its dedup keys point at it.
    /// Returns the seq.
    pub(super) fn push_entry(&mut self, mut entry: QueueEntry) -> Result<u64, redb::Error> {
        entry.seq = self.next_seq()?;
        entry.sealed = true;
        entry.idempotency_key = idempotency_key(&entry);
        for key in &entry.fingerprints {
            self.keys
                .insert(dedup_key(&key.id, &key.fingerprint).as_str(), entry.seq)?;
        }
        self.add_dispatches(entry.dispatches.len() as u64, 0)?;
        self.put_entry(&entry)?;
        Ok(entry.seq)
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
        for key in &dead.fingerprints {
            self.keys
                .insert(dedup_key(&key.id, &key.fingerprint).as_str(), dead.seq)?;
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
    /// key); `delivered` drops its dedup keys and marks the ledger instead of keeping
    /// the keys. Positions are kept by index, so a part carries exactly its own keys.
    fn take_part(
        &mut self,
        entry: &mut QueueEntry,
        delivered: bool,
    ) -> Result<QueueEntry, redb::Error> {
        let len = entry.next_part_len();
        let key = entry.next_part_key();
        let dispatches: Vec<Dispatch> = entry.dispatches.drain(..len).collect();
        let (part, rest): (Vec<ScannedKey>, Vec<ScannedKey>) =
            std::mem::take(&mut entry.fingerprints)
                .into_iter()
                .partition(|k| k.index < len);
        entry.fingerprints = rest
            .into_iter()
            .map(|k| ScannedKey {
                index: k.index - len,
                ..k
            })
            .collect();
        if delivered {
            self.forget_delivered(&part)?;
        }
        if !entry.parts.is_empty() {
            entry.parts.remove(0);
        }
        self.add_dispatches(0, dispatches.len() as u64)?;
        Ok(QueueEntry {
            dispatches,
            fingerprints: part,
            idempotency_key: key,
            parts: Vec::new(),
            ..entry.clone()
        })
    }

    pub(super) fn requeue(&mut self, seqs: Option<Vec<u64>>) -> Result<RequeueReport, redb::Error> {
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
            // A fresh key (push_entry mints one): a platform that cached its refusal
            // per key would otherwise answer the operator's retry with the same 4xx.
            let entry = QueueEntry {
                attempts: 0,
                next_attempt: None,
                last_error: None,
                parts: Vec::new(),
                ..letter.entry
            };
            let new_seq = self.push_entry(entry)?;
            report.requeued.push((seq, new_seq));
        }
        Ok(report)
    }
}

/// The decision an outcome already on disk stands for (its commit failed but landed);
/// nothing is written again.
fn already_applied(entry: &QueueEntry, outcome: &DeliveryOutcome, now: Timestamp) -> Decision {
    let dispatches = entry.next_part_len();
    match policy::classify(outcome, dispatches) {
        Class::Delivered => Decision::Delivered { dispatches },
        Class::Transient { unauthorized } => Decision::RetryAt {
            at: now,
            unauthorized,
        },
        Class::TooLarge => Decision::Split,
        Class::Rejected { status } => Decision::DeadLettered { dispatches, status },
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
