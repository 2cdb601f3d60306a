//! `agent-sync run` end to end (design.md §8, §6 R3): the daemon delivers new work,
//! stops cleanly on SIGTERM (letting the request in flight finish, or timing it out
//! at the shutdown deadline), stops at once on a second signal, waits for a key file
//! provisioned later, and reaps ghost workspaces (one summary line, and a stop does
//! not wait for the reap to end). The harness is `tests/cli/main.rs`'s:
//! a [`Sandbox`] per test, a [`LoopbackPlatform`] on the test's System, and a
//! [`Daemon`] logging at info.

use std::fs;
use std::time::{Duration, Instant};

use agent_sync_testkit::*;
use serde_json::{json, Value};

/// A token distinctive enough that finding it anywhere in output is a leak.
const SECRET: &str = "daemon-secret-3e8b51a0c7";
/// The agent id every daemon runs as.
const AGENT: &str = "daemon-agent";
/// Bounded waits for things a daemon does on its own.
const DEADLINE: Duration = Duration::from_secs(20);

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// A fresh sandbox and platform, and a daemon (`args`) there holding its push of the
/// workspace `core/go-io/slow`, which the platform answers only after `delay`: where
/// every test of a stop during a request starts.
async fn slow_push_in_flight(
    delay: Duration,
    args: &[&str],
) -> (Sandbox, LoopbackPlatform, Daemon) {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(delay));
    write_done(&sandbox.root(), "core/go-io/slow");
    let cmd = sandbox.online(&platform.url(), args);
    let daemon = Daemon::spawn(&sandbox, "daemon", Some("info"), cmd);
    wait_until("the push to be in flight", DEADLINE, || {
        !platform.pushes().is_empty()
    })
    .await;
    (sandbox, platform, daemon)
}

/// The one entry a stopped daemon left queued in `sandbox` (read offline, on the
/// blocking pool); panics unless there is exactly one.
async fn the_entry_left_queued(sandbox: &Sandbox) -> Value {
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue.as_array().map(Vec::len), Some(1), "{queue}");
    queue[0].clone()
}

#[actix_rt::test]
async fn the_daemon_delivers_new_work_and_stops_cleanly_on_sigterm() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.online(&platform.url(), &["run", "--scan-interval", "1s"]),
    );
    daemon.wait_running().await;
    write_done(&sandbox.root(), "core/go-io/late");
    wait_until("the new workspace to be delivered", DEADLINE, || {
        platform.delivered_alone("core/go-io/late")
    })
    .await;
    // The server answering is not the daemon recording it: its log line comes after
    // the durable commit (stopped in between, the entry would stay queued, correctly).
    wait_until("the daemon to record the delivery", DEADLINE, || {
        daemon.log().contains("pushed entry 1: 1 dispatch(es)")
    })
    .await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(took < STOP_WITHIN);
    // The state was closed: another process can open it.
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["ledger_entries"], 1);
    platform.stop().await;
}

#[actix_rt::test]
async fn sigterm_mid_request_waits_for_it_then_nothing_is_sent_twice_after_restart() {
    let (sandbox, platform, mut daemon) = slow_push_in_flight(millis(1500), &["run"]).await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(took < STOP_WITHIN, "took {took:?}");
    assert_eq!(
        platform.delivered().len(),
        1,
        "the request in flight completed"
    );
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(
        queue,
        json!([]),
        "its outcome was committed before the exit"
    );

    // The next process, scanning and draining, finds nothing to send: no dispatch
    // reaches the platform twice.
    platform.set_default(Scripted::ok());
    let out = run_async(sandbox.online(&platform.url(), &["push"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    assert_eq!(platform.pushes().len(), 1, "{:?}", platform.pushes());
    platform.stop().await;
}

#[actix_rt::test]
async fn sigterm_mid_request_times_it_out_at_the_shutdown_deadline_and_keeps_the_entry() {
    let args = ["run", "--shutdown-timeout", "1s"];
    let (sandbox, platform, mut daemon) = slow_push_in_flight(secs(60), &args).await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(
        took >= Duration::from_millis(900),
        "it waited for the request: {took:?}"
    );
    assert!(took < STOP_WITHIN, "took {took:?}");
    platform.stop().await;
    let entry = the_entry_left_queued(&sandbox).await;
    assert_eq!(entry["dispatches"][0]["id"], "core/go-io/slow");
    assert_eq!(
        entry["attempts"], 1,
        "the timeout was committed as an attempt"
    );
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("shutdown deadline")),
        "{entry}"
    );
}

#[actix_rt::test]
async fn a_2xx_head_whose_body_stalls_past_the_stop_deadline_is_delivered_and_never_resent() {
    let head: &[u8] =
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    let server = Raw::start(move |_, _| Reply::Stall(head.to_vec()));
    let sandbox = sandbox();
    write_done(&sandbox.root(), "core/go-io/stalled");
    let args = ["run", "--shutdown-timeout", "1s"];
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.online(&server.url(), &args),
    );
    // The Queue committed the delivery: the Pusher logs it after the commit.
    daemon.wait_log("the delivery", "pushed entry").await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(took < STOP_WITHIN, "took {took:?}");
    // A restart online finds nothing to send.
    let mut again = Daemon::spawn(
        &sandbox,
        "again",
        Some("info"),
        sandbox.online(&server.url(), &args),
    );
    again.wait_running().await;
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["queued_dispatches"], 0, "{status}");
    again.terminate().await;
    assert_eq!(
        server.pushes().len(),
        1,
        "a 201 head is a delivery: sent once"
    );
    assert_eq!(server.log()[0].1, 201);
}

