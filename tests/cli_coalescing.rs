//! Coalescing across processes, end to end (design.md §4.3, P11): one-dispatch
//! `agent-sync push --dispatches` calls, each a process of its own on one state dir,
//! share entries, because a process reopens the never-leased tail that is not the
//! head; so one later `push --queue-only` sends a few requests, not one per call, and
//! every dispatch exactly once. A cron drain that empties a backlog also gives the
//! space back before the process exits (design.md §6 S3).
//!
//! The binary runs in a [`Sandbox`] (see `tests/cli/main.rs`); the platform is a
//! [`LoopbackPlatform`] on 127.0.0.1, so child processes are waited for on the
//! blocking pool ([`run_async`]).

use std::collections::BTreeMap;
use std::time::Instant;

use agent_sync_testkit::*;
use serde_json::{json, Value};

/// Separate offline calls.
const CALLS: usize = 200;
/// The default entry cap (`DEFAULT_MAX_BATCH`): the head stays sealed across
/// processes, the rest fills entries of this many.
const MAX_BATCH: usize = 100;

#[actix_rt::test]
async fn separate_one_dispatch_cli_calls_share_entries_and_each_goes_out_once() {
    let sandbox = Sandbox::new(agent_sync_bin!(), "cli-agent", "cli-secret-5e1f09a7");
    let ids: Vec<String> = (0..CALLS).map(|i| format!("call-{i:03}")).collect();
    let started = Instant::now();
    for id in &ids {
        let file = sandbox.dispatch_file(id, &[id]);
        // Offline (no token): each process queues its dispatch and exits.
        let out = run_async(sandbox.cmd(&["push", "--dispatches", &file]))
            .await
            .ok();
        assert_eq!(out.stdout.trim(), "synced: 0", "{id}: {}", out.stderr);
    }
    note(&format!(
        "{CALLS} offline push processes took {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    let entries = sandbox.queue();
    let listed: Vec<Vec<String>> = entries.iter().map(dispatch_ids).collect();
    let sizes: Vec<usize> = listed.iter().map(Vec::len).collect();
    let most = 1 + (CALLS - 1).div_ceil(MAX_BATCH);
    assert!(
        entries.len() <= most,
        "{CALLS} calls queued {} entries (sizes {sizes:?}); at most {most} expected: \
         the tail is reopened by the next process unless it is the head",
        entries.len()
    );
    assert_eq!(
        listed.concat(),
        ids,
        "every call queued once, in order (sizes {sizes:?})"
    );

    let platform = LoopbackPlatform::start().await;
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(
        out,
        json!({"success": true, "count": CALLS, "queued": 0}),
        "every dispatch delivered"
    );
    let pushes = platform.pushes();
    assert!(
        pushes.len() <= most,
        "{} requests for {CALLS} one-dispatch calls; at most {most} expected",
        pushes.len()
    );
    let sent: Vec<Vec<String>> = pushes.iter().map(|p| p.dispatch_ids()).collect();
    assert_eq!(sent, listed, "the listing was exactly what was sent");
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for id in sent.iter().flatten() {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let not_once: Vec<(&&str, &usize)> = times.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        not_once.is_empty(),
        "delivered more than once: {not_once:?}"
    );
    assert_eq!(times.len(), CALLS, "every dispatch delivered");

    // Nothing left, and another drain sends nothing.
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(
        (&status["queued_entries"], &status["queued_dispatches"]),
        (&json!(0), &json!(0)),
        "{status}"
    );
    run_async(sandbox.online(&platform.url(), &["push", "--queue-only"]))
        .await
        .ok();
    assert_eq!(platform.pushes().len(), pushes.len());
    platform.stop().await;
}

/// The `id` of every dispatch of a listed entry, in order.
fn dispatch_ids(entry: &Value) -> Vec<String> {
    entry["dispatches"]
        .as_array()
        .unwrap_or_else(|| panic!("an entry without dispatches: {entry}"))
        .iter()
        .map(|d| d["id"].as_str().expect("a string id").to_string())
        .collect()
}

#[actix_rt::test]
async fn a_cron_drain_that_empties_a_large_backlog_leaves_a_small_file() {
    const DISPATCHES: usize = 20_000;
    let sandbox = Sandbox::new(agent_sync_bin!(), "cli-agent", "cli-secret-5e1f09a7");
    let (file, _) = sandbox.padded_dispatches("backlog", DISPATCHES, 300);
    let file = file.to_str().expect("a UTF-8 path").to_string();
    let out = run_async(sandbox.cmd(&["push", "--dispatches", &file]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0", "{}", out.stderr);
    let db = sandbox.state().join("sync.redb");
    let queued = std::fs::metadata(&db).expect("the database").len();
    assert!(
        queued > 8 << 20,
        "a backlog worth giving back: {queued} bytes"
    );
    let platform = LoopbackPlatform::start().await;
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only"]))
        .await
        .ok();
    assert_eq!(
        out.stdout.trim(),
        format!("synced: {DISPATCHES}"),
        "{}",
        out.stderr
    );
    // The process has exited: what it left on disk is what cron leaves.
    let drained = std::fs::metadata(&db).expect("the database").len();
    assert!(
        drained <= 1 << 20,
        "{queued} bytes queued, {drained} bytes left after the drain"
    );
    note(&format!(
        "cron drain of {DISPATCHES}: {queued} bytes queued, {drained} bytes after exit"
    ));
}
