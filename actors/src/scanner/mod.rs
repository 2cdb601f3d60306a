//! The Scanner: finds finished dispatches under the workspace root and queues the new
//! ones as it goes; reaps ghosts.
//!
//! Inside: the walk itself (rules, size caps, the rescan cache, the parallel walk, the
//! chunk pipeline) in [`walk`]; the ghost reap in `reap`, which rewrites a
//! `status.json` with `atomic_write`; the scan's questions and enqueues as actor
//! messages in `peers`, each awaited with `block_on`.
//!
//! The walk is blocking file I/O, so it runs on tokio's blocking pool and the arbiter
//! stays free for the Pusher's HTTP and the other actors' messages. From there it talks
//! to the Ledger and the Queue with ordinary actor messages, waiting for each answer on
//! its own thread: per chunk of about a thousand candidates, one [`NotQueued`] to the
//! Queue, then one [`Unsynced`] to the Ledger about the rest (why in that order: the
//! `stream` module of [`walk`]), and one [`Enqueue`] of what is new, the same enqueue
//! path as every other push (coalescing into the tail entry, (id, fingerprint)
//! dedup). At most one enqueue is in flight while the next chunk is prepared.
//!
//! The Scanner owns the rescan cache's tables (`scan_dirs`, `scan_workspaces`, see
//! [`walk`] and `store`); it keeps nothing in memory between scans, so a fresh process
//! rescans an unchanged tree as cheaply as a long-running one.
//!
//! Two scans, both streaming into the Queue and replying with counts: [`ScanToQueue`]
//! (a push) walks the whole tree, [`ScanWorkspaces`] only the workspaces named.
//!
//! Stopping: the blocking pool outlives a stop request (a runtime's shutdown waits for
//! its blocking tasks), so the walk and the reap check a [`ScanStop`] the service sets
//! when it stops or aborts. A scan then ends between candidate batches (its workers at
//! their next workspace) with [`SyncError::Stopped`], keeping what it queued; a reap
//! ends before its next workspace. What was not reached is found by the next run.

mod atomic_write;
mod block_on;
mod peers;
mod reap;
mod stop;
pub mod walk;

use std::future::Future;
use std::path::PathBuf;

use actix::prelude::*;

use crate::error::{StoreError, SyncError};
use crate::messages::{
    Enqueue, EnqueueReceipt, NamedScanSummary, NotQueued, ReapGhosts, ReapReport, ReapRunning,
    ScanSummary, ScanToQueue, ScanWorkspaces, Unsynced,
};
use crate::store::Store;
use peers::ActorPeers;
use walk::{relative_name, scan, scan_named, WalkOptions};

pub use reap::GHOST_QUESTION;
pub use stop::ScanStop;

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
    /// Set when the service stops: the scan or reap in progress ends early.
    stop: ScanStop,
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
            stop: ScanStop::default(),
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

    /// Ends its scans and reaps early once `stop` is set (by whoever stops the
    /// service; see [`ScanStop`]).
    pub fn with_stop(mut self, stop: ScanStop) -> Self {
        self.stop = stop;
        self
    }

    /// The flag that ends its scans and reaps early (shared, not a copy).
    pub fn stop_handle(&self) -> ScanStop {
        self.stop.clone()
    }

    /// Where scans queue; `Err` (naming `what` was refused) for a Scanner started
    /// without a queue.
    fn queue(&self, what: &'static str) -> Result<ScanQueue, SyncError> {
        self.queue.clone().ok_or_else(|| {
            SyncError::Store(StoreError::unavailable(
                what,
                "this Scanner was started without a queue (Scanner::with_queue)",
            ))
        })
    }

    /// Runs one scan into `queue` on the blocking pool, over the whole tree
    /// (`names: None`) or exactly the named workspaces (checked already).
    fn run(
        &self,
        queue: ScanQueue,
        who: ScanToQueue,
        names: Option<Vec<String>>,
    ) -> impl Future<Output = Result<ScanSummary, SyncError>> + 'static {
        let root = self.root.clone();
        let store = self.store.clone();
        let options = self.walk;
        let mut peers = ActorPeers {
            ledger: self.ledger.clone(),
            queue,
            who,
            in_flight: None,
            receipt: EnqueueReceipt::default(),
            stop: self.stop.flag(),
        };
        async move {
            actix_rt::task::spawn_blocking(move || {
                let scanned = match &names {
                    None => scan(&root, store.as_ref(), &options, &mut peers),
                    Some(names) => scan_named(&root, store.as_ref(), &options, names, &mut peers),
                };
                // The enqueue still in flight is answered either way.
                let waited = peers.wait();
                let totals = scanned?;
                waited.map(|()| ScanSummary {
                    workspaces: totals.workspaces,
                    skipped: totals.skipped,
                    status_reads: totals.status_reads,
                    found: totals.found,
                    receipt: peers.receipt,
                })
            })
            .await
            .map_err(|_| SyncError::Stopped)?
        }
    }
}

impl Actor for Scanner {
    type Context = Context<Self>;
}

impl Handler<ScanToQueue> for Scanner {
    type Result = ResponseFuture<Result<ScanSummary, SyncError>>;

