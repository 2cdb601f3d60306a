//! The push path of the actors (design.md §5 and §6: P1-P11, H1) against a real
//! loopback platform, driven only through the actors' messages.
//!
//! Wall-clock checks use windows around the call (`before`/`after`); backoff
//! schedules are checked under paused tokio time with an in-process stand-in, never
//! with real sockets (design.md §11).

mod common;

use std::time::{Duration, SystemTime};

use actix_web::http::header::HttpDate;
use serde_json::{json, Value};

use agent_sync_actors::messages::*;
use agent_sync_actors::model::{DeadLetter, Direction, QueueEntry, SyncRecord};
use agent_sync_actors::queue::Jitter;
use agent_sync_actors::time::{Clock, Timestamp};
use agent_sync_actors::{Store, SyncActors, SyncError};

use common::*;

// ------------------------------------------------------------------ helpers

fn now() -> Timestamp {
    Clock::system().now()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// `t` lies in `[from, to]`.
#[track_caller]
fn assert_between(what: &str, t: Timestamp, from: Timestamp, to: Timestamp) {
    assert!(
        from <= t && t <= to,
        "{what} = {t} is not within [{from}, {to}]"
    );
}

/// `next` is `delay` after some instant of `[before, after]` (50 ms of slack).
#[track_caller]
/// `next_attempt` is a jittered `step` after the failure: within [0.5x, 1.5x] of it.
fn assert_backoff(next: Option<Timestamp>, before: Timestamp, after: Timestamp, step: Duration) {
    let next = next.expect("next_attempt is set");
    let from = before.saturating_add(step / 2);
    let to = after
        .saturating_add(step * 3 / 2)
        .saturating_add(millis(50));
    assert_between("next_attempt", next, from, to);
}

fn assert_next_attempt(
    next: Option<Timestamp>,
    before: Timestamp,
    after: Timestamp,
    delay: Duration,
) {
    let next = next.expect("next_attempt is set");
    let slack = millis(50);
    let from = Timestamp::from_unix_millis(before.saturating_add(delay).unix_millis() - 50);
    assert_between(
        "next_attempt",
        next,
        from,
        after.saturating_add(delay).saturating_add(slack),
    );
}

async fn sync_push(actors: &SyncActors, msg: SyncPush) -> PushReport {
    actors
        .pusher
        .send(msg)
        .await
        .expect("the pusher is running")
        .unwrap_or_else(|e| panic!("push failed: {e}"))
}

async fn push_default(actors: &SyncActors) -> PushReport {
    sync_push(actors, SyncPush::default()).await
}

async fn push_queue_only(actors: &SyncActors) -> PushReport {
    sync_push(
        actors,
        SyncPush {
            queue_only: true,
            ..SyncPush::default()
        },
    )
    .await
}

async fn push_host(actors: &SyncActors, dispatches: Vec<Value>) -> PushReport {
    sync_push(
        actors,
        SyncPush {
            dispatches: Some(dispatches),
            ..SyncPush::default()
        },
    )
    .await
}

async fn drain(actors: &SyncActors) -> PushReport {
    actors
        .pusher
        .send(Drain)
        .await
        .expect("the pusher is running")
        .unwrap_or_else(|e| panic!("drain failed: {e}"))
}

async fn queue(actors: &SyncActors) -> Vec<QueueEntry> {
    actors
        .queue
        .send(ListQueue::default())
        .await
        .expect("the queue is running")
        .expect("list the queue")
}

async fn summary(actors: &SyncActors) -> QueueSummary {
    actors
        .queue
        .send(QueueStatus)
        .await
        .expect("the queue is running")
        .expect("queue status")
}

async fn dead_letters(actors: &SyncActors) -> Vec<DeadLetter> {
    actors
        .queue
        .send(ListDeadLetters)
        .await
        .expect("the queue is running")
        .expect("list dead letters")
}

async fn records(actors: &SyncActors, limit: Option<usize>) -> Vec<SyncRecord> {
    actors
        .history
        .send(RecentRecords { limit })
        .await
        .expect("history is running")
        .expect("read history")
}

async fn sync_state(actors: &SyncActors) -> SyncState {
    actors
        .history
        .send(ReadSyncState)
        .await
        .expect("history is running")
        .expect("read sync state")
}

async fn ledger_size(actors: &SyncActors) -> u64 {
    actors
        .ledger
        .send(LedgerSize)
        .await
        .expect("the ledger is running")
        .expect("ledger size")
}

async fn scan_ids(actors: &SyncActors) -> Vec<String> {
    let report = actors
        .scanner
        .send(Scan)
        .await
        .expect("the scanner is running")
        .expect("scan");
    report.unsynced.into_iter().map(|d| d.id).collect()
}

/// The reply of a push or drain: `count` delivered, `queued` dispatches left.
fn pushed(count: usize, queued: u64) -> PushReport {
    PushReport { count, queued }
}

fn host(id: &str) -> Value {
    json!({"id": id, "status": "completed", "agent": "host-agent"})
}

fn entry_ids(entry: &QueueEntry) -> Vec<String> {
    entry
        .dispatches
        .iter()
        .map(|d| d["id"].as_str().expect("dispatch id").to_string())
        .collect()
}

fn directions(records: &[SyncRecord]) -> Vec<(Direction, u64)> {
    records
        .iter()
        .map(|r| (r.direction, r.items_count))
        .collect()
}

// ------------------------------------------------------------------------- P1

#[actix::test]
async fn p1_scanned_terminal_workspace_is_pushed_once() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-5");
    write_workspace(
        dirs.root(),
        "core/go-io/task-6",
        &status_json("running", "2026-04-14T12:00:00Z", 1),
    );
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    let before = now();
    let report = push_default(&actors).await;
    let after = now();

    assert_eq!(report, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(server.requests().len(), 1, "nothing but the push was sent");
    let push = &pushes[0];
    assert_eq!(push.dispatch_ids(), ["core/go-io/task-5"]);
    let body = push.json();
    assert_eq!(body["agent_id"], AGENT_ID);
    assert!(
        body.get("fleet_node_id").is_none(),
        "unset fleet node sent: {body}"
    );
    assert_eq!(push.header("authorization"), Some("Bearer test-token"));
    assert_eq!(push.header("accept"), Some("application/json"));
    assert_eq!(push.header("content-type"), Some("application/json"));
    assert!(!push.idempotency_key().is_empty());

    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dispatches, s.dead_letters), (0, 0, 0));
    assert_eq!(s.head, None);
    assert!(queue(&actors).await.is_empty());

    let state = sync_state(&actors).await;
    // History times are whole seconds (design.md §4.4).
    let last_push_at = state.last_push_at.expect("last_push_at is set");
    assert_eq!(last_push_at.unix_millis() % 1000, 0, "{last_push_at}");
    assert_between("last_push_at", last_push_at, before.whole_seconds(), after);
    assert!(!state.auth_failed);
    let history = records(&actors, None).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].direction, Direction::Push);
    assert_eq!(history[0].items_count, 1);
    assert_eq!(history[0].agent_id, AGENT_ID);
    assert_eq!(history[0].payload_size, push.body.len() as u64);
    assert_eq!(ledger_size(&actors).await, 1);

    // Once: pushing again (and draining) sends nothing more.
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(drain(&actors).await, pushed(0, 0));
    assert_eq!(server.pushes().len(), 1);
    assert_eq!(records(&actors, None).await.len(), 1);
    server.stop().await;
}

