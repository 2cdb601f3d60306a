//! End-to-end tests of the `agent-sync` binary's one-shot commands (design.md §8):
//! usage, status, push, pull, dead letters and requeue, local failures, secrets.
//! `tests/daemon.rs` covers `run`, `tests/import_legacy.rs` the legacy import.
//!
//! Every test runs the built binary in a [`Sandbox`]: a cleared environment whose
//! `HOME` and `CORE_WORKSPACE` point into a temp dir of its own (so the workspace root
//! is `<tmp>/workspace` and the state dir `<tmp>/sync`), plus `PATH` and an
//! `AGENT_NAME`. Tests that talk to a platform use a [`LoopbackPlatform`] on
//! 127.0.0.1; while it runs on the test's actix System, child processes are waited
//! for on the blocking pool ([`run_async`]).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync_testkit::*;
use serde_json::{json, Value};

/// A token distinctive enough that finding it anywhere in output is a leak.
const SECRET: &str = "cli-secret-7f3a9c41d2";
/// The agent id every test runs as.
const AGENT: &str = "cli-agent";

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec(value).expect("json")).expect("write json");
}

// ------------------------------------------------------------- usage and help

#[test]
fn help_explains_every_command_with_an_example() {
    let sandbox = sandbox();
    let out = run(sandbox.cmd(&["--help"])).ok();
    for &command in SUBCOMMANDS {
        assert!(out.stdout.contains(command), "--help lacks {command}");
        let sub = run(sandbox.cmd(&[command, "--help"])).ok();
        assert!(
            sub.stdout.contains("Example"),
            "{command} --help has no example:\n{}",
            sub.stdout
        );
    }
}

#[test]
fn malformed_options_and_missing_arguments_are_usage_errors_exit_2() {
    let sandbox = sandbox();
    for args in [
        &["history", "--limit", "many"][..],
        &["run", "--scan-interval", "soon"],
        &["run", "--pull-interval", "5x"],
        &["requeue"],
        &["requeue", "1", "--all"],
        &["status", "--fleet-node-id", "seven"],
        &["frobnicate"],
    ] {
        let out = run(sandbox.cmd(args));
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    assert!(
        !sandbox.state().join("sync.redb").exists(),
        "usage errors open nothing"
    );
}

// ------------------------------------------------------------------ status

#[test]
fn status_of_a_fresh_state_in_text_and_json() {
    let sandbox = sandbox();
    let text = run(sandbox.cmd(&["status"])).ok().stdout;
    for line in [
        "agent id: cli-agent",
        "queued entries: 0",
        "queued dispatches: 0",
        "dead letters: 0",
        "ledger entries: 0",
        "context items: 0",
        "auth failed: no",
        "last push: never",
        "last pull: never",
        "head: none",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Global options in any position.
    let mut status = run(sandbox.cmd(&["status", "--json"])).ok().json();
    // The file's size varies with redb's layout: present and non-zero is the contract.
    let db_bytes = status
        .as_object_mut()
        .and_then(|o| o.remove("db_bytes"))
        .and_then(|v| v.as_u64());
    assert!(db_bytes.is_some_and(|b| b > 0), "db_bytes: {db_bytes:?}");
    assert_eq!(
        status,
        json!({
            "agent_id": AGENT, "queued_entries": 0, "queued_dispatches": 0,
            "dead_letters": 0, "ledger_entries": 0, "context_count": 0,
            "auth_failed": false, "last_push_at": null, "last_pull_at": null, "head": null
        })
    );
    assert!(sandbox.state().join("sync.redb").exists());
}

#[test]
fn flags_override_the_environment() {
    let sandbox = sandbox();
    let other_state = sandbox.path().join("elsewhere");
    let state = other_state.to_str().expect("utf-8 path");
    let status = run(sandbox.cmd(&[
        "--json",
        "--agent-id",
        "flagged",
        "--state-dir",
        state,
        "status",
    ]))
    .ok()
    .json();
    assert_eq!(status["agent_id"], "flagged");
    assert!(other_state.join("sync.redb").exists());
    assert!(!sandbox.state().join("sync.redb").exists());
}

// -------------------------------------------------------------------- push

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

// -------------------------------------------------------------------- pull

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

// ------------------------------------------------------- dead letters, requeue

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

// ------------------------------------------------------- local failures (exit 1)

#[test]
fn a_second_process_on_the_same_state_fails_fast() {
    let sandbox = sandbox();
    let held = agent_sync_actors::Store::open(&sandbox.state()).expect("hold the state");
    let started = Instant::now();
    let out = run(sandbox.cmd(&["status"]));
    assert_eq!(out.code, 1);
    // The holder (this test process) has no control socket: its pid comes from the
    // lock table.
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: state in {} is in use by another agent-sync process (pid {})",
            sandbox.state().display(),
            std::process::id()
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it must not hang"
    );
    drop(held);
    run(sandbox.cmd(&["status"])).ok();
}

#[test]
fn a_corrupt_database_is_reported_and_left_untouched() {
    let sandbox = sandbox();
    fs::create_dir_all(sandbox.state()).unwrap();
    let path = sandbox.state().join("sync.redb");
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &garbage).unwrap();
    for args in [&["status"][..], &["push", "--queue-only"]] {
        let out = run(sandbox.cmd(args));
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            out.stderr.starts_with("error: the sync database"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("left untouched"), "{}", out.stderr);
    }
    assert_eq!(fs::read(&path).unwrap(), garbage);
}

#[test]
fn plain_http_to_a_remote_host_is_refused_unless_allowed() {
    let sandbox = sandbox();
    let url = "http://platform.invalid";
    let out = run(sandbox.online(url, &["push"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: refusing plain http"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--allow-insecure-http"),
        "the CLI names its flag: {}",
        out.stderr
    );
    assert!(!out.stderr.contains(SECRET));
    assert!(
        !sandbox.state().join("sync.redb").exists(),
        "refused before opening anything"
    );
    // Allowed explicitly, a local command runs (and sends nothing).
    run(sandbox.online(url, &["--allow-insecure-http", "status"])).ok();
}

// ------------------------------------------------------------------ secrets

#[actix_rt::test]
async fn the_token_never_appears_in_output_even_at_trace_level() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    // A refused pull (401), a delivered push, an unrecognised pull body, status.
    platform.respond(Scripted::status(401).body("no"));
    let mut outputs = Vec::new();
    for args in [
        &["pull"][..],
        &["push"],
        &["--json", "pull"],
        &["--json", "status"],
    ] {
        let mut cmd = sandbox.online(&platform.url(), args);
        cmd.env("RUST_LOG", "trace");
        let out = run_async(cmd).await;
        assert_eq!(
            out.code,
            0,
            "{args:?}: {}",
            out.stderr.replace(SECRET, "<TOKEN>")
        );
        outputs.push(out);
    }
    assert_eq!(platform.delivered().len(), 1);
    assert_eq!(platform.requests().len(), 3);
    for out in &outputs {
        assert!(!out.stdout.contains(SECRET), "token on stdout");
        assert!(!out.stderr.contains(SECRET), "token in the log");
    }
    assert!(outputs[1].stderr.contains("TRACE"), "trace logging was on");
    platform.stop().await;
}