    fn handle(&mut self, msg: ScanToQueue, _: &mut Self::Context) -> Self::Result {
        match self.queue("scan into the queue") {
            Ok(queue) => Box::pin(self.run(queue, msg, None)),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
}

impl Handler<ScanWorkspaces> for Scanner {
    type Result = ResponseFuture<Result<NamedScanSummary, SyncError>>;

    fn handle(&mut self, msg: ScanWorkspaces, _: &mut Self::Context) -> Self::Result {
        let queue = match self.queue("scan workspaces into the queue") {
            Ok(queue) => queue,
            Err(e) => return Box::pin(async { Err(e) }),
        };
        let mut names = Vec::with_capacity(msg.names.len());
        let mut refused = Vec::new();
        for given in &msg.names {
            match relative_name(&self.root, given) {
                Ok(name) => names.push(name),
                Err(why) => {
                    log::warn!("not scanning {why}");
                    refused.push(why);
                }
            }
        }
        // Walk order, once each: what a scan of the tree would queue, in its order.
        names.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        names.dedup();
        let who = ScanToQueue {
            agent_id: msg.agent_id,
            fleet_node_id: msg.fleet_node_id,
        };
        let scan = (!names.is_empty()).then(|| self.run(queue, who, Some(names)));
        Box::pin(async move {
            let Some(scan) = scan else {
                return Ok(NamedScanSummary {
                    summary: ScanSummary::default(),
                    refused,
                });
            };
            Ok(NamedScanSummary {
                summary: scan.await?,
                refused,
            })
        })
    }
}

impl Handler<ReapRunning> for Scanner {
    type Result = ResponseFuture<ReapReport>;

    fn handle(&mut self, _: ReapRunning, _: &mut Self::Context) -> Self::Result {
        let root = self.root.clone();
        let resolver = self.walk.resolver;
        let stop = self.stop.clone();
        let Some(store) = self.store.clone() else {
            // Without the cache nothing is known to be running: the tree's reap.
            return Box::pin(async move {
                actix_rt::task::spawn_blocking(move || {
                    reap::reap(&root, resolver, &|| stop.is_stopped())
                })
                .await
                .unwrap_or_default()
            });
        };
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || {
                reap::reap_running(&root, &store, resolver, &|| stop.is_stopped())
            })
            .await
            .unwrap_or_default()
        })
    }
}

impl Handler<ReapGhosts> for Scanner {
    type Result = ResponseFuture<ReapReport>;

    fn handle(&mut self, _: ReapGhosts, _: &mut Self::Context) -> Self::Result {
        let root = self.root.clone();
        let resolver = self.walk.resolver;
        let stop = self.stop.clone();
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || {
                reap::reap(&root, resolver, &|| stop.is_stopped())
            })
            .await
            .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::reap::testing::{is_reaped, workspace, GHOST};
    use super::*;
    use crate::dispatch::DispatchKey;

    /// A Ledger that sets the Scanner's stop when it is first asked, and counts.
    struct StoppingLedger {
        /// The Scanner's flag.
        stop: ScanStop,
        /// Questions answered.
        asked: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Actor for StoppingLedger {
        type Context = Context<Self>;
    }

    impl Handler<Unsynced> for StoppingLedger {
        type Result = Result<Vec<DispatchKey>, StoreError>;

        fn handle(&mut self, msg: Unsynced, _: &mut Self::Context) -> Self::Result {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.stop.stop();
            Ok(msg.candidates)
        }
    }

    /// A Queue that holds nothing and takes everything.
    struct EmptyQueue;

    impl Actor for EmptyQueue {
        type Context = Context<Self>;
    }

    impl Handler<NotQueued> for EmptyQueue {
        type Result = Result<Vec<DispatchKey>, StoreError>;

        fn handle(&mut self, msg: NotQueued, _: &mut Self::Context) -> Self::Result {
            Ok(msg.candidates)
        }
    }

    impl Handler<Enqueue> for EmptyQueue {
        type Result = Result<EnqueueReceipt, StoreError>;

        fn handle(&mut self, _: Enqueue, _: &mut Self::Context) -> Self::Result {
            Ok(EnqueueReceipt::default())
        }
    }

    #[actix::test]
    async fn a_scanner_stopped_mid_scan_answers_stopped_and_its_reap_rewrites_nothing() {
        let root = tempfile::tempdir().unwrap();
        let done = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;
        for i in 0..50 {
            workspace(root.path(), &format!("o-{}/r/t-{i:02}", i % 3), done);
        }
        let ghost = workspace(root.path(), "o-9/r/ghost", GHOST);
        let stop = ScanStop::default();
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ledger = StoppingLedger {
            stop: stop.clone(),
            asked: asked.clone(),
        }
        .start();
        let options = WalkOptions {
            chunk: 1,
            ..WalkOptions::default()
        };
        let queue = EmptyQueue.start();
        let scanner = Scanner::new(root.path().to_path_buf(), ledger.recipient())
            .with_queue(queue.clone().recipient(), queue.recipient())
            .with_walk(options)
            .with_stop(stop.clone());
        assert!(!scanner.stop_handle().is_stopped());
        let scanner = scanner.start();

        let who = ScanToQueue {
            agent_id: "a".into(),
            fleet_node_id: None,
        };
        let answer = scanner.send(who).await.unwrap();
        assert!(matches!(answer, Err(SyncError::Stopped)), "{answer:?}");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "no chunk is asked about once the stop is set"
        );
        assert!(stop.is_stopped());

        let reaped = scanner.send(ReapGhosts).await.unwrap();
        assert!(reaped.reaped.is_empty());
        assert!(!is_reaped(&ghost), "a stopped Scanner rewrites nothing");
    }
}