// ------------------------------------------------------------------------- P2

#[actix::test]
async fn p2_host_dispatches_pushed_verbatim_under_given_agent_id() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    // Host dispatches mean no scan: this workspace must not go out with them.
    write_done(dirs.root(), "core/go-io/scanned");
    let opts = Options {
        fleet_node_id: Some(3),
        ..Options::default()
    };
    let (actors, _store) =
        start_actors_with(dirs.root(), dirs.state(), &server.url(), Some(TOKEN), &opts);

    let dispatches = vec![
        json!({"id": "host-1", "status": "completed",
               "nested": {"list": [1, 2.5, "x", null, true]}, "unicode": "héllo ✓"}),
        json!({"no_id_here": true, "runs": 3.0, "big": 9_007_199_254_740_993u64}),
    ];
    let report = sync_push(
        &actors,
        SyncPush {
            agent_id: Some("host-agent-7".into()),
            fleet_node_id: Some(7),
            dispatches: Some(dispatches.clone()),
            queue_only: false,
        },
    )
    .await;
    assert_eq!(report, pushed(2, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(
        pushes[0].json(),
        json!({"agent_id": "host-agent-7", "fleet_node_id": 7, "dispatches": dispatches})
    );

    // Not naming an agent or node: the service's own.
    let report = push_host(&actors, vec![json!({"id": "host-2"})]).await;
    assert_eq!(report, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(
        pushes[1].json(),
        json!({"agent_id": AGENT_ID, "fleet_node_id": 3, "dispatches": [{"id": "host-2"}]})
    );

    // The workspace was never scanned nor marked; host dispatches carry no fingerprint.
    assert_eq!(ledger_size(&actors).await, 0);
    assert_eq!(scan_ids(&actors).await, ["core/go-io/scanned"]);
    let history = records(&actors, None).await;
    assert_eq!(
        history
            .iter()
            .map(|r| r.agent_id.as_str())
            .collect::<Vec<_>>(),
        ["host-agent-7", AGENT_ID]
    );
    assert_eq!(history[0].fleet_node_id, Some(7));
    server.stop().await;
}

#[actix::test]
async fn p2_malformed_host_dispatches_are_refused_before_anything_is_queued() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    let result = actors
        .pusher
        .send(SyncPush {
            dispatches: Some(vec![json!({"id": "ok"}), json!(5)]),
            ..SyncPush::default()
        })
        .await
        .expect("the pusher is running");
    match result {
        Err(SyncError::Invalid(e)) => assert!(e.to_string().contains("dispatch 1"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(summary(&actors).await.entries, 0);
    assert!(server.requests().is_empty());
    server.stop().await;
}

// ------------------------------------------------------------------------- P3

#[actix::test]
async fn p3_no_token_queues_host_dispatches_but_not_scanned() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    let (root, state, url) = (
        dirs.root().to_path_buf(),
        dirs.state().to_path_buf(),
        server.url(),
    );
    in_own_system(move || async move {
        let (actors, _store) = start_actors(&root, &state, &url, None);
        let report = push_host(&actors, vec![host("h-1"), host("h-2")]).await;
        assert_eq!(report, pushed(0, 2));
        // A scanning push and a drain offline: nothing more queued, nothing sent.
        assert_eq!(push_default(&actors).await, pushed(0, 2));
        assert_eq!(drain(&actors).await, pushed(0, 2));
        let entries = queue(&actors).await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entry_ids(&entries[0]), ["h-1", "h-2"]);
        assert!(entries[0].fingerprints.is_empty());
        assert_eq!((entries[0].attempts, entries[0].next_attempt), (0, None));
        // The workspace was not queued, so a later scan finds it again.
        assert_eq!(scan_ids(&actors).await, ["core/go-io/task-1"]);
        assert_eq!(sync_state(&actors).await.last_push_at, None);
    })
    .await;
    assert!(
        server.requests().is_empty(),
        "offline sent requests: {:?}",
        server.requests()
    );

    // Durable: reopened with a token, the queued entry goes out at start without a
    // push, and the next scan finds the workspace.
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    wait_until("the queued entry is delivered at start", secs(10), || {
        server.delivered().len() == 1
    })
    .await;
    assert_eq!(server.pushes()[0].dispatches(), [host("h-1"), host("h-2")]);
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].dispatch_ids(), ["core/go-io/task-1"]);
    server.stop().await;
}

// ------------------------------------------------------------------------- P4

#[actix::test]
async fn p4_platform_down_keeps_entry_with_one_attempt_and_1s_backoff() {
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &dead_url(), Some(TOKEN));

    let before = now();
    let report = push_default(&actors).await;
    let after = now();

    assert_eq!(report, pushed(0, 1));
    let entries = queue(&actors).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry_ids(entry), ["core/go-io/task-1"]);
    assert_eq!(
        entry
            .fingerprints
            .get("core/go-io/task-1")
            .map(String::as_str),
        Some("2026-04-14T12:00:00Z#1")
    );
    assert_eq!(entry.attempts, 1);
    assert_backoff(entry.next_attempt, before, after, secs(1));
    assert!(
        entry.last_error.as_deref().is_some_and(|e| !e.is_empty()),
        "{entry:?}"
    );
    assert!(!entry.idempotency_key.is_empty());

    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dispatches, s.dead_letters), (1, 1, 0));
    let head = s.head.expect("a head");
    assert_eq!(head.seq, entry.seq);
    assert_eq!(head.attempts, 1);
    assert_eq!(head.next_attempt, entry.next_attempt);
    assert_eq!(head.last_error, entry.last_error);

    // Not delivered: not marked, not recorded.
    assert_eq!(ledger_size(&actors).await, 0);
    assert_eq!(sync_state(&actors).await.last_push_at, None);
    assert!(records(&actors, None).await.is_empty());
}

