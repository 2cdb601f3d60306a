//! Usage, help and `status`: what the binary answers before any platform is
//! involved, and how flags and the environment combine.

use agent_sync_testkit::*;
use serde_json::json;

use crate::{sandbox, AGENT};

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
