//! [`SyncService`]: the six actors on their own arbiter, behind async methods and
//! the actors' addresses.
//!
//! Why a dedicated arbiter: redb commits and fsyncs are blocking. On their own
//! thread they never stall the host's actors; the host only ever awaits messages.
//!
//! A started service also serves the control API on `<state-dir>/agent-sync.sock`
//! (see [`crate::control`]) unless [`SyncConfig::control_socket`] is off,
//! and `/metrics` + `/health` over TCP when [`SyncConfig::metrics_addr`] is set. Its
//! Prometheus series can be merged into a host's registry
//! ([`SyncService::register_metrics`]); the gauges are computed when scraped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agent_sync_actors::entry::{DeadLetter, QueueEntry};
use agent_sync_actors::messages::*;
use agent_sync_actors::metrics::Metrics;
use agent_sync_actors::platform::{HttpPlatform, Platform, TokenSource};
use agent_sync_actors::sync_record::SyncRecord;
use agent_sync_actors::time::{Clock, Timestamp};
use agent_sync_actors::{OpenError, PlatformConfigError, Store, SyncActors, SyncError};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SyncConfig;
use crate::control::wire::collect_pages;
use crate::control::{self, BindError, ControlServers, ControlState, Listeners, Probe};

/// How long past the shutdown deadline a stop waits for the outcome's commit.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The API URL is unusable or insecure.
    Platform(PlatformConfigError),
    /// The state could not be opened (corrupt, unreadable).
    Open(OpenError),
    /// Another process holds the state (R2).
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// The holder, when its control socket or the lock table tells.
        pid: Option<u32>,
    },
    /// The control socket or the metrics address could not be served.
    Control(String),
    /// The service arbiter did not come up.
    Arbiter,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Platform(e) => e.fmt(f),
            StartError::Open(e) => e.fmt(f),
            StartError::InUse { dir, pid } => {
                write!(
                    f,
                    "state in {} is in use by another agent-sync process",
                    dir.display()
                )?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                Ok(())
            }
            StartError::Control(message) => f.write_str(message),
            StartError::Arbiter => f.write_str("the sync arbiter thread did not start; retry"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::InUse { dir } => {
                let pid = control::holder_pid(&dir);
                StartError::InUse { dir, pid }
            }
            other => StartError::Open(other),
        }
    }
}

impl From<PlatformConfigError> for StartError {
    fn from(e: PlatformConfigError) -> Self {
        StartError::Platform(e)
    }
}

/// Everything `agent-sync status` shows (H2); also the body of the control API's
/// `/v1/status`, hence `Deserialize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The service's default agent id.
    pub agent_id: String,
    /// Entries in the queue.
    pub queued_entries: u64,
    /// Dispatches in those entries.
    pub queued_dispatches: u64,
    /// Entries refused for good, waiting for an operator.
    pub dead_letters: u64,
    /// Dispatch ids the platform has (with some fingerprint).
    pub ledger_entries: u64,
    /// Items in the cached context.
    pub context_count: usize,
    /// Size of `sync.redb` in bytes (it shrinks again after a backlog is delivered).
    /// Absent from the answer of an older daemon: 0.
    #[serde(default)]
    pub db_bytes: u64,
    /// A 401/403 since the last successful push or pull.
    pub auth_failed: bool,
    /// Last successful push.
    pub last_push_at: Option<Timestamp>,
    /// Last successful pull.
    pub last_pull_at: Option<Timestamp>,
    /// The next entry to send, `null` when the queue is empty.
    #[serde(deserialize_with = "control::wire::deserialize_head")]
    pub head: Option<HeadSummary>,
    /// Kernel watches held by the tree watcher; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watches: Option<u64>,
    /// Most watches it may hold; absent without a watcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_budget: Option<u64>,
}

