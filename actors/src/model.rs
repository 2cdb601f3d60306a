//! The data of design.md §4: what the host writes, what is pushed, what is queued
//! and what is recorded.
//!
//! Dispatches travel as JSON text ([`Dispatch`], in [`crate::dispatch`]) because the
//! platform owns their schema and host-provided ones are pushed verbatim. Everything
//! agent-sync itself decides on (fingerprints, attempts, times) is typed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::lenient::{json_kind, lenient_int, lenient_time};
use crate::lenient::{LenientInt, LenientString, LenientTime};
use crate::time::Timestamp;

pub use crate::dispatch::Dispatch;

/// Statuses after which a workspace is finished and worth pushing.
pub const TERMINAL_STATUSES: [&str; 4] = ["completed", "merged", "failed", "blocked"];

/// `status.json` of a workspace, parsed tolerantly.
///
/// Why a hand-written `Deserialize`: hosts written in other languages put `runs` as a
/// float, `issue` as a string, or `null` anywhere, and a finished dispatch must not be
/// lost to a type quibble ([`crate::lenient`]); and only a JSON object is a status (a
/// derived impl would also take an array as a struct). It parses in one pass, without
/// an intermediate map: the scanner reads thousands of these.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkspaceStatus {
    /// `running`, `completed`, `merged`, `failed`, `blocked`, ...
    pub status: String,
    /// Which agent ran the task.
    pub agent: String,
    /// Repository name.
    pub repo: String,
    /// Organisation of the repository.
    pub org: String,
    /// Task name.
    pub task: String,
    /// Branch the agent worked on.
    pub branch: String,
    /// Issue number, 0 when none.
    pub issue: i64,
    /// OS process id of the worker, 0 when none (used by ghost reap).
    pub pid: i64,
    /// The host's own process identifier.
    pub process_id: String,
    /// When the dispatch started.
    pub started_at: Option<Timestamp>,
    /// When the status last changed: half of the fingerprint.
    pub updated_at: Option<Timestamp>,
    /// The agent's open question, if it is blocked.
    pub question: String,
    /// How many times the task ran: the other half of the fingerprint.
    pub runs: i64,
    /// Pull request opened by the agent.
    pub pr_url: String,
}

impl WorkspaceStatus {
    /// Parses a `status.json` body: a JSON object, every field optional.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        // Fields we skip are not checked by the parser: check the whole body, so only
        // valid JSON is ever accepted.
        let text = std::str::from_utf8(bytes).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!(
                "status.json is not UTF-8: {e}"
            ))
        })?;
        serde_json::from_str(text)
    }

    /// Reads the fields from an already parsed object; unknown fields are ignored and
    /// missing or mistyped ones default.
    pub fn from_object(object: &Map<String, Value>) -> Self {
        WorkspaceStatus {
            status: str_field(object, "status"),
            agent: str_field(object, "agent"),
            repo: str_field(object, "repo"),
            org: str_field(object, "org"),
            task: str_field(object, "task"),
            branch: str_field(object, "branch"),
            issue: int_field(object, "issue"),
            pid: int_field(object, "pid"),
            process_id: str_field(object, "process_id"),
            started_at: time_field(object, "started_at"),
            updated_at: time_field(object, "updated_at"),
            question: str_field(object, "question"),
            runs: int_field(object, "runs"),
            pr_url: str_field(object, "pr_url"),
        }
    }

    /// True when the dispatch is finished and should be pushed.
    pub fn is_terminal(&self) -> bool {
        TERMINAL_STATUSES.contains(&self.status.as_str())
    }

    /// `<updated_at as UTC RFC 3339, seconds>#<runs>`; an unset time is written as Go
    /// writes its zero time, so ledgers imported from the Go agent still match.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.updated_at, self.runs)
    }
}

impl<'de> Deserialize<'de> for WorkspaceStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StatusVisitor)
    }
}

/// Reads the fields of a `status.json` object; unknown fields are skipped unparsed.
struct StatusVisitor;