// ------------------------------------------------------------------------- P5

#[actix::test]
async fn p5_entry_in_backoff_window_sends_no_request() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(503).header("Retry-After", "3"));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    let before = now();
    assert_eq!(push_host(&actors, vec![host("a")]).await, pushed(0, 1));
    let after = now();
    assert_eq!(server.pushes().len(), 1);
    let head = queue(&actors).await.remove(0);
    assert_next_attempt(head.next_attempt, before, after, secs(3));
    let until = head.next_attempt.unwrap();

    // Inside the window, no way of pushing sends anything; new work queues behind.
    assert_eq!(drain(&actors).await, pushed(0, 1));
    assert_eq!(push_queue_only(&actors).await, pushed(0, 1));
    write_done(dirs.root(), "core/go-io/task-1");
    assert_eq!(push_default(&actors).await, pushed(0, 2));
    assert_eq!(push_host(&actors, vec![host("b")]).await, pushed(0, 3));
    assert_eq!(
        actors.queue.send(LeaseNext).await.unwrap().unwrap(),
        Lease::Waiting { until }
    );
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
    assert!(now() < until, "the checks above must run inside the window");

    // After the window the Pusher's own timer sends the head, then the rest, in order:
    // the scanned and the host dispatch queued behind it share one never-sent entry.
    wait_until("the queue is delivered", secs(10), || {
        server.delivered().len() == 2
    })
    .await;
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 3, "{pushes:?}");
    assert_eq!(pushes[1].dispatch_ids(), ["a"]);
    assert_eq!(pushes[1].idempotency_key(), pushes[0].idempotency_key());
    assert!(
        pushes[1].received_at - pushes[0].received_at >= millis(2900),
        "retried after {:?}",
        pushes[1].received_at - pushes[0].received_at
    );
    assert_eq!(pushes[2].dispatch_ids(), ["core/go-io/task-1", "b"]);
    server.stop().await;
}

// ------------------------------------------------------------------------- P6

#[actix::test]
async fn p6_queue_only_push_never_scans_and_empty_queue_sends_nothing() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    assert_eq!(push_queue_only(&actors).await, pushed(0, 0));
    assert_eq!(drain(&actors).await, pushed(0, 0));
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert_eq!(summary(&actors).await.entries, 0);
    assert_eq!(ledger_size(&actors).await, 0);
    assert!(records(&actors, None).await.is_empty());

    // The workspace was there to be found: a scanning push sends it.
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    assert_eq!(server.pushes().len(), 1);
    server.stop().await;
}

// ------------------------------------------------------------------------- P7

#[actix::test]
async fn p7_delivered_dispatches_not_pushed_again_after_reopen_until_fingerprint_changes() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    write_done(dirs.root(), "core/go-io/task-2");
    let (root, state, url) = (
        dirs.root().to_path_buf(),
        dirs.state().to_path_buf(),
        server.url(),
    );
    in_own_system(move || async move {
        let (actors, _store) = start_actors(&root, &state, &url, Some(TOKEN));
        assert_eq!(push_default(&actors).await, pushed(2, 0));
        assert_eq!(push_default(&actors).await, pushed(0, 0));
        assert_eq!(ledger_size(&actors).await, 2);
        // While these actors hold the database, nobody else can open it.
        assert!(Store::open(&state).is_err());
    })
    .await;
    assert_eq!(server.pushes().len(), 1);

    // Every actor of that System is gone with it: the database opens again.
    drop(Store::open(dirs.state()).expect("reopen after the first System stopped"));
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    assert_eq!(ledger_size(&actors).await, 2);
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.pushes().len(), 1, "re-pushed after a restart");

    // A new `runs` is a new fingerprint.
    write_workspace(
        dirs.root(),
        "core/go-io/task-1",
        &status_json("completed", "2026-04-14T12:00:00Z", 2),
    );
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].dispatch_ids(), ["core/go-io/task-1"]);
    assert_eq!(pushes[1].dispatches()[0]["runs"], 2);
    assert_eq!(push_default(&actors).await.count, 0);

    // So is a new `updated_at`.
    write_workspace(
        dirs.root(),
        "core/go-io/task-2",
        &status_json("merged", "2026-04-15T08:00:00Z", 1),
    );
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 3);
    assert_eq!(pushes[2].dispatch_ids(), ["core/go-io/task-2"]);
    assert_eq!(
        pushes[2].dispatches()[0]["updated_at"],
        "2026-04-15T08:00:00Z"
    );

    // The same fingerprint written differently (another offset) is not new.
    write_workspace(
        dirs.root(),
        "core/go-io/task-2",
        &status_json("merged", "2026-04-15T10:00:00+02:00", 1),
    );
    assert_eq!(push_default(&actors).await.count, 0);
    assert_eq!(server.pushes().len(), 3);
    server.stop().await;
}

// ------------------------------------------------------------------------- P8

