//! Giving space back: the sync database shrinks once a backlog is delivered,
//! and nothing queued is lost across a compaction, not even to a `kill -9` in the
//! middle of one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use agent_sync_actors::dispatch::Dispatch;
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::messages::*;
use agent_sync_actors::queue::{Queue, QueueConfig};
use agent_sync_actors::store::{Compaction, Store, DATABASE_FILE};
use agent_sync_actors::time::Clock;
use agent_sync_testkit::{deliver_leased, list_queue};
use serde_json::json;

/// Set in a child process: the state dir whose store it opens (and so compacts).
const CHILD_ENV: &str = "AGENT_SYNC_COMPACTION_CHILD";

/// A host dispatch of about `pad` bytes.
fn dispatch(id: &str, pad: usize) -> Dispatch {
    let value = json!({"id": id, "status": "completed", "pad": "x".repeat(pad)});
    Dispatch::from(value.as_object().cloned().unwrap_or_default())
}

fn start_queue(store: Store) -> Addr<Queue> {
    Queue::new(store, QueueConfig::default(), Clock::system()).start()
}

/// Enqueues `count` host dispatches of `pad` bytes, `per_message` per message.
async fn fill(queue: &Addr<Queue>, prefix: &str, count: usize, pad: usize) {
    let per_message = 100;
    for start in (0..count).step_by(per_message) {
        let batch = (start..(start + per_message).min(count))
            .map(|i| dispatch(&format!("{prefix}-{i:06}"), pad))
            .collect();
        queue
            .send(Enqueue {
                agent_id: "compaction-agent".into(),
                fleet_node_id: None,
                batch: EnqueueBatch::Host(batch),
            })
            .await
            .expect("the queue runs")
            .expect("enqueue");
    }
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(DATABASE_FILE))
        .expect("the database file")
        .len()
}

#[actix::test]
async fn the_file_shrinks_once_a_drained_backlog_leaves_the_queue_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = start_queue(store.clone());
    fill(&queue, "backlog", 4000, 3000).await;
    let full = queue.send(DatabaseSize).await.unwrap().unwrap();
    assert!(full > 10 << 20, "a backlog of ~12 MB: {full} bytes");
    let started = Instant::now();
    assert_eq!(deliver_leased(&queue, usize::MAX).await, 40);
    // The compaction runs right after the report that emptied the queue.
    let mut after = full;
    while started.elapsed() < Duration::from_secs(20) {
        after = queue.send(DatabaseSize).await.unwrap().unwrap();
        if after < full / 4 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "backlog: {full} bytes; delivered and compacted: {after} bytes in {:?}",
        started.elapsed()
    );
    assert!(after < full / 4, "{full} -> {after} bytes");
    assert_eq!(after, file_bytes(dir.path()));
    assert!(list_queue(&queue).await.is_empty());
    // Compacting again finds nothing worth it.
    assert!(matches!(
        store.compact_if_sparse().unwrap(),
        Compaction::Dense { .. }
    ));
}

/// Runs `body` in an actix System of its own thread; every actor (and its store
/// handle) is gone when it returns.
fn in_system<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(body).join().expect("the system thread")
}

/// The queue of the state in `dir`, read after opening it (which repairs the file
/// after a crash, and compacts it when sparse).
fn queued_in(dir: PathBuf) -> Vec<QueueEntry> {
    in_system(move || {
        System::new().block_on(async move {
            let store = Store::open(&dir).expect("reopen the state");
            list_queue(&start_queue(store)).await
        })
    })
}

/// The child half of the `kill -9` test: opens the store named by [`CHILD_ENV`],
/// which compacts it at start. A no-op in a normal test run.
#[test]
fn child_opens_and_compacts_the_store() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let started = Instant::now();
    let store = Store::open(Path::new(&dir)).expect("open the state");
    println!(
        "child: opened and compacted to {} bytes in {:?}",
        store.file_bytes().unwrap_or(0),
        started.elapsed()
    );
}

