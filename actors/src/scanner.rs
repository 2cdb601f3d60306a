//! The Scanner: finds finished dispatches under the workspace root and queues the new
//! ones as it goes; reaps ghosts.
//!
//! The walk itself (rules, size caps, the rescan cache, the parallel walk, the chunk
//! pipeline) is in [`crate::walk`]. It is blocking file I/O, so it runs on tokio's
//! blocking pool and the arbiter stays free for the Pusher's HTTP and the other actors'
//! messages. From there it talks to the Ledger and the Queue with ordinary actor
//! messages, waiting for each answer on its own thread (`block_on`): per chunk of
//! about a thousand candidates, one [`NotQueued`] to the Queue, then one [`Unsynced`] to
//! the Ledger (in that order, see `walk::stream`), and one [`Enqueue`] of what is new, the same enqueue path as every other
//! push (coalescing into the tail entry, (id, fingerprint) dedup). At most one enqueue
//! is in flight while the next chunk is prepared.
//!
//! The Scanner owns the rescan cache's tables (`scan_dirs`, `scan_workspaces`, see
//! [`crate::walk`] and `store`); it keeps nothing in memory between scans, so a fresh
//! process rescans an unchanged tree as cheaply as a long-running one.
//!
//! Two scans:
//!
//! - [`ScanToQueue`] (a push): streams into the Queue, replies with counts;
//! - [`Scan`]: reports every terminal dispatch the Ledger does not hold (queued or
//!   not), built, in one reply; it queues nothing.

use std::fs::File;
use std::future::Future;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use actix::dev::RecipientRequest;
use actix::prelude::*;
use serde_json::{Map, Value};

use crate::error::{StoreError, SyncError};
use crate::messages::{
    Enqueue, EnqueueBatch, EnqueueReceipt, NotQueued, ReapGhosts, ReapReport, Scan, ScanReport,
    ScanSummary, ScanToQueue, Unsynced,
};
use crate::model::ScannedDispatch;
use crate::store::Store;
use crate::walk::{
    list_children, read_status_object, scan, visit_tree, Peers, Probe, Resolver, ScanTotals,
    Visitor, Walk, WalkOptions, Workspace,
};

/// Question written into a reaped ghost.
pub const GHOST_QUESTION: &str = "dead worker on restart";

/// Where a [`ScanToQueue`] sends what it finds: the Queue, or a stand-in.
#[derive(Clone)]
pub struct ScanQueue {
    /// Takes the records.
    pub enqueue: Recipient<Enqueue>,
    /// Says which candidates it holds already.
    pub not_queued: Recipient<NotQueued>,
}

/// Walks the workspace root; its only state is the rescan cache in the store.
pub struct Scanner {
    /// `<root>/<org>/<repo>/<task>/`.
    root: PathBuf,
    /// The Ledger's filter.
    ledger: Recipient<Unsynced>,
    /// Holds the rescan cache; `None`: every scan reads every `status.json`.
    store: Option<Store>,
    /// Where [`ScanToQueue`] queues; `None`: it is refused.
    queue: Option<ScanQueue>,
    /// Resolver and chunk sizes.
    walk: WalkOptions,
}

impl Scanner {
    /// A Scanner of `root` that filters through `ledger`, without a rescan cache or a
    /// queue until [`with_store`](Self::with_store) and [`with_queue`](Self::with_queue).
    pub fn new(root: PathBuf, ledger: Recipient<Unsynced>) -> Self {
        Scanner {
            root,
            ledger,
            store: None,
            queue: None,
            walk: WalkOptions::default(),
        }
    }

    /// Keeps the rescan cache in `store` (its tables `scan_dirs`, `scan_workspaces`).
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Queues what [`ScanToQueue`] finds through `enqueue`, asking `not_queued` first.
    pub fn with_queue(
        mut self,
        enqueue: Recipient<Enqueue>,
        not_queued: Recipient<NotQueued>,
    ) -> Self {
        self.queue = Some(ScanQueue {
            enqueue,
            not_queued,
        });
        self
    }

    /// Walks with these options (the portable resolver, other chunk sizes).
    pub fn with_walk(mut self, walk: WalkOptions) -> Self {
        self.walk = walk;
        self
    }