#[actix::test]
async fn p8_five_pushes_while_down_leave_one_queued_copy() {
    let server = LoopbackPlatform::start().await;
    server.set_default(Scripted::status(503));
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/a");
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    for i in 0..5 {
        if i == 2 {
            write_done(dirs.root(), "core/go-io/b");
        }
        let report = push_default(&actors).await;
        assert_eq!(report.count, 0, "push {i}");
        assert_eq!(report.queued, if i < 2 { 1 } else { 2 }, "push {i}");
    }
    let entries = queue(&actors).await;
    let ids: Vec<String> = entries.iter().flat_map(entry_ids).collect();
    assert_eq!(ids, ["core/go-io/a", "core/go-io/b"], "{entries:?}");
    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dispatches), (2, 2));
    let tried = server.pushes();
    assert!(!tried.is_empty());
    assert!(
        tried.iter().all(|p| p.dispatch_ids() == ["core/go-io/a"]),
        "only the head is tried while it fails: {tried:?}"
    );

    // Platform back: each dispatch is delivered exactly once.
    server.set_default(Scripted::ok());
    wait_until("both entries are delivered", secs(15), || {
        server.delivered().len() == 2
    })
    .await;
    let delivered: Vec<String> = server
        .delivered()
        .iter()
        .flat_map(|p| p.dispatch_ids())
        .collect();
    assert_eq!(delivered, ["core/go-io/a", "core/go-io/b"]);
    // The server has answered; wait for the Pusher to have recorded it too.
    for _ in 0..500 {
        if summary(&actors).await.entries == 0 {
            break;
        }
        actix_rt::time::sleep(millis(10)).await;
    }
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.delivered().len(), 2);
    server.stop().await;
}

// ------------------------------------------------------------------------- P9

#[actix::test]
async fn p9_report_metadata_and_fields_reach_the_platform() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let full = json!({
        "status": "blocked", "agent": "codex", "repo": "go-io", "org": "core",
        "task": "task-9", "branch": "agent/task-9", "issue": 42, "pid": 0,
        "process_id": "proc-abc", "started_at": "2026-04-14T11:00:00Z",
        "updated_at": "2026-04-14T12:30:00+01:00", "question": "Which API version?",
        "runs": 3, "pr_url": "https://example.invalid/pr/1", "unknown_field": {"x": 1}
    });
    write_workspace(dirs.root(), "core/go-io/task-9", &full.to_string());
    let report = json!({
        "summary": "did things",
        "findings": [{"severity": "high", "message": "unchecked error"}],
        "changes": {"files": 2, "lines": 40}
    });
    write_report(dirs.root(), "core/go-io/task-9", &report.to_string());
    // Empty findings and changes are left out; the report itself still goes.
    write_done(dirs.root(), "core/go-io/task-a");
    write_report(
        dirs.root(),
        "core/go-io/task-a",
        r#"{"summary":"s","findings":[],"changes":{}}"#,
    );
    // An empty report object adds nothing.
    write_done(dirs.root(), "core/go-io/task-b");
    write_report(dirs.root(), "core/go-io/task-b", "{}");

    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    assert_eq!(push_default(&actors).await, pushed(3, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 1);
    let dispatches = pushes[0].dispatches();
    assert_eq!(
        pushes[0].dispatch_ids(),
        [
            "core/go-io/task-9",
            "core/go-io/task-a",
            "core/go-io/task-b"
        ]
    );
    assert_eq!(
        dispatches[0],
        json!({
            "id": "core/go-io/task-9", "workspace": "core/go-io/task-9",
            "repo": "go-io", "org": "core", "task": "task-9", "agent": "codex",
            "branch": "agent/task-9", "status": "blocked",
            "question": "Which API version?", "issue": 42, "runs": 3,
            "process_id": "proc-abc", "pr_url": "https://example.invalid/pr/1",
            "started_at": "2026-04-14T11:00:00Z", "updated_at": "2026-04-14T11:30:00Z",
            "report": report,
            "findings": [{"severity": "high", "message": "unchecked error"}],
            "changes": {"files": 2, "lines": 40}
        })
    );
    assert_eq!(
        dispatches[1]["report"],
        json!({"summary": "s", "findings": [], "changes": {}})
    );
    assert!(dispatches[1].get("findings").is_none(), "{}", dispatches[1]);
    assert!(dispatches[1].get("changes").is_none(), "{}", dispatches[1]);
    for key in ["report", "findings", "changes"] {
        assert!(
            dispatches[2].get(key).is_none(),
            "{key} in {}",
            dispatches[2]
        );
    }
    server.stop().await;
}

// ------------------------------------------------------------------------ P10

#[actix::test]
async fn p10_400_dead_letters_head_and_next_entry_still_delivered() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(400).json(json!({"error": "schema: id missing"})));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::max_batch(1),
    );

    let before = now();
    let report = push_host(&actors, vec![host("bad"), host("good")]).await;
    let after = now();

    assert_eq!(report, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert_eq!(
        (pushes[0].status, pushes[0].dispatch_ids()),
        (400, vec!["bad".to_string()])
    );
    assert_eq!(
        (pushes[1].status, pushes[1].dispatch_ids()),
        (200, vec!["good".to_string()])
    );
    assert_ne!(pushes[0].idempotency_key(), pushes[1].idempotency_key());

    let letters = dead_letters(&actors).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.status, 400);
    assert!(letter.reason.contains("400"), "{}", letter.reason);
    assert!(
        letter.reason.contains("schema: id missing"),
        "{}",
        letter.reason
    );
    assert_eq!(
        letter.entry.dispatches,
        [host("bad").as_object().unwrap().clone()]
    );
    assert_eq!(letter.entry.idempotency_key, pushes[0].idempotency_key());
    assert_between("dead_at", letter.dead_at, before, after);

    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dispatches, s.dead_letters), (0, 0, 1));
    let history = records(&actors, None).await;
    assert_eq!(
        directions(&history),
        [(Direction::DeadLetter, 1), (Direction::Push, 1)]
    );
    assert_eq!(history[0].payload_size, pushes[0].body.len() as u64);
    server.stop().await;
}

#[actix::test]
async fn p10_429_retry_after_120_sets_next_attempt() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(429).header("Retry-After", "120"));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    let before = now();
    let report = push_host(&actors, vec![host("a")]).await;
    let after = now();

    assert_eq!(report, pushed(0, 1));
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert_next_attempt(entry.next_attempt, before, after, secs(120));
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("429")),
        "{entry:?}"
    );
    assert_eq!(dead_letters(&actors).await.len(), 0);
    assert_eq!(drain(&actors).await, pushed(0, 1));
    assert_eq!(server.pushes().len(), 1);
    server.stop().await;
}

