//! Rendering of every command's result, as text for people or `--json` for scripts
//! (design.md §8).
//!
//! Each function returns the whole output (without the final newline) so it can be
//! tested without a process; `queue` and `dead-letters` are a [`Listing`], written a
//! page at a time. JSON is one compact line; times are RFC 3339 UTC strings and an
//! unset time is `null`. Text is one `label: value` line per fact, or one line per
//! listed item.

use agent_sync::actors::dispatch::Dispatch;
use agent_sync::actors::entry::{DeadLetter, QueueEntry};
use agent_sync::actors::sync_record::SyncRecord;
use agent_sync::actors::time::Timestamp;
use agent_sync::legacy::ImportReport;
use agent_sync::messages::{PullReport, RequeueReport};
use agent_sync::SyncStatus;
use serde::Serialize;
use serde_json::{json, Value};

/// Text or JSON, chosen by `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON document.
    Json,
}

fn to_json(value: &impl Serialize) -> String {
    // Our own types and serde_json values always serialise.
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "never".to_string(), |t| t.to_string())
}

/// `push --json`, fields in the documented order.
#[derive(Serialize)]
struct PushView {
    /// Always true: a push that ran is a success, offline or not.
    success: bool,
    /// Dispatches delivered by this invocation.
    count: usize,
    /// Dispatches still queued afterwards.
    queued: u64,
}

/// `pull --json`, fields in the documented order.
#[derive(Serialize)]
struct PullView<'a> {
    /// Always true: a failed pull falls back to the cache (L2).
    success: bool,
    /// Items in `context`.
    count: usize,
    /// The items received (or the cache).
    context: &'a [Value],
}

/// `push`: `synced: N`, or `{"success":true,"count":N,"queued":M}`.
pub fn push(format: Format, count: usize, queued: u64) -> String {
    match format {
        Format::Text => format!("synced: {count}"),
        Format::Json => to_json(&PushView {
            success: true,
            count,
            queued,
        }),
    }
}

/// `pull`: `context items: N`, or `{"success":true,"count":N,"context":[...]}`.
pub fn pull(format: Format, report: &PullReport) -> String {
    match format {
        Format::Text => format!("context items: {}", report.count),
        Format::Json => to_json(&PullView {
            success: true,
            count: report.count,
            context: &report.context,
        }),
    }
}

/// `status`: one line per field of H2, or the [`SyncStatus`] object.
pub fn status(format: Format, status: &SyncStatus) -> String {
    if format == Format::Json {
        return to_json(status);
    }
    let head = match &status.head {
        None => "none".to_string(),
        Some(h) => {
            let mut line = format!("seq {}, attempts {}", h.seq, h.attempts);
            if let Some(next) = h.next_attempt {
                line.push_str(&format!(", next attempt {next}"));
            }
            line.push_str(&format!(", queued at {}", h.queued_at));
            if let Some(error) = &h.last_error {
                line.push_str(&format!(", last error: {error}"));
            }
            line
        }
    };
    [
        format!("agent id: {}", status.agent_id),
        format!("queued entries: {}", status.queued_entries),
        format!("queued dispatches: {}", status.queued_dispatches),
        format!("dead letters: {}", status.dead_letters),
        format!("ledger entries: {}", status.ledger_entries),
        format!("context items: {}", status.context_count),
        format!("database bytes: {}", status.db_bytes),
        format!(
            "auth failed: {}",
            if status.auth_failed { "yes" } else { "no" }
        ),
        format!("last push: {}", time(status.last_push_at)),
        format!("last pull: {}", time(status.last_pull_at)),
        format!("head: {head}"),
    ]
    .into_iter()
    .chain(
        status
            .watches
            .zip(status.watch_budget)
            .map(|(n, budget)| format!("watches: {n} of {budget}")),
    )
    .collect::<Vec<_>>()
    .join("\n")
}

