//! The bodies of the control API that only the socket has: what the CLI sends, the
//! process that answers, and a failure. The answers are the actors' replies and the
//! status, serialised as they are ([`PushReport`], [`PullReport`], [`RequeueReport`],
//! [`SyncStatus`](crate::SyncStatus)), in the shapes `--json` prints where there is one
//! (`/v1/status` is exactly `status --json`), so `curl --unix-socket` is as useful as
//! the CLI.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/status` | | [`SyncStatus`](crate::SyncStatus), plus `process` ([`ProcessInfo`]) |
//! | `GET /v1/queue?after=SEQ&limit=N` | | `[QueueEntry]`, a page ([`ListQuery`]) |
//! | `GET /v1/dead-letters?after=SEQ&limit=N` | | `[DeadLetter]`, a page |
//! | `POST /v1/requeue` | [`RequeueCall`] | [`RequeueReport`] |
//! | `GET /v1/history?limit=N` | | `[SyncRecord]` |
//! | `POST /v1/push` | [`PushCall`] | [`PushReport`] |
//! | `POST /v1/pull` | [`PullCall`] | [`PullReport`], `from_cache` included |
//! | `GET /metrics` | | Prometheus (OpenMetrics) text |
//! | `GET /health` | | `{"status":"ok",...}` or 503 `{"status":"unavailable","reason":...}` |
//!
//! A failure is a non-2xx status with an [`ErrorBody`]. No token ever crosses the
//! socket: the running process pushes and pulls with its own.

#[cfg(doc)]
use agent_sync_actors::messages::{PullReport, PushReport, RequeueReport};
use agent_sync_actors::time::Timestamp;
use serde::{Deserialize, Serialize};
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

/// The body of `POST /v1/push`: a [`SyncPush`](agent_sync_actors::messages::SyncPush)
/// by value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PushCall {
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

/// The body of `POST /v1/pull`: a [`SyncPull`](agent_sync_actors::messages::SyncPull)
/// by value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PullCall {
    /// Only context since this point.
    #[serde(default)]
    pub since: Option<String>,
    /// Pull for this agent; the running process's agent id when absent.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// The body of `POST /v1/requeue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequeueCall {
    /// Which dead letters; every one when absent.
    #[serde(default)]
    pub seqs: Option<Vec<u64>>,
}

/// `GET /v1/queue` and `GET /v1/dead-letters` query: one page, oldest first. The
/// next page is `after` = the last seq of this one; an empty page is the end.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only seqs greater than this (absent: from the start).
    #[serde(default)]
    pub after: Option<u64>,
    /// At most this many, up to [`LIST_PAGE`](crate::paging::LIST_PAGE) (absent:
    /// that many); a larger one is refused rather than cut silently, so a client
    /// paging by "a short page is the last" cannot stop early.
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
    /// `invalid` (bad input), `store` (the database), `encode` (a body that could
    /// not be encoded), `stopped` (stopping), `request` (a malformed call) or
    /// `metrics` (the exposition could not be encoded).
    pub kind: String,
}

#[cfg(test)]
mod tests {
    //! The JSON each answer crosses the socket as: the CLI of the same version reads
    //! it back, and `curl --unix-socket` users read it as documented.

    use agent_sync_actors::messages::{HeadSummary, PullReport, PushReport, RequeueReport};

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
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json, r#"{"count":2,"queued":3}"#);
        assert_eq!(serde_json::from_str::<PushReport>(&json).unwrap(), report);
    }

    #[test]
    fn a_pull_answer_says_whether_it_is_the_cache() {
        let report = PullReport {
            count: 1,
            context: vec![serde_json::json!({"id": "a"})],
            from_cache: true,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(
            json,
            r#"{"count":1,"context":[{"id":"a"}],"from_cache":true}"#
        );
        assert_eq!(serde_json::from_str::<PullReport>(&json).unwrap(), report);
    }

    #[test]
    fn a_requeue_answer_pairs_old_and_new_seqs() {
        let report = RequeueReport {
            requeued: vec![(4, 9)],
            missing: vec![7],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json, r#"{"requeued":[[4,9]],"missing":[7]}"#);
        assert_eq!(
            serde_json::from_str::<RequeueReport>(&json).unwrap(),
            report
        );
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