#[actix::test]
async fn p10_retry_after_http_date_is_honoured() {
    let server = LoopbackPlatform::start().await;

    // A date 90 s ahead wins over the 1 s backoff.
    let date = HttpDate::from(SystemTime::now() + secs(90)).to_string();
    server.respond(Scripted::status(503).header("Retry-After", &date));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    let before = now();
    assert_eq!(push_host(&actors, vec![host("a")]).await.queued, 1);
    let after = now();
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    // The date has whole seconds: up to 1 s earlier than now + 90 s.
    let next = entry.next_attempt.expect("next_attempt");
    assert_between(
        "next_attempt",
        next,
        before.saturating_add(secs(88)),
        after.saturating_add(secs(91)),
    );

    // A date in the past asks for nothing: the backoff (1 s) applies.
    server.respond(Scripted::status(503).header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"));
    let dirs2 = Dirs::new();
    let (actors2, _store2) = start_actors(dirs2.root(), dirs2.state(), &server.url(), Some(TOKEN));
    let before = now();
    assert_eq!(push_host(&actors2, vec![host("b")]).await.queued, 1);
    let after = now();
    let entry = queue(&actors2).await.remove(0);
    assert_backoff(entry.next_attempt, before, after, secs(1));
    assert_eq!(server.pushes().len(), 2);
    server.stop().await;
}

#[actix::test]
async fn p10_401_keeps_entry_and_sets_auth_failed_until_success() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(401).body("bad credentials"));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    let before = now();
    assert_eq!(push_host(&actors, vec![host("a")]).await, pushed(0, 1));
    let after = now();
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert_backoff(entry.next_attempt, before, after, secs(1));
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("401")),
        "{entry:?}"
    );
    assert!(
        dead_letters(&actors).await.is_empty(),
        "401 is never dropped"
    );
    let state = sync_state(&actors).await;
    assert!(state.auth_failed);
    assert_eq!(state.last_push_at, None);

    // The Pusher retries on its own timer; the success clears the flag.
    wait_until("the retry is delivered", secs(10), || {
        server.delivered().len() == 1
    })
    .await;
    assert_eq!(drain(&actors).await, pushed(0, 0));
    let state = sync_state(&actors).await;
    assert!(!state.auth_failed);
    assert!(state.last_push_at.is_some());
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].idempotency_key(), pushes[0].idempotency_key());

    // 403 is the same class.
    server.respond(Scripted::status(403));
    let dirs2 = Dirs::new();
    let (actors2, _store2) = start_actors(dirs2.root(), dirs2.state(), &server.url(), Some(TOKEN));
    assert_eq!(push_host(&actors2, vec![host("b")]).await.queued, 1);
    assert_eq!(queue(&actors2).await[0].attempts, 1);
    assert!(dead_letters(&actors2).await.is_empty());
    assert!(sync_state(&actors2).await.auth_failed);
    server.stop().await;
}

#[actix::test]
async fn p10_auth_failed_survives_transient_failures_until_a_push_succeeds_under_paused_time() {
    tokio::time::pause();
    let clock = Clock::tokio();
    let platform = ScriptedPlatform::new(DeliveryOutcome::Delivered { payload_size: 0 });
    platform.respond(status_outcome(401));
    platform.respond(status_outcome(503));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_on(
        dirs.root(),
        dirs.state(),
        platform.as_platform(),
        Some(TOKEN),
        &Options::default(),
        clock,
    );
    assert_eq!(push_host(&actors, vec![host("a")]).await.count, 0);
    assert!(sync_state(&actors).await.auth_failed);

    tokio::time::sleep(millis(1500)).await; // the 1 s retry: a 503
    assert_eq!(platform.push_times().len(), 2);
    assert_eq!(queue(&actors).await[0].attempts, 2);
    assert!(sync_state(&actors).await.auth_failed, "a 503 is no success");

    tokio::time::sleep(secs(5)).await; // the 5 s retry: delivered
    assert_eq!(platform.push_times().len(), 3);
    assert!(queue(&actors).await.is_empty());
    let state = sync_state(&actors).await;
    assert!(!state.auth_failed);
    assert!(state.last_push_at.is_some());
}

#[actix::test]
async fn p10_413_splits_entry_in_order_with_derived_keys() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(413));
    let dirs = Dirs::new();
    for task in ["t1", "t2", "t3", "t4"] {
        write_done(dirs.root(), &format!("o/r/{task}"));
    }
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::max_batch(3),
    );

    // Entries: A = [t1, t2, t3], B = [t4]. A is too large: halves of 2 and 1, sent
    // before B.
    assert_eq!(push_default(&actors).await, pushed(4, 0));
    let pushes = server.pushes();
    let seen: Vec<(u16, Vec<String>)> = pushes
        .iter()
        .map(|p| (p.status, p.dispatch_ids()))
        .collect();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        [
            (413, ids(&["o/r/t1", "o/r/t2", "o/r/t3"])),
            (200, ids(&["o/r/t1", "o/r/t2"])),
            (200, ids(&["o/r/t3"])),
            (200, ids(&["o/r/t4"])),
        ]
    );
    let key = pushes[0].idempotency_key();
    assert_eq!(pushes[1].idempotency_key(), format!("{key}.1"));
    assert_eq!(pushes[2].idempotency_key(), format!("{key}.2"));
    let other = pushes[3].idempotency_key();
    assert!(
        other != key && !other.starts_with(&format!("{key}.")),
        "{other}"
    );

    // Both halves marked the ledger; nothing dead-lettered.
    assert_eq!(ledger_size(&actors).await, 4);
    assert!(dead_letters(&actors).await.is_empty());
    assert_eq!(
        directions(&records(&actors, None).await),
        [
            (Direction::Push, 2),
            (Direction::Push, 1),
            (Direction::Push, 1)
        ]
    );
    assert_eq!(push_default(&actors).await.count, 0);
    assert_eq!(server.pushes().len(), 4);
    server.stop().await;
}

