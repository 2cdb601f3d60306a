//! `queue`, `dead-letters` and `requeue`: refused entries listed and brought
//! back, and the listings paged oldest first.

use agent_sync_testkit::*;
use serde_json::{json, Value};

use crate::sandbox;

#[actix_rt::test]
async fn refused_entries_are_listed_and_requeued_by_seq_or_all() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::status(422).body("bad dispatch"));
    let out = run_with_stdin_async(
        sandbox.online(&platform.url(), &["push", "--dispatches", "-"]),
        br#"[{"id": "x"}]"#,
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "synced: 0"),
        "{}",
        out.stderr
    );

    let letters = run_async(sandbox.cmd(&["--json", "dead-letters"]))
        .await
        .ok()
        .json();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    assert_eq!(letters[0]["seq"], 1);
    assert_eq!(letters[0]["status"], 422);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("bad dispatch"),
        "{letters}"
    );
    assert_eq!(letters[0]["dispatches"], json!([{"id": "x"}]));
    let text = run_async(sandbox.cmd(&["dead-letters"])).await.ok().stdout;
    assert!(text.starts_with("seq 1  HTTP 422"), "{text}");

    // A seq that is not a dead letter: reported, exit 1, the others still move.
    let out = run_async(sandbox.cmd(&["requeue", "1", "99", "--json"])).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.json(),
        json!({"requeued": [{"seq": 1, "new_seq": 2}], "missing": [99]})
    );
    assert!(
        out.stderr.starts_with("error: no dead letter with seq 99"),
        "{}",
        out.stderr
    );
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue[0]["seq"], 2);

    // Refused again, then --all brings it back.
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let out = run_async(sandbox.cmd(&["requeue", "--all"])).await.ok();
    assert_eq!(
        out.stdout.trim(),
        "requeued: dead letter 2 is queue entry 3"
    );
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(
        (
            status["dead_letters"].clone(),
            status["queued_entries"].clone()
        ),
        (json!(0), json!(1))
    );
    platform.stop().await;
}

#[actix_rt::test]
async fn queue_and_dead_letters_limit_lists_the_first_n_oldest_first() {
    let sandbox = sandbox();
    // Five offline pushes under five agent ids: five entries (one agent's would
    // share one).
    for i in 1..=5 {
        let file = sandbox.dispatch_file(&format!("d{i}"), &[&format!("host-{i}")]);
        let agent = format!("agent-{i}");
        run_async(sandbox.cmd(&["--agent-id", &agent, "push", "--dispatches", &file]))
            .await
            .ok();
    }
    let text = run_async(sandbox.cmd(&["queue", "--limit", "2"]))
        .await
        .ok()
        .stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("seq 1  "), "{text}");
    assert!(lines[1].starts_with("seq 2  "), "{text}");
    let json = run_async(sandbox.cmd(&["--json", "queue", "--limit", "2"]))
        .await
        .ok()
        .json();
    let ids: Vec<Value> = json
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["dispatches"][0]["id"].clone())
        .collect();
    assert_eq!(ids, [json!("host-1"), json!("host-2")]);
    // Without a limit, or with one past the end: all five, in order.
    for args in [
        &["--json", "queue"][..],
        &["--json", "queue", "--limit", "9"],
    ] {
        let all = run_async(sandbox.cmd(args)).await.ok().json();
        let seqs: Vec<Value> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].clone())
            .collect();
        assert_eq!(
            seqs,
            [json!(1), json!(2), json!(3), json!(4), json!(5)],
            "{args:?}"
        );
    }
    assert_eq!(
        run_async(sandbox.cmd(&["queue", "--limit", "0"]))
            .await
            .code,
        2
    );

    // Dead letters page the same way.
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::status(422).body("bad dispatch"));
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let text = run_async(sandbox.cmd(&["dead-letters", "--limit", "3"]))
        .await
        .ok()
        .stdout;
    let seqs: Vec<&str> = text
        .lines()
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    assert_eq!(seqs, ["seq 1", "seq 2", "seq 3"], "{text}");
    let all = run_async(sandbox.cmd(&["--json", "dead-letters"]))
        .await
        .ok()
        .json();
    assert_eq!(all.as_array().map(Vec::len), Some(5), "{all}");
    let text = run_async(sandbox.cmd(&["queue", "--limit", "2"]))
        .await
        .ok()
        .stdout;
    assert_eq!(text.trim(), "queue is empty");
    platform.stop().await;
}
