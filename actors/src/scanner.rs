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
//!
//! Stopping: the blocking pool outlives a stop request (a runtime's shutdown waits for
//! its blocking tasks), so the walk and the reap check a [`ScanStop`] the service sets
//! when it stops or aborts. A scan then ends between candidate batches (its workers at
//! their next workspace) with [`SyncError::Stopped`], keeping what it queued; a reap
//! ends before its next workspace. What was not reached is found by the next run.

use std::fs::File;
use std::future::Future;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Ends the Scanner's blocking work early: a scan's walk (between candidate batches,
/// and on the walk's workers at each workspace) and a ghost reap (before each
/// workspace). That work runs on tokio's blocking pool, which a runtime's shutdown
/// waits for, so without this a stop, even an abort, waited for a whole walk of the
/// tree (a reap of 20,000 ghosts: 10 s of fsyncs). Set once, when a stop or an abort
/// of the service begins, and never cleared: from then on every scan answers
/// [`SyncError::Stopped`] and every reap rewrites nothing. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct ScanStop(Arc<AtomicBool>);

impl ScanStop {
    /// Asks the scan or reap in progress, and every later one, to end early.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for the walk's worker threads.
    fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

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
            stop: self.stop.flag(),
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
    /// The Scanner's [`ScanStop`]: the walk ends early once it is set.
    stop: Arc<AtomicBool>,
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
    fn halt(&self) -> Option<Arc<AtomicBool>> {
        Some(self.stop.clone())
    }

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
        let stop = self.stop.clone();
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || reap(&root, resolver, &|| stop.is_stopped()))
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
    reap(root, resolver, &|| false)
}

/// What became of one workspace the reap visited.
enum Reaped {
    /// Not a ghost (or unreadable: the scan warns about that).
    No,
    /// Rewritten to `failed`.
    Yes,
    /// A ghost that could not be rewritten, and why.
    Failed(std::io::Error),
}

/// The reap: [`reap_tree_with`], asking `stopped` before each workspace and ending
/// there when it says so. Logs one summary line (each workspace at debug), so a tree of
/// 20,000 ghosts is one line at info, not 20,000.
fn reap(root: &Path, resolver: Resolver, stopped: &dyn Fn() -> bool) -> ReapReport {
    /// Reaps as it walks.
    struct Reap<'a> {
        /// What was rewritten.
        report: ReapReport,
        /// Ghosts that could not be rewritten.
        failed: usize,
        /// The first of those, for the summary line: its name and why.
        first_failure: Option<(String, std::io::Error)>,
        /// Asked before each workspace: the service is stopping.
        stopped: &'a dyn Fn() -> bool,
        /// The walk ended because `stopped` said so.
        ended_early: bool,
    }
    impl Visitor for Reap<'_> {
        fn children(
            &mut self,
            walk: Walk<'_>,
            prefix: &str,
            dir: &crate::walk::sys::Dir,
        ) -> Option<Vec<std::ffi::OsString>> {
            list_children(walk, prefix, dir)
        }

        fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()> {
            if (self.stopped)() {
                self.ended_early = true;
                return ControlFlow::Break(());
            }
            match reap_one(ws) {
                Reaped::No => {}
                Reaped::Yes => self.report.reaped.push(ws.name.to_string()),
                Reaped::Failed(e) => {
                    self.failed += 1;
                    self.first_failure
                        .get_or_insert_with(|| (ws.name.to_string(), e));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut reap = Reap {
        report: ReapReport::default(),
        failed: 0,
        first_failure: None,
        stopped,
        ended_early: false,
    };
    let walk = Walk {
        root,
        resolver,
        probe: Probe::Stat,
    };
    visit_tree(walk, &mut reap);
    log_summary(
        &reap.report,
        reap.failed,
        reap.first_failure,
        reap.ended_early,
    );
    reap.report
}

/// The reap's one line: at info when it rewrote anything or ended early, at warn when
/// a ghost could not be rewritten (naming the first), else at debug.
fn log_summary(
    report: &ReapReport,
    failed: usize,
    first_failure: Option<(String, std::io::Error)>,
    ended_early: bool,
) {
    let reaped = report.reaped.len();
    let ended = if ended_early {
        "; stopped early (the service is stopping), the rest is reaped at the next start"
    } else {
        ""
    };
    match first_failure {
        Some((name, e)) => log::warn!(
            "ghost reap: {reaped} ghost workspace(s) rewritten to failed, {failed} could \
             not be rewritten (first: {name}: {e}; each one at debug){ended}"
        ),
        None if reaped > 0 || ended_early => log::info!(
            "ghost reap: {reaped} ghost workspace(s) rewritten to failed, 0 could not be \
             rewritten{ended}"
        ),
        None => log::debug!("ghost reap: no ghost workspace"),
    }
}

fn reap_one(ws: &Workspace<'_>) -> Reaped {
    let Some((status, mut object)) = read_status_object(ws) else {
        return Reaped::No;
    };
    if status.status != "running" || status.pid <= 0 || crate::walk::sys::process_exists(status.pid)
    {
        return Reaped::No;
    }
    object.insert("status".into(), "failed".into());
    object.insert("question".into(), GHOST_QUESTION.into());
    match write_atomically(&ws.path().join("status.json"), &object) {
        Ok(()) => {
            log::debug!(
                "reaped ghost workspace {} (pid {} is gone)",
                ws.name,
                status.pid
            );
            Reaped::Yes
        }
        Err(e) => {
            log::debug!("cannot reap ghost workspace {}: {e}", ws.name);
            Reaped::Failed(e)
        }
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

    /// A dead worker's status: pid_max on Linux is at most 2^22, so this pid cannot exist.
    const GHOST: &str = r#"{"status":"running","pid":99999999}"#;

    fn is_reaped(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("status.json")).is_ok_and(|s| s.contains("failed"))
    }

    #[test]
    fn a_reap_ends_at_the_first_workspace_after_the_stop_is_seen() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..10)
            .map(|i| workspace(root.path(), &format!("o/r/t-{i}"), GHOST))
            .collect();
        let asked = std::cell::Cell::new(0);
        // Stopped from the fourth question on: three workspaces are rewritten.
        let report = reap(root.path(), Resolver::Native, &|| {
            asked.set(asked.get() + 1);
            asked.get() > 3
        });
        assert_eq!(report.reaped, ["o/r/t-0", "o/r/t-1", "o/r/t-2"]);
        assert_eq!(asked.get(), 4, "nothing is visited after the stop");
        let rewritten: Vec<bool> = dirs.iter().map(|d| is_reaped(d)).collect();
        assert_eq!(rewritten, [[true; 3].as_slice(), &[false; 7]].concat());
    }

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
        type Result = Result<Vec<ScannedDispatch>, StoreError>;

        fn handle(&mut self, msg: Unsynced, _: &mut Self::Context) -> Self::Result {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.stop.stop();
            Ok(msg.candidates)
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
        let scanner = Scanner::new(root.path().to_path_buf(), ledger.recipient())
            .with_walk(options)
            .with_stop(stop.clone());
        assert!(!scanner.stop_handle().is_stopped());
        let scanner = scanner.start();

        let answer = scanner.send(Scan).await.unwrap();
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
