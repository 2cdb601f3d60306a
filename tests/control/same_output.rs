//! Every command beside a running daemon, carried out by it over the control
//! socket, prints exactly what it prints against a stopped state.

use std::fs;
use std::time::Duration;

use agent_sync_testkit::*;
use serde_json::json;

use crate::{sandbox, SECRET};

/// Bounded waits for what a daemon does on its own.
const DEADLINE: Duration = Duration::from_secs(20);

/// The commands that do not change the state, with their arguments.
const READ_ONLY: &[&[&str]] = &[
    &["status"],
    &["--json", "status"],
    &["queue"],
    &["--json", "queue"],
    &["dead-letters"],
    &["--json", "dead-letters"],
    &["history"],
    &["--json", "history"],
    &["history", "--limit", "2"],
    &["requeue", "99"],
    &["--json", "requeue", "98", "99"],
];

/// Commands that change the state, in the order both runs apply them.
fn mutating(sandbox: &Sandbox) -> Vec<Vec<String>> {
    let one = sandbox.dispatch_file("one", &["host/one"]);
    let two = sandbox.dispatch_file("two", &["host/two-a", "host/two-b"]);
    [
        vec!["push", "--dispatches", one.as_str()],
        vec!["--json", "push", "--dispatches", two.as_str()],
        vec!["pull"],
        vec!["--json", "pull", "--since", "2026-01-01T00:00:00Z"],
        vec!["push"],
        vec!["--json", "push", "--queue-only"],
        vec!["--json", "requeue", "--all"],
        vec!["requeue", "--all"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

/// Runs `commands` in order against the platform at `url`; their outputs.
async fn outputs(sandbox: &Sandbox, url: &str, commands: &[Vec<String>]) -> Vec<Out> {
    let mut outs = Vec::new();
    for args in commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        outs.push(run_async(sandbox.online(url, &args)).await);
    }
    outs
}

#[actix_rt::test]
async fn every_command_beside_a_running_daemon_prints_exactly_what_it_prints_against_a_stopped_state(
) {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    // One answer both endpoints take: a 2xx for pushes, a recognised envelope for pulls.
    platform.set_default(Scripted::ok().json(json!({"ok": true, "context": [{"id": "m1"}]})));
    let url = platform.url();

    // A state with history, a ledger entry, a cached context and a dead letter.
    platform.respond(Scripted::status(400).body("bad dispatch"));
    let refused = sandbox.dispatch_file("refused", &["host/refused"]);
    run_async(sandbox.online(&url, &["push", "--dispatches", &refused]))
        .await
        .ok();
    let good = sandbox.dispatch_file("good", &["host/good"]);
    run_async(sandbox.online(&url, &["push", "--dispatches", &good]))
        .await
        .ok();
    run_async(sandbox.online(&url, &["pull"])).await.ok();
    write_done(&sandbox.root(), "core/go-io/first");
    run_async(sandbox.online(&url, &["push"])).await.ok();
    let db = sandbox.state().join("sync.redb");
    let backup = sandbox.path().join("sync.redb.backup");
    fs::copy(&db, &backup).unwrap();

    // Against the stopped state: the read-only commands, then the mutating ones.
    let read_only: Vec<Vec<String>> = READ_ONLY
        .iter()
        .map(|args| args.iter().map(|a| a.to_string()).collect())
        .collect();
    let stopped_reads = outputs(&sandbox, &url, &read_only).await;
    write_done(&sandbox.root(), "core/go-io/second");
    let stopped_writes = outputs(&sandbox, &url, &mutating(&sandbox)).await;

    // The same state again (the scan finds the second workspace again), held by a
    // daemon that only drains (it never scans or pulls on its own).
    fs::copy(&backup, &db).unwrap();
    let before = platform.delivered().len();
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        None,
        sandbox.online(&url, &["run", "--scan-interval", "0"]),
    );
    daemon.wait_running().await;
    assert!(sandbox.socket().exists(), "the daemon serves its socket");
    let running_reads = outputs(&sandbox, &url, &read_only).await;
    let running_writes = outputs(&sandbox, &url, &mutating(&sandbox)).await;

    for ((args, stopped), running) in read_only.iter().zip(&stopped_reads).zip(&running_reads) {
        assert_eq!(stopped, running, "{args:?} differs beside the daemon");
    }
    for ((args, stopped), running) in mutating(&sandbox)
        .iter()
        .zip(&stopped_writes)
        .zip(&running_writes)
    {
        assert_eq!(stopped, running, "{args:?} differs beside the daemon");
    }
    // The missing seqs still exit 1 with the same error, through the daemon too.
    assert_eq!(running_reads[9].code, 1);
    assert!(
        running_reads[9]
            .stderr
            .starts_with("error: no dead letter with seq 99"),
        "{:?}",
        running_reads[9]
    );
    assert_eq!(running_writes[0].stdout.trim(), "synced: 1");
    assert_eq!(
        running_writes[1].json(),
        json!({"success": true, "count": 2, "queued": 0})
    );
    assert_eq!(running_writes[2].stdout.trim(), "context items: 1");
    assert_eq!(
        running_writes[4].stdout.trim(),
        "synced: 1",
        "the daemon scanned"
    );

    // The daemon delivered the host dispatches itself (it logs each request) ...
    let delivered: Vec<String> = platform.delivered()[before..]
        .iter()
        .flat_map(|r| r.dispatch_ids())
        .collect();
    for id in ["host/one", "host/two-a", "host/two-b", "core/go-io/second"] {
        assert!(
            delivered.contains(&id.to_string()),
            "{id} not delivered: {delivered:?}"
        );
    }
    assert!(daemon.log().contains("pushed entry"), "{}", daemon.log());
    // ... and the dead letter requeued through it went out too (the daemon has a
    // token; the stopped-state requeue only moved it).
    wait_until("the requeued dead letter to be delivered", DEADLINE, || {
        platform.delivered()[before..]
            .iter()
            .any(|r| r.dispatch_ids() == ["host/refused"])
    })
    .await;
    for out in stopped_reads
        .iter()
        .chain(&running_reads)
        .chain(&running_writes)
    {
        assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
    }
    daemon.stop().await;
    assert!(!daemon.log().contains(SECRET));
    platform.stop().await;
}
