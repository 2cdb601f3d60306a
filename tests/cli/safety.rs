//! What the binary refuses and what it never prints: a state held by another
//! process, a corrupt database, plain HTTP to a remote host (exit 1, nothing touched),
//! and the token, even at trace level.

use std::fs;
use std::time::{Duration, Instant};

use agent_sync_testkit::*;

use crate::{sandbox, SECRET};

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
