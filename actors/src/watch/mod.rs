//! Event-driven pickup: the workspace tree is watched (inotify on Linux, through
//! `notify`), and what changed is scanned at once instead of at the next rescan.
//!
//! | module    | concern                                                        |
//! |-----------|----------------------------------------------------------------|
//! | `backend` | the platform's watcher behind a small trait (a fake in tests)   |
//! | `plan`    | what is watched within the budget, and what an event means      |
//! | `driver`  | the thread: plans, gathers a burst, hands on one batch of work  |
//!
//! A [`TreeWatcher`] hands its owner [`Work`]: the workspaces that changed (scanned
//! with [`crate::messages::ScanWorkspaces`]: the walk's rules, the size caps), or a
//! rescan of the whole tree when events may have been lost (the kernel queue
//! overflowed, a watch could not be added, the watcher stopped). Correctness never
//! rests on the watcher: the owner keeps a fallback rescan (the daemon's
//! `--scan-interval`), which the rescan cache makes cheap.
//!
//! The thread blocks on one channel; an idle tree costs no CPU at all.

mod backend;
mod driver;
mod plan;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Duration;

pub use backend::{kernel_watch_limit, supported, AddError, Backend, NotifyBackend, Signal};
pub use driver::MAX_BURST;
pub use plan::RECENT;

use crate::scanner::walk::Resolver;
use crate::store::Store;

/// Most watches by default, whatever the kernel allows: about 1 KiB of kernel memory
/// each, so 64 MiB at most.
pub const DEFAULT_BUDGET_CAP: usize = 65_536;

/// Default quiet time that ends a burst.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);

/// How old a complete plan may get before a periodic rescan plans again.
pub const DEFAULT_MAX_PLAN_AGE: Duration = Duration::from_secs(3600);

/// Whether to watch (`run --watch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchMode {
    /// Where the platform has a native watcher.
    #[default]
    Auto,
    /// Always; a watcher that cannot start is an error worth a warning.
    On,
    /// Never: only the scan interval picks work up.
    Off,
}

impl WatchMode {
    /// Whether a watcher should be started here.
    pub fn wanted(self) -> bool {
        match self {
            WatchMode::Auto => supported(),
            WatchMode::On => true,
            WatchMode::Off => false,
        }
    }
}

/// How a watcher watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Most watches to hold (kernel memory is the cost, and the per-user cap).
    pub budget: usize,
    /// Quiet time that ends a burst of events.
    pub debounce: Duration,
    /// How directories are opened (the portable way can be chosen on Linux).
    pub resolver: Resolver,
    /// A periodic rescan plans the watches again only when the plan is partial or
    /// this old: planning walks the whole tree (about a second of CPU at 100,000
    /// workspaces), and between plans the events keep the watches right; what a stale
    /// plan costs is only extra watches on workspaces that have since finished.
    pub max_plan_age: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            budget: default_budget(),
            debounce: DEFAULT_DEBOUNCE,
            resolver: Resolver::Native,
            max_plan_age: DEFAULT_MAX_PLAN_AGE,
        }
    }
}

/// Half the kernel's per-user cap (other programs watch too), at most
/// [`DEFAULT_BUDGET_CAP`]; the cap where the platform has none.
pub fn default_budget() -> usize {
    kernel_watch_limit().map_or(DEFAULT_BUDGET_CAP, |limit| {
        (limit / 2).clamp(1, DEFAULT_BUDGET_CAP)
    })
}

/// What a watcher asks its owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Scan these workspaces (names relative to the root, sorted).
    Workspaces(Vec<String>),
    /// Scan the whole tree (events may have been lost); why, for the log.
    Rescan(&'static str),
}

/// The watcher's figures for `status` and `/metrics`. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct Stats(Arc<StatsInner>);

/// The shared figures.
#[derive(Debug, Default)]
struct StatsInner {
    /// Watches held.
    watches: AtomicUsize,
    /// Most watches allowed.
    budget: AtomicUsize,
    /// Event-queue overflows seen.
    overflows: AtomicU64,
    /// A watcher runs.
    active: AtomicBool,
}

