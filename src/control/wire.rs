//! The bodies of the control API: what the CLI sends, what a running agent-sync
//! answers. JSON, in the shapes `--json` prints where there is one (`/v1/status` is
//! exactly `status --json`), so `curl --unix-socket` is as useful as the CLI.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/status` | | [`SyncStatus`](crate::SyncStatus), plus `process` ([`ProcessInfo`]) |
//! | `GET /v1/queue?after=SEQ&limit=N` | | `[QueueEntry]`, a page ([`ListQuery`]) |
//! | `GET /v1/dead-letters?after=SEQ&limit=N` | | `[DeadLetter]`, a page |
//! | `POST /v1/requeue` | [`RequeueBody`] | [`RequeueAnswer`] |
//! | `GET /v1/history?limit=N` | | `[SyncRecord]` |
//! | `POST /v1/push` | [`PushBody`] | [`PushAnswer`] |
//! | `POST /v1/pull` | [`PullBody`] | [`PullAnswer`] |
//! | `GET /metrics` | | Prometheus (OpenMetrics) text |
//! | `GET /health` | | `{"status":"ok",...}` or 503 `{"status":"unavailable","reason":...}` |
//!
//! A failure is a non-2xx status with an [`ErrorBody`]. No token ever crosses the
//! socket: the running process pushes and pulls with its own.

use agent_sync_actors::messages::{HeadSummary, PullReport, PushReport, RequeueReport};
use agent_sync_actors::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Which process answers on the socket, for `doctor`: the `process` object of the
/// `/v1/status` answer (absent from the answer of an older agent-sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: u32,
    /// Its agent-sync version (`CARGO_PKG_VERSION`), to spot a host running an old
    /// binary after an upgrade.
    pub version: String,
    /// When its control server started.
    pub started_at: Timestamp,
    /// Seconds since then.
    pub uptime_seconds: u64,
}

/// `POST /v1/push`: a [`SyncPush`](agent_sync_actors::messages::SyncPush) by value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PushBody {
    /// Only drain what is queued; never scan.
    #[serde(default)]
    pub queue_only: bool,
    /// Host dispatches to queue verbatim (no scan then).
    #[serde(default)]
    pub dispatches: Option<Vec<Value>>,
    /// Push as this agent; the running process's agent id when absent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Push as this fleet node; the running process's when absent.
    #[serde(default)]
    pub fleet_node_id: Option<i64>,
}

/// Answer to `POST /v1/push`: a [`PushReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAnswer {
    /// Dispatches delivered while the call ran.
    pub count: usize,
    /// Dispatches still queued afterwards.
    pub queued: u64,
}

impl From<PushReport> for PushAnswer {
    fn from(r: PushReport) -> Self {
        PushAnswer {
            count: r.count,
            queued: r.queued,
        }
    }
}

impl From<PushAnswer> for PushReport {
    fn from(a: PushAnswer) -> Self {
        PushReport {
            count: a.count,
            queued: a.queued,
        }
    }
}

/// `POST /v1/pull`: a [`SyncPull`](agent_sync_actors::messages::SyncPull) by value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PullBody {
    /// Only context since this point.
    #[serde(default)]
    pub since: Option<String>,
    /// Pull for this agent; the running process's agent id when absent.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// Answer to `POST /v1/pull`: a [`PullReport`], `from_cache` included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullAnswer {
    /// Items in `context`.
    pub count: usize,
    /// What was received, or the cache.
    pub context: Vec<Value>,
    /// True when this is the cache (the platform was not reached or refused).
    pub from_cache: bool,
}

impl From<PullReport> for PullAnswer {
    fn from(r: PullReport) -> Self {
        PullAnswer {
            count: r.count,
            context: r.context,
            from_cache: r.from_cache,
        }
    }
}

impl From<PullAnswer> for PullReport {
    fn from(a: PullAnswer) -> Self {
        PullReport {
            count: a.count,
            context: a.context,
            from_cache: a.from_cache,
        }
    }
}

/// `POST /v1/requeue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequeueBody {
    /// Which dead letters; every one when absent.
    #[serde(default)]
    pub seqs: Option<Vec<u64>>,
}

