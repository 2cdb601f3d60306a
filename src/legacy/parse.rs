//! Reading the Go agent's five sync files into typed values, tolerant of how Go
//! wrote them: `time.Time` as RFC 3339 with nanoseconds and offsets (the zero time
//! means unset), numbers read back through `map[string]any` as floats, `null` for an
//! empty slice. Nothing here writes anything; [`super`] does, once everything parsed.

use std::path::{Path, PathBuf};

use agent_sync_actors::dispatch::Dispatch;
use agent_sync_actors::entry::{QueueEntry, ScannedKey};
use agent_sync_actors::lenient::{json_kind, lenient_int, lenient_time};
use agent_sync_actors::status::fingerprint;
use agent_sync_actors::sync_record::{Direction, SyncRecord};
use agent_sync_actors::time::Timestamp;
use serde_json::{Map, Value};

use super::{LegacyError, CONTEXT_FILE, LEDGER_FILE, QUEUE_FILE, RECORDS_FILE, STATUS_FILE};

/// The Go agent's sync state, parsed and ready to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegacyState {
    /// Which files were found.
    pub files: Vec<String>,
    /// Queue entries (seq and idempotency key are assigned when they are queued).
    pub entries: Vec<QueueEntry>,
    /// (id, fingerprint) pairs the platform has.
    pub ledger: Vec<(String, String)>,
    /// Sync records, in file order.
    pub records: Vec<SyncRecord>,
    /// Last successful push.
    pub last_push_at: Option<Timestamp>,
    /// Last successful pull.
    pub last_pull_at: Option<Timestamp>,
    /// Cached context items.
    pub context: Vec<Value>,
    /// Elements left out (counted in the import report).
    pub skipped: usize,
}

impl LegacyState {
    /// Reads and parses the five files in `dir`; a missing file contributes nothing.
    /// Entries without an agent id get `default_agent`; without `queued_at`, `now`.
    pub fn read(dir: &Path, default_agent: &str, now: Timestamp) -> Result<Self, LegacyError> {
        if !dir.is_dir() {
            return Err(LegacyError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        let mut state = LegacyState::default();
        let mut load = |name: &str| -> Result<Option<(PathBuf, Value)>, LegacyError> {
            let path = dir.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(LegacyError::Read { path, source }),
            };
            state.files.push(name.to_string());
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((path, Value::Null)));
            }
            match serde_json::from_slice(&bytes) {
                Ok(value) => Ok(Some((path, value))),
                Err(e) => Err(LegacyError::Parse {
                    path,
                    detail: format!("not JSON: {e}"),
                }),
            }
        };
        let queue = load(QUEUE_FILE)?;
        let ledger = load(LEDGER_FILE)?;
        let records = load(RECORDS_FILE)?;
        let status = load(STATUS_FILE)?;
        let context = load(CONTEXT_FILE)?;
        let shape = |path: PathBuf, detail: String| LegacyError::Parse { path, detail };
        if let Some((path, value)) = queue {
            let (entries, skipped) =
                parse_queue(value, default_agent, now).map_err(|d| shape(path, d))?;
            state.entries = entries;
            state.skipped += skipped;
        }
        if let Some((path, value)) = ledger {
            let (ledger, skipped) = parse_ledger(value).map_err(|d| shape(path, d))?;
            state.ledger = ledger;
            state.skipped += skipped;
        }
        if let Some((path, value)) = records {
            let (records, skipped) = parse_records(value).map_err(|d| shape(path, d))?;
            state.records = records;
            state.skipped += skipped;
        }
        if let Some((path, value)) = status {
            let (push, pull) = parse_status(value).map_err(|d| shape(path, d))?;
            state.last_push_at = push;
            state.last_pull_at = pull;
        }
        if let Some((path, value)) = context {
            let (items, skipped) = parse_context(value).map_err(|d| shape(path, d))?;
            state.context = items;
            state.skipped += skipped;
        }
        Ok(state)
    }
}

/// `null` (Go's nil slice) is an empty list; anything but an array is an error.
fn array(value: Value, what: &str) -> Result<Vec<Value>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items),
        other => Err(format!("expected {what}, found {}", json_kind(&other))),
    }
}