impl Stats {
    /// Watches held now.
    pub fn watches(&self) -> usize {
        self.0.watches.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn budget(&self) -> usize {
        self.0.budget.load(Ordering::Relaxed)
    }

    /// Event-queue overflows since start.
    pub fn overflows(&self) -> u64 {
        self.0.overflows.load(Ordering::Relaxed)
    }

    /// Whether a watcher runs.
    pub fn active(&self) -> bool {
        self.0.active.load(Ordering::Relaxed)
    }

    fn set_watches(&self, n: usize) {
        self.0.watches.store(n, Ordering::Relaxed);
    }

    fn set_active(&self, on: bool) {
        self.0.active.store(on, Ordering::Relaxed);
    }

    fn overflowed(&self) {
        self.0.overflows.fetch_add(1, Ordering::Relaxed);
    }
}

/// Asks the watcher to plan its watches again (see [`TreeWatcher::replan`]); handed
/// to the sink with each piece of work, so the owner can ask once a rescan is done.
#[derive(Clone, Debug)]
pub struct Replan(Sender<Signal>);

impl Replan {
    /// Plans again, on the watcher's thread.
    pub fn request(&self) {
        let _ = self.0.send(Signal::Replan);
    }
}

/// A running watcher of one workspace tree; stops when dropped.
pub struct TreeWatcher {
    /// Orders to its thread.
    orders: Sender<Signal>,
    /// Its figures.
    stats: Stats,
}

impl TreeWatcher {
    /// Watches `root` with `notify`'s watcher; `Err` (why) where none can start.
    /// The first plan runs on the watcher's thread: this returns at once.
    pub fn start(
        root: PathBuf,
        store: Option<Store>,
        config: WatchConfig,
        stats: Stats,
        sink: impl FnMut(Work, &Replan) + Send + 'static,
    ) -> Result<TreeWatcher, String> {
        let (signals, receiver) = channel();
        let backend = NotifyBackend::start(signals.clone())?;
        Ok(Self::start_with(
            root,
            store,
            config,
            stats,
            Box::new(backend),
            (signals, receiver),
            sink,
        ))
    }

    /// [`start`](Self::start) with another backend, whose signals come through
    /// `channel` (tests inject overflows and failed watches this way).
    pub fn start_with(
        root: PathBuf,
        store: Option<Store>,
        config: WatchConfig,
        stats: Stats,
        backend: Box<dyn Backend>,
        channel: (Sender<Signal>, std::sync::mpsc::Receiver<Signal>),
        sink: impl FnMut(Work, &Replan) + Send + 'static,
    ) -> TreeWatcher {
        stats.0.budget.store(config.budget, Ordering::Relaxed);
        stats.set_active(true);
        let (orders, signals) = channel;
        let driver = driver::Driver {
            tree: plan::Tree::new(root, config.resolver, config.budget),
            backend,
            signals,
            store,
            config,
            stats: stats.clone(),
            planned_at: None,
            replan: Replan(orders.clone()),
            sink: Box::new(sink),
        };
        let spawned = std::thread::Builder::new()
            .name("agent-sync-watch".into())
            .spawn(move || driver.run());
        if let Err(e) = spawned {
            log::warn!(
                "cannot start the watcher's thread ({e}); the fallback rescan covers everything"
            );
            stats.set_active(false);
        }
        TreeWatcher { orders, stats }
    }

    /// Plans the watches again: after a scan of the whole tree, which taught the
    /// rescan cache what is not terminal.
    pub fn replan(&self) {
        let _ = self.orders.send(Signal::Replan);
    }

    /// After a periodic rescan of the whole tree: plans again only when the plan is
    /// partial or older than [`WatchConfig::max_plan_age`].
    pub fn refresh(&self) {
        let _ = self.orders.send(Signal::Refresh);
    }

    /// A handle that asks for a new plan from anywhere.
    pub fn replanner(&self) -> Replan {
        Replan(self.orders.clone())
    }

    /// Its figures (shared).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }
}

impl Drop for TreeWatcher {
    fn drop(&mut self) {
        self.stats.set_active(false);
        let _ = self.orders.send(Signal::Stop);
    }
}

#[cfg(test)]
mod tests;