    /// Runs one scan on the blocking pool with `queue` (a push) or without (a report).
    fn run(
        &self,
        queue: Option<(ScanQueue, ScanToQueue)>,
    ) -> impl Future<Output = Result<(ScanTotals, ActorPeers), SyncError>> + 'static {
        let root = self.root.clone();
        let store = self.store.clone();
        let options = self.walk;
        let mut peers = ActorPeers {
            ledger: self.ledger.clone(),
            queue,
            collected: Vec::new(),
            in_flight: None,
            receipt: EnqueueReceipt::default(),
        };
        async move {
            actix_rt::task::spawn_blocking(move || {
                let scanned = scan(&root, store.as_ref(), &options, &mut peers);
                // The enqueue still in flight is answered either way.
                let waited = peers.wait();
                scanned.and_then(|totals| waited.map(|()| (totals, peers)))
            })
            .await
            .map_err(|_| SyncError::Stopped)?
        }
    }
}

impl Actor for Scanner {
    type Context = Context<Self>;
}

impl Handler<Scan> for Scanner {
    type Result = ResponseFuture<Result<ScanReport, SyncError>>;

    fn handle(&mut self, _: Scan, _: &mut Self::Context) -> Self::Result {
        let scan = self.run(None);
        Box::pin(async move {
            let (totals, peers) = scan.await?;
            Ok(ScanReport {
                unsynced: peers.collected,
                workspaces: totals.workspaces,
                skipped: totals.skipped,
            })
        })
    }
}

impl Handler<ScanToQueue> for Scanner {
    type Result = ResponseFuture<Result<ScanSummary, SyncError>>;

    fn handle(&mut self, msg: ScanToQueue, _: &mut Self::Context) -> Self::Result {
        let Some(queue) = self.queue.clone() else {
            return Box::pin(async {
                Err(SyncError::Store(StoreError::unavailable(
                    "scan into the queue",
                    "this Scanner was started without a queue (Scanner::with_queue)",
                )))
            });
        };
        let scan = self.run(Some((queue, msg)));
        Box::pin(async move {
            let (totals, peers) = scan.await?;
            Ok(ScanSummary {
                workspaces: totals.workspaces,
                skipped: totals.skipped,
                status_reads: totals.status_reads,
                found: totals.found,
                receipt: peers.receipt,
            })
        })
    }
}

/// A scan's peers, as actor messages awaited on the scan's own thread.
struct ActorPeers {
    /// The Ledger's filter.
    ledger: Recipient<Unsynced>,
    /// The Queue and who pushes, for [`ScanToQueue`]; `None` for [`Scan`].
    queue: Option<(ScanQueue, ScanToQueue)>,
    /// What a [`Scan`] reports.
    collected: Vec<ScannedDispatch>,
    /// The last enqueue, not answered yet.
    in_flight: Option<RecipientRequest<Enqueue>>,
    /// What the Queue did, summed.
    receipt: EnqueueReceipt,
}

impl ActorPeers {
    /// Waits for the enqueue in flight.
    fn wait(&mut self) -> Result<(), SyncError> {
        if let Some(request) = self.in_flight.take() {
            let receipt = block_on(request)??;
            self.receipt.entries += receipt.entries;
            self.receipt.dispatches += receipt.dispatches;
            self.receipt.duplicates += receipt.duplicates;
        }
        Ok(())
    }
}

impl Peers for ActorPeers {
    fn unsynced(
        &mut self,
        candidates: Vec<ScannedDispatch>,
    ) -> Result<Vec<ScannedDispatch>, SyncError> {
        Ok(block_on(self.ledger.send(Unsynced { candidates }))??)
    }

    fn not_queued(
        &mut self,
        candidates: Vec<ScannedDispatch>,
    ) -> Result<Vec<ScannedDispatch>, SyncError> {
        match &self.queue {
            None => Ok(candidates),
            Some((queue, _)) => Ok(block_on(queue.not_queued.send(NotQueued { candidates }))??),
        }
    }