fn text(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Go writes `fleet_node_id` 0 (or omits it) for "none".
fn fleet_node(value: Option<&Value>) -> Option<i64> {
    Some(lenient_int(value)).filter(|id| *id != 0)
}

/// `queue.json`: entries with their attempts and times; each dispatch fingerprinted.
pub fn parse_queue(
    value: Value,
    default_agent: &str,
    now: Timestamp,
) -> Result<(Vec<QueueEntry>, usize), String> {
    let mut entries = Vec::new();
    let mut skipped = 0;
    // Canonical JSON (serde_json maps are sorted) of every dispatch taken so far.
    let mut seen = std::collections::HashSet::new();
    for (index, item) in array(value, "an array of queued pushes")?
        .into_iter()
        .enumerate()
    {
        let Value::Object(mut object) = item else {
            log::warn!("queue.json entry {index} is not an object; skipped");
            skipped += 1;
            continue;
        };
        let mut dispatches = Vec::new();
        let mut fingerprints = Vec::new();
        let listed = match object.remove("dispatches") {
            Some(Value::Array(listed)) => listed,
            _ => Vec::new(),
        };
        for dispatch in listed {
            let Value::Object(dispatch) = dispatch else {
                log::warn!(
                    "queue.json entry {index} holds a dispatch that is not an object; skipped"
                );
                skipped += 1;
                continue;
            };
            let record = Dispatch::from_object(&dispatch);
            if !seen.insert(record.as_json().to_string()) {
                skipped += 1;
                continue;
            }
            if let Some(id) = record.id() {
                let runs = lenient_int(dispatch.get("runs"));
                fingerprints.push(ScannedKey {
                    index: dispatches.len(),
                    id,
                    fingerprint: fingerprint(lenient_time(dispatch.get("updated_at")), runs),
                });
            }
            dispatches.push(record);
        }
        if dispatches.is_empty() {
            continue;
        }
        let agent_id = Some(text(object.get("agent_id")))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| default_agent.to_string());
        entries.push(QueueEntry {
            fingerprints,
            attempts: u32::try_from(lenient_int(object.get("attempts")).max(0)).unwrap_or(u32::MAX),
            next_attempt: lenient_time(object.get("next_attempt")),
            ..QueueEntry::new(
                agent_id,
                fleet_node(object.get("fleet_node_id")),
                dispatches,
                lenient_time(object.get("queued_at")).unwrap_or(now),
            )
        });
    }
    Ok((entries, skipped))
}

/// `ledger.json`: id -> fingerprint; the time half is normalised to UTC seconds (Go
/// wrote some with their local offset and nanoseconds).
pub fn parse_ledger(value: Value) -> Result<(Vec<(String, String)>, usize), String> {
    let object = match value {
        Value::Null => Map::new(),
        Value::Object(object) => object,
        other => {
            return Err(format!(
                "expected an object of id -> fingerprint, found {}",
                json_kind(&other)
            ))
        }
    };
    let mut pairs = Vec::with_capacity(object.len());
    let mut skipped = 0;
    for (id, value) in object {
        match value.as_str() {
            Some(fp) if !id.is_empty() && !fp.is_empty() => pairs.push((id, normalise(fp))),
            _ => {
                log::warn!("ledger.json entry {id:?} is not a fingerprint string; skipped");
                skipped += 1;
            }
        }
    }
    Ok((pairs, skipped))
}

fn normalise(fp: &str) -> String {
    match fp.rsplit_once('#') {
        Some((time, runs)) => match Timestamp::parse_rfc3339(time) {
            Some(t) if !t.is_go_zero() => format!("{}#{runs}", t.to_rfc3339_seconds()),
            _ => fp.to_string(),
        },
        None => fp.to_string(),
    }
}

/// `records.json`: sync records; an empty direction is not a record (Go never wrote
/// one), an unknown direction or an unreadable time is skipped with a warning.
pub fn parse_records(value: Value) -> Result<(Vec<SyncRecord>, usize), String> {
    let mut records = Vec::new();
    let mut skipped = 0;
    for (index, item) in array(value, "an array of sync records")?
        .into_iter()
        .enumerate()
    {
        let Value::Object(object) = item else {
            skipped += 1;
            continue;
        };
        let direction = match text(object.get("direction")).as_str() {
            "" => continue,
            "push" => Direction::Push,
            "pull" => Direction::Pull,
            "dead_letter" => Direction::DeadLetter,
            other => {
                log::warn!("records.json record {index} has direction {other:?}; skipped");
                skipped += 1;
                continue;
            }
        };
        let Some(synced_at) = lenient_time(object.get("synced_at")) else {
            log::warn!("records.json record {index} has no readable synced_at; skipped");
            skipped += 1;
            continue;
        };
        let count = |key: &str| u64::try_from(lenient_int(object.get(key))).unwrap_or(0);
        records.push(SyncRecord {
            agent_id: text(object.get("agent_id")),
            fleet_node_id: fleet_node(object.get("fleet_node_id")),
            direction,
            payload_size: count("payload_size"),
            items_count: count("items_count"),
            synced_at,
        });
    }
    Ok((records, skipped))
}

/// `status.json`: last push and pull times (zero time = unset).
pub fn parse_status(value: Value) -> Result<(Option<Timestamp>, Option<Timestamp>), String> {
    match value {
        Value::Null => Ok((None, None)),
        Value::Object(object) => Ok((
            lenient_time(object.get("last_push_at")),
            lenient_time(object.get("last_pull_at")),
        )),
        other => Err(format!(
            "expected an object with last_push_at and last_pull_at, found {}",
            json_kind(&other)
        )),
    }
}