/// Answer to `POST /v1/requeue`: a [`RequeueReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequeueAnswer {
    /// (dead letter seq, new queue seq) for each one moved.
    pub requeued: Vec<(u64, u64)>,
    /// Seqs asked for that are not dead letters.
    pub missing: Vec<u64>,
}

impl From<RequeueReport> for RequeueAnswer {
    fn from(r: RequeueReport) -> Self {
        RequeueAnswer {
            requeued: r.requeued,
            missing: r.missing,
        }
    }
}

impl From<RequeueAnswer> for RequeueReport {
    fn from(a: RequeueAnswer) -> Self {
        RequeueReport {
            requeued: a.requeued,
            missing: a.missing,
        }
    }
}

/// Entries (or dead letters) per listing page: the socket's default and largest
/// `limit`, and what the CLI and [`SyncService`](crate::SyncService) ask for per
/// message. A listing decodes one page at a time, so a backlog of any size is listed
/// in bounded memory and never holds the Queue's mailbox for long.
pub const LIST_PAGE: usize = 1_000;

/// The size of the next page of a listing that wants `limit` items (all when
/// `None`) and has `listed` so far; `None` once it has them all. The listing ends
/// earlier at the first empty page (not at a short one: rows that do not decode are
/// skipped, so a page may be short before the end).
pub fn next_page(limit: Option<usize>, listed: usize) -> Option<usize> {
    let left = limit.map_or(LIST_PAGE, |limit| limit.saturating_sub(listed));
    (left > 0).then_some(left.min(LIST_PAGE))
}

/// Lists the first `limit` items (all when `None`), oldest first, asking `page(after,
/// want)` for one page at a time: `after` is the `seq` of the last item so far, `want`
/// at most [`LIST_PAGE`]. Used locally (Queue messages) and over the socket alike.
pub async fn collect_pages<T, E, Fut>(
    limit: Option<usize>,
    seq: impl Fn(&T) -> u64,
    mut page: impl FnMut(Option<u64>, usize) -> Fut,
) -> Result<Vec<T>, E>
where
    Fut: std::future::Future<Output = Result<Vec<T>, E>>,
{
    let mut items: Vec<T> = Vec::new();
    while let Some(want) = next_page(limit, items.len()) {
        let got = page(items.last().map(&seq), want).await?;
        if got.is_empty() {
            break;
        }
        items.extend(got);
    }
    Ok(items)
}

/// `GET /v1/queue` and `GET /v1/dead-letters` query: one page, oldest first. The
/// next page is `after` = the last seq of this one; an empty page is the end.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only seqs greater than this (absent: from the start).
    #[serde(default)]
    pub after: Option<u64>,
    /// At most this many, up to [`LIST_PAGE`] (absent: [`LIST_PAGE`]); a larger one
    /// is refused rather than cut silently, so a client paging by "a short page is
    /// the last" cannot stop early.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/history` query.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// The newest N records (all kept when absent).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The body of every failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, as the CLI prints it after `error: `.
    pub error: String,
    /// `invalid` (bad input), `store` (the database), `stopped` (stopping), or
    /// `request` (a malformed call).
    pub kind: String,
}

/// [`HeadSummary`] as `status --json` writes it, for reading it back.
#[derive(Deserialize)]
struct HeadView {
    /// Its seq.
    seq: u64,
    /// Failed attempts so far.
    attempts: u32,
    /// Not sent before.
    next_attempt: Option<Timestamp>,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// When it was queued.
    queued_at: Timestamp,
}

/// Reads `head` of a status answer (`null` or the object).
pub(crate) fn deserialize_head<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<HeadSummary>, D::Error> {
    Ok(
        Option::<HeadView>::deserialize(deserializer)?.map(|h| HeadSummary {
            seq: h.seq,
            attempts: h.attempts,
            next_attempt: h.next_attempt,
            last_error: h.last_error,
            queued_at: h.queued_at,
        }),
    )
}

