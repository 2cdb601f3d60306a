//! Stand-ins for the Ledger and the Queue, and trees, for the walk's own tests.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redb::ReadableTableMetadata;

use super::cache::Which;
use super::sys::Signature;
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
    fn unsynced(&mut self, candidates: Vec<DispatchKey>) -> Result<Vec<DispatchKey>, SyncError> {
        self.asked += candidates.len();
        Ok(candidates
            .into_iter()
            .filter(|d| !self.synced.contains(d))
            .collect())
    }

    fn not_queued(&mut self, candidates: Vec<DispatchKey>) -> Result<Vec<DispatchKey>, SyncError> {
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

/// A finished dispatch's `status.json`.
pub(crate) const DONE: &str =
    r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;
/// The fingerprint of [`DONE`].
pub(crate) const FP: &str = "2026-01-01T00:00:00Z#1";

/// A signature that differs with `n`.
pub(crate) fn signature(n: i128) -> Signature {
    Signature {
        len: 380,
        mtime_ns: n,
        ctime_ns: n + 1,
    }
}

/// Writes `<root>/<name>/status.json`; returns the workspace's directory.
pub(crate) fn write(root: &Path, name: &str, body: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("status.json"), body).unwrap();
    dir
}

/// Backdates a file or directory so the cache may trust it.
fn age(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    File::open(path).unwrap().set_modified(old).unwrap();
}

/// Backdates everything below `root`, and `root`.
pub(crate) fn age_tree(root: &Path) {
    fn walk_all(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk_all(&path, out);
            }
            out.push(path);
        }
    }
    let mut all = Vec::new();
    walk_all(root, &mut all);
    for path in all {
        age(&path);
    }
    age(root);
}

/// Rows in one table of the cache.
pub(crate) fn rows(store: &Store, which: Which) -> u64 {
    store
        .read("count", |txn| Ok(txn.open_table(which.table())?.len()?))
        .unwrap()
}

/// A tree, a store and stand-in peers, scanned again and again.
pub(crate) struct Fixture {
    /// The workspace root.
    pub root: tempfile::TempDir,
    /// Holds the store's file.
    _state: tempfile::TempDir,
    /// The store holding the cache.
    pub store: Store,
    /// The Ledger and the Queue.
    pub peers: FakePeers,
    /// How each scan walks.
    pub options: WalkOptions,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let state = tempfile::tempdir().unwrap();
        Fixture {
            root: tempfile::tempdir().unwrap(),
            store: Store::open(state.path()).unwrap(),
            _state: state,
            peers: FakePeers::default(),
            options: WalkOptions::default(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// One scan with the cache.
    pub(crate) fn scan(&mut self) -> ScanTotals {
        let root = self.root.path().to_path_buf();
        self.peers.scan(&root, Some(&self.store), self.options)
    }

    /// Scans, and returns the ids delivered by that scan.
    pub(crate) fn found(&mut self) -> Vec<String> {
        let before = self.peers.deliveries.len();
        self.scan();
        self.peers.deliveries[before..]
            .iter()
            .flatten()
            .map(|d| d.id.clone())
            .collect()
    }
}
