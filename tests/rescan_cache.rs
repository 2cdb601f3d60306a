//! The persisted rescan cache: a fresh process rescans an unchanged,
//! synced tree at about one `stat` per workspace, reading no `status.json`; anything
//! changed (size, mtime) or too recent to trust (racy) is read again. A corrupt row is
//! ignored and rebuilt (`scanner::walk::cache` unit tests, which can write one).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use agent_sync_actors::messages::*;
use agent_sync_actors::queue::{Queue, QueueConfig};
use agent_sync_actors::time::Clock;
use agent_sync_actors::{Ledger, Scanner, Store};

const AGENT: &str = "cache-agent";

fn done(runs: i64) -> String {
    format!(r#"{{"status":"completed","updated_at":"2026-04-14T12:00:00Z","runs":{runs}}}"#)
}

fn tree(root: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let dir = root.join(format!("org-{}/repo/task-{i:04}", i % 5));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("status.json"), done(1)).unwrap();
            dir
        })
        .collect()
}

/// Sets the mtime of `path` `ago` in the past.
fn set_age(path: &Path, ago: Duration) {
    File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

/// Backdates everything below `root` (and `root`) an hour: settled, so cacheable.
fn age_tree(root: &Path) {
    fn all(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                all(&entry.path(), out);
            }
            out.push(entry.path());
        }
    }
    let mut paths = vec![root.to_path_buf()];
    all(root, &mut paths);
    for path in paths {
        set_age(&path, Duration::from_secs(3600));
    }
}

/// One process's worth of actors: a scan, and (as a delivery would) marking what is
/// queued as synced in the Ledger and delivering it.
async fn session(root: PathBuf, state: PathBuf, deliver: bool) -> ScanSummary {
    agent_sync_testkit::in_own_system(move || async move {
        let store = Store::open(&state).expect("open the state");
        let ledger = Ledger::new(store.clone()).start();
        let queue = Queue::new(store.clone(), QueueConfig::default(), Clock::system()).start();
        let scanner = Scanner::new(root, ledger.clone().recipient())
            .with_store(store)
            .with_queue(queue.clone().recipient(), queue.clone().recipient())
            .start();
        let summary = scanner
            .send(ScanToQueue {
                agent_id: AGENT.into(),
                fleet_node_id: None,
            })
            .await
            .unwrap()
            .expect("the scan");
        if deliver {
            // The Queue marks the ledger in the commit of the outcome.
            agent_sync_testkit::deliver_leased(&queue, usize::MAX).await;
        }
        summary
    })
    .await
}

#[actix::test]
async fn the_rescan_cache_survives_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    tree(root.path(), 400);
    age_tree(root.path());
    let (r, s) = (root.path().to_path_buf(), state.path().to_path_buf());
    let cold = session(r.clone(), s.clone(), true).await;
    assert_eq!(
        (cold.workspaces, cold.status_reads, cold.found),
        (400, 400, 400)
    );
    // The first scan after the delivery learns "synced" from the Ledger, reading
    // nothing (the rows of the cold scan are trusted)...
    let learn = session(r.clone(), s.clone(), false).await;
    assert_eq!((learn.status_reads, learn.found), (0, 0));
    // ... and every fresh process after it reads no status.json at all.
    for _ in 0..2 {
        let rescan = session(r.clone(), s.clone(), false).await;
        assert_eq!(
            (
                rescan.workspaces,
                rescan.skipped,
                rescan.status_reads,
                rescan.found
            ),
            (400, 0, 0, 0)
        );
    }
}

#[actix::test]
async fn a_status_json_whose_size_or_mtime_changed_is_read_again_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dirs = tree(root.path(), 50);
    age_tree(root.path());
    let (r, s) = (root.path().to_path_buf(), state.path().to_path_buf());
    session(r.clone(), s.clone(), true).await;
    session(r.clone(), s.clone(), false).await;
    // Size changed, same fingerprint: read, still synced.
    std::fs::write(dirs[3].join("status.json"), format!("{} ", done(1))).unwrap();
    set_age(&dirs[3].join("status.json"), Duration::from_secs(600));
    // Only the mtime changed.
    set_age(&dirs[7].join("status.json"), Duration::from_secs(1200));
    // A new fingerprint (another size, too): read and queued.
    std::fs::write(dirs[11].join("status.json"), done(22)).unwrap();
    set_age(&dirs[11].join("status.json"), Duration::from_secs(600));
    let rescan = session(r.clone(), s.clone(), false).await;
    assert_eq!((rescan.status_reads, rescan.found), (3, 1));
    // Read once, settled: trusted from then on.
    let next = session(r, s, false).await;
    assert_eq!((next.status_reads, next.found), (0, 0));
}

#[actix::test]
async fn racy_entries_are_read_again_until_they_settle_even_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dirs = tree(root.path(), 30);
    age_tree(root.path());
    // Written just now: within the racy window of the scans below.
    for dir in &dirs[..10] {
        std::fs::write(dir.join("status.json"), done(1)).unwrap();
    }
    let (r, s) = (root.path().to_path_buf(), state.path().to_path_buf());
    let cold = session(r.clone(), s.clone(), true).await;
    assert_eq!(cold.status_reads, 30);
    for _ in 0..2 {
        let rescan = session(r.clone(), s.clone(), false).await;
        assert_eq!(
            (rescan.status_reads, rescan.found),
            (10, 0),
            "the racy ten, again"
        );
    }
    // Once settled, the next scan reads them a last time and stores them.
    for dir in &dirs[..10] {
        set_age(&dir.join("status.json"), Duration::from_secs(60));
    }
    assert_eq!(session(r.clone(), s.clone(), false).await.status_reads, 10);
    assert_eq!(session(r, s, false).await.status_reads, 0);
}