#[actix::test]
async fn p10_413_on_a_single_dispatch_part_dead_letters_only_that_part() {
    let server = LoopbackPlatform::start().await;
    for _ in 0..3 {
        server.respond(Scripted::status(413));
    }
    let dirs = Dirs::new();
    for task in ["t1", "t2", "t3"] {
        write_done(dirs.root(), &format!("o/r/{task}"));
    }
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    // [t1 t2 t3] 413 -> [t1 t2] 413 -> [t1] 413: refused for good; [t2], [t3] go.
    assert_eq!(push_default(&actors).await, pushed(2, 0));
    let pushes = server.pushes();
    let key = pushes[0].idempotency_key();
    let seen: Vec<(u16, String, Vec<String>)> = pushes
        .iter()
        .map(|p| {
            let k = p.idempotency_key();
            let suffix = k.strip_prefix(&key).expect("a derived key").to_string();
            (p.status, suffix, p.dispatch_ids())
        })
        .collect();
    let row = |status, suffix: &str, ids: &[&str]| {
        (
            status,
            suffix.to_string(),
            ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        seen,
        [
            row(413, "", &["o/r/t1", "o/r/t2", "o/r/t3"]),
            row(413, ".1", &["o/r/t1", "o/r/t2"]),
            row(413, ".1.1", &["o/r/t1"]),
            row(200, ".1.2", &["o/r/t2"]),
            row(200, ".2", &["o/r/t3"]),
        ]
    );
    let letters = dead_letters(&actors).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].status, 413);
    assert_eq!(entry_ids(&letters[0].entry), ["o/r/t1"]);
    assert_eq!(letters[0].entry.idempotency_key, format!("{key}.1.1"));
    assert_eq!(
        letters[0].entry.fingerprints.keys().collect::<Vec<_>>(),
        ["o/r/t1"]
    );
    assert_eq!(
        directions(&records(&actors, None).await),
        [
            (Direction::DeadLetter, 1),
            (Direction::Push, 1),
            (Direction::Push, 1)
        ]
    );
    // A rescan does not queue the dead-lettered dispatch again.
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.pushes().len(), 5);
    server.stop().await;
}

#[actix::test]
async fn p10_split_part_is_retried_under_its_own_key_after_a_transient_failure() {
    tokio::time::pause();
    let clock = Clock::tokio();
    let platform = ScriptedPlatform::new(DeliveryOutcome::Delivered { payload_size: 0 });
    platform.respond(status_outcome(413));
    platform.respond(status_outcome(503));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_on(
        dirs.root(),
        dirs.state(),
        platform.as_platform(),
        Some(TOKEN),
        &Options::default(),
        clock,
    );
    let report = push_host(&actors, vec![host("a"), host("b"), host("c")]).await;
    assert_eq!(report, pushed(0, 3));
    // The first half failed transiently: the entry keeps its split and backs off.
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry_ids(&entry), ["a", "b", "c"]);

    tokio::time::sleep(secs(2)).await;
    let requests = platform.push_requests();
    let seen: Vec<(String, usize)> = requests
        .iter()
        .map(|r| {
            let body = parse_push_body(&r.body);
            let n = body["dispatches"].as_array().map_or(0, Vec::len);
            (r.idempotency_key.clone(), n)
        })
        .collect();
    let key = &seen[0].0;
    assert_eq!(
        seen,
        [
            (key.clone(), 3),
            (format!("{key}.1"), 2),
            (format!("{key}.1"), 2),
            (format!("{key}.2"), 1),
        ]
    );
    assert!(queue(&actors).await.is_empty());
}

#[actix::test]
async fn p10_dead_letters_can_be_listed_and_requeued() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(400).body("schema error"));
    server.respond(Scripted::status(422).body("unprocessable"));
    let dirs = Dirs::new();
    for task in ["a", "b", "c"] {
        write_done(dirs.root(), &format!("o/r/{task}"));
    }
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::max_batch(1),
    );
    assert_eq!(push_default(&actors).await, pushed(1, 0));

    let letters = dead_letters(&actors).await;
    let listed: Vec<(u64, u16, Vec<String>)> = letters
        .iter()
        .map(|l| (l.entry.seq, l.status, entry_ids(&l.entry)))
        .collect();
    assert_eq!(
        listed,
        [
            (1, 400, vec!["o/r/a".to_string()]),
            (2, 422, vec!["o/r/b".to_string()])
        ]
    );
    assert!(
        letters[0].reason.contains("schema error"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1].reason.contains("unprocessable"),
        "{}",
        letters[1].reason
    );
    assert_eq!(summary(&actors).await.dead_letters, 2);
    // Dead letters are not queued again by a scan.
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.pushes().len(), 3);

    // Requeue one by seq (and one that does not exist): the Queue wakes the Pusher,
    // which delivers it without being asked.
    let report = actors
        .queue
        .send(Requeue {
            seqs: Some(vec![1, 99]),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.missing, [99]);
    assert_eq!(report.requeued.len(), 1);
    let (old, new) = report.requeued[0];
    assert_eq!(old, 1);
    assert!(new > 3, "requeued at the tail, got seq {new}");
    wait_until("the requeued entry is delivered", secs(10), || {
        server.delivered().len() == 2
    })
    .await;
    assert_eq!(server.pushes()[3].dispatch_ids(), ["o/r/a"]);
    let left: Vec<u64> = dead_letters(&actors)
        .await
        .iter()
        .map(|l| l.entry.seq)
        .collect();
    assert_eq!(left, [2]);

    // Requeue all.
    let report = actors
        .queue
        .send(Requeue { seqs: None })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.requeued.iter().map(|r| r.0).collect::<Vec<_>>(), [2]);
    wait_until("every requeued entry is delivered", secs(10), || {
        server.delivered().len() == 3
    })
    .await;
    assert_eq!(server.pushes()[4].dispatch_ids(), ["o/r/b"]);
    assert!(dead_letters(&actors).await.is_empty());
    assert_eq!(drain(&actors).await, pushed(0, 0));
    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dead_letters), (0, 0));
    assert_eq!(ledger_size(&actors).await, 3);
    assert_eq!(push_default(&actors).await.count, 0);
    assert_eq!(server.pushes().len(), 5);
    server.stop().await;
}

/// Starts fresh actors against a fresh server answering `status` once; pushes one
/// host dispatch; returns what is left queued and dead-lettered and the requests.
async fn one_push_answered_with(
    status: u16,
) -> (
    PushReport,
    Vec<QueueEntry>,
    Vec<DeadLetter>,
    Vec<SyncRecord>,
    usize,
    (Timestamp, Timestamp),
) {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(status).body(format!("answer {status}")));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    let before = now();
    let report = push_host(&actors, vec![host("x")]).await;
    let after = now();
    let result = (
        report,
        queue(&actors).await,
        dead_letters(&actors).await,
        records(&actors, None).await,
        server.pushes().len(),
        (before, after),
    );
    server.stop().await;
    result
}

