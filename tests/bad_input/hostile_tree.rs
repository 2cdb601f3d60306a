//! A hostile workspace tree (symlink loops and links out of the root, FIFOs and
//! directories where files belong, sparse files over the size caps, corrupt and
//! non-UTF-8 files and names, an unreadable file) scanned in process by both walk paths,
//! through the Scanner and the Queue, and by the real binary.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_sync::actors::scanner::walk::{scan_tree_with, Resolver, TreeScan};
use agent_sync_testkit::{LoopbackPlatform, Sandbox};
use serde_json::{json, Value};

use crate::sandbox;

// ============================================================ a hostile tree

/// A terminal `status.json`.
const DONE: &str = r#"{"status":"completed","updated_at":"2026-04-14T12:00:00Z","runs":1}"#;
/// Only ever outside the root: finding it in a push is a leak.
const OUTSIDE_SECRET: &str = "outside-the-root-7d1f";

/// A workspace `name` under `root` with a terminal `status.json`.
fn workspace(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("status.json"), DONE).unwrap();
    dir
}

/// The `.meta` dir of the workspace `dir`, created.
fn meta(dir: &Path) -> PathBuf {
    let meta = dir.join(".meta");
    fs::create_dir_all(&meta).unwrap();
    meta
}

/// A FIFO at `path`: opening it for reading would block.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// A sparse file of `len` bytes at `path`: big, and cheap to make.
fn sparse(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Builds the tree; returns the ids that must be pushed: with a report or without.
fn hostile_tree(root: &Path, outside: &Path) -> (Vec<&'static str>, Vec<&'static str>) {
    // Outside the root: a workspace, a status file, a report, a .meta dir, all tempting.
    let secret_report = json!({"summary": OUTSIDE_SECRET}).to_string();
    fs::create_dir_all(outside.join("ws/meta")).unwrap();
    fs::write(outside.join("ws/status.json"), DONE).unwrap();
    fs::write(outside.join("ws/meta/report.json"), &secret_report).unwrap();
    fs::write(outside.join("report.json"), &secret_report).unwrap();
    fs::write(outside.join("status.json"), DONE).unwrap();

    // The good ones, so the scan has something to go on with.
    let good = workspace(root, "o/r/good-1");
    fs::write(meta(&good).join("report.json"), r#"{"summary":"ok"}"#).unwrap();
    workspace(root, "o/r/good-2");
    workspace(root, "flat-good");

    // Symlink loops and links out of the root: never walked.
    symlink(root, root.join("o/r/loop-to-root")).unwrap();
    symlink(".", root.join("o/r/loop-to-self")).unwrap();
    symlink("../../o", root.join("o/r/loop-up")).unwrap();
    symlink(outside.join("ws"), root.join("o/r/escape")).unwrap();
    symlink(outside.join("ws"), root.join("escape-flat")).unwrap();
    fs::create_dir_all(root.join("o/r/link-status")).unwrap();
    symlink(
        outside.join("status.json"),
        root.join("o/r/link-status/status.json"),
    )
    .unwrap();
    // Reports reached through a link: pushed without them.
    let dir = workspace(root, "o/r/meta-link");
    symlink(outside.join("ws/meta"), dir.join(".meta")).unwrap();
    let dir = workspace(root, "o/r/report-link");
    symlink(outside.join("report.json"), meta(&dir).join("report.json")).unwrap();

    // FIFOs and directories where files belong: never opened, never a hang.
    fs::create_dir_all(root.join("o/r/fifo-status")).unwrap();
    mkfifo(&root.join("o/r/fifo-status/status.json"));
    let dir = workspace(root, "o/r/fifo-report");
    mkfifo(&meta(&dir).join("report.json"));
    fs::create_dir_all(root.join("o/r/dir-status/status.json")).unwrap();
    let dir = workspace(root, "o/r/dir-report");
    fs::create_dir_all(meta(&dir).join("report.json")).unwrap();

    // Over the caps (1 MiB, 8 MiB): 100 MB each, sparse, never read.
    fs::create_dir_all(root.join("o/r/huge-status")).unwrap();
    sparse(&root.join("o/r/huge-status/status.json"), 100_000_000);
    let dir = workspace(root, "o/r/huge-report");
    sparse(&meta(&dir).join("report.json"), 100_000_000);

    // Corrupt content.
    fs::create_dir_all(root.join("o/r/corrupt")).unwrap();
    fs::write(root.join("o/r/corrupt/status.json"), "{\"status\": \"compl").unwrap();
    let dir = workspace(root, "o/r/bad-utf8-report");
    fs::write(
        meta(&dir).join("report.json"),
        b"{\"summary\": \"\xff\xfe\"}",
    )
    .unwrap();

    // Names that are not UTF-8 cannot be dispatch ids: skipped.
    let bad = OsStr::from_bytes(b"bad-\xff\xfe");
    workspace(&root.join(bad).join("r"), "t");
    workspace(&root.join("o").join(bad), "t");
    workspace(root, "o/r/ok");
    let _ = fs::create_dir_all(root.join("o/r").join(bad));
    fs::write(root.join("o/r").join(bad).join("status.json"), DONE).unwrap();

    // Unreadable (to anyone but root): skipped with a warning when run as nobody.
    fs::create_dir_all(root.join("o/r/unreadable")).unwrap();
    fs::write(root.join("o/r/unreadable/status.json"), DONE).unwrap();
    fs::set_permissions(
        root.join("o/r/unreadable/status.json"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    (
        vec!["o/r/good-1"],
        vec![
            "flat-good",
            "o/r/bad-utf8-report",
            "o/r/dir-report",
            "o/r/fifo-report",
            "o/r/good-2",
            "o/r/huge-report",
            "o/r/meta-link",
            "o/r/ok",
            "o/r/report-link",
        ],
    )
}

/// The ids a scan of the hostile tree must find, in sorted order.
fn hostile_expected(with_report: &[&'static str], without: &[&'static str]) -> Vec<&'static str> {
    let mut expected: Vec<&str> = with_report.iter().chain(without).copied().collect();
    // In-process the tests may run as root: the 0600 file is readable then.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        expected.push("o/r/unreadable");
    }
    expected.sort_unstable();
    expected
}

/// What one walk of the hostile tree must have found.
fn check_hostile_scan(scan: &TreeScan, with_report: &[&str], expected: &[&str], how: &str) {
    let mut ids: Vec<&str> = scan.terminal.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, expected, "{how}");
    for dispatch in &scan.terminal {
        let text = serde_json::to_string(&dispatch.record).unwrap();
        assert!(
            !text.contains(OUTSIDE_SECRET),
            "{how}: {} carries a file from outside the root: {text}",
            dispatch.id
        );
        assert_eq!(
            dispatch.record.to_object().contains_key("report"),
            with_report.contains(&dispatch.id.as_str()),
            "{how}: {}",
            dispatch.id
        );
    }
    assert!(
        scan.skipped >= 2,
        "{how}: corrupt and huge status files: {}",
        scan.skipped
    );
}

#[test]
fn the_scanner_stays_inside_the_root_and_skips_what_it_cannot_read_quickly() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (with_report, without) = hostile_tree(root.path(), outside.path());
    let expected = hostile_expected(&with_report, &without);
    let mut scans = Vec::new();
    for resolver in [Resolver::Native, Resolver::Portable] {
        let started = Instant::now();
        let scan = scan_tree_with(root.path(), resolver);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{resolver:?}: the scan took {took:?}"
        );
        check_hostile_scan(&scan, &with_report, &expected, &format!("{resolver:?}"));
        scans.push(scan);
    }
    // Not only the same ids: the same records, in the same order, the same skips.
    assert_eq!(scans[0].terminal, scans[1].terminal);
    assert_eq!(
        (scans[0].workspaces, scans[0].skipped),
        (scans[1].workspaces, scans[1].skipped)
    );
}

