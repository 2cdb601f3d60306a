//! `push`: host dispatches and scanned workspaces queued offline and delivered
//! online, a queue-only push, a platform that is down, dispatch files refused whole.

use std::fs;

use agent_sync_testkit::*;
use serde_json::json;

use crate::{sandbox, write_json, AGENT, SECRET};

#[actix_rt::test]
async fn push_offline_queues_host_dispatches_then_delivers_them_online() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    let file = sandbox.path().join("dispatches.json");
    write_json(
        &file,
        &json!([{"id": "host-1", "status": "completed", "extra": {"k": 1}}]),
    );

    // Offline: exit 0, nothing synced, the host dispatch queued, the scan not (P3).
    let out = run_async(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(
        queue[0]["dispatches"],
        json!([{"id": "host-1", "status": "completed", "extra": {"k": 1}}])
    );
    assert_eq!(queue[0]["agent_id"], AGENT);
    assert_eq!(queue[0]["attempts"], 0);
    assert!(queue[0]["idempotency_key"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    let text = run_async(sandbox.cmd(&["queue"])).await.ok().stdout;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("seq 1") && text.contains("dispatches 1"),
        "{text}"
    );
    assert!(platform.requests().is_empty());

    // Online: the queued host dispatch and the scanned workspace are delivered.
    let out = run_async(sandbox.online(&platform.url(), &["push", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(out, json!({"success": true, "count": 2, "queued": 0}));
    let delivered = platform.delivered();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(delivered[0].dispatches()[0]["id"], "host-1");
    assert_eq!(delivered[1].dispatch_ids(), ["core/go-io/task-1"]);
    for request in &delivered {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(request.json()["agent_id"], AGENT);
    }

    // Delivered work is not pushed again (P7).
    let out = run_async(sandbox.online(&platform.url(), &["push"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    assert_eq!(platform.pushes().len(), 2);

    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["queued_entries"], 0);
    assert_eq!(status["ledger_entries"], 1);
    assert!(
        status["last_push_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{status}"
    );

    // History: oldest first, newest N with --limit, one line each in text.
    let history = run_async(sandbox.cmd(&["--json", "history"]))
        .await
        .ok()
        .json();
    let records = history.as_array().unwrap();
    assert_eq!(records.len(), 2, "{history}");
    assert!(records
        .iter()
        .all(|r| r["direction"] == "push" && r["items_count"] == 1));
    let last = run_async(sandbox.cmd(&["history", "--limit", "1", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(last, json!([records[1].clone()]));
    let text = run_async(sandbox.cmd(&["history"])).await.ok().stdout;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("push") && l.contains(AGENT)),
        "{text}"
    );
    platform.stop().await;
}

#[actix_rt::test]
async fn push_queue_only_with_an_empty_queue_sends_nothing() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(out, json!({"success": true, "count": 0, "queued": 0}));
    assert!(platform.requests().is_empty(), "{:?}", platform.requests());
    platform.stop().await;
}

#[test]
fn push_to_a_platform_that_is_down_exits_0_and_keeps_the_entry() {
    let sandbox = sandbox();
    let out = run_with_stdin(
        sandbox.online(&dead_url(), &["push", "--dispatches", "-"]),
        br#"[{"id": "a"}, {"id": "b"}]"#,
    )
    .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let status = run(sandbox.cmd(&["--json", "status"])).ok().json();
    assert_eq!(status["queued_dispatches"], 2);
    assert_eq!(status["head"]["attempts"], 1);
    assert!(status["head"]["next_attempt"].is_string(), "{status}");
    assert!(status["head"]["last_error"].is_string(), "{status}");
    let text = run(sandbox.cmd(&["status"])).ok().stdout;
    assert!(
        text.contains("head: seq 1, attempts 1, next attempt "),
        "{text}"
    );
}

#[test]
fn invalid_dispatches_exit_1_naming_the_problem_and_queue_nothing() {
    let sandbox = sandbox();
    let dir = sandbox.path();
    let cases = [
        ("object.json", r#"{"id": "a"}"#, "must be a JSON array"),
        (
            "mixed.json",
            r#"[{"id": "a"}, 5]"#,
            "dispatch 1 is a number",
        ),
        ("broken.json", r#"[{"id": "#, "not valid JSON"),
    ];
    for (name, body, expected) in cases {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        let out = run(sandbox.cmd(&["push", "--dispatches", path.to_str().unwrap()]));
        assert_eq!(out.code, 1, "{name}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: "), "{name}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
        assert!(
            out.stderr.contains(name),
            "{name} not named: {}",
            out.stderr
        );
    }
    let missing = dir.join("missing.json");
    let out = run(sandbox.cmd(&["push", "--dispatches", missing.to_str().unwrap()]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: cannot read dispatches file")
            && out.stderr.contains("missing.json"),
        "{}",
        out.stderr
    );
    let out = run_with_stdin(sandbox.cmd(&["push", "--dispatches", "-"]), b"[null]");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("dispatch 0 is null"), "{}", out.stderr);
    let queue = run(sandbox.cmd(&["queue", "--json"])).ok().json();
    assert_eq!(queue, json!([]));
}