#[actix::test]
async fn p10_5xx_and_501_classes() {
    for status in [500, 502, 503, 504, 599, 408, 429] {
        let (report, queued, dead, history, sent, (before, after)) =
            one_push_answered_with(status).await;
        assert_eq!(sent, 1, "{status}");
        assert_eq!(report, pushed(0, 1), "{status}");
        assert_eq!(queued.len(), 1, "{status}: {queued:?}");
        assert_eq!(queued[0].attempts, 1, "{status}");
        assert_backoff(queued[0].next_attempt, before, after, secs(1));
        let error = queued[0].last_error.clone().unwrap_or_default();
        assert!(error.contains(&status.to_string()), "{status}: {error}");
        assert!(dead.is_empty(), "{status} is transient: {dead:?}");
        assert!(history.is_empty(), "{status}: {history:?}");
    }
    let (report, queued, dead, history, sent, _) = one_push_answered_with(501).await;
    assert_eq!(sent, 1);
    assert_eq!(report, pushed(0, 0));
    assert!(queued.is_empty(), "501 is not retried: {queued:?}");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].status, 501);
    assert!(dead[0].reason.contains("answer 501"), "{}", dead[0].reason);
    assert_eq!(directions(&history), [(Direction::DeadLetter, 1)]);
}

#[actix::test]
async fn p10_other_4xx_are_dead_lettered() {
    // 413 with a single dispatch cannot be split: refused too.
    for status in [400, 404, 405, 409, 410, 413, 422] {
        let (report, queued, dead, history, sent, _) = one_push_answered_with(status).await;
        assert_eq!(sent, 1, "{status}");
        assert_eq!(report, pushed(0, 0), "{status}");
        assert!(queued.is_empty(), "{status}: {queued:?}");
        assert_eq!(dead.len(), 1, "{status}");
        assert_eq!(dead[0].status, status);
        assert_eq!(entry_ids(&dead[0].entry), ["x"]);
        assert_eq!(
            directions(&history),
            [(Direction::DeadLetter, 1)],
            "{status}"
        );
    }
}

#[actix::test]
async fn p10_network_timeout_is_transient() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::ok().delay(secs(3)));
    let dirs = Dirs::new();
    let opts = Options {
        request_timeout: secs(1),
        ..Options::default()
    };
    let (actors, _store) =
        start_actors_with(dirs.root(), dirs.state(), &server.url(), Some(TOKEN), &opts);
    let before = now();
    let report = push_host(&actors, vec![host("a")]).await;
    let after = now();
    assert_eq!(report, pushed(0, 1));
    assert!(
        after.duration_since(before) < secs(3),
        "the timeout did not cut in"
    );
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert!(entry.last_error.is_some());
    assert!(dead_letters(&actors).await.is_empty());
    // Retried with the same key (the platform may drop the duplicate).
    wait_until("the retry", secs(10), || server.pushes().len() == 2).await;
    let pushes = server.pushes();
    assert_eq!(pushes[1].idempotency_key(), pushes[0].idempotency_key());
    server.stop().await;
}

#[actix::test]
async fn p10_idempotency_key_is_stable_across_retries() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(503));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    assert_eq!(push_host(&actors, vec![host("a")]).await.queued, 1);
    assert_eq!(push_host(&actors, vec![host("b")]).await.queued, 2);
    let entries = queue(&actors).await;
    assert_eq!(entries.len(), 2);
    let (key_a, key_b) = (
        entries[0].idempotency_key.clone(),
        entries[1].idempotency_key.clone(),
    );
    assert_ne!(key_a, key_b);
    assert_eq!(server.pushes()[0].idempotency_key(), key_a);

    wait_until("the retry delivers both", secs(10), || {
        server.delivered().len() == 2
    })
    .await;
    let keys: Vec<String> = server
        .pushes()
        .iter()
        .map(|p| p.idempotency_key())
        .collect();
    assert_eq!(keys, [key_a.clone(), key_a, key_b]);
    server.stop().await;
}

#[actix::test]
async fn p10_idempotency_key_survives_a_restart_and_leftovers_go_out_at_start() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    let key = in_own_system(move || async move {
        let (actors, _store) = start_actors(&root, &state, &dead_url(), Some(TOKEN));
        assert_eq!(push_host(&actors, vec![host("a")]).await.queued, 1);
        let entries = queue(&actors).await;
        assert_eq!(entries[0].attempts, 1);
        entries[0].idempotency_key.clone()
    })
    .await;

    // No push: the Pusher drains what survived once its backoff is over.
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    wait_until("the leftover entry is delivered", secs(10), || {
        server.delivered().len() == 1
    })
    .await;
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].idempotency_key(), key);
    assert_eq!(pushes[0].dispatches(), [host("a")]);
    assert_eq!(drain(&actors).await, pushed(0, 0));
    server.stop().await;
}

// ------------------------------------------------------------------------ P11

#[actix::test]
async fn p11_large_scan_split_into_entries_of_max_batch() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let names: Vec<String> = (0..7).map(|i| format!("o/r/t{i}")).collect();
    for name in &names {
        write_done(dirs.root(), name);
    }
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::max_batch(3),
    );
    assert_eq!(push_default(&actors).await, pushed(7, 0));
    let pushes = server.pushes();
    let batches: Vec<Vec<String>> = pushes.iter().map(|p| p.dispatch_ids()).collect();
    assert_eq!(batches, [&names[0..3], &names[3..6], &names[6..7]]);
    let mut keys: Vec<String> = pushes.iter().map(|p| p.idempotency_key()).collect();
    keys.dedup();
    assert_eq!(keys.len(), 3, "one key per entry");

    // Host dispatches are batched the same way (design.md §4.3).
    let report = push_host(&actors, (0..5).map(|i| host(&format!("h{i}"))).collect()).await;
    assert_eq!(report, pushed(5, 0));
    let sizes: Vec<usize> = server.pushes()[3..]
        .iter()
        .map(|p| p.dispatches().len())
        .collect();
    assert_eq!(sizes, [3, 2]);
    server.stop().await;
}

