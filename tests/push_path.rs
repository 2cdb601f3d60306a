//! The push path of the actors (design.md §5 and §6: P1-P9, P11, H1) against a real
//! loopback platform, driven only through the actors' messages. How the Queue takes
//! each class of answer (P10) and the backoff timers are in `response_classes.rs`.
//!
//! Wall-clock checks use windows around the call (`before`/`after`).

use serde_json::json;

use agent_sync_actors::messages::*;
use agent_sync_actors::sync_record::Direction;
use agent_sync_actors::{Store, SyncError};
use agent_sync_testkit::*;

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
    let (actors, _store) = start_online(&dirs, &server.url(), &opts);

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
    assert_eq!(scan_ids(&actors, dirs.root()).await, ["core/go-io/scanned"]);
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
        assert_eq!(scan_ids(&actors, &root).await, ["core/go-io/task-1"]);
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
            .iter()
            .find(|k| k.id == "core/go-io/task-1")
            .map(|k| k.fingerprint.as_str()),
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

// ------------------------------------------------------------------------ P11

#[actix::test]
async fn p11_large_scan_split_into_entries_of_max_batch() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let names: Vec<String> = (0..7).map(|i| format!("o/r/t{i}")).collect();
    for name in &names {
        write_done(dirs.root(), name);
    }
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::max_batch(3));
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
    let (actors, _store) = start_online(&dirs, &server.url(), &opts);

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
