//! The watcher's thread: plans the watches, then turns the backend's signals into
//! [`Work`], one batch per burst.
//!
//! A burst is gathered until [`WatchConfig::debounce`] passes without a new signal, or
//! [`MAX_BURST`] after its first one (a host that never pauses still gets its work
//! scanned), then handled at once: the changed workspaces become one
//! [`Work::Workspaces`]; an overflow, a watcher failure, or a watch that could not be
//! added become one [`Work::Rescan`] (and the watches are planned again), never a miss.

use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::backend::{Backend, Signal};
use super::plan::Tree;
use super::{Replan, Stats, WatchConfig, Work};
use crate::store::Store;

/// Longest a burst is gathered before it is handled.
pub const MAX_BURST: Duration = Duration::from_secs(1);

/// Where the work goes, with a handle to ask for a new plan.
pub(crate) type Sink = Box<dyn FnMut(Work, &Replan) + Send>;

/// Everything the thread owns.
pub(crate) struct Driver {
    /// The watches.
    pub tree: Tree,
    /// The platform's watcher (or a fake).
    pub backend: Box<dyn Backend>,
    /// Its signals, and the service's orders.
    pub signals: Receiver<Signal>,
    /// The rescan cache, to know what is not terminal.
    pub store: Option<Store>,
    /// Debounce and budget.
    pub config: WatchConfig,
    /// What `status` and `/metrics` read.
    pub stats: Stats,
    /// When the last plan was made; `None` before the first.
    pub planned_at: Option<Instant>,
    /// Handed to the sink, to plan again once a rescan is done.
    pub replan: Replan,
    /// Where the work goes.
    pub sink: Sink,
}

impl Driver {
    /// Plans, then runs until told to stop or the service is gone.
    pub(crate) fn run(mut self) {
        self.plan();
        // Blocks until something happens: an idle tree costs nothing.
        while let Ok(first) = self.signals.recv() {
            match first {
                Signal::Stop => return,
                Signal::Replan => self.plan(),
                Signal::Refresh => self.refresh(),
                first => {
                    let burst = self.gather(first);
                    if burst.contains(&Signal::Stop) {
                        return;
                    }
                    self.handle(burst);
                }
            }
        }
    }

    /// The signals of one burst, starting with `first`.
    fn gather(&mut self, first: Signal) -> Vec<Signal> {
        let started = Instant::now();
        let mut burst = vec![first];
        loop {
            let left = MAX_BURST.saturating_sub(started.elapsed());
            if left.is_zero() {
                return burst;
            }
            match self.signals.recv_timeout(self.config.debounce.min(left)) {
                Ok(signal) => burst.push(signal),
                Err(_) => return burst,
            }
        }
    }

    /// One burst's work.
    fn handle(&mut self, burst: Vec<Signal>) {
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut lost: Option<String> = None;
        let mut replan = false;
        let mut refresh = false;
        for signal in burst {
            match signal {
                Signal::Changed(path) => paths.push(path),
                Signal::Overflow => {
                    self.stats.overflowed();
                    lost.get_or_insert_with(|| "the event queue overflowed".into());
                }
                Signal::Failed(why) => {
                    lost.get_or_insert(why);
                }
                Signal::Replan => replan = true,
                Signal::Refresh => refresh = true,
                Signal::Stop => {}
            }
        }
        if let Some(why) = lost {
            log::warn!("watcher: {why}; rescanning the whole tree");
            self.emit(Work::Rescan("events were lost"));
            self.plan();
            return;
        }
        if replan {
            self.plan();
        } else if refresh {
            self.refresh();
        }
        paths.sort();
        paths.dedup();
        let was_partial = self.tree.partial;
        let names = self.tree.changed(self.backend.as_mut(), &paths);
        self.stats.set_watches(self.tree.watched());
        if !names.is_empty() {
            self.emit(Work::Workspaces(names));
        }
        if self.tree.partial && !was_partial {
            // A new directory could not be watched: what is below it is found by a
            // scan of the whole tree now, and by the fallback rescan later.
            self.emit(Work::Rescan("a watch could not be added"));
        }
    }

    /// Hands `work` to the sink.
    fn emit(&mut self, work: Work) {
        (self.sink)(work, &self.replan);
    }

    /// Plans again when the plan is partial (something is covered by the rescan
    /// only) or older than the config allows; otherwise the events have kept it.
    fn refresh(&mut self) {
        let stale = self
            .planned_at
            .is_none_or(|at| at.elapsed() >= self.config.max_plan_age);
        if self.tree.partial || stale {
            self.plan();
        }
    }

    /// Plans the watches again (at start, after a lost event, after a full scan).
    fn plan(&mut self) {
        self.planned_at = Some(Instant::now());
        let was_partial = self.tree.partial;
        let first = self.stats.watches() == 0;
        self.tree.plan(self.backend.as_mut(), self.store.as_ref());
        self.stats.set_watches(self.tree.watched());
        let line = format!(
            "watching {} directories of the workspace tree (budget {})",
            self.tree.watched(),
            self.config.budget
        );
        if first {
            log::info!("{line}");
        } else {
            log::debug!("{line}");
        }
        if self.tree.partial && !was_partial {
            log::warn!(
                "watching {} directories, the budget ({}) or the kernel's limit did not allow \
                 more: the rest is found by the fallback rescan",
                self.tree.watched(),
                self.config.budget
            );
            self.emit(Work::Rescan("a watch could not be added"));
        }
    }
}