    fn deliver(&mut self, found: Vec<ScannedDispatch>) -> Result<(), SyncError> {
        // One enqueue in flight: the previous one is durable before the next is sent.
        self.wait()?;
        match &self.queue {
            None => self.collected.extend(found),
            Some((queue, who)) => {
                self.in_flight = Some(queue.enqueue.send(Enqueue {
                    agent_id: who.agent_id.clone(),
                    fleet_node_id: who.fleet_node_id,
                    batch: EnqueueBatch::Scanned(found),
                }));
            }
        }
        Ok(())
    }
}

/// Runs `future` to completion on this (blocking-pool) thread, parking between polls.
/// Actor requests only need their reply channel to wake them, so no executor is needed:
/// the actors answer on their own arbiter.
fn block_on<F: Future>(future: F) -> F::Output {
    /// Wakes the parked thread.
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

impl Handler<ReapGhosts> for Scanner {
    type Result = ResponseFuture<ReapReport>;

    fn handle(&mut self, _: ReapGhosts, _: &mut Self::Context) -> Self::Result {
        let root = self.root.clone();
        let resolver = self.walk.resolver;
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || reap_tree_with(&root, resolver))
                .await
                .unwrap_or_default()
        })
    }
}

/// Rewrites every `running` workspace whose `pid` is gone to `failed`.
pub fn reap_tree(root: &Path) -> ReapReport {
    reap_tree_with(root, Resolver::Native)
}

/// [`reap_tree`], opening files the way `resolver` says.
pub fn reap_tree_with(root: &Path, resolver: Resolver) -> ReapReport {
    /// Reaps as it walks.
    struct Reap(ReapReport);
    impl Visitor for Reap {
        fn children(
            &mut self,
            walk: Walk<'_>,
            prefix: &str,
            dir: &crate::walk::sys::Dir,
        ) -> Option<Vec<std::ffi::OsString>> {
            list_children(walk, prefix, dir)
        }

        fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()> {
            reap_one(ws, &mut self.0);
            ControlFlow::Continue(())
        }
    }
    let mut reap = Reap(ReapReport::default());
    let walk = Walk {
        root,
        resolver,
        probe: Probe::Stat,
    };
    visit_tree(walk, &mut reap);
    reap.0
}

fn reap_one(ws: &Workspace<'_>, report: &mut ReapReport) {
    let Some((status, mut object)) = read_status_object(ws) else {
        return;
    };
    if status.status != "running" || status.pid <= 0 || crate::walk::sys::process_exists(status.pid)
    {
        return;
    }
    object.insert("status".into(), "failed".into());
    object.insert("question".into(), GHOST_QUESTION.into());
    match write_atomically(&ws.path().join("status.json"), &object) {
        Ok(()) => {
            log::info!(
                "reaped ghost workspace {} (pid {} is gone)",
                ws.name,
                status.pid
            );
            report.reaped.push(ws.name.to_string());
        }
        Err(e) => log::warn!("cannot reap ghost workspace {}: {e}", ws.name),
    }
}

/// Temp file in the same directory, fsync, rename: a reader sees old or new, never half.
fn write_atomically(path: &Path, object: &Map<String, Value>) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(object).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(root: &Path, name: &str, status: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("status.json"), status).unwrap();
        dir
    }

    #[test]
    fn ghost_with_dead_pid_is_reaped_to_failed_keeping_other_fields() {
        for resolver in [Resolver::Native, Resolver::Portable] {
            let root = tempfile::tempdir().unwrap();
            // pid_max on Linux is at most 2^22; this pid cannot exist.
            let dir = workspace(
                root.path(),
                "o/r/t",
                r#"{"status":"running","pid":99999999,"agent":"codex"}"#,
            );
            let alive = format!(r#"{{"status":"running","pid":{}}}"#, std::process::id());
            workspace(root.path(), "o/r/alive", &alive);
            let report = reap_tree_with(root.path(), resolver);
            assert_eq!(report.reaped, ["o/r/t"]);
            let status: Map<String, Value> =
                serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
            assert_eq!(status["status"], "failed");
            assert_eq!(status["question"], GHOST_QUESTION);
            assert_eq!(status["agent"], "codex");
        }
    }
}
