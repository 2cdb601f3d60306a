//! The streaming scan: the Scanner walks, asks the Ledger and the Queue in
//! chunks, builds only what is new and queues it chunk by chunk through the Queue's
//! ordinary `Enqueue` (coalescing, (id, fingerprint) dedup). These tests drive the
//! Scanner, Ledger and Queue directly.

use std::path::Path;

use actix::prelude::*;
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::error::StoreError;
use agent_sync_actors::messages::*;
use agent_sync_actors::queue::{Queue, QueueConfig};
use agent_sync_actors::scanner::walk::{scan_tree, WalkOptions};
use agent_sync_actors::time::Clock;
use agent_sync_actors::{Ledger, Scanner, Store, SyncError};
use agent_sync_testkit::list_queue;

const AGENT: &str = "streaming-agent";

/// `count` workspaces over 7 organisations and 3 repos: every 10th still running,
/// every 6th with a report, every 500th corrupt.
fn tree(root: &Path, count: usize) -> usize {
    let mut terminal = 0;
    for i in 0..count {
        let dir = root.join(format!("org-{}/repo-{}/task-{i:05}", i % 7, (i / 7) % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let status = if i % 500 == 499 {
            "{\"status\": \"compl".to_string()
        } else if i % 10 == 0 {
            r#"{"status":"running"}"#.to_string()
        } else {
            terminal += 1;
            format!(
                r#"{{"status":"completed","updated_at":"2026-04-14T12:00:00Z","runs":{}}}"#,
                i % 3
            )
        };
        std::fs::write(dir.join("status.json"), status).unwrap();
        if i % 6 == 0 {
            std::fs::create_dir_all(dir.join(".meta")).unwrap();
            std::fs::write(
                dir.join(".meta/report.json"),
                format!(r#"{{"summary":"task {i}"}}"#),
            )
            .unwrap();
        }
    }
    terminal
}

/// Ledger, Queue and Scanner over the state in `state`.
struct Actors {
    queue: Addr<Queue>,
    scanner: Addr<Scanner>,
}

fn start(root: &Path, state: &Path, walk: WalkOptions) -> Actors {
    let store = Store::open(state).expect("open the state");
    let ledger = Ledger::new(store.clone()).start();
    let queue = Queue::new(store.clone(), QueueConfig::default(), Clock::system()).start();
    let scanner = Scanner::new(root.to_path_buf(), ledger.recipient())
        .with_store(store)
        .with_queue(queue.clone().recipient(), queue.clone().recipient())
        .with_walk(walk)
        .start();
    Actors { queue, scanner }
}

async fn scan_to_queue(scanner: &Addr<Scanner>) -> Result<ScanSummary, SyncError> {
    scanner
        .send(ScanToQueue {
            agent_id: AGENT.into(),
            fleet_node_id: None,
        })
        .await
        .expect("the scanner runs")
}

/// An entry's agent, dispatches and fingerprints.
type Contents = (String, Vec<serde_json::Value>, Vec<(String, String)>);

/// What an entry holds, without what differs between two queues (seq, key, time).
fn contents(entries: &[QueueEntry]) -> Vec<Contents> {
    entries
        .iter()
        .map(|e| {
            (
                e.agent_id.clone(),
                e.dispatches
                    .iter()
                    .map(|d| serde_json::Value::Object(d.to_object()))
                    .collect(),
                e.fingerprints
                    .iter()
                    .map(|k| (k.id.clone(), k.fingerprint.clone()))
                    .collect(),
            )
        })
        .collect()
}

fn ids(entries: &[QueueEntry]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|e| e.dispatches.iter().map(|d| d.id().unwrap_or_default()))
        .collect()
}

#[actix::test]
async fn a_scan_larger_than_one_chunk_queues_exactly_what_a_whole_tree_scan_would_in_order() {
    let root = tempfile::tempdir().unwrap();
    let workspaces = 2600;
    let terminal = tree(root.path(), workspaces);
    // The whole tree at once, as the Scanner did before: one Enqueue of everything.
    let whole = {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let queue = Queue::new(store, QueueConfig::default(), Clock::system()).start();
        let scan = scan_tree(root.path());
        assert_eq!(scan.terminal.len(), terminal);
        queue
            .send(Enqueue {
                agent_id: AGENT.into(),
                fleet_node_id: None,
                batch: EnqueueBatch::Scanned(scan.terminal),
            })
            .await
            .unwrap()
            .unwrap();
        contents(&list_queue(&queue).await)
    };
    assert_eq!(whole.len(), terminal.div_ceil(100));
    for chunk in [1000, 64] {
        let state = tempfile::tempdir().unwrap();
        let actors = start(
            root.path(),
            state.path(),
            WalkOptions {
                chunk,
                ..WalkOptions::default()
            },
        );
        let summary = scan_to_queue(&actors.scanner).await.expect("the scan");
        assert_eq!(
            (summary.workspaces, summary.skipped, summary.found),
            (workspaces, workspaces / 500, terminal),
            "chunk {chunk}"
        );
        assert_eq!(summary.receipt.dispatches, terminal);
        assert_eq!(summary.receipt.duplicates, 0);
        assert!(
            contents(&list_queue(&actors.queue).await) == whole,
            "chunk {chunk}"
        );
    }
}

/// A Queue stand-in that fails one enqueue with a store error and forwards the rest.
struct FailingQueue {
    /// The real one.
    queue: Addr<Queue>,
    /// Which enqueue fails (0-based).
    fail_at: usize,
    /// Enqueues seen.
    seen: usize,
}

impl Actor for FailingQueue {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for FailingQueue {
    type Result = ResponseFuture<Result<EnqueueReceipt, StoreError>>;

    fn handle(&mut self, msg: Enqueue, _: &mut Self::Context) -> Self::Result {
        self.seen += 1;
        if self.seen - 1 == self.fail_at {
            return Box::pin(async {
                Err(StoreError::unavailable(
                    "enqueue dispatches",
                    "injected: No space left on device",
                ))
            });
        }
        let queue = self.queue.clone();
        Box::pin(async move { queue.send(msg).await.expect("the queue runs") })
    }
}

impl Handler<NotQueued> for FailingQueue {
    type Result = ResponseFuture<Result<Vec<agent_sync_actors::dispatch::DispatchKey>, StoreError>>;

    fn handle(&mut self, msg: NotQueued, _: &mut Self::Context) -> Self::Result {
        let queue = self.queue.clone();
        Box::pin(async move { queue.send(msg).await.expect("the queue runs") })
    }
}

#[actix::test]
async fn a_scan_that_fails_half_way_loses_nothing_and_queues_nothing_twice() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let terminal = tree(root.path(), 1000);
    let walk_order: Vec<String> = scan_tree(root.path())
        .terminal
        .into_iter()
        .map(|d| d.id)
        .collect();
    let walk = WalkOptions {
        chunk: 100,
        ..WalkOptions::default()
    };
    let (root_path, state_path) = (root.path().to_path_buf(), state.path().to_path_buf());
    // The fourth enqueue fails: the first three chunks are queued, durably.
    let queued = agent_sync_testkit::in_own_system(move || async move {
        let store = Store::open(&state_path).unwrap();
        let ledger = Ledger::new(store.clone()).start();
        let queue = Queue::new(store.clone(), QueueConfig::default(), Clock::system()).start();
        let failing = FailingQueue {
            queue: queue.clone(),
            fail_at: 3,
            seen: 0,
        }
        .start();
        let scanner = Scanner::new(root_path, ledger.recipient())
            .with_store(store)
            .with_queue(failing.clone().recipient(), failing.recipient())
            .with_walk(walk)
            .start();
        let failed = scan_to_queue(&scanner).await;
        assert!(
            matches!(&failed, Err(SyncError::Store(e)) if e.cause.to_string().contains("injected")),
            "{failed:?}"
        );
        ids(&list_queue(&queue).await)
    })
    .await;
    assert_eq!(queued, walk_order[..300]);
    // After a restart: still there; the next scan queues the rest, once each.
    let actors = start(root.path(), state.path(), walk);
    assert_eq!(ids(&list_queue(&actors.queue).await), queued);
    let again = scan_to_queue(&actors.scanner).await.unwrap();
    assert_eq!(
        (again.found, again.receipt.dispatches),
        (terminal - 300, terminal - 300)
    );
    assert_eq!(ids(&list_queue(&actors.queue).await), walk_order);
    // And a scan with nothing new queues nothing (and builds nothing).
    let idle = scan_to_queue(&actors.scanner).await.unwrap();
    assert_eq!(
        (idle.found, idle.receipt.dispatches, idle.receipt.duplicates),
        (0, 0, 0)
    );
    assert_eq!(
        list_queue(&actors.queue)
            .await
            .iter()
            .map(|e| e.dispatches.len())
            .sum::<usize>(),
        terminal
    );
}

#[actix::test]
async fn two_scans_at_once_queue_each_dispatch_once() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let terminal = tree(root.path(), 700);
    let actors = start(
        root.path(),
        state.path(),
        WalkOptions {
            chunk: 50,
            ..WalkOptions::default()
        },
    );
    let (a, b) = tokio::join!(
        scan_to_queue(&actors.scanner),
        scan_to_queue(&actors.scanner)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.receipt.dispatches + b.receipt.dispatches, terminal);
    let queued = ids(&list_queue(&actors.queue).await);
    let mut unique = queued.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((queued.len(), unique.len()), (terminal, terminal));
}
