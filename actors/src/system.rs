//! Wiring: starts the six actors on the current arbiter and connects them.
//!
//! The `agent-sync` crate's `SyncService` calls this inside a dedicated arbiter so
//! redb commits and file walks never run on the host's threads; tests call it
//! directly, with a paused clock or a stand-in platform.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;

use crate::history::History;
use crate::ledger::Ledger;
use crate::messages::SetWaker;
use crate::metrics::Metrics;
use crate::platform::{Platform, TokenSource};
use crate::puller::Puller;
use crate::pusher::{PushPeers, Pusher, PusherConfig};
use crate::queue::{Queue, QueueConfig};
use crate::scanner::{ScanStop, Scanner};
use crate::store::Store;
use crate::time::Clock;

/// Everything the actors need besides the store and the platform.
#[derive(Clone, Debug)]
pub struct ActorsConfig {
    /// Where the host's workspaces are.
    pub workspace_root: PathBuf,
    /// Default agent id for pushes and pulls.
    pub agent_id: String,
    /// Default fleet node id.
    pub fleet_node_id: Option<i64>,
    /// Where the token comes from (read before every request).
    pub tokens: TokenSource,
    /// Entry caps, lease timeout and retry jitter.
    pub queue: QueueConfig,
    /// Newest history records kept.
    pub history_limit: usize,
    /// Most context items the Puller caches, the oldest dropped first, so that
    /// `since` pulls bringing new ids cannot grow the cache without end
    /// ([`DEFAULT_MAX_CONTEXT_ITEMS`](crate::puller::DEFAULT_MAX_CONTEXT_ITEMS)).
    pub max_context_items: usize,
    /// Safety-net drain interval.
    pub flush_interval: Option<Duration>,
    /// Drain what is queued as soon as the Pusher starts.
    pub drain_on_start: bool,
}

/// The addresses of the six running actors.
#[derive(Clone)]
pub struct SyncActors {
    /// Walks workspaces.
    pub scanner: Addr<Scanner>,
    /// Delivered fingerprints.
    pub ledger: Addr<Ledger>,
    /// Queued pushes and dead letters.
    pub queue: Addr<Queue>,
    /// Drains the queue; handles `SyncPush` and `Drain`.
    pub pusher: Addr<Pusher>,
    /// Pulls context; handles `SyncPull`.
    pub puller: Addr<Puller>,
    /// Sync records and last push/pull.
    pub history: Addr<History>,
    /// The series the Pusher and Puller move, and the gauges read from the store at
    /// each scrape; register them to export them.
    pub metrics: Metrics,
    /// Ends the Scanner's blocking walk or reap early: set it when stopping, since a
    /// runtime's shutdown waits for the blocking pool (see [`ScanStop`]).
    pub scan_stop: ScanStop,
    /// The tree watcher's figures (watches, budget), shared with the watcher a
    /// service starts; inactive until then.
    pub watch: crate::watch::Stats,
}

impl SyncActors {
    /// Starts the actors on the current arbiter. `platform` is shared by the Pusher
    /// and the Puller (one connection pool).
    pub fn start(
        store: Store,
        config: ActorsConfig,
        platform: Rc<dyn Platform>,
        clock: Clock,
    ) -> Self {
        Self::start_with_metrics(store, config, platform, clock, Metrics::new())
    }

    /// [`start`](Self::start), counting into `metrics` (e.g. series already
    /// registered in a host's registry).
    pub fn start_with_metrics(
        store: Store,
        config: ActorsConfig,
        platform: Rc<dyn Platform>,
        clock: Clock,
        metrics: Metrics,
    ) -> Self {
        // The gauges are computed from the store at each scrape.
        let watch = crate::watch::Stats::default();
        metrics.read_state_from(&store, watch.clone(), clock);
        let ledger = Ledger::new(store.clone()).start();
        let history = History::new(store.clone(), config.history_limit).start();
        let queue = Queue::new(store.clone(), config.queue, clock)
            .with_history_limit(config.history_limit)
            .start();
        // The Scanner keeps its rescan cache in the store and queues what it finds
        // through the Queue's ordinary enqueue, chunk by chunk.
        let scan_stop = ScanStop::default();
        let scanner = Scanner::new(config.workspace_root.clone(), ledger.clone().recipient())
            .with_store(store.clone())
            .with_queue(queue.clone().recipient(), queue.clone().recipient())
            .with_stop(scan_stop.clone())
            .start();
        let puller = Puller::new(
            config.agent_id.clone(),
            config.fleet_node_id,
            config.tokens.clone(),
            platform.clone(),
            store,
            history.clone(),
            clock,
        )
        .with_metrics(metrics.clone())
        .with_max_context_items(config.max_context_items)
        .start();
        let peers = PushPeers {
            scanner: scanner.clone(),
            queue: queue.clone(),
        };
        let pusher_config = PusherConfig {
            agent_id: config.agent_id,
            fleet_node_id: config.fleet_node_id,
            flush_interval: config.flush_interval,
            drain_on_start: config.drain_on_start,
        };
        let pusher_metrics = metrics.clone();
        let pusher = Pusher::create(move |ctx| {
            // The Queue learns its waker before anything else can reach its mailbox,
            // so an enqueue sent right after `start` returns always wakes the Pusher.
            peers.queue.do_send(SetWaker(ctx.address().recipient()));
            Pusher::new(pusher_config, config.tokens, platform, peers, clock)
                .with_metrics(pusher_metrics)
        });
        SyncActors {
            scanner,
            ledger,
            queue,
            pusher,
            puller,
            history,
            metrics,
            scan_stop,
            watch,
        }
    }
}