/// The status of the actors behind `actors` (H2): what [`SyncService::status`] and
/// the control API's `/v1/status` answer.
pub(crate) async fn status_of(
    actors: &SyncActors,
    agent_id: &str,
) -> Result<SyncStatus, SyncError> {
    let queue = actors.queue.send(QueueStatus).await??;
    let ledger_entries = actors.ledger.send(LedgerSize).await??;
    let state = actors.history.send(ReadSyncState).await??;
    let context_count = actors.puller.send(CachedContext).await??.len();
    let db_bytes = actors.queue.send(DatabaseSize).await??;
    Ok(SyncStatus {
        agent_id: agent_id.to_string(),
        queued_entries: queue.entries,
        queued_dispatches: queue.dispatches,
        dead_letters: queue.dead_letters,
        ledger_entries,
        context_count,
        db_bytes,
        auth_failed: state.auth_failed,
        last_push_at: state.last_push_at,
        last_pull_at: state.last_pull_at,
        head: queue.head,
        watches: actors.watch.active().then(|| actors.watch.watches() as u64),
        watch_budget: actors.watch.active().then(|| actors.watch.budget() as u64),
    })
}

/// A running agent-sync: start it inside an actix `System`, talk to it with its
/// methods or its actors' addresses, [`stop`](SyncService::stop) it when done.
pub struct SyncService {
    /// The six actors' addresses (all on `arbiter`).
    actors: SyncActors,
    /// The thread they run on; `None` once stopped.
    arbiter: Option<Arbiter>,
    /// Default agent id, reported by status.
    agent_id: String,
    /// Where `sync.redb` lives.
    state_dir: PathBuf,
    /// How long a graceful stop lets the request in flight run.
    shutdown_timeout: Duration,
    /// The control socket and metrics servers; `None` when off or stopped.
    control: Option<ControlServers>,
    /// The control socket's path, when it is served.
    socket: Option<PathBuf>,
    /// Where `/metrics` is served over TCP, when it is.
    metrics_addr: Option<SocketAddr>,
    /// Every agent-sync series, as `/metrics` encodes them.
    registry: Arc<Registry>,
    /// Set when a stop begins (`/health` answers 503 from then on).
    stopping: Arc<AtomicBool>,
    /// What [`watch`](Self::watch) needs: root, cache, token source, fleet node.
    watch_context: WatchContext,
    /// The tree watcher, while one runs (behind a lock: `watch` takes `&self`, so
    /// the daemon and a host holding a shared reference can start one).
    watcher: std::sync::Mutex<Option<agent_sync_actors::watch::TreeWatcher>>,
}

/// What [`SyncService::watch`] starts a watcher with.
struct WatchContext {
    /// The workspace root.
    root: PathBuf,
    /// The store (its rescan cache says what is not terminal).
    store: Store,
    /// Online or not, read at each burst.
    tokens: TokenSource,
    /// Pushed as.
    fleet_node_id: Option<i64>,
}

impl SyncService {
    /// Validates the config, opens the state (failing fast if another process holds
    /// it, R2, naming its pid), binds the control socket (replacing a stale one, never
    /// a live one) and the metrics address if set, and starts the actors and the
    /// control servers from a new arbiter. Must run inside a `System`.
    pub fn start(config: SyncConfig) -> Result<SyncService, StartError> {
        Self::start_with(config, |platform| Rc::new(HttpPlatform::new(platform)))
    }