#[actix_rt::test]
async fn both_walk_paths_queue_the_same_dispatches_of_a_hostile_tree_through_the_scanner() {
    use actix::Actor;
    use agent_sync::actors::messages::ListQueue;
    use agent_sync::actors::messages::ScanToQueue;
    use agent_sync::actors::queue::{Queue, QueueConfig};
    use agent_sync::actors::scanner::walk::WalkOptions;
    use agent_sync::actors::time::Clock;
    use agent_sync::actors::{Ledger, Scanner, Store};

    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (with_report, without) = hostile_tree(root.path(), outside.path());
    let expected = hostile_expected(&with_report, &without);
    let mut queued = Vec::new();
    for resolver in [Resolver::Native, Resolver::Portable] {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let ledger = Ledger::new(store.clone()).start();
        let queue = Queue::new(store.clone(), QueueConfig::default(), Clock::system()).start();
        let scanner = Scanner::new(root.path().to_path_buf(), ledger.recipient())
            .with_store(store)
            .with_queue(queue.clone().recipient(), queue.clone().recipient())
            .with_walk(WalkOptions {
                resolver,
                chunk: 4,
                ..WalkOptions::default()
            })
            .start();
        // Twice: the second scan answers from the rescan cache, and queues nothing more.
        for round in 0..2 {
            let summary = scanner
                .send(ScanToQueue {
                    agent_id: "bad-input-agent".into(),
                    fleet_node_id: None,
                })
                .await
                .unwrap()
                .unwrap();
            let found = if round == 0 { expected.len() } else { 0 };
            assert_eq!(summary.found, found, "{resolver:?}, scan {round}");
        }
        let entries = queue.send(ListQueue::default()).await.unwrap().unwrap();
        let dispatches: Vec<Value> = entries
            .iter()
            .flat_map(|e| e.dispatches.iter().map(|d| Value::Object(d.to_object())))
            .collect();
        let mut ids: Vec<&str> = dispatches.iter().filter_map(|d| d["id"].as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, expected, "{resolver:?}");
        for dispatch in &dispatches {
            assert!(
                !dispatch.to_string().contains(OUTSIDE_SECRET),
                "{resolver:?} leaked"
            );
        }
        queued.push(dispatches);
    }
    assert_eq!(
        queued[0], queued[1],
        "both walk paths queue the same records, in order"
    );
}

