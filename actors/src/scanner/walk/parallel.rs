//! The parallel walk: the root's entries (organisations, typically) are walked on up
//! to four scoped threads, one per core, and what they find reaches the caller in walk
//! order, as it is found, on the caller's thread.
//!
//! Each entry of the root is one job. Workers take jobs in order; each job has its own
//! bounded channel, and the caller drains the channels in job order. A worker may run
//! at most [`window`] jobs ahead of the one the caller is draining, and a channel holds
//! at most [`JOB_BUFFER`] workspaces (in batches of [`BATCH`]), so what waits in memory
//! is bounded by the number of workers, never by the size of the tree. When the caller
//! stops (an enqueue failed), every worker stops at its next workspace; so does it when
//! [`Setup::halt`] is set (the service is stopping), and the caller before its next
//! batch.
//!
//! Each worker reads the rescan cache through its own snapshot, a range scan per job
//! ([`super::cache::Cursor`]), and writes the rows of what it read in batches of its
//! own. Rows of terminal workspaces travel with the [`Candidate`] instead: the caller
//! writes them once the Ledger has said whether they are synced.

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::cache::{self, DirRow, Snapshot, WriteLog, Writes};
use super::candidate::{Candidate, Counts};
use super::job::{Item, Job, BATCH};
use super::rules::{list_children, visit_child, StatusLookup, Walk};
use super::sys::{Dir, Resolver};
use crate::store::Store;

/// Workspaces a job's channel holds before its worker waits for the caller: a whole
/// organisation of the usual size, so workers keep walking while the caller builds a
/// chunk's records (256 made them wait, and a cold scan took 1.6x as long).
const JOB_BUFFER: usize = 1024;

/// Most workers.
const MAX_WORKERS: usize = 4;

/// What one walk works with.
#[derive(Clone, Copy)]
pub(crate) struct Setup<'a> {
    /// The root as configured, for messages.
    pub root_path: &'a Path,
    /// The root, opened.
    pub root: &'a Dir,
    /// How multi-component paths are opened.
    pub resolver: Resolver,
    /// Where the rescan cache lives (`None`: no cache).
    pub store: Option<&'a Store>,
    /// Shared by the scan's cache writers.
    pub log: &'a Arc<WriteLog>,
    /// When the scan started (ns since the epoch): the racy rule's reference.
    pub started: i128,
    /// Set from outside when the service stops: the walk ends early (`None`: never).
    pub halt: Option<&'a AtomicBool>,
}

impl Setup<'_> {
    /// Whether [`Setup::halt`] is set.
    fn halted(&self) -> bool {
        self.halt.is_some_and(|h| h.load(Ordering::SeqCst))
    }
}

/// Job bookkeeping shared by the workers and the caller.
struct Board {
    /// Next job to hand out.
    next: usize,
    /// Jobs the caller has drained completely.
    drained: usize,
}

/// How many jobs may run ahead of the one being drained (with [`JOB_BUFFER`], what
/// waits is at most 4 x 1,024 candidates per worker, a few MiB).
fn window(workers: usize) -> usize {
    (workers * 2).max(2)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Walks the tree below `setup.root`, calling `found` for every candidate in walk
/// order on this thread; `Break` stops the walk. Returns what was counted.
pub(crate) fn walk(
    setup: Setup<'_>,
    found: &mut dyn FnMut(Candidate) -> ControlFlow<()>,
) -> Counts {
    let Some(tops) = root_children(setup) else {
        return Counts::default();
    };
    let jobs = tops.len();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS)
        .min(jobs);
    if workers == 0 {
        return Counts::default();
    }
    let window = window(workers);
    let board = Mutex::new(Board {
        next: 0,
        drained: 0,
    });
    let changed = Condvar::new();
    let slots: Vec<Mutex<Option<Receiver<Item>>>> = (0..window).map(|_| Mutex::new(None)).collect();
    let stop = AtomicBool::new(false);
    let shared = Shared {
        setup,
        tops: &tops,
        board: &board,
        changed: &changed,
        slots: &slots,
        stop: &stop,
        window,
    };
    let mut counts = Counts::default();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| shared.work());
        }
        for index in 0..jobs {
            let receiver = shared.receiver(index);
            let mut job_counts = None;
            if let Some(receiver) = receiver {
                while let Ok(item) = receiver.recv() {
                    match item {
                        Item::Found(batch) => {
                            if setup.halted() || batch.into_iter().any(|c| found(c).is_break()) {
                                stop.store(true, Ordering::Relaxed);
                                break;
                            }
                        }
                        Item::Done(done) => {
                            job_counts = Some(done);
                            break;
                        }
                    }
                }
            }
            if let Some(done) = job_counts {
                counts += done;
            }
            lock(&board).drained = index + 1;
            changed.notify_all();
            if shared.stopped() {
                break;
            }
        }
        // Stopped early: nobody drains any more, so no worker may wait on a channel.
        // Set under the board's lock: a worker between its check of `stop` and its
        // wait holds that lock, so the notification below cannot slip in between.
        {
            let _board = lock(&board);
            stop.store(true, Ordering::Relaxed);
        }
        for slot in &slots {
            lock(slot).take();
        }
        changed.notify_all();
    });
    counts
}

