//! Writing the rescan cache: row changes gathered in batches and committed without an
//! `fsync` (on a thread of their own for the scan's critical path), one durable commit
//! at the end of a scan, and the pruning of the rows of top-level entries that are
//! gone (see the module docs of `cache` for the crash semantics).

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::Durability;

use super::row::{DirRow, WorkspaceRow};
use super::{key, Which};
use crate::store::schema::{SCAN_DIRS, SCAN_WORKSPACES};
use crate::store::Store;

/// Row writes gathered before one commit.
const FLUSH_OPS: usize = 2048;

/// What the writers of one scan share: whether anything was written (then the scan
/// ends with a durable commit), and whether writing failed (then it stops, once).
#[derive(Debug, Default)]
pub(crate) struct WriteLog {
    /// Some batch was committed.
    wrote: AtomicBool,
    /// A commit failed; the rest of the scan writes nothing.
    failed: AtomicBool,
}

impl WriteLog {
    /// Makes this scan's rows durable with one commit, if it wrote any.
    pub(crate) fn finish(&self, store: &Store) {
        if !self.wrote.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = store.write("update the rescan cache", Durability::Immediate, |_| Ok(())) {
            log::debug!("rescan cache: {e}");
        }
    }

    fn fail(&self, error: &dyn std::fmt::Display) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            log::warn!("cannot update the rescan cache ({error}); the next scan reads more files");
        }
    }
}

/// A pending change of one row.
#[derive(Debug)]
enum Op {
    /// Insert or replace.
    Put(Which, String, Vec<u8>),
    /// Remove.
    Delete(Which, String),
}

/// One writer's batch of row changes (each worker and the chunk pipeline has one).
pub(crate) struct Writes {
    /// `None`: no cache, changes are dropped.
    store: Option<Store>,
    /// Gathered since the last commit.
    ops: Vec<Op>,
    /// Shared with the scan's other writers.
    log: Arc<WriteLog>,
    /// Commits batches on a thread of its own, when set.
    behind: Option<Behind>,
}

/// A thread that commits a writer's batches in order, so the writer goes on at once.
struct Behind {
    /// Batches to commit; one waits at most, so memory stays one batch ahead.
    batches: Option<SyncSender<Vec<Op>>>,
    /// Joined when the writer closes.
    thread: Option<JoinHandle<()>>,
}

impl Writes {
    /// A writer into `store` (none: a walk without cache).
    pub(crate) fn new(store: Option<Store>, log: Arc<WriteLog>) -> Self {
        Writes {
            store,
            ops: Vec::new(),
            log,
            behind: None,
        }
    }

    /// A writer whose commits run on a thread of its own: for the scan's own thread,
    /// which is the scan's critical path (its commits were 10-15 ms of a 10k cold
    /// scan). [`Writes::close`] waits for the last one.
    pub(crate) fn behind(store: Option<Store>, log: Arc<WriteLog>) -> Self {
        let mut writes = Writes::new(store.clone(), log.clone());
        let Some(store) = store else {
            return writes;
        };
        let (batches, receiver) = sync_channel::<Vec<Op>>(1);
        let spawned = std::thread::Builder::new()
            .name("agent-sync-cache".into())
            .spawn(move || {
                for ops in receiver {
                    commit(&store, &ops, &log);
                }
            });
        // Without a thread, commits simply run on the caller's.
        if let Ok(thread) = spawned {
            writes.behind = Some(Behind {
                batches: Some(batches),
                thread: Some(thread),
            });
        }
        writes
    }

    /// Commits what is gathered and waits for every commit to be done.
    pub(crate) fn close(&mut self) {
        self.flush();
        self.join_behind();
    }