#[actix_rt::test]
async fn a_second_signal_stops_at_once_and_the_entry_stays_queued() {
    let args = ["run", "--shutdown-timeout", "60s"];
    let (sandbox, platform, mut daemon) = slow_push_in_flight(secs(60), &args).await;
    daemon.signal(libc::SIGTERM);
    wait_until("the first signal to be seen", DEADLINE, || {
        daemon
            .log()
            .contains("stopping after the request in flight")
    })
    .await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(
        took < STOP_WITHIN,
        "the second signal did not stop it at once: {took:?}"
    );
    assert!(daemon.log().contains("second SIGTERM"), "{}", daemon.log());
    platform.stop().await;
    let entry = the_entry_left_queued(&sandbox).await;
    assert_eq!(
        entry["attempts"], 0,
        "abandoned, not recorded as an attempt"
    );
}

#[actix_rt::test]
async fn the_daemon_without_a_token_waits_then_uses_a_key_file_provisioned_later() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    let mut cmd = sandbox.cmd(&["run", "--scan-interval", "1s"]);
    cmd.env("CORE_API_URL", platform.url());
    let mut daemon = Daemon::spawn(&sandbox, "daemon", Some("info"), cmd);
    daemon.wait_running().await;
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert!(platform.requests().is_empty(), "offline: nothing is sent");
    let key = sandbox.home().join(".claude").join("brain.key");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, format!("{SECRET}\n")).unwrap();
    wait_until("delivery with the new key", DEADLINE, || {
        platform.delivered().len() == 1
    })
    .await;
    assert_eq!(
        platform.delivered()[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let (status, _) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0));
    assert!(!daemon.log().contains(SECRET));
    platform.stop().await;
}

#[actix_rt::test]
async fn the_daemon_reaps_ghost_workspaces_even_with_scanning_off() {
    let sandbox = sandbox();
    let ghost =
        json!({"status": "running", "pid": 99_999_999, "agent": "codex", "runs": 1}).to_string();
    let dir = write_workspace(&sandbox.root(), "core/go-io/ghost", &ghost);
    let status_file = dir.join("status.json");

    // --no-reap leaves it alone.
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.cmd(&["run", "--scan-interval", "0", "--no-reap"]),
    );
    daemon.wait_running().await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(daemon.terminate().await.0.code(), Some(0));
    assert_eq!(fs::read_to_string(&status_file).unwrap(), ghost);

    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.cmd(&["run", "--scan-interval", "0"]),
    );
    wait_until("the ghost to be reaped", DEADLINE, || {
        fs::read_to_string(&status_file).is_ok_and(|s| s.contains("failed"))
    })
    .await;
    assert_eq!(daemon.terminate().await.0.code(), Some(0));
    let status: Value = serde_json::from_str(&fs::read_to_string(&status_file).unwrap()).unwrap();
    assert_eq!(status["status"], "failed");
    assert_eq!(status["question"], "dead worker on restart");
    assert_eq!(status["pid"], 99_999_999);
}

/// Ghost workspaces for the prompt-stop test: a full reap of them takes seconds (one
/// fsync each), so the stop surely lands in the middle of it.
const GHOSTS: usize = 20_000;

#[test]
fn two_sigterms_mid_reap_of_20000_ghosts_exit_at_once_and_the_reap_logs_one_line_at_info() {
    let sandbox = sandbox();
    let writing = Instant::now();
    let first = sandbox.write_ghosts(GHOSTS);
    eprintln!("wrote {GHOSTS} ghost workspaces in {:?}", writing.elapsed());
    // Default flags: reaping is on, at start.
    let mut daemon = Daemon::spawn(&sandbox, "daemon", Some("info"), sandbox.cmd(&["run"]));
    daemon.wait_until("the reap to begin", || {
        fs::read_to_string(&first).is_ok_and(|s| s.contains("failed"))
    });
    let (status, took) = daemon.terminate_twice(millis(50));
    eprintln!("exited {took:?} after the first of two SIGTERMs 50 ms apart");
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    // The goal is 1 s; 3 s keeps a loaded 2-core machine from failing it. Before the
    // stop flag the reap ran to its end: 10 s.
    assert!(took < secs(3), "took {took:?}; log:\n{log}");
    let per_workspace = log
        .lines()
        .filter(|l| l.contains("reaped ghost workspace"))
        .count();
    assert_eq!(
        per_workspace,
        0,
        "per-workspace reap lines at info; the first lines:\n{}",
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    let summaries: Vec<&str> = log.lines().filter(|l| l.contains("ghost reap:")).collect();
    assert_eq!(summaries.len(), 1, "log:\n{log}");
    assert!(
        summaries[0].contains("stopped early"),
        "the stop did not end the reap: {}",
        summaries[0]
    );
}