fn child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "child_opens_and_compacts_the_store",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child")
}

fn copy_state(template: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(template.join(DATABASE_FILE), to.join(DATABASE_FILE)).unwrap();
}

#[test]
fn a_kill_9_in_the_middle_of_a_compaction_loses_nothing_queued() {
    let work = tempfile::tempdir().unwrap();
    let template = work.path().join("template");
    // A sparse file whose live entries sit at its end: 60 entries delivered from the
    // head, 15 still queued behind them.
    let expected = {
        let template = template.clone();
        in_system(move || {
            System::new().block_on(async move {
                let store = Store::open(&template).expect("open the template");
                let queue = start_queue(store);
                fill(&queue, "delivered", 6000, 3000).await;
                fill(&queue, "kept", 1500, 3000).await;
                assert_eq!(deliver_leased(&queue, 60).await, 60);
                list_queue(&queue).await
            })
        })
    };
    assert_eq!(expected.len(), 15);
    let sparse = file_bytes(&template);
    // How long an undisturbed open (and compaction) takes here.
    let calibration = work.path().join("calibration");
    copy_state(&template, &calibration);
    let started = Instant::now();
    let out = child(&calibration).wait_with_output().unwrap();
    let whole = started.elapsed();
    assert!(out.status.success());
    let compacted = file_bytes(&calibration);
    eprintln!(
        "sparse {sparse} bytes, compacted {compacted} in {whole:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(compacted < sparse / 2, "{sparse} -> {compacted}");
    assert_eq!(queued_in(calibration), expected);
    let rounds = 10;
    let mut interrupted = 0;
    for round in 0..rounds {
        let dir = work.path().join(format!("round-{round}"));
        copy_state(&template, &dir);
        let mut process = child(&dir);
        std::thread::sleep(whole.mul_f64((round as f64 + 0.5) / rounds as f64));
        let finished = process.try_wait().unwrap().is_some();
        let _ = process.kill();
        let _ = process.wait();
        let size = file_bytes(&dir);
        if !finished {
            interrupted += 1;
        }
        eprintln!(
            "round {round}: killed {}, file {size} bytes",
            if finished {
                "after it finished"
            } else {
                "mid-way"
            }
        );
        assert_eq!(queued_in(dir.clone()), expected, "round {round}");
        assert!(file_bytes(&dir) <= sparse);
    }
    eprintln!("{interrupted} of {rounds} kills interrupted the open and compaction");
    assert!(
        interrupted > 0,
        "no kill landed before the compaction ended"
    );
}

#[actix::test]
async fn enqueues_acknowledged_around_compactions_are_all_still_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = start_queue(store.clone());
    // Another thread compacts whenever no transaction is open, as often as it can.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut compacted = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(Compaction::Compacted { .. }) = store.compact() {
                    compacted += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            compacted
        })
    };
    for round in 0..6 {
        fill(&queue, &format!("r{round}"), 1000, 2000).await;
        // Deliver all but the last two entries of the round.
        deliver_leased(&queue, 8).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let compacted = compactor.join().unwrap();
    let listed = list_queue(&queue).await;
    let ids: Vec<String> = listed
        .iter()
        .flat_map(|e| e.dispatches.iter().map(|d| d.id().unwrap_or_default()))
        .collect();
    // 60 entries of 100 queued, the oldest 48 delivered: FIFO leaves the last 1,200.
    let expected: Vec<String> = (0..6)
        .flat_map(|round| (0..1000).map(move |i| format!("r{round}-{i:06}")))
        .skip(4800)
        .collect();
    assert!(
        ids == expected,
        "{} queued, {} expected",
        ids.len(),
        expected.len()
    );
    eprintln!("{compacted} compactions while enqueuing and delivering");
    assert!(compacted > 0, "no compaction ran");
    drop(queue);
    drop(store);
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let path = dir.path().to_path_buf();
    assert_eq!(queued_in(path), listed, "and all of it durable");
}