/// What the workers and the caller share during one walk.
struct Shared<'a> {
    setup: Setup<'a>,
    /// The root's entries, one job each.
    tops: &'a [OsString],
    board: &'a Mutex<Board>,
    /// Signalled when a job is handed out or drained.
    changed: &'a Condvar,
    /// The channel of job `i` waits in slot `i % window`.
    slots: &'a [Mutex<Option<Receiver<Item>>>],
    /// Set when the caller stopped.
    stop: &'a AtomicBool,
    window: usize,
}

impl Shared<'_> {
    /// Whether the caller stopped or the service is stopping.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.setup.halted()
    }

    /// The channel of job `index`, once its worker has it; `None` after a stop.
    fn receiver(&self, index: usize) -> Option<Receiver<Item>> {
        let mut board = lock(self.board);
        loop {
            if let Some(receiver) = lock(&self.slots[index % self.window]).take() {
                return Some(receiver);
            }
            if self.stopped() {
                return None;
            }
            board = self.changed.wait(board).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Hands out the next job, waiting while the window is full; `None` when there is
    /// none left or the walk stopped.
    fn claim(&self) -> Option<(usize, SyncSender<Item>)> {
        let mut board = lock(self.board);
        loop {
            if self.setup.halted() {
                // The caller may be waiting for this job's channel: it is not coming.
                // (Seen under the lock the caller checks under, so it cannot miss it.)
                drop(board);
                self.changed.notify_all();
                return None;
            }
            if self.stop.load(Ordering::Relaxed) || board.next >= self.tops.len() {
                return None;
            }
            if board.next < board.drained + self.window {
                let index = board.next;
                board.next += 1;
                let (sender, receiver) = sync_channel(JOB_BUFFER / BATCH);
                *lock(&self.slots[index % self.window]) = Some(receiver);
                drop(board);
                self.changed.notify_all();
                return Some((index, sender));
            }
            board = self.changed.wait(board).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A worker: runs jobs until none is left.
    fn work(&self) {
        let setup = self.setup;
        let snapshot = setup.store.and_then(Snapshot::open);
        let mut writes = Writes::new(setup.store.cloned(), setup.log.clone());
        let mut buffer = Vec::with_capacity(4096);
        while let Some((index, sender)) = self.claim() {
            let top = &self.tops[index];
            let (dirs, workspaces) = match (&snapshot, top.to_str()) {
                (Some(snapshot), Some(top)) => {
                    let (dirs, workspaces) = snapshot.part(top);
                    (Some(dirs), Some(workspaces))
                }
                _ => (None, None),
            };
            // A part seen for the first time is read in full: open beats stat then.
            let status_lookup = match &workspaces {
                Some(cursor) if !cursor.is_exhausted() => StatusLookup::Stat,
                _ => StatusLookup::Open,
            };
            let walk = Walk {
                root: setup.root_path,
                resolver: setup.resolver,
                status_lookup,
            };
            let mut job = Job {
                dirs,
                workspaces,
                writes: &mut writes,
                started: setup.started,
                counts: Counts::default(),
                buffer: &mut buffer,
                out: &sender,
                batch: Vec::new(),
                stop: self.stop,
                halt: setup.halt,
            };
            let flow = visit_child(walk, setup.root, top, "", 1, &mut job);
            if flow.is_continue() && job.send_batch().is_continue() {
                job.finish();
            }
            let counts = job.counts;
            let _ = sender.send(Item::Done(counts));
        }
        writes.flush();
    }
}

/// The root's entries: from the cache when the root is unchanged, else listed (and
/// then the rows of entries that are gone are deleted).
fn root_children(setup: Setup<'_>) -> Option<Vec<OsString>> {
    let walk = Walk {
        root: setup.root_path,
        resolver: setup.resolver,
        status_lookup: StatusLookup::Stat,
    };
    let signature = setup.root.stat().ok().map(|s| s.signature);
    let seek = setup.store.and_then(Snapshot::open).map(|s| s.root());
    if let (Some(row), Some(signature)) = (seek.as_ref().and_then(|s| s.row.as_ref()), signature) {
        if row.signature == signature && cache::settled(&signature, setup.started) {
            return Some(row.children.clone());
        }
    }
    let children = list_children(walk, "", setup.root)?;
    if let Some(store) = setup.store {
        let mut writes = Writes::new(Some(store.clone()), setup.log.clone());
        match signature.filter(|s| cache::settled(s, setup.started)) {
            Some(signature) => writes.put_dir(
                "",
                &DirRow {
                    signature,
                    children: children.clone(),
                },
            ),
            None if seek.is_some_and(|s| s.existed) => writes.delete_dir(""),
            None => {}
        }
        writes.flush();
        let tops: Vec<&str> = children.iter().filter_map(|c| c.to_str()).collect();
        cache::prune_tops(store, &tops, setup.log);
    }
    Some(children)
}

#[cfg(test)]
mod tests {
    use super::super::cache::Which;
    use super::super::rules::{visit_tree, Visitor, Workspace};
    use super::*;
    use crate::scanner::walk::testing::{age_tree, rows, write, Fixture, DONE};

    #[test]
    fn the_parallel_walk_finds_what_a_sequential_walk_finds_in_the_same_order() {
        let mut f = Fixture::new();
        for org in 0..12 {
            for task in 0..5 {
                write(f.root(), &format!("org-{org:02}/repo/task-{task}"), DONE);
            }
        }
        write(f.root(), "flat-a", DONE);
        write(f.root(), "zz-flat", DONE);
        let mut sequential = Vec::new();
        struct Names<'a>(&'a mut Vec<String>);
        impl Visitor for Names<'_> {
            fn children(
                &mut self,
                walk: Walk<'_>,
                prefix: &str,
                dir: &Dir,
            ) -> Option<Vec<OsString>> {
                list_children(walk, prefix, dir)
            }
            fn workspace(&mut self, ws: &Workspace<'_>) -> std::ops::ControlFlow<()> {
                self.0.push(ws.name.to_string());
                std::ops::ControlFlow::Continue(())
            }
        }
        visit_tree(
            Walk {
                root: f.root(),
                resolver: Resolver::Native,
                status_lookup: StatusLookup::Stat,
            },
            &mut Names(&mut sequential),
        );
        assert_eq!(sequential.len(), 62);
        age_tree(f.root());
        for round in 0..3 {
            // Cold, then warm twice; in chunks smaller than the tree.
            f.options.chunk = 7;
            let before = f.peers.deliveries.len();
            let scan = f.scan();
            let ids: Vec<String> = f.peers.deliveries[before..]
                .iter()
                .flatten()
                .map(|d| d.id.clone())
                .collect();
            assert_eq!(ids, sequential, "round {round}");
            assert_eq!(scan.workspaces, 62);
            f.peers.queued.clear();
        }
        assert_eq!(rows(&f.store, Which::Workspaces), 62);
    }
}
