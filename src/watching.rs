//! The service's side of event-driven pickup: starts the tree watcher
//! ([`agent_sync_actors::watch`]) and turns its work into actor messages on the
//! service arbiter.
//!
//! - Changed workspaces: one [`ScanWorkspaces`] of exactly those (offline, nothing:
//!   scanned dispatches are left on disk, P3, and found again by the next scan); the
//!   Queue wakes the Pusher on the enqueue, so the drain follows at once. With the
//!   reap on, a cheap reap ([`ReapRunning`]) of the workspaces known running follows,
//!   at most once per [`REAP_EVERY`].
//! - A rescan (events were lost, a watch could not be added): the cheap reap, a push
//!   (scan of the whole tree, drain), then the watches are planned again.
//!
//! Nothing here runs while nothing happens: the watcher's thread blocks on its
//! channel, and this module has no timer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::ArbiterHandle;
use agent_sync_actors::messages::{ReapRunning, ScanWorkspaces, SyncPush};
use agent_sync_actors::platform::TokenSource;
use agent_sync_actors::watch::{Replan, TreeWatcher, WatchConfig, WatchMode, Work};
use agent_sync_actors::{Store, SyncActors};

/// Event-driven reaps are at most this frequent (the pids of a host's running
/// workspaces rarely die between two bursts; the fallback rescan reaps too).
pub const REAP_EVERY: Duration = Duration::from_secs(30);

/// How a service watches its tree ([`crate::SyncService::watch`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Whether to watch (`auto`: where the platform has a native watcher).
    pub mode: WatchMode,
    /// Budget, debounce.
    pub config: WatchConfig,
    /// Reap ghosts among the workspaces known running after each burst (the daemon
    /// does, unless `--no-reap`).
    pub reap: bool,
}

/// What the watcher's work is wired to: the actors and the arbiter it sends to, the
/// tokens that say whether it may scan, and whom it pushes as.
pub(crate) struct WatchWiring {
    /// The workspace root.
    pub root: PathBuf,
    /// The rescan cache (what is not terminal).
    pub store: Store,
    /// Where the messages go.
    pub actors: SyncActors,
    /// The service arbiter.
    pub arbiter: ArbiterHandle,
    /// Online or not (P3), read at each burst.
    pub tokens: TokenSource,
    /// Pushed as.
    pub agent_id: String,
    /// Pushed as.
    pub fleet_node_id: Option<i64>,
}

/// Starts watching when `options` say so and the platform can: `Ok(None)` when off,
/// `Err` (why) when wanted but impossible (the caller's fallback rescan then covers
/// everything).
pub(crate) fn start(
    wiring: WatchWiring,
    options: WatchOptions,
) -> Result<Option<TreeWatcher>, String> {
    if !options.mode.wanted() {
        return Ok(None);
    }
    let stats = wiring.actors.watch.clone();
    let root = wiring.root.clone();
    let store = wiring.store.clone();
    let last_reap = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let sink = move |work: Work, replan: &Replan| {
        let actors = wiring.actors.clone();
        let (agent_id, fleet_node_id) = (wiring.agent_id.clone(), wiring.fleet_node_id);
        let reap = options.reap && {
            // Milliseconds since start of the last event-driven reap (0: none yet).
            let now = epoch.elapsed().as_millis() as u64 + 1;
            let last = last_reap.load(Ordering::Relaxed);
            let due = last == 0 || now.saturating_sub(last) >= REAP_EVERY.as_millis() as u64;
            if due {
                last_reap.store(now, Ordering::Relaxed);
            }
            due
        };
        match work {
            Work::Workspaces(names) => {
                let online = wiring.tokens.read().is_some();
                wiring.arbiter.spawn(async move {
                    if online {
                        scan_named(&actors, names, agent_id, fleet_node_id).await;
                    }
                    if reap {
                        let _ = actors.scanner.send(ReapRunning).await;
                    }
                });
            }
            Work::Rescan(why) => {
                log::info!("watcher: {why}; scanning the whole tree");
                let replan = replan.clone();
                let reap = options.reap;
                wiring.arbiter.spawn(async move {
                    if reap {
                        let _ = actors.scanner.send(ReapRunning).await;
                    }
                    if let Ok(Err(e)) = actors.pusher.send(SyncPush::default()).await {
                        log::warn!("rescan after lost events: {e}");
                    }
                    replan.request();
                });
            }
        }
    };
    TreeWatcher::start(root, Some(store), options.config, stats, sink).map(Some)
}

/// Scans the workspaces the watcher named, logging what it queued.
async fn scan_named(
    actors: &SyncActors,
    names: Vec<String>,
    agent_id: String,
    fleet_node_id: Option<i64>,
) {
    let count = names.len();
    let scan = ScanWorkspaces {
        names,
        agent_id,
        fleet_node_id,
    };
    match actors.scanner.send(scan).await {
        Ok(Ok(done)) => log::debug!(
            "watcher: {count} changed workspace(s) scanned, {} dispatch(es) queued",
            done.summary.receipt.dispatches
        ),
        Ok(Err(e)) => log::warn!("watcher: scanning {count} changed workspace(s): {e}"),
        Err(_) => {}
    }
}