#[cfg(test)]
mod tests {
    //! The JSON each answer crosses the socket as: the CLI of the same version reads
    //! it back, and `curl --unix-socket` users read it as documented.

    use super::*;
    use crate::SyncStatus;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(seconds * 1000)
    }

    #[test]
    fn a_push_answer_is_count_and_queued() {
        let report = PushReport {
            count: 2,
            queued: 3,
        };
        let json = serde_json::to_string(&PushAnswer::from(report)).unwrap();
        assert_eq!(json, r#"{"count":2,"queued":3}"#);
        let back: PushAnswer = serde_json::from_str(&json).unwrap();
        assert_eq!(PushReport::from(back), report);
    }

    #[test]
    fn a_pull_answer_says_whether_it_is_the_cache() {
        let report = PullReport {
            count: 1,
            context: vec![serde_json::json!({"id": "a"})],
            from_cache: true,
        };
        let json = serde_json::to_string(&PullAnswer::from(report.clone())).unwrap();
        assert_eq!(
            json,
            r#"{"count":1,"context":[{"id":"a"}],"from_cache":true}"#
        );
        let back: PullAnswer = serde_json::from_str(&json).unwrap();
        assert_eq!(PullReport::from(back), report);
    }

    #[test]
    fn a_requeue_answer_pairs_old_and_new_seqs() {
        let report = RequeueReport {
            requeued: vec![(4, 9)],
            missing: vec![7],
        };
        let json = serde_json::to_string(&RequeueAnswer::from(report.clone())).unwrap();
        assert_eq!(json, r#"{"requeued":[[4,9]],"missing":[7]}"#);
        let back: RequeueAnswer = serde_json::from_str(&json).unwrap();
        assert_eq!(RequeueReport::from(back), report);
    }

    #[test]
    fn a_status_answer_reads_back_with_or_without_a_head() {
        let mut status = SyncStatus {
            agent_id: "a".into(),
            queued_entries: 1,
            queued_dispatches: 2,
            dead_letters: 3,
            ledger_entries: 4,
            context_count: 5,
            db_bytes: 6,
            auth_failed: true,
            last_push_at: Some(at(10)),
            last_pull_at: None,
            head: Some(HeadSummary {
                seq: 7,
                attempts: 8,
                next_attempt: Some(at(20)),
                last_error: Some("HTTP 503".into()),
                queued_at: at(30),
            }),
            watches: None,
            watch_budget: Some(9),
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"agent_id":"a","queued_entries":1,"queued_dispatches":2,"dead_letters":3,"#
                .to_string()
                + r#""ledger_entries":4,"context_count":5,"db_bytes":6,"auth_failed":true,"#
                + r#""last_push_at":"1970-01-01T00:00:10Z","last_pull_at":null,"#
                + r#""head":{"seq":7,"attempts":8,"next_attempt":"1970-01-01T00:00:20Z","#
                + r#""last_error":"HTTP 503","queued_at":"1970-01-01T00:00:30Z"},"#
                + r#""watch_budget":9}"#
        );
        assert_eq!(serde_json::from_str::<SyncStatus>(&json).unwrap(), status);

        status.head = None;
        let json = serde_json::to_string(&status).unwrap();
        assert!(json.contains(r#""head":null"#), "{json}");
        assert_eq!(serde_json::from_str::<SyncStatus>(&json).unwrap(), status);

        // An older daemon's answer: no `db_bytes`, a head without the optional fields.
        let older = r#"{"agent_id":"a","queued_entries":0,"queued_dispatches":0,"#.to_string()
            + r#""dead_letters":0,"ledger_entries":0,"context_count":0,"auth_failed":false,"#
            + r#""last_push_at":null,"last_pull_at":null,"#
            + r#""head":{"seq":1,"attempts":0,"queued_at":"1970-01-01T00:00:30Z"}}"#;
        let read: SyncStatus = serde_json::from_str(&older).unwrap();
        assert_eq!(read.db_bytes, 0);
        let head = read.head.unwrap();
        assert_eq!(
            (head.seq, head.next_attempt, head.last_error),
            (1, None, None)
        );
    }
}