/// `history`: one line per record (oldest first), or the array of records.
pub fn history(format: Format, records: &[SyncRecord]) -> String {
    if format == Format::Json {
        return to_json(&records);
    }
    if records.is_empty() {
        return "no sync history".into();
    }
    records
        .iter()
        .map(|r| {
            let mut line = format!(
                "{}  {:<11}  agent {}  items {}  bytes {}",
                r.synced_at.to_rfc3339_seconds(),
                r.direction.as_str(),
                r.agent_id,
                r.items_count,
                r.payload_size
            );
            if let Some(node) = r.fleet_node_id {
                line.push_str(&format!("  node {node}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A queue entry as `queue --json` shows it (design.md §8: exactly these fields).
#[derive(Serialize)]
struct QueueView<'a> {
    /// FIFO position.
    seq: u64,
    /// Pushed as.
    agent_id: &'a str,
    /// The dispatch objects, as they will be sent.
    dispatches: &'a [Dispatch],
    /// Failed attempts so far.
    attempts: u32,
    /// Not sent before (null: as soon as possible).
    next_attempt: Option<Timestamp>,
    /// When it was queued.
    queued_at: Timestamp,
    /// Why the last attempt failed.
    last_error: Option<&'a str>,
    /// Sent as `Idempotency-Key`.
    idempotency_key: &'a str,
}

impl<'a> From<&'a QueueEntry> for QueueView<'a> {
    fn from(e: &'a QueueEntry) -> Self {
        QueueView {
            seq: e.seq,
            agent_id: &e.agent_id,
            dispatches: &e.dispatches,
            attempts: e.attempts,
            next_attempt: e.next_attempt,
            queued_at: e.queued_at,
            last_error: e.last_error.as_deref(),
            idempotency_key: &e.idempotency_key,
        }
    }
}

fn entry_line(e: &QueueEntry) -> String {
    let mut line = format!(
        "seq {}  agent {}  dispatches {}  attempts {}  queued at {}",
        e.seq,
        e.agent_id,
        e.dispatches.len(),
        e.attempts,
        e.queued_at
    );
    if let Some(next) = e.next_attempt {
        line.push_str(&format!("  next attempt {next}"));
    }
    if let Some(error) = &e.last_error {
        line.push_str(&format!("  last error: {error}"));
    }
    line
}

/// A dead letter as `dead-letters --json` shows it: the entry's fields plus why.
#[derive(Serialize)]
struct DeadView<'a> {
    /// The entry, as `queue --json` shows one.
    #[serde(flatten)]
    entry: QueueView<'a>,
    /// HTTP status of the refusal.
    status: u16,
    /// The platform's reason.
    reason: &'a str,
    /// When it was refused.
    dead_at: Timestamp,
}

fn dead_letter_line(l: &DeadLetter) -> String {
    format!(
        "seq {}  HTTP {}  agent {}  dispatches {}  dead at {}  reason: {}",
        l.entry.seq,
        l.status,
        l.entry.agent_id,
        l.entry.dispatches.len(),
        l.dead_at,
        l.reason
    )
}

/// What a paged listing lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// `queue`.
    Queue,
    /// `dead-letters`.
    DeadLetters,
}

/// `queue` and `dead-letters`, written page by page as the pages come, so a long
/// listing neither waits for nor holds the whole backlog: one line per item, or one
/// JSON array written in pieces (exactly the bytes of the whole array). Each call
/// answers the text to write as it is (newlines included).
#[derive(Debug)]
pub struct Listing {
    /// Text or JSON.
    format: Format,
    /// Which listing (its text when empty).
    listed: Listed,
    /// Items written so far: the first one opens the JSON array, none at all is
    /// "queue is empty" / "no dead letters".
    written: usize,
}

impl Listing {
    /// A listing of nothing yet.
    pub fn new(format: Format, listed: Listed) -> Self {
        Listing {
            format,
            listed,
            written: 0,
        }
    }

    /// Items written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// One page of `queue`: a line per entry, or the array's next [`QueueView`]s.
    pub fn queue_page(&mut self, entries: &[QueueEntry]) -> String {
        let format = self.format;
        self.page(entries.iter().map(|e| match format {
            Format::Text => entry_line(e),
            Format::Json => to_json(&QueueView::from(e)),
        }))
    }

    /// One page of `dead-letters`: a line per dead letter, or the array's next
    /// [`DeadView`]s.
    pub fn dead_letter_page(&mut self, letters: &[DeadLetter]) -> String {
        let format = self.format;
        self.page(letters.iter().map(|l| match format {
            Format::Text => dead_letter_line(l),
            Format::Json => to_json(&DeadView {
                entry: QueueView::from(&l.entry),
                status: l.status,
                reason: &l.reason,
                dead_at: l.dead_at,
            }),
        }))
    }

    fn page(&mut self, items: impl Iterator<Item = String>) -> String {
        let mut out = String::new();
        for item in items {
            match self.format {
                Format::Text => {
                    out.push_str(&item);
                    out.push('\n');
                }
                Format::Json => {
                    out.push(if self.written == 0 { '[' } else { ',' });
                    out.push_str(&item);
                }
            }
            self.written += 1;
        }
        out
    }

    /// What ends the listing: `]` (or `[]`), or the text of an empty one.
    pub fn finish(&self) -> String {
        match (self.format, self.written) {
            (Format::Json, 0) => "[]\n".into(),
            (Format::Json, _) => "]\n".into(),
            (Format::Text, 0) => match self.listed {
                Listed::Queue => "queue is empty\n".into(),
                Listed::DeadLetters => "no dead letters\n".into(),
            },
            (Format::Text, _) => String::new(),
        }
    }
}

/// `requeue`: what moved and what was missing.
pub fn requeue(format: Format, report: &RequeueReport) -> String {
    if format == Format::Json {
        let moved: Vec<Value> = report
            .requeued
            .iter()
            .map(|(from, to)| json!({"seq": from, "new_seq": to}))
            .collect();
        return to_json(&json!({"requeued": moved, "missing": report.missing}));
    }
    let mut lines: Vec<String> = report
        .requeued
        .iter()
        .map(|(from, to)| format!("requeued: dead letter {from} is queue entry {to}"))
        .collect();
    lines.extend(
        report
            .missing
            .iter()
            .map(|seq| format!("missing: no dead letter {seq}")),
    );
    if lines.is_empty() {
        lines.push("requeued: none (no dead letters)".into());
    }
    lines.join("\n")
}

/// `import-legacy`: the counts, or the [`ImportReport`] object.
pub fn import(format: Format, report: &ImportReport) -> String {
    if format == Format::Json {
        return to_json(report);
    }
    let mut lines = vec![format!("imported from: {}", report.from.display())];
    if report.already_imported {
        lines.push("already imported: yes (nothing imported this time)".into());
    } else if report.files.is_empty() {
        lines.push("files: none found (nothing imported)".into());
    } else {
        lines.push(format!("files: {}", report.files.join(", ")));
    }
    lines.extend([
        format!("queue entries: {}", report.queue_entries),
        format!("queued dispatches: {}", report.queued_dispatches),
        format!("already queued or delivered: {}", report.already_held),
        format!("ledger entries: {}", report.ledger_entries),
        format!("history records: {}", report.history_records),
        format!("context items: {}", report.context_items),
        format!("last push: {}", time(report.last_push_at)),
        format!("last pull: {}", time(report.last_pull_at)),
        format!("skipped: {}", report.skipped),
    ]);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> QueueEntry {
        serde_json::from_value(json!({
            "seq": seq,
            "agent_id": "agent",
            "dispatches": [{"id": format!("d{seq}"), "status": "completed"}],
            "queued_at": "2026-01-02T03:04:05Z",
            "attempts": seq % 3,
            "last_error": (seq % 2 == 0).then_some("HTTP 503: down"),
            "idempotency_key": format!("key-{seq}"),
        }))
        .expect("an entry")
    }

    /// Written page by page, with every split of the items into pages.
    fn streamed(format: Format, listed: Listed, entries: &[QueueEntry], page: usize) -> String {
        let letters: Vec<DeadLetter> = entries
            .iter()
            .map(|e| DeadLetter {
                entry: e.clone(),
                status: 400,
                reason: "HTTP 400: bad".into(),
                dead_at: e.queued_at,
            })
            .collect();
        let mut listing = Listing::new(format, listed);
        let mut out = String::new();
        for (chunk, letters) in entries.chunks(page).zip(letters.chunks(page)) {
            out.push_str(&match listed {
                Listed::Queue => listing.queue_page(chunk),
                Listed::DeadLetters => listing.dead_letter_page(letters),
            });
        }
        out.push_str(&listing.finish());
        assert_eq!(listing.written(), entries.len());
        out
    }

    #[test]
    fn a_listing_written_page_by_page_is_one_json_array_or_a_line_per_item() {
        let entries: Vec<QueueEntry> = (1..=7).map(entry).collect();
        let views: Vec<QueueView> = entries.iter().map(QueueView::from).collect();
        let whole = format!("{}\n", to_json(&views));
        for page in 1..=8 {
            assert_eq!(streamed(Format::Json, Listed::Queue, &entries, page), whole);
            let text = streamed(Format::Text, Listed::Queue, &entries, page);
            assert_eq!(text.lines().count(), 7, "{text}");
            assert!(text.starts_with("seq 1  agent agent  dispatches 1  attempts 1"));
            assert!(text.contains("seq 2  agent agent  dispatches 1  attempts 2"));
            assert!(text.contains("last error: HTTP 503: down"));
            let dead = streamed(Format::Json, Listed::DeadLetters, &entries, page);
            let dead: Vec<Value> = serde_json::from_str(&dead).expect("one JSON array");
            assert_eq!(dead.len(), 7);
            assert_eq!(dead[6]["seq"], 7);
            assert_eq!(dead[6]["status"], 400);
        }
        assert_eq!(streamed(Format::Json, Listed::Queue, &[], 1), "[]\n");
        assert_eq!(
            streamed(Format::Text, Listed::Queue, &[], 1),
            "queue is empty\n"
        );
        assert_eq!(
            streamed(Format::Text, Listed::DeadLetters, &[], 1),
            "no dead letters\n"
        );
    }

    #[test]
    fn push_and_requeue_render_both_ways() {
        assert_eq!(push(Format::Text, 3, 1), "synced: 3");
        assert_eq!(
            push(Format::Json, 3, 1),
            r#"{"success":true,"count":3,"queued":1}"#
        );
        let report = RequeueReport {
            requeued: vec![(5, 9)],
            missing: vec![7],
        };
        assert_eq!(
            requeue(Format::Json, &report),
            r#"{"missing":[7],"requeued":[{"new_seq":9,"seq":5}]}"#
        );
        assert!(requeue(Format::Text, &report).contains("missing: no dead letter 7"));
    }
}
