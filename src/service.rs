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
//!
//! - `start`: opening the state, binding the socket and the metrics address,
//!   starting the actors and the servers ([`StartError`] when that fails);
//! - `operations`: what a host asks of a running service (push, pull, status,
//!   listings, reaping);
//! - `stop`: the graceful stop and the abort;
//! - here: the service itself, its addresses, metrics and tree watcher.

mod operations;
mod start;
mod stop;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agent_sync_actors::messages::{SyncPull, SyncPush};
use agent_sync_actors::metrics::Metrics;
use agent_sync_actors::platform::TokenSource;
use agent_sync_actors::watch::TreeWatcher;
use agent_sync_actors::{Store, SyncActors};
use prometheus_client::registry::Registry;

#[cfg(doc)]
use crate::config::SyncConfig;
use crate::control::ControlServers;

pub use start::StartError;

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
    watch_setup: WatchSetup,
    /// The tree watcher, while one runs (behind a lock: `watch` takes `&self`, so
    /// the daemon and a host holding a shared reference can start one).
    watcher: std::sync::Mutex<Option<TreeWatcher>>,
}

/// What [`SyncService::watch`] starts a watcher with.
struct WatchSetup {
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
        let wiring = crate::watching::WatchWiring {
            root: self.watch_setup.root.clone(),
            store: self.watch_setup.store.clone(),
            actors: self.actors.clone(),
            arbiter: arbiter.handle(),
            tokens: self.watch_setup.tokens.clone(),
            agent_id: self.agent_id.clone(),
            fleet_node_id: self.watch_setup.fleet_node_id,
        };
        *watcher = crate::watching::start(wiring, options)?;
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
        self.with_watcher(TreeWatcher::replan);
    }

    /// After a periodic rescan of the whole tree: plans the watches again only when
    /// the plan is partial or older than the watcher's `max_plan_age` (planning walks
    /// the whole tree); nothing without a watcher.
    pub fn refresh_watches(&self) {
        self.with_watcher(TreeWatcher::refresh);
    }

    /// Runs `order` on the watcher, when one runs.
    fn with_watcher(&self, order: impl FnOnce(&TreeWatcher)) {
        let watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watcher) = watcher.as_ref() {
            order(watcher);
        }
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
}