    /// [`start`](Self::start) with another platform client (built on the service
    /// arbiter, since clients are `!Send`).
    pub fn start_with(
        config: SyncConfig,
        platform: impl FnOnce(agent_sync_actors::platform::PlatformConfig) -> Rc<dyn Platform>
            + Send
            + 'static,
    ) -> Result<SyncService, StartError> {
        config.platform.validate()?;
        let store = Store::open(&config.state_dir)?;
        let watch_context = WatchContext {
            root: config.workspace_root.clone(),
            store: store.clone(),
            tokens: config.tokens.clone(),
            fleet_node_id: config.fleet_node_id,
        };
        let bound = if config.control_socket {
            match control::socket::bind(&config.state_dir) {
                Ok(bound) => Some(bound),
                // A live holder is a real conflict: never replaced.
                Err(BindError::Held { pid, .. }) => {
                    return Err(StartError::InUse {
                        dir: config.state_dir.clone(),
                        pid,
                    })
                }
                // Anything else only costs the socket, not the syncing.
                Err(e) => {
                    log::warn!("running without a control socket: {e}");
                    None
                }
            }
        } else {
            None
        };
        let (socket_listener, socket_file) = match bound {
            Some(bound) => (Some(bound.listener), Some(bound.file)),
            None => (None, None),
        };
        let tcp = match config.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
                if let Some(file) = &socket_file {
                    file.remove();
                }
                StartError::Control(format!("cannot serve metrics on {addr}: {e}"))
            })?),
            None => None,
        };
        let metrics_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(addr) = metrics_addr.filter(|a| !a.ip().is_loopback()) {
            log::warn!(
                "serving /metrics and /health on {addr}, which is not a loopback address: \
                 anyone who can reach it can read them"
            );
        }
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let registry = Arc::new(registry);
        let stopping = Arc::new(AtomicBool::new(false));

        let arbiter = Arbiter::new();
        let (sender, receiver) = std::sync::mpsc::channel();
        let actors_config = config.actors();
        let platform_config = config.platform.clone();
        let agent_id = config.agent_id.clone();
        let (server_registry, server_stopping) = (registry.clone(), stopping.clone());
        arbiter.spawn_fn(move || {
            let platform = platform(platform_config);
            let probe = Probe::new(store.clone()).start();
            let actors = SyncActors::start_with_metrics(
                store,
                actors_config,
                platform,
                Clock::system(),
                metrics,
            );
            let servers = if socket_listener.is_some() || tcp.is_some() {
                let state = ControlState {
                    actors: actors.clone(),
                    agent_id,
                    registry: server_registry,
                    probe,
                    stopping: server_stopping,
                    pid: std::process::id(),
                };
                let listeners = Listeners {
                    socket: socket_listener,
                    tcp,
                };
                control::start_servers(state, listeners)
            } else {
                Ok(Vec::new())
            };
            let _ = sender.send((actors, servers));
        });
        let fail = |arbiter: Arbiter, error: StartError| {
            arbiter.stop();
            let _ = arbiter.join();
            if let Some(file) = &socket_file {
                file.remove();
            }
            Err(error)
        };
        let (actors, servers) = match receiver.recv_timeout(Duration::from_secs(10)) {
            Ok(started) => started,
            Err(_) => return fail(arbiter, StartError::Arbiter),
        };
        let handles = match servers {
            Ok(handles) => handles,
            Err(e) => {
                let message = format!("cannot serve the control API: {e}");
                return fail(arbiter, StartError::Control(message));
            }
        };
        let socket = socket_file.as_ref().map(|f| f.path.clone());
        if let Some(path) = &socket {
            log::debug!("control API on {}", path.display());
        }
        let control = (!handles.is_empty()).then(|| ControlServers {
            handles,
            socket: socket_file,
        });
        // Said once, by a service meant to keep syncing on its own (a one-shot CLI
        // command, which neither drains at start nor flushes, states no token itself).
        let keeps_syncing = config.drain_on_start || config.flush_interval.is_some();
        if keeps_syncing && matches!(config.tokens, TokenSource::Fixed(None)) {
            log::warn!(
                "no token configured: agent-sync is offline (host dispatches are queued, \
                 scanned workspaces stay on disk, nothing is pushed or pulled)"
            );
        }
        Ok(SyncService {
            actors,
            arbiter: Some(arbiter),
            agent_id: config.agent_id,
            state_dir: config.state_dir,
            shutdown_timeout: config.shutdown_timeout,
            control,
            socket,
            metrics_addr,
            registry,
            stopping,
            watch_context,
            watcher: std::sync::Mutex::new(None),
        })
    }

    /// Starts event-driven pickup (see [`crate::watching`]): what changes under the
    /// workspace root is scanned at once, alone. `Ok(false)` when `options` say off;
    /// `Err` (why) when wanted but impossible here, in which case only the caller's
    /// own scans pick work up. Calling it again replaces the watcher.
    pub fn watch(&self, options: crate::watching::WatchOptions) -> Result<bool, String> {
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        *watcher = None;
        let Some(arbiter) = self.arbiter.as_ref() else {
            return Err("the service is stopped".into());
        };
        let context = crate::watching::Context {
            root: self.watch_context.root.clone(),
            store: self.watch_context.store.clone(),
            actors: self.actors.clone(),
            arbiter: arbiter.handle(),
            tokens: self.watch_context.tokens.clone(),
            agent_id: self.agent_id.clone(),
            fleet_node_id: self.watch_context.fleet_node_id,
        };
        *watcher = crate::watching::start(context, options)?;
        Ok(watcher.is_some())
    }

    /// The watcher's figures: `(watches, budget)` while one runs.
    pub fn watches(&self) -> Option<(usize, usize)> {
        let stats = &self.actors.watch;
        stats.active().then(|| (stats.watches(), stats.budget()))
    }

    /// Plans the watches again (after a scan of the whole tree taught the rescan
    /// cache what is not terminal); nothing without a watcher.
    pub fn replan_watches(&self) {
        let watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watcher) = watcher.as_ref() {
            watcher.replan();
        }
    }

    /// Scans exactly the named workspaces (a host that knows which finished) and
    /// queues what is new; the Pusher drains at once. Names outside the root are
    /// refused, reported in the answer.
    pub async fn scan_workspaces(&self, names: Vec<String>) -> Result<NamedScanSummary, SyncError> {
        let scan = ScanWorkspaces {
            names,
            agent_id: self.agent_id.clone(),
            fleet_node_id: self.watch_context.fleet_node_id,
        };
        self.actors.scanner.send(scan).await?
    }

    /// The actors, for hosts that prefer sending messages.
    pub fn actors(&self) -> &SyncActors {
        &self.actors
    }

    /// Where to send [`SyncPush`] from a host actor.
    pub fn push_recipient(&self) -> Recipient<SyncPush> {
        self.actors.pusher.clone().recipient()
    }

    /// Where to send [`SyncPull`] from a host actor.
    pub fn pull_recipient(&self) -> Recipient<SyncPull> {
        self.actors.puller.clone().recipient()
    }

    /// The agent id pushes and pulls default to.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The state directory.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The control socket, when this service serves one.
    pub fn control_socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The TCP address `/metrics` and `/health` are served on, when they are (the
    /// bound one: a port 0 in the config is resolved here).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The series the actors move. Clones share the values.
    pub fn metrics(&self) -> &Metrics {
        &self.actors.metrics
    }

    /// Registers every agent-sync series (prefixed `agent_sync_`) into a host's own
    /// registry (of the [`prometheus_client`] this crate re-exports, so the versions
    /// match), so one exposition carries both. The gauges
    /// (queue, dead letters, last push/pull, auth, watches) are computed from the
    /// committed state each time the registry is encoded: right after a push they
    /// show it, with nothing to refresh. Once the service stops they are left out.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.actors.metrics.register(registry);
    }

    /// The service's own exposition, as `/metrics` serves it.
    pub fn encode_metrics(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            log::warn!("encoding the metrics failed");
        }
        text
    }

    /// Scan (unless told otherwise), enqueue, drain once (P1-P6).
    pub async fn push(&self, push: SyncPush) -> Result<PushReport, SyncError> {
        self.actors.pusher.send(push).await?
    }

    /// Pull context, falling back to the cache (L1, L2).
    pub async fn pull(&self, pull: SyncPull) -> Result<PullReport, SyncError> {
        self.actors.puller.send(pull).await?
    }

    /// Rewrite ghost workspaces to `failed` (design.md §7.3).
    pub async fn reap_ghosts(&self) -> Result<ReapReport, SyncError> {
        Ok(self.actors.scanner.send(ReapGhosts).await?)
    }

    /// Reap ghosts among the workspaces the rescan cache knows to be running only:
    /// pid liveness first, no file read unless a pid is gone (design.md §7.3).
    pub async fn reap_running(&self) -> Result<ReapReport, SyncError> {
        Ok(self.actors.scanner.send(ReapRunning).await?)
    }

    /// Local status, without touching the network (H2).
    pub async fn status(&self) -> Result<SyncStatus, SyncError> {
        status_of(&self.actors, &self.agent_id).await
    }

    /// The newest `limit` sync records, oldest first.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<SyncRecord>, SyncError> {
        Ok(self.actors.history.send(RecentRecords { limit }).await??)
    }

    /// Queued entries, oldest first: the first `limit` (all when `None`), asked of
    /// the Queue a page ([`LIST_PAGE`](crate::control::wire::LIST_PAGE)) per
    /// message, so that no message decodes the whole backlog and the Queue's mailbox
    /// is never held for long.
    pub async fn queue(&self, limit: Option<usize>) -> Result<Vec<QueueEntry>, SyncError> {
        collect_pages(
            limit,
            |e: &QueueEntry| e.seq,
            |after, want| self.queue_page(after, want),
        )
        .await
    }

    /// One page of queued entries, oldest first: seqs after `after`, at most `limit`.
    /// The next page is after the last seq of this one; an empty page is the end.
    pub async fn queue_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<QueueEntry>, SyncError> {
        let list = ListQueue {
            after,
            limit: Some(limit),
        };
        Ok(self.actors.queue.send(list).await??)
    }

    /// Dead letters, oldest first, a page
    /// ([`LIST_PAGE`](crate::control::wire::LIST_PAGE)) per message.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, SyncError> {
        collect_pages(
            None,
            |l: &DeadLetter| l.entry.seq,
            |after, want| self.dead_letters_page(after, want),
        )
        .await
    }

    /// One page of dead letters, oldest first, paged like [`queue_page`](Self::queue_page).
    pub async fn dead_letters_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, SyncError> {
        let list = ListDeadLetters {
            after,
            limit: Some(limit),
        };
        Ok(self.actors.queue.send(list).await??)
    }

    /// Move dead letters (all when `seqs` is `None`) back to the queue.
    pub async fn requeue(&self, seqs: Option<Vec<u64>>) -> Result<RequeueReport, SyncError> {
        Ok(self.actors.queue.send(Requeue { seqs }).await??)
    }

    /// The cached context.
    pub async fn context(&self) -> Result<Vec<Value>, SyncError> {
        Ok(self.actors.puller.send(CachedContext).await??)
    }

    /// Graceful stop (R3): no new request starts; the one in flight completes, or
    /// counts as timed out at the shutdown deadline (`SyncConfig::shutdown_timeout`),
    /// and its outcome is committed; then the control servers stop (calls in progress
    /// may finish), the socket file goes, the actors stop and the database closes, so
    /// another process may open it. Nothing is sent twice after a graceful stop. A scan
    /// or ghost reap in progress ends early (what it queued stays queued).
    pub async fn stop(mut self) {
        self.finish_in_flight().await;
        if let Some(control) = self.control.take() {
            control.stop(true).await;
        }
        self.shutdown();
    }

    /// Stops at once: a scan or ghost reap in progress ends at its next batch or
    /// workspace; a request in flight is abandoned and its entry stays queued (it
    /// is sent again, with the same idempotency key, after the next start).
    pub fn abort(mut self) {
        self.shutdown();
    }

    /// The first half of [`stop`](Self::stop), for callers that keep the service
    /// (the daemon listens for a second signal meanwhile): stops new requests and
    /// waits for the one in flight and any enqueue still being committed.
    pub async fn finish_in_flight(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A scan or ghost reap on the blocking pool ends at its next batch or
        // workspace (what it queued stays; the next start finds the rest): the
        // arbiter's shutdown waits for the blocking pool.
        self.actors.scan_stop.stop();
        let deadline = self.shutdown_timeout;
        let stopped = self.actors.pusher.send(StopPushing { deadline });
        // The Pusher ends the request itself at the deadline; the margin covers the
        // commit of its outcome.
        if actix_rt::time::timeout(deadline + STOP_MARGIN, stopped)
            .await
            .is_err()
        {
            log::warn!("the request in flight did not end by the shutdown deadline; abandoning it");
        }
        // Answering a status commits enqueues still waiting for their group commit.
        let _ = self.actors.queue.send(QueueStatus).await;
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Before the arbiter stops: its runtime waits for the blocking pool when it
        // is dropped, so a walk or reap still running would hold up even an abort.
        self.actors.scan_stop.stop();
        if let Some(arbiter) = self.arbiter.take() {
            // The servers first: nothing may answer on the socket once the state is
            // free for another process.
            if let Some(control) = self.control.take() {
                control.stop_blocking(&arbiter.handle());
            }
            arbiter.stop();
            if arbiter.join().is_err() {
                log::error!("the sync arbiter panicked while stopping");
            }
        }
    }
}

impl Drop for SyncService {
    fn drop(&mut self) {
        self.shutdown();
    }
}