    /// Ends the writer thread, if any, once it has committed what it was sent.
    fn join_behind(&mut self) {
        if let Some(behind) = &mut self.behind {
            behind.batches.take();
            if let Some(thread) = behind.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn push(&mut self, op: Op) {
        if self.store.is_none() || self.log.failed.load(Ordering::Relaxed) {
            return;
        }
        self.ops.push(op);
        if self.ops.len() >= FLUSH_OPS {
            self.flush();
        }
    }

    /// Stores a workspace row.
    pub(crate) fn put_workspace(&mut self, name: &str, row: &WorkspaceRow) {
        self.push(Op::Put(Which::Workspaces, key(name), row.encode()));
    }

    /// Stores a directory row (`prefix` is the directory's name, `""` for the root).
    pub(crate) fn put_dir(&mut self, prefix: &str, row: &DirRow) {
        self.push(Op::Put(Which::Dirs, key(prefix), row.encode()));
    }

    /// Removes the row under `key` (already a key, not a name).
    pub(crate) fn delete(&mut self, which: Which, key: String) {
        self.push(Op::Delete(which, key));
    }

    /// Removes the row of the workspace `name`.
    pub(crate) fn delete_workspace(&mut self, name: &str) {
        self.delete(Which::Workspaces, key(name));
    }

    /// Removes the row of the directory `prefix`.
    pub(crate) fn delete_dir(&mut self, prefix: &str) {
        self.delete(Which::Dirs, key(prefix));
    }

    /// Commits what was gathered (not durably: see the module docs).
    pub(crate) fn flush(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        if self.ops.is_empty() || self.log.failed.load(Ordering::Relaxed) {
            self.ops.clear();
            return;
        }
        let ops = std::mem::take(&mut self.ops);
        match self.behind.as_ref().and_then(|b| b.batches.as_ref()) {
            Some(batches) => {
                if let Err(unsent) = batches.send(ops) {
                    // The thread is gone: commit here.
                    commit(store, &unsent.0, &self.log);
                }
            }
            None => commit(store, &ops, &self.log),
        }
    }
}

impl Drop for Writes {
    fn drop(&mut self) {
        // A writer dropped without `close` (an error path) still ends its thread.
        self.join_behind();
    }
}

/// Commits one batch of row changes (not durably: see the module docs).
fn commit(store: &Store, ops: &[Op], log: &WriteLog) {
    let result = store.write("update the rescan cache", Durability::None, |txn| {
        let mut dirs = txn.open_table(SCAN_DIRS)?;
        let mut workspaces = txn.open_table(SCAN_WORKSPACES)?;
        for op in ops {
            match op {
                Op::Put(which, key, value) => {
                    let table = if *which == Which::Dirs {
                        &mut dirs
                    } else {
                        &mut workspaces
                    };
                    table.insert(key.as_str(), value.as_slice())?;
                }
                Op::Delete(which, key) => {
                    let table = if *which == Which::Dirs {
                        &mut dirs
                    } else {
                        &mut workspaces
                    };
                    table.remove(key.as_str())?;
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => log.wrote.store(true, Ordering::Relaxed),
        Err(e) => log.fail(&e),
    }
}

/// Deletes every row outside the parts of `tops` (the root's entries, sorted; UTF-8
/// ones only, others have no rows): the rows of entries that are gone. Run when the
/// root is listed afresh.
pub(crate) fn prune_tops(store: &Store, tops: &[&str], log: &WriteLog) {
    let ends: Vec<String> = tops.iter().map(|t| format!("{t}\u{1}")).collect();
    let result = store.write("update the rescan cache", Durability::None, |txn| {
        for which in [Which::Dirs, Which::Workspaces] {
            let mut table = txn.open_table(which.table())?;
            // The root's own row ("") is kept; it sorts before everything else.
            let mut from: Bound<&str> = Bound::Excluded("");
            for (top, end) in tops.iter().zip(&ends) {
                table.retain_in::<&str, _>((from, Bound::Excluded(*top)), |_, _| false)?;
                from = Bound::Included(end.as_str());
            }
            table.retain_in::<&str, _>((from, Bound::Unbounded), |_, _| false)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => log.wrote.store(true, Ordering::Relaxed),
        Err(e) => log.fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::row::Known;
    use super::*;
    use crate::scanner::walk::testing::signature;

    #[test]
    fn a_writer_behind_commits_every_batch_in_order_before_close_returns() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let log = Arc::new(WriteLog::default());
        let mut writes = Writes::behind(Some(store.clone()), log.clone());
        let row = |n| WorkspaceRow {
            signature: signature(n),
            known: Known::NotTerminal { pid: 0 },
        };
        // More than one batch, so several commits queue on the thread; every name is
        // written, then half of them removed and the rest rewritten, in that order.
        let names: Vec<String> = (0..FLUSH_OPS + 10).map(|i| format!("o/r/t{i}")).collect();
        for name in &names {
            writes.put_workspace(name, &row(1));
        }
        for (i, name) in names.iter().enumerate() {
            if i % 2 == 0 {
                writes.delete_workspace(name);
            } else {
                writes.put_workspace(name, &row(2));
            }
        }
        writes.close();
        assert!(log.wrote.load(Ordering::Relaxed));
        assert!(!log.failed.load(Ordering::Relaxed));
        let stored: Vec<(String, Option<WorkspaceRow>)> = store
            .read("rows", |txn| {
                let table = txn.open_table(SCAN_WORKSPACES)?;
                let mut out = Vec::new();
                for name in &names {
                    let value = table.get(key(name).as_str())?;
                    out.push((
                        name.clone(),
                        value.and_then(|v| WorkspaceRow::decode(v.value())),
                    ));
                }
                Ok(out)
            })
            .unwrap();
        for (i, (name, value)) in stored.into_iter().enumerate() {
            let expected = (i % 2 == 1).then(|| row(2));
            assert_eq!(value, expected, "{name}");
        }
    }
}
