//! The streaming scan: what the walk finds goes through the Ledger (and the Queue) in
//! chunks, is built into dispatch records only when it is to be queued, and is handed
//! on chunk by chunk while the walk goes on.
//!
//! For each chunk of at most [`WalkOptions::chunk`] candidates (terminal workspaces the
//! rescan cache does not know to be synced):
//!
//! 1. the Queue is asked which keys (id and fingerprint, a
//!    [`DispatchKey`](crate::dispatch::DispatchKey)) it does not hold yet, queued or
//!    dead-lettered;
//! 2. of those, the Ledger is asked which it does not hold; the others are synced, and
//!    the cache learns it. The Queue goes first because a queued dispatch cannot be
//!    synced (its delivery removes it from the queue in the commit that marks the
//!    Ledger): the Ledger is asked only about the rest, and a row is marked synced only
//!    on the Ledger's own answer. The order is not what keeps a dispatch from being
//!    queued twice: both answers may be stale by the enqueue, which checks the queue,
//!    the dead letters and the Ledger again in the transaction that inserts, so a
//!    delivery that completes in between (another scan, a host push, the daemon) is
//!    never queued twice. The questions only spare building what is held already;
//! 3. only those are built: `status.json` read again when the cache answered for it,
//!    `.meta/report.json` read and attached;
//! 4. the records go on ([`Peers::deliver`]: the Queue's `Enqueue`) once
//!    [`WalkOptions::chunk`] of them or [`WalkOptions::chunk_bytes`] of records are
//!    built, and at the end, always in walk order.
//!
//! So what is held at once is bounded by the chunk size and the walk's buffers, not by
//! the number of workspaces. A failure part-way (a store error on an enqueue) stops
//! the walk: what was delivered is durable, the rest is found again by the next scan
//! (and what was delivered is then filtered out by step 1, and by the Queue's own
//! (id, fingerprint) dedup).
//!
//! A stop ([`Peers::halt`], set when the service stops) ends the scan the same way:
//! the walk's workers stop at their next workspace, the pipeline before its next
//! chunk or batch of candidates, and the scan answers [`SyncError::Stopped`]. What was
//! delivered stays queued; the chunk not asked about yet is dropped with its cache
//! rows unwritten, so the next scan finds it again.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use super::cache::{self, WriteLog, Writes};
use super::candidate::{Candidate, Counts};
use super::parallel::{self, Setup};
use super::peers::{halted, Peers};
use super::pipeline::Pipeline;
use super::rules;
use super::sys::Resolver;
use crate::error::SyncError;
use crate::store::Store;

/// Candidates asked about at once (the Ledger, the Queue), and records delivered at
/// once.
pub const DEFAULT_CHUNK: usize = 1000;

/// Bytes of records (their JSON) after which those built so far are delivered even if
/// the chunk is not full (a report may be up to 8 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// How a scan walks, and how much it holds at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkOptions {
    /// How paths below the root are opened (the portable way can be chosen on Linux).
    pub resolver: Resolver,
    /// Candidates per question to the Ledger and the Queue, and records per delivery.
    pub chunk: usize,
    /// Record bytes after which built records are delivered early.
    pub chunk_bytes: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            resolver: Resolver::Native,
            chunk: DEFAULT_CHUNK,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// What a scan did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanTotals {
    /// Workspaces found (any status).
    pub workspaces: usize,
    /// Workspaces skipped with a warning (unreadable or corrupt `status.json`).
    pub skipped: usize,
    /// `status.json` files read (a rescan of an unchanged, synced tree reads none).
    pub status_reads: usize,
    /// Dispatches built and delivered: unsynced, and not already queued.
    pub found: usize,
}

/// Scans `root` (see the module docs), with the rescan cache in `store` if given.
pub(crate) fn scan(
    root: &Path,
    store: Option<&Store>,
    options: &WalkOptions,
    peers: &mut dyn Peers,
) -> Result<ScanTotals, SyncError> {
    run(root, store, options, peers, &mut |setup, found| {
        parallel::walk(setup, found)
    })
}

/// Scans exactly the workspaces `names` (relative to `root`, checked by
/// `named::relative_name`), each read afresh by the walk's rules, through the same
/// chunk pipeline as a scan of the tree: a name that is not a workspace is nothing.
pub(crate) fn scan_named(
    root: &Path,
    store: Option<&Store>,
    options: &WalkOptions,
    names: &[String],
    peers: &mut dyn Peers,
) -> Result<ScanTotals, SyncError> {
    run(root, store, options, peers, &mut |setup, found| {
        let mut writes = Writes::new(setup.store.cloned(), setup.log.clone());
        let (candidates, counts) = super::named::candidates(
            setup.root_path,
            setup.root,
            setup.resolver,
            names,
            &mut writes,
            setup.started,
        );
        writes.flush();
        for candidate in candidates {
            if found(candidate).is_break() {
                break;
            }
        }
        counts
    })
}

/// Where a scan's candidates come from: the parallel walk, or named workspaces.
type Feed<'f> = dyn FnMut(Setup<'_>, &mut dyn FnMut(Candidate) -> ControlFlow<()>) -> Counts + 'f;