/// `context.json`: context objects (`null` is Go's empty cache; defect 7).
pub fn parse_context(value: Value) -> Result<(Vec<Value>, usize), String> {
    let items = array(value, "an array of context items")?;
    let total = items.len();
    let objects: Vec<Value> = items.into_iter().filter(Value::is_object).collect();
    let skipped = total - objects.len();
    Ok((objects, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-05-01T00:00:00Z").unwrap()
    }

    #[test]
    fn queue_keeps_attempts_and_times_and_fingerprints_each_dispatch() {
        let queue = json!([{
            "agent_id": "codex",
            "fleet_node_id": 7,
            "dispatches": [
                {"id": "core/a/t1", "updated_at": "2026-04-14T13:00:00.123456789+01:00", "runs": 2.0},
                {"workspace": "core/a/t2", "runs": 1},
                {"note": "host dispatch without id"},
                {"id": "core/a/t1", "updated_at": "2026-04-14T13:00:00.123456789+01:00", "runs": 2.0}
            ],
            "queued_at": "2026-04-14T12:36:44.5+01:00",
            "attempts": 3,
            "next_attempt": "0001-01-01T00:00:00Z"
        }, {"agent_id": "codex", "dispatches": null}, 5]);
        let (entries, skipped) = parse_queue(queue, "me", now()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(skipped, 2, "the duplicate dispatch and the number");
        let entry = &entries[0];
        assert_eq!(entry.agent_id, "codex");
        assert_eq!(entry.fleet_node_id, Some(7));
        assert_eq!(entry.dispatches.len(), 3);
        assert_eq!(entry.attempts, 3);
        assert_eq!(entry.next_attempt, None);
        assert_eq!(entry.queued_at.to_rfc3339(), "2026-04-14T11:36:44.5Z");
        let keys: Vec<(usize, &str, &str)> = entry
            .fingerprints
            .iter()
            .map(|k| (k.index, k.id.as_str(), k.fingerprint.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (0, "core/a/t1", "2026-04-14T12:00:00Z#2"),
                (1, "core/a/t2", "0001-01-01T00:00:00Z#1"),
            ]
        );
    }

    #[test]
    fn queue_without_agent_or_time_takes_the_defaults() {
        let (entries, _) = parse_queue(
            json!([{"dispatches": [{"id": "x"}], "queued_at": "0001-01-01T00:00:00Z"}]),
            "me",
            now(),
        )
        .unwrap();
        assert_eq!(entries[0].agent_id, "me");
        assert_eq!(entries[0].queued_at, now());
        assert_eq!(entries[0].attempts, 0);
    }

    #[test]
    fn ledger_normalises_go_times_and_skips_non_strings() {
        let (pairs, skipped) = parse_ledger(json!({
            "a": "2026-04-14T13:00:00.5+01:00#0",
            "b": "2026-04-14T12:00:00Z#3",
            "c": 4
        }))
        .unwrap();
        assert_eq!(skipped, 1);
        assert!(pairs.contains(&("a".into(), "2026-04-14T12:00:00Z#0".into())));
        assert!(pairs.contains(&("b".into(), "2026-04-14T12:00:00Z#3".into())));
        assert!(parse_ledger(json!([1])).is_err());
    }

    #[test]
    fn records_skip_empty_and_unknown_directions() {
        let (records, skipped) = parse_records(json!([
            {"agent_id": "codex", "direction": "push", "payload_size": 512.0, "items_count": 3,
             "synced_at": "2026-03-31T12:00:00Z"},
            {"direction": "", "synced_at": "2026-03-31T12:00:00Z"},
            {"direction": "sideways", "synced_at": "2026-03-31T12:00:00Z"},
            {"direction": "pull", "synced_at": "soon"}
        ]))
        .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(skipped, 2);
        assert_eq!(records[0].payload_size, 512);
        assert_eq!(records[0].fleet_node_id, None);
    }

    #[test]
    fn status_and_context_read_go_nulls_as_empty() {
        assert_eq!(parse_status(Value::Null).unwrap(), (None, None));
        let (push, pull) = parse_status(json!({
            "last_push_at": "2026-04-14T13:00:00.999999999+01:00",
            "last_pull_at": "0001-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(push.unwrap().to_rfc3339_seconds(), "2026-04-14T12:00:00Z");
        assert_eq!(pull, None);
        assert_eq!(parse_context(Value::Null).unwrap(), (vec![], 0));
        assert_eq!(
            parse_context(json!([{"id": 1}, "x"])).unwrap(),
            (vec![json!({"id": 1})], 1)
        );
        assert!(parse_context(json!({"context": []})).is_err());
    }

    #[test]
    fn reading_a_directory_fails_whole_on_a_bad_file_and_tolerates_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = LegacyState::read(dir.path(), "me", now()).unwrap();
        assert!(state.files.is_empty());
        std::fs::write(dir.path().join(CONTEXT_FILE), "null").unwrap();
        std::fs::write(dir.path().join(RECORDS_FILE), "{not json").unwrap();
        let err = LegacyState::read(dir.path(), "me", now()).unwrap_err();
        assert!(err.to_string().contains("records.json"), "{err}");
        assert!(LegacyState::read(&dir.path().join("nope"), "me", now()).is_err());
    }
}