#[actix::test]
async fn p11_default_max_batch_is_100() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    for i in 0..101 {
        write_done(dirs.root(), &format!("o/r/t{i:03}"));
    }
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    assert_eq!(push_default(&actors).await, pushed(101, 0));
    let sizes: Vec<usize> = server
        .pushes()
        .iter()
        .map(|p| p.dispatches().len())
        .collect();
    assert_eq!(sizes, [100, 1]);
    assert_eq!(server.pushes()[1].dispatch_ids(), ["o/r/t100"]);
    server.stop().await;
}

// ------------------------------------------------------------------------- H1

#[actix::test]
async fn h1_history_keeps_order_fields_and_only_newest_n() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let opts = Options {
        history_limit: 3,
        fleet_node_id: Some(11),
        ..Options::default()
    };
    let (actors, _store) =
        start_actors_with(dirs.root(), dirs.state(), &server.url(), Some(TOKEN), &opts);

    let before = now();
    for n in 1..=4usize {
        if n == 2 {
            server.respond(Scripted::status(400));
        }
        let dispatches = (0..n).map(|i| host(&format!("d{n}-{i}"))).collect();
        push_host(&actors, dispatches).await;
    }
    let after = now();
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 4);

    // Four records were written; the newest three are kept, oldest first.
    let kept = records(&actors, None).await;
    assert_eq!(
        directions(&kept),
        [
            (Direction::DeadLetter, 2),
            (Direction::Push, 3),
            (Direction::Push, 4)
        ]
    );
    for (record, push) in kept.iter().zip(&pushes[1..]) {
        assert_eq!(record.agent_id, AGENT_ID);
        assert_eq!(record.fleet_node_id, Some(11));
        assert_eq!(record.payload_size, push.body.len() as u64);
        assert_eq!(record.synced_at.unix_millis() % 1000, 0, "whole seconds");
        assert_between("synced_at", record.synced_at, before.whole_seconds(), after);
    }
    assert!(kept.windows(2).all(|w| w[0].synced_at <= w[1].synced_at));

    // A limit returns the newest, still oldest first.
    let newest = records(&actors, Some(2)).await;
    assert_eq!(newest, kept[1..]);
    assert_eq!(records(&actors, Some(10)).await, kept);
    server.stop().await;
}

// ---------------------------------------------------------------- backoff timers

/// Gaps between the first seven attempts of one entry against a platform that always
/// answers 503, with only the Pusher's own wake timer driving it (paused time).
async fn retry_gaps(jitter: Jitter) -> Vec<Duration> {
    let clock = Clock::tokio();
    let platform = ScriptedPlatform::new(status_outcome(503));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_on(
        dirs.root(),
        dirs.state(),
        platform.as_platform(),
        Some(TOKEN),
        &Options {
            jitter,
            ..Options::default()
        },
        clock,
    );
    assert_eq!(push_host(&actors, vec![host("a")]).await, pushed(0, 1));
    // No Drain from here on: only the Pusher's own wake timer. 1.5x of every step fits.
    tokio::time::sleep(secs((1 + 5 + 15 + 60 + 300 + 300) * 3 / 2 + 1)).await;
    let times = platform.push_times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).take(6).collect();
    let keys: Vec<String> = platform
        .push_requests()
        .iter()
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    gaps
}

#[actix::test]
async fn backoff_steps_1_5_15_60_300_are_jittered_within_half_and_one_and_a_half() {
    tokio::time::pause();
    // From the fifth attempt on, 5 minutes.
    let seed = [1, 5, 15, 60, 300, 300];
    let gaps = retry_gaps(Jitter::Seeded(TEST_SEED)).await;
    assert_eq!(gaps.len(), 6, "{gaps:?}");
    for (gap, step) in gaps.iter().zip(seed) {
        let step = secs(step);
        assert!(
            *gap >= step / 2 && *gap <= step * 3 / 2 + millis(20),
            "gaps {gaps:?} are not within [0.5x, 1.5x] of 1 s, 5 s, 15 s, 60 s, 300 s, 300 s"
        );
    }
    assert!(
        gaps.iter()
            .zip(seed)
            .any(|(gap, step)| gap.abs_diff(secs(step)) > millis(100)),
        "jitter moved no step: {gaps:?}"
    );

    // The same seed gives the same schedule; another gives another.
    let again = retry_gaps(Jitter::Seeded(TEST_SEED)).await;
    for (a, b) in gaps.iter().zip(&again) {
        assert!(a.abs_diff(*b) <= millis(20), "{gaps:?} vs {again:?}");
    }
    let other = retry_gaps(Jitter::Seeded(TEST_SEED + 1)).await;
    assert!(
        gaps.iter()
            .zip(&other)
            .any(|(a, b)| a.abs_diff(*b) > millis(100)),
        "{gaps:?} vs {other:?}"
    );

    // Without jitter, the seed's exact steps.
    let exact = retry_gaps(Jitter::Off).await;
    for (gap, step) in exact.iter().zip(seed) {
        let step = secs(step);
        assert!(
            *gap >= step && *gap <= step + millis(20),
            "gaps {exact:?} are not 1 s, 5 s, 15 s, 60 s, 300 s, 300 s"
        );
    }
}

// --------------------------------------------------------------------- secrets

#[actix::test]
async fn token_never_appears_in_debug_output() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(401).body("token rejected"));
    let dirs = Dirs::new();
    let config = actors_config(dirs.root(), Some(TOKEN), &Options::default());
    let mut shown = vec![
        format!("{config:?}"),
        format!("{:?}", token_source(Some(TOKEN))),
    ];

    let (actors, store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    shown.push(format!("{:?}", push_host(&actors, vec![host("a")]).await));
    shown.push(format!("{:?}", queue(&actors).await));
    shown.push(format!("{:?}", summary(&actors).await));
    shown.push(format!("{:?}", sync_state(&actors).await));
    shown.push(format!("{store:?}"));
    let refused = actors
        .pusher
        .send(SyncPush {
            dispatches: Some(vec![json!("not an object")]),
            ..SyncPush::default()
        })
        .await
        .unwrap();
    shown.push(format!("{refused:?}"));
    let pushes = server.pushes();
    // The token did travel, in the header only...
    assert_eq!(pushes[0].header("authorization"), Some("Bearer test-token"));
    // ...and the recorded request prints redacted.
    shown.push(format!("{pushes:?}"));
    for text in &shown {
        assert_no_token(text);
    }
    server.stop().await;
}
