//! What a push sends: a scanned workspace once (P1), host dispatches verbatim and
//! malformed ones refused first (P2), report metadata and fields (P9), entries of
//! `max_batch` dispatches (P11).

use serde_json::json;

use agent_sync_actors::messages::*;
use agent_sync_actors::sync_record::Direction;
use agent_sync_actors::SyncError;
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