/// The pipeline of one scan over what `feed` finds.
fn run(
    root: &Path,
    store: Option<&Store>,
    options: &WalkOptions,
    peers: &mut dyn Peers,
    feed: &mut Feed<'_>,
) -> Result<ScanTotals, SyncError> {
    let started = cache::now_ns();
    let halt = peers.halt();
    if halted(halt.as_deref()) {
        return Err(SyncError::Stopped);
    }
    let Some(root_dir) = rules::open_root(root) else {
        return Ok(ScanTotals::default());
    };
    let log = Arc::new(WriteLog::default());
    let mut pipeline = Pipeline {
        root_path: root,
        root: &root_dir,
        resolver: options.resolver,
        chunk_len: options.chunk.max(1),
        chunk_bytes: options.chunk_bytes.max(1),
        peers,
        writes: Writes::behind(store.cloned(), log.clone()),
        chunk: Vec::new(),
        records: Vec::new(),
        record_bytes: 0,
        buffer: Vec::with_capacity(4096),
        found: 0,
        rereads: 0,
        error: None,
        halt: halt.clone(),
    };
    let setup = Setup {
        root_path: root,
        root: &root_dir,
        resolver: options.resolver,
        store,
        log: &log,
        started,
        halt: halt.as_deref(),
    };
    let counts: Counts = feed(setup, &mut |candidate| pipeline.push(candidate));
    let result = match pipeline.error.take() {
        Some(error) => Err(error),
        // Stopped: the last chunk is not asked about (the next scan finds it).
        None if halted(halt.as_deref()) => Err(SyncError::Stopped),
        None => pipeline.finish(),
    };
    pipeline.writes.close();
    if let Some(store) = store {
        log.finish(store);
    }
    result.map(|()| ScanTotals {
        workspaces: counts.workspaces,
        skipped: counts.skipped,
        status_reads: counts.status_reads + pipeline.rereads,
        found: pipeline.found,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::scanner::walk::testing::{age_tree, write, FakePeers, Fixture, DONE};

    #[test]
    fn a_scan_in_chunks_delivers_exactly_what_one_whole_scan_delivers_in_order() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..40 {
            let status = if i % 5 == 0 {
                r#"{"status":"running"}"#
            } else {
                DONE
            };
            let dir = write(root.path(), &format!("o-{}/r/t-{i:02}", i % 3), status);
            if i % 4 == 0 {
                std::fs::create_dir_all(dir.join(".meta")).unwrap();
                std::fs::write(dir.join(".meta/report.json"), format!(r#"{{"n":{i}}}"#)).unwrap();
            }
        }
        write(root.path(), "o-1/r/bad", "{");
        let whole = {
            let mut peers = FakePeers::default();
            peers.scan(root.path(), None, WalkOptions::default());
            assert_eq!(peers.deliveries.len(), 1);
            peers.deliveries.concat()
        };
        assert_eq!(whole.len(), 32);
        for chunk in [1, 3, 7, 31, 32, 33] {
            let mut peers = FakePeers::default();
            let options = WalkOptions {
                chunk,
                ..WalkOptions::default()
            };
            let totals = peers.scan(root.path(), None, options);
            assert_eq!(
                (totals.workspaces, totals.skipped, totals.found),
                (41, 1, 32)
            );
            assert!(peers.deliveries.iter().all(|d| d.len() <= chunk));
            assert_eq!(peers.deliveries.concat(), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn records_are_delivered_once_they_reach_chunk_bytes_whatever_the_chunk_length() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..12 {
            let dir = write(root.path(), &format!("o/r/t-{i:02}"), DONE);
            if i % 3 == 0 {
                // A large report makes its record large.
                std::fs::create_dir_all(dir.join(".meta")).unwrap();
                let pad = "x".repeat(2000);
                std::fs::write(
                    dir.join(".meta/report.json"),
                    format!(r#"{{"pad":"{pad}"}}"#),
                )
                .unwrap();
            }
        }
        let whole = {
            let mut peers = FakePeers::default();
            peers.scan(root.path(), None, WalkOptions::default());
            peers.deliveries.concat()
        };
        let chunk_bytes = 2500;
        let mut peers = FakePeers::default();
        let options = WalkOptions {
            chunk_bytes,
            ..WalkOptions::default()
        };
        peers.scan(root.path(), None, options);
        assert_eq!(peers.deliveries.concat(), whole);
        assert!(peers.deliveries.len() > 1, "delivered early");
        for delivery in &peers.deliveries {
            let bytes: Vec<usize> = delivery.iter().map(|d| d.record.json_len()).collect();
            // Only the record that crossed the bound takes a delivery over it.
            let before_last: usize = bytes[..bytes.len() - 1].iter().sum();
            assert!(before_last < chunk_bytes, "{bytes:?}");
        }
        let last = peers.deliveries.len() - 1;
        for delivery in &peers.deliveries[..last] {
            let total: usize = delivery.iter().map(|d| d.record.json_len()).sum();
            assert!(total >= chunk_bytes, "a delivery before the bound: {total}");
        }
    }

    #[test]
    fn a_scan_that_fails_half_way_delivered_a_prefix_and_the_next_scan_the_rest() {
        let mut f = Fixture::new();
        for i in 0..30 {
            write(f.root(), &format!("o-{}/r/t-{i:02}", i % 4), DONE);
        }
        age_tree(f.root());
        f.options.chunk = 4;
        f.peers.fail_delivery = Some(3);
        let root = f.root().to_path_buf();
        let failed = scan(&root, Some(&f.store), &f.options, &mut f.peers);
        assert!(failed.is_err());
        assert_eq!(f.peers.delivered_ids().len(), 12);
        let again = f.scan();
        assert_eq!(again.found, 18);
        let mut all = f.peers.delivered_ids();
        let in_order = all.clone();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30, "nothing lost, nothing twice");
        assert_eq!(in_order[..12], all[..12]);
    }

    #[test]
    fn a_scan_stopped_half_way_answers_stopped_and_the_next_scan_finds_the_rest_once() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        for i in 0..30 {
            write(root.path(), &format!("o-{}/r/t-{i:02}", i % 4), DONE);
        }
        age_tree(root.path());
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
