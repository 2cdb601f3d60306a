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
//! | `cache`    | the rescan cache, persisted in redb                              |
//! | `parallel` | the root's entries on up to four threads, results in walk order  |
//! | `stream`   | chunks through the Ledger and the Queue, records built last      |
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
mod named;
mod parallel;
mod read;
mod rules;
mod stream;
pub(crate) mod sys;

use std::path::Path;

pub use cache::RACY_WINDOW;
pub use named::relative_name;
pub(crate) use named::{not_terminal_rows, running, visit_named};
pub(crate) use read::read_status_bytes;
pub use read::{MAX_REPORT_BYTES, MAX_STATUS_BYTES};
pub(crate) use rules::{list_children, visit_tree, StatusLookup, Visitor, Walk, Workspace};
pub(crate) use stream::{scan, scan_named, Peers};
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

/// Stand-ins for the Ledger and the Queue, for the walk's own tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::{scan, Peers, ScanTotals, WalkOptions};
    use crate::dispatch::{DispatchKey, ScannedDispatch};
    use crate::error::{StoreError, SyncError};
    use crate::store::Store;

    /// A Ledger and a Queue as sets of (id, fingerprint).
    #[derive(Default)]
    pub(crate) struct FakePeers {
        /// What the Ledger holds.
        pub synced: HashSet<DispatchKey>,
        /// What the Queue holds.
        pub queued: HashSet<DispatchKey>,
        /// Candidates the Ledger was asked about, over all scans.
        pub asked: usize,
        /// Every delivery, in order.
        pub deliveries: Vec<Vec<ScannedDispatch>>,
        /// Fail the delivery with this index (0-based), once.
        pub fail_delivery: Option<usize>,
        /// The scan's stop flag ([`Peers::halt`]).
        pub halt: Option<Arc<AtomicBool>>,
        /// Set `halt` once this many deliveries were taken (a stop mid-scan).
        pub halt_after: Option<usize>,
    }

    fn key(d: &ScannedDispatch) -> DispatchKey {
        DispatchKey {
            id: d.id.clone(),
            fingerprint: d.fingerprint.clone(),
        }
    }

    impl FakePeers {
        /// Marks everything delivered so far as synced (as its delivery would).
        pub(crate) fn sync_all(&mut self) {
            let delivered: Vec<_> = self.deliveries.iter().flatten().map(key).collect();
            self.synced.extend(delivered);
            // Delivered entries leave the queue.
            self.queued.clear();
        }

        /// Ids delivered, in order, over all scans.
        pub(crate) fn delivered_ids(&self) -> Vec<String> {
            self.deliveries
                .iter()
                .flatten()
                .map(|d| d.id.clone())
                .collect()
        }

        /// One scan of `root` with `store`'s cache.
        pub(crate) fn scan(
            &mut self,
            root: &Path,
            store: Option<&Store>,
            options: WalkOptions,
        ) -> ScanTotals {
            scan(root, store, &options, self).expect("the scan")
        }
    }

    impl Peers for FakePeers {
        fn unsynced(
            &mut self,
            candidates: Vec<DispatchKey>,
        ) -> Result<Vec<DispatchKey>, SyncError> {
            self.asked += candidates.len();
            Ok(candidates
                .into_iter()
                .filter(|d| !self.synced.contains(d))
                .collect())
        }

        fn not_queued(
            &mut self,
            candidates: Vec<DispatchKey>,
        ) -> Result<Vec<DispatchKey>, SyncError> {
            Ok(candidates
                .into_iter()
                .filter(|d| !self.queued.contains(d))
                .collect())
        }

        fn deliver(&mut self, found: Vec<ScannedDispatch>) -> Result<(), SyncError> {
            if self.fail_delivery == Some(self.deliveries.len()) {
                self.fail_delivery = None;
                return Err(SyncError::Store(StoreError::unavailable(
                    "enqueue dispatches",
                    "injected",
                )));
            }
            self.queued.extend(found.iter().map(key));
            self.deliveries.push(found);
            if self.halt_after == Some(self.deliveries.len()) {
                if let Some(halt) = &self.halt {
                    halt.store(true, Ordering::SeqCst);
                }
            }
            Ok(())
        }

        fn halt(&self) -> Option<Arc<AtomicBool>> {
            self.halt.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::testing::FakePeers;
    use super::{scan, WalkOptions};
    use crate::error::SyncError;
    use crate::store::Store;

    const DONE: &str = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;

    /// Writes `<root>/<name>/status.json`, backdated (with its directories) so the
    /// rescan cache trusts it.
    fn write_aged(root: &Path, name: &str) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("status.json"), DONE).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let mut path = dir.join("status.json");
        loop {
            std::fs::File::open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
            if path == root {
                break;
            }
            path = path.parent().unwrap().to_path_buf();
        }
    }

    #[test]
    fn a_scan_stopped_half_way_answers_stopped_and_the_next_scan_finds_the_rest_once() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        for i in 0..30 {
            write_aged(root.path(), &format!("o-{}/r/t-{i:02}", i % 4));
        }
        let options = WalkOptions {
            chunk: 4,
            ..WalkOptions::default()
        };
        let halt = Arc::new(AtomicBool::new(false));
        let mut peers = FakePeers {
            halt: Some(halt.clone()),
            halt_after: Some(3),
            ..FakePeers::default()
        };
        let stopped = scan(root.path(), Some(&store), &options, &mut peers);
        assert!(matches!(stopped, Err(SyncError::Stopped)), "{stopped:?}");
        assert_eq!(
            peers.delivered_ids().len(),
            12,
            "no chunk is asked about once the stop is seen"
        );

        // A stopped flag stops a scan before it starts.
        assert!(matches!(
            scan(root.path(), Some(&store), &options, &mut peers),
            Err(SyncError::Stopped)
        ));
        assert_eq!(peers.delivered_ids().len(), 12);

        halt.store(false, Ordering::SeqCst);
        peers.halt_after = None;
        let again = peers.scan(root.path(), Some(&store), options);
        assert_eq!(again.found, 18);
        let in_order = peers.delivered_ids();
        let mut all = in_order.clone();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30, "nothing lost, nothing twice");
        assert_eq!(in_order[..12], all[..12]);
    }
}