impl<'de> serde::de::Visitor<'de> for StatusVisitor {
    type Value = WorkspaceStatus;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a status.json object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut status = WorkspaceStatus::default();
        while let Some(StatusKey(key)) = map.next_key()? {
            let text = |map: &mut A| map.next_value::<LenientString>().map(|v| v.0);
            match key {
                Some("status") => status.status = text(&mut map)?,
                Some("agent") => status.agent = text(&mut map)?,
                Some("repo") => status.repo = text(&mut map)?,
                Some("org") => status.org = text(&mut map)?,
                Some("task") => status.task = text(&mut map)?,
                Some("branch") => status.branch = text(&mut map)?,
                Some("process_id") => status.process_id = text(&mut map)?,
                Some("question") => status.question = text(&mut map)?,
                Some("pr_url") => status.pr_url = text(&mut map)?,
                Some("issue") => status.issue = map.next_value::<LenientInt>()?.0,
                Some("pid") => status.pid = map.next_value::<LenientInt>()?.0,
                Some("runs") => status.runs = map.next_value::<LenientInt>()?.0,
                Some("started_at") => status.started_at = map.next_value::<LenientTime>()?.0,
                Some("updated_at") => status.updated_at = map.next_value::<LenientTime>()?.0,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(status)
    }
}

/// A key of `status.json`, matched against the known names without allocating.
struct StatusKey(Option<&'static str>);

impl<'de> Deserialize<'de> for StatusKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = StatusKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<StatusKey, E> {
                const KNOWN: [&str; 14] = [
                    "status",
                    "agent",
                    "repo",
                    "org",
                    "task",
                    "branch",
                    "issue",
                    "pid",
                    "process_id",
                    "started_at",
                    "updated_at",
                    "question",
                    "runs",
                    "pr_url",
                ];
                Ok(StatusKey(KNOWN.iter().copied().find(|k| *k == key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The fingerprint of design.md §4.2 from its two parts.
pub fn fingerprint(updated_at: Option<Timestamp>, runs: i64) -> String {
    match updated_at {
        Some(time) => format!("{}#{runs}", time.rfc3339_seconds()),
        None => format!("0001-01-01T00:00:00Z#{runs}"),
    }
}

pub(crate) fn str_field(object: &Map<String, Value>, key: &str) -> String {
    match object.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn int_field(object: &Map<String, Value>, key: &str) -> i64 {
    lenient_int(object.get(key))
}

pub(crate) fn time_field(object: &Map<String, Value>, key: &str) -> Option<Timestamp> {
    lenient_time(object.get(key))
}

/// A dispatch found by the Scanner, with the fingerprint computed from its parsed
/// `status.json` (never re-derived from the pushed JSON: Go defect 1).
#[derive(Clone, Debug, PartialEq)]
pub struct ScannedDispatch {
    /// Workspace name = dispatch id.
    pub id: String,
    /// Fingerprint at scan time.
    pub fingerprint: String,
    /// What is pushed.
    pub record: Dispatch,
}

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
    /// Stable for the entry's whole life, so the platform can drop duplicate deliveries.
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

/// A stored [`QueueEntry`], read from either layout of its fingerprints.
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
    ByPosition(Vec<ScannedKey>),
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

/// Which way a sync went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Dispatches delivered to the platform.
    Push,
    /// Context received from the platform.
    Pull,
    /// An entry moved to dead letters.
    DeadLetter,
}

impl Direction {
    /// The wire and display name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
            Direction::DeadLetter => "dead_letter",
        }
    }
}

/// One line of sync history (design.md §4.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// Agent the sync ran for.
    pub agent_id: String,
    /// Fleet node, when known.
    #[serde(default)]
    pub fleet_node_id: Option<i64>,
    /// Push, pull or dead letter.
    pub direction: Direction,
    /// Bytes sent (push) or received (pull).
    pub payload_size: u64,
    /// Dispatches pushed or context items pulled.
    pub items_count: u64,
    /// When, UTC, whole seconds.
    pub synced_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing_is_tolerant_of_types_and_unknown_fields() {
        let status = WorkspaceStatus::parse(
            br#"{"status":"completed","runs":3.0,"issue":"12","pid":null,
                 "updated_at":"2026-04-14T13:00:00+01:00","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(status.runs, 3);
        assert_eq!(status.issue, 12);
        assert_eq!(status.pid, 0);
        assert!(status.is_terminal());
        assert_eq!(status.fingerprint(), "2026-04-14T12:00:00Z#3");
    }

    #[test]
    fn status_that_is_not_an_object_is_an_error() {
        assert!(WorkspaceStatus::parse(b"[1,2]").is_err());
        assert!(WorkspaceStatus::parse(b"{\"status\":").is_err());
    }
}
