//! `pull`: the context printed from the platform, or from the cache offline, and
//! never a push.

use agent_sync_testkit::*;
use serde_json::json;

use crate::{sandbox, AGENT};

#[actix_rt::test]
async fn pull_prints_the_context_and_never_pushes() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    // Something queued: `pull` must leave it alone.
    let out = run_with_stdin(
        sandbox.cmd(&["push", "--dispatches", "-"]),
        br#"[{"id": "q"}]"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let items = json!([{"id": "m1", "text": "one"}, {"id": "m2", "text": "two"}]);
    platform.set_default(Scripted::ok().json(json!({"data": {"context": items}})));

    let out = run_async(sandbox.online(&platform.url(), &["pull"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "context items: 2");
    let out = run_async(sandbox.online(
        &platform.url(),
        &["--json", "pull", "--since", "2026-04-14T12:00:00Z"],
    ))
    .await
    .ok()
    .json();
    assert_eq!(out, json!({"success": true, "count": 2, "context": items}));

    let requests = platform.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests
        .iter()
        .all(|r| r.method == "GET" && r.path == PULL_PATH));
    assert_eq!(requests[0].query, format!("agent_id={AGENT}"));
    assert_eq!(
        requests[1].query,
        format!("agent_id={AGENT}&since=2026-04-14T12%3A00%3A00Z")
    );

    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["context_count"], 2);
    assert!(status["last_pull_at"].is_string());
    assert_eq!(status["queued_entries"], 1);
    assert_eq!(
        status["head"]["attempts"], 0,
        "pull must not try to push: {status}"
    );

    // Offline, the cache answers.
    let out = run_async(sandbox.cmd(&["pull", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(out["count"], 2);
    platform.stop().await;
}