/// The binary as `nobody` when running as root (mode bits apply then), else as is.
fn scanner_command(sandbox: &Sandbox, args: &[&str]) -> (Command, bool) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match sandbox.as_nobody(args).filter(|_| root) {
        Some(cmd) => (cmd, true),
        None => (sandbox.cmd(args), false),
    }
}

/// Gives `path` to `nobody` (uid and gid 65534).
fn chown_nobody(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0, "chown");
}

#[actix_rt::test]
async fn the_binary_pushes_the_good_workspaces_of_a_hostile_tree_and_warns_about_the_rest() {
    let sandbox = sandbox();
    let outside = sandbox.path().join("outside");
    let (with_report, without) = hostile_tree(&sandbox.root(), &outside);
    // Traversable by nobody; the state dir is nobody's.
    for dir in [sandbox.path().to_path_buf(), sandbox.path().join("home")] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::create_dir_all(sandbox.state()).unwrap();
    let platform = LoopbackPlatform::start().await;
    let (mut cmd, as_nobody) = scanner_command(&sandbox, &["--json", "push"]);
    if as_nobody {
        chown_nobody(&sandbox.state());
    } else {
        eprintln!("not root or no setpriv: the 0600 status.json is readable here");
    }
    cmd.env("CORE_AGENT_API_KEY", "bad-input-token")
        .env("CORE_API_URL", platform.url())
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let out = actix_rt::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected: Vec<&str> = with_report.iter().chain(&without).copied().collect();
    if !as_nobody {
        expected.push("o/r/unreadable");
    }
    expected.sort_unstable();
    assert_eq!(reply["count"], expected.len(), "{reply}\n{stderr}");

    let mut pushed: Vec<Value> = platform
        .delivered()
        .iter()
        .flat_map(|r| r.dispatches())
        .collect();
    pushed.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let ids: Vec<&str> = pushed.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected);
    for dispatch in &pushed {
        let id = dispatch["id"].as_str().unwrap();
        assert!(
            !dispatch.to_string().contains(OUTSIDE_SECRET),
            "{id} leaked"
        );
        assert_eq!(
            dispatch.get("report").is_some(),
            with_report.contains(&id),
            "{id}"
        );
    }
    for warning in [
        "over the 1048576-byte cap; skipped",
        "over the 8388608-byte cap; skipped",
        "corrupt status file",
        "dispatch pushed without it",
        "not UTF-8; skipped",
    ] {
        assert!(
            stderr.contains(warning),
            "no {warning:?} warning in:\n{stderr}"
        );
    }
    if as_nobody {
        assert!(
            stderr.contains("cannot read status file") && stderr.contains("unreadable"),
            "{stderr}"
        );
    }
    platform.stop().await;
}
