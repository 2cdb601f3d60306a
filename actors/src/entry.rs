//! What the Queue holds (design.md §4.3): the durable entry of one POST, the part of
//! it sent after a 413, the scanned keys the Ledger marks on delivery, and the entry
//! the platform refused for good.
//!
//! A row is the JSON of a [`QueueEntry`]; rows written before fingerprints were kept
//! by position still decode (`QueueEntryRow`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dispatch::Dispatch;
use crate::time::Timestamp;

/// One durable unit of work in the Queue: a batch of dispatches pushed in one POST.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "QueueEntryRow")]
pub struct QueueEntry {
    /// Monotonic, FIFO order; the key in the `queue` table.
    pub seq: u64,
    /// Agent the dispatches are pushed under.
    pub agent_id: String,
    /// Fleet node, sent when set (Go defect 6 dropped it).
    #[serde(default)]
    pub fleet_node_id: Option<i64>,
    /// The dispatches, in order.
    pub dispatches: Vec<Dispatch>,
    /// The scanned dispatches among `dispatches`, by position, each with the
    /// fingerprint the Ledger marks when that position is delivered. By position, not
    /// by id: one entry may hold X@F1 and X@F2, and a split part marks only what it
    /// carried.
    #[serde(default)]
    pub fingerprints: Vec<ScannedKey>,
    /// When the entry was first queued.
    pub queued_at: Timestamp,
    /// Failed delivery attempts so far (drives the backoff).
    #[serde(default)]
    pub attempts: u32,
    /// Not sent before this time.
    #[serde(default)]
    pub next_attempt: Option<Timestamp>,
    /// Why the last attempt failed, for operators.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Sent as the `Idempotency-Key` header of every POST of this entry, the same
    /// across retries and restarts (a split part appends its suffix), for a platform
    /// that honours the header; the platform today ignores it. What keeps a dispatch
    /// from being delivered twice is the Queue: one request in flight, each outcome
    /// committed before the next lease, and the (id, fingerprint) dedup against what
    /// is queued and what the Ledger holds.
    pub idempotency_key: String,
    /// After a 413, the entry is sent in parts, in order; empty means "all at once".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<EntryPart>,
    /// Takes no more dispatches, even after a restart: an entry that came from
    /// elsewhere (a requeued dead letter, an import) had a life this queue did not
    /// see, so it is never reopened as the tail.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
}

/// Where a scanned dispatch sits in its entry and which version of it it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedKey {
    /// Index in the entry's `dispatches`.
    pub index: usize,
    /// Dispatch id (workspace name).
    pub id: String,
    /// Fingerprint at scan time (`updated_at#runs`).
    pub fingerprint: String,
}

/// A stored [`QueueEntry`], read from either layout of its fingerprints; its fields
/// are the entry's, with the same defaults.
#[derive(Deserialize)]
struct QueueEntryRow {
    seq: u64,
    agent_id: String,
    #[serde(default)]
    fleet_node_id: Option<i64>,
    dispatches: Vec<Dispatch>,
    #[serde(default)]
    fingerprints: StoredFingerprints,
    queued_at: Timestamp,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    next_attempt: Option<Timestamp>,
    #[serde(default)]
    last_error: Option<String>,
    idempotency_key: String,
    #[serde(default)]
    parts: Vec<EntryPart>,
    #[serde(default)]
    sealed: bool,
}

/// Rows written before fingerprints were kept by position hold an id -> fingerprint
/// map: each id is placed at its first position among the dispatches.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredFingerprints {
    /// The layout written today.
    ByPosition(Vec<ScannedKey>),
    /// The older layout: id -> fingerprint.
    ById(BTreeMap<String, String>),
}

impl Default for StoredFingerprints {
    fn default() -> Self {
        StoredFingerprints::ByPosition(Vec::new())
    }
}

