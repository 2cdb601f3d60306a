//! The workspace walk behind the Scanner: what it finds, how it streams, what it
//! remembers between scans, and how it stays inside the root.
//!
//! # By concern
//!
//! | module       | concern                                                          |
//! |--------------|------------------------------------------------------------------|
//! | `sys`      | the syscall layer (`openat2` on Linux, portable `openat` elsewhere), the only `unsafe` |
//! | `rules`    | which directories are workspaces, depth, no symlinks (design.md §4.1) |
//! | `read`     | capped reads: the one reader of `status.json` and `report.json`  |
//! | `cache`    | the rescan cache, persisted in redb: row codec, reader, writer   |
//! | `candidate`| a terminal workspace on its way to the Ledger and the Queue       |
//! | `parallel` | the root's entries on up to four threads, results in walk order  |
//! | `job`      | one worker's walk of one root entry, through the rescan cache    |
//! | `peers`    | what a scan asks the Queue and the Ledger, and tells the Queue   |
//! | `pipeline` | the chunks of one scan: asked about, rows written, records built |
//! | `stream`   | one scan: the walk or named workspaces fed through the pipeline  |
//! | `named`    | named workspaces: the targeted scan and the running list of the reap |
//!
//! # A scan in one paragraph
//!
//! The root's entries are walked in parallel (`parallel`); every workspace costs a
//! `stat` of its `status.json` and a step of a range scan over the rescan cache
//! (`cache`): when size, mtime and ctime are unchanged (and were settled when
//! cached) the file is not read again, and a dispatch the Ledger already holds is not
//! even asked about again. The rest, terminal workspaces not known to be synced, reach
//! the scan's thread in walk order, where they are asked about in chunks (the Queue,
//! then the Ledger about what the Queue does not hold, see `stream`); only the
//! dispatches that are not queued and unsynced are built (`status.json`
//! and `report.json` read) and handed to the Queue, chunk by chunk (`stream`).
//! Memory is bounded by the chunk size and the workers' buffers, not by the tree
//! (except the listing of one directory, which is held while it is walked). Anything
//! unreadable or corrupt is skipped with a `warn!` and the walk goes on (R4). A scan
//! whose `Peers::halt` flag is set (the service is stopping) ends early with
//! `SyncError::Stopped`, between batches of candidates, keeping what it delivered.
//!
//! # Two ways to open
//!
//! Everything below the root is opened relative to an open directory, never through a
//! symlink (`sys`): on Linux with `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)`,
//! on any unix with one `openat(O_NOFOLLOW)` per component and an `fstat` of what was
//! opened. [`Resolver::Portable`] picks the second way on Linux too, which is how the
//! tests prove both behave the same on hostile trees.

pub(crate) mod cache;
mod candidate;
mod job;
mod named;
mod parallel;
mod peers;
mod pipeline;
mod read;
mod rules;
mod stream;
pub(crate) mod sys;
#[cfg(test)]
pub(crate) mod testing;

use std::path::Path;

pub use cache::RACY_WINDOW;
pub use named::relative_name;
pub(crate) use named::{not_terminal_rows, running, visit_named};
pub(crate) use peers::Peers;
pub(crate) use read::read_status_bytes;
pub use read::{MAX_REPORT_BYTES, MAX_STATUS_BYTES};
pub(crate) use rules::{list_children, visit_tree, StatusLookup, Visitor, Walk, Workspace};
pub(crate) use stream::{scan, scan_named};
pub use stream::{ScanTotals, WalkOptions, DEFAULT_CHUNK, DEFAULT_CHUNK_BYTES};
pub use sys::Resolver;

use crate::dispatch::{DispatchKey, ScannedDispatch};
use crate::error::SyncError;

/// What a bare walk found: every terminal dispatch, with its record.
#[derive(Debug, Default)]
pub struct TreeScan {
    /// Terminal dispatches, in walk order.
    pub terminal: Vec<ScannedDispatch>,
    /// Workspaces found.
    pub workspaces: usize,
    /// Workspaces skipped with a warning.
    pub skipped: usize,
}

/// Walks `root` without a cache, Ledger or Queue: every terminal dispatch, built.
pub fn scan_tree(root: &Path) -> TreeScan {
    scan_tree_with(root, Resolver::Native)
}

/// [`scan_tree`], opening files the way `resolver` says.
pub fn scan_tree_with(root: &Path, resolver: Resolver) -> TreeScan {
    /// Keeps everything.
    struct Collect(Vec<ScannedDispatch>);
    impl Peers for Collect {
        fn unsynced(
            &mut self,
            candidates: Vec<DispatchKey>,
        ) -> Result<Vec<DispatchKey>, SyncError> {
            Ok(candidates)
        }
        fn not_queued(
            &mut self,
            candidates: Vec<DispatchKey>,
        ) -> Result<Vec<DispatchKey>, SyncError> {
            Ok(candidates)
        }
        fn deliver(&mut self, found: Vec<ScannedDispatch>) -> Result<(), SyncError> {
            self.0.extend(found);
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    let options = WalkOptions {
        resolver,
        ..WalkOptions::default()
    };
    // Collect never fails, so neither does the scan.
    let totals = scan(root, None, &options, &mut collect).unwrap_or_default();
    TreeScan {
        terminal: collect.0,
        workspaces: totals.workspaces,
        skipped: totals.skipped,
    }
}
