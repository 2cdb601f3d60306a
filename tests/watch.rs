//! Event-driven pickup through a real watcher (inotify on Linux) on a temp dir, and
//! the host's targeted scan (`SyncService::scan_workspaces`). Every wait is for the
//! platform's or the queue's state, with a generous deadline: nothing here asserts a
//! speed (that is the benchmark's `daemon` phase).

use std::fs;
use std::path::Path;
use std::time::Duration;

use agent_sync::actors::platform::{Token, TokenSource};
use agent_sync::watching::WatchOptions;
use agent_sync::{SyncConfig, SyncService};
use agent_sync_actors::watch::{WatchConfig, WatchMode};
use agent_sync_testkit::*;

/// Long enough for a loaded 2-core machine; the pickup itself takes a fraction of it.
const DEADLINE: Duration = Duration::from_secs(30);

fn config(dirs: &Dirs, url: &str) -> SyncConfig {
    let mut config = SyncConfig::new(dirs.root(), dirs.state());
    config.agent_id = "watch-agent".into();
    config.tokens = TokenSource::Fixed(Token::new(TOKEN));
    config.platform.base_url = url.into();
    config.platform.request_timeout = Duration::from_secs(10);
    config.flush_interval = None;
    config
}

fn watching(budget: usize) -> WatchOptions {
    WatchOptions {
        mode: WatchMode::On,
        config: WatchConfig {
            budget,
            ..WatchConfig::default()
        },
        reap: true,
    }
}

/// Writes `status.json` the way a host does: a temp file, then a rename.
fn finish(dir: &Path, status: &str) {
    fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(".status.json.tmp");
    fs::write(&tmp, status).unwrap();
    fs::rename(&tmp, dir.join("status.json")).unwrap();
}

fn delivered_ids(platform: &LoopbackPlatform) -> Vec<String> {
    let mut ids: Vec<String> = platform
        .delivered()
        .iter()
        .flat_map(|r| r.dispatch_ids())
        .collect();
    ids.sort();
    ids
}

fn done() -> String {
    status_json("completed", "2026-01-01T00:00:00Z", 1)
}

#[actix::test]
async fn a_workspace_that_appears_or_turns_terminal_is_pushed_without_any_scan_call() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let running = write_workspace(
        dirs.root(),
        "core/go-io/task-1",
        r#"{"status":"running","pid":1}"#,
    );
    let service = SyncService::start(config(&dirs, &platform.url())).unwrap();
    // The one scan a daemon makes at start; everything after comes from events.
    service
        .push(agent_sync::messages::SyncPush::default())
        .await
        .unwrap();
    assert!(service.watch(watching(1000)).unwrap());
    service.replan_watches();
    wait_until("the watches to be planned", DEADLINE, || {
        service.watches().is_some_and(|(n, _)| n >= 4)
    })
    .await;

    // A new org, repo and task, written as a host writes it.
    finish(&dirs.root().join("acme/new-repo/task-9"), &done());
    wait_until("the new workspace to be delivered", DEADLINE, || {
        delivered_ids(&platform) == ["acme/new-repo/task-9"]
    })
    .await;
    // The running workspace turns completed.
    finish(&running, &done());
    wait_until("the finished workspace to be delivered", DEADLINE, || {
        delivered_ids(&platform) == ["acme/new-repo/task-9", "core/go-io/task-1"]
    })
    .await;
    let status = service.status().await.unwrap();
    assert!(status.watches.is_some_and(|n| n >= 6), "{status:?}");
    assert_eq!(status.watch_budget, Some(1000));
    service.stop().await;
    platform.stop().await;
}

#[actix::test]
async fn a_watch_that_cannot_be_added_falls_back_to_a_rescan_and_nothing_is_missed() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "o/r/old");
    let service = SyncService::start(config(&dirs, &platform.url())).unwrap();
    // A budget of two: the root and one org; everything else is beyond it.
    assert!(service.watch(watching(2)).unwrap());
    // Nothing was pushed by hand: the rescan the refused watches cause finds it.
    wait_until("the rescan to deliver the workspace", DEADLINE, || {
        delivered_ids(&platform) == ["o/r/old"]
    })
    .await;
    // A new workspace in a new org, which cannot be watched either.
    finish(&dirs.root().join("p/q/new"), &done());
    service
        .push(agent_sync::messages::SyncPush::default())
        .await
        .unwrap();
    wait_until("the new workspace", DEADLINE, || {
        delivered_ids(&platform) == ["o/r/old", "p/q/new"]
    })
    .await;
    service.stop().await;
    platform.stop().await;
}

#[actix::test]
async fn the_host_message_scans_only_the_named_workspaces_and_refuses_a_path_outside_the_root() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let outside = tempfile::tempdir().unwrap();
    write_done(dirs.root(), "o/r/named");
    write_done(dirs.root(), "o/r/other");
    write_done(outside.path(), "x/y/z");
    std::os::unix::fs::symlink(outside.path().join("x"), dirs.root().join("x")).unwrap();
    let service = SyncService::start(config(&dirs, &platform.url())).unwrap();
    let outside_name = outside.path().join("x/y/z").display().to_string();
    let answer = service
        .scan_workspaces(vec![
            "o/r/named".into(),
            "../escape".into(),
            outside_name,
            "x/y/z".into(),
        ])
        .await
        .unwrap();
    assert_eq!(answer.refused.len(), 2, "{answer:?}");
    assert_eq!(answer.summary.found, 1, "{answer:?}");
    wait_until("the named workspace", DEADLINE, || {
        delivered_ids(&platform) == ["o/r/named"]
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        delivered_ids(&platform),
        ["o/r/named"],
        "only the named one"
    );
    service.stop().await;
    platform.stop().await;
}

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), "watch-agent", "watch-secret-5d1f0e9a")
}

#[actix_rt::test]
async fn run_with_defaults_picks_up_a_new_finished_workspace_long_before_the_scan_interval() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    write_workspace(
        &sandbox.root(),
        "core/go-io/running",
        r#"{"status":"running","pid":1}"#,
    );
    // Default flags: watching, and a fallback rescan every 10 minutes.
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.online(&platform.url(), &["run"]),
    );
    daemon.wait_running().await;
    wait_until("the watches to be planned", DEADLINE, || {
        daemon.log().contains("watching ")
    })
    .await;
    let log = daemon.log();
    assert!(log.contains("watch on (budget"), "log:\n{log}");
    assert!(log.contains("scan every 600s"), "log:\n{log}");
    finish(&sandbox.root().join("core/go-io/late"), &done());
    // Well inside the ten minutes: only an event can have picked it up.
    wait_until("the new workspace to be delivered", DEADLINE, || {
        platform.delivered_alone("core/go-io/late")
    })
    .await;
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert!(
        status["watches"].as_u64().is_some_and(|n| n >= 4),
        "{status}"
    );
    assert!(
        status["watch_budget"].as_u64().is_some_and(|n| n > 0),
        "{status}"
    );
    let (status, _) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    platform.stop().await;
}