impl From<QueueEntryRow> for QueueEntry {
    fn from(row: QueueEntryRow) -> Self {
        let fingerprints = match row.fingerprints {
            StoredFingerprints::ByPosition(keys) => keys,
            StoredFingerprints::ById(mut by_id) => row
                .dispatches
                .iter()
                .enumerate()
                .filter_map(|(index, dispatch)| {
                    let id = dispatch.id()?;
                    let fingerprint = by_id.remove(&id)?;
                    Some(ScannedKey {
                        index,
                        id,
                        fingerprint,
                    })
                })
                .collect(),
        };
        QueueEntry {
            seq: row.seq,
            agent_id: row.agent_id,
            fleet_node_id: row.fleet_node_id,
            dispatches: row.dispatches,
            fingerprints,
            queued_at: row.queued_at,
            attempts: row.attempts,
            next_attempt: row.next_attempt,
            last_error: row.last_error,
            idempotency_key: row.idempotency_key,
            parts: row.parts,
            sealed: row.sealed,
        }
    }
}

/// A leading slice of an entry's dispatches that is sent on its own after a 413.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPart {
    /// Number of dispatches in this part.
    pub len: usize,
    /// Appended to the entry's idempotency key, e.g. `.1.2`.
    pub key_suffix: String,
}

impl QueueEntry {
    /// Removes the dispatches at `positions` (indices into `dispatches`) and their
    /// scanned keys, renumbering the keys that stay. Only for an entry never split:
    /// `parts` count positions too.
    pub fn remove_positions(&mut self, positions: &[usize]) {
        if positions.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(self.dispatches.len());
        let mut new_index = vec![None; self.dispatches.len()];
        for (index, dispatch) in std::mem::take(&mut self.dispatches).into_iter().enumerate() {
            if !positions.contains(&index) {
                new_index[index] = Some(kept.len());
                kept.push(dispatch);
            }
        }
        self.dispatches = kept;
        self.fingerprints
            .retain_mut(|key| match new_index.get(key.index).copied().flatten() {
                Some(index) => {
                    key.index = index;
                    true
                }
                None => false,
            });
    }

    /// An entry of `dispatches` not yet queued and never attempted: the Queue mints
    /// its seq and idempotency key when it stores it.
    pub fn new(
        agent_id: String,
        fleet_node_id: Option<i64>,
        dispatches: Vec<Dispatch>,
        queued_at: Timestamp,
    ) -> Self {
        QueueEntry {
            seq: 0,
            agent_id,
            fleet_node_id,
            dispatches,
            fingerprints: Vec::new(),
            queued_at,
            attempts: 0,
            next_attempt: None,
            last_error: None,
            idempotency_key: String::new(),
            parts: Vec::new(),
            sealed: false,
        }
    }

    /// How many dispatches the next POST carries.
    pub fn next_part_len(&self) -> usize {
        self.parts
            .first()
            .map_or(self.dispatches.len(), |p| p.len.min(self.dispatches.len()))
    }

    /// The idempotency key of the next POST.
    pub fn next_part_key(&self) -> String {
        match self.parts.first() {
            Some(part) => format!("{}{}", self.idempotency_key, part.key_suffix),
            None => self.idempotency_key.clone(),
        }
    }

    /// The dispatches of the next POST.
    pub fn next_part(&self) -> &[Dispatch] {
        &self.dispatches[..self.next_part_len()]
    }

    /// The scanned dispatches in the next POST: what the Ledger marks when it is
    /// delivered.
    pub fn next_part_fingerprints(&self) -> impl Iterator<Item = &ScannedKey> {
        let len = self.next_part_len();
        self.fingerprints.iter().filter(move |k| k.index < len)
    }
}

/// An entry the platform refused for good (a 4xx that is not 401/403/408/429 or a
/// splittable 413), kept for an operator to inspect and requeue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The refused entry as it was queued (its `seq` is the dead letter's key).
    pub entry: QueueEntry,
    /// HTTP status of the refusal.
    pub status: u16,
    /// Why it was refused (status line and a bounded excerpt of the body).
    pub reason: String,
    /// When it was dead-lettered.
    pub dead_at: Timestamp,
}
