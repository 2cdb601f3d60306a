//! The rescan cache, persisted in the sync database so a fresh process (a cron
//! `push`) rescans an unchanged tree at about one `stat` per workspace.
//!
//! # What is stored
//!
//! Two tables, owned by the Scanner (see `store` for the whole layout):
//!
//! | table             | key                      | value                                     |
//! |-------------------|--------------------------|-------------------------------------------|
//! | `scan_dirs`       | directory (`""` = root)  | signature, child directory names          |
//! | `scan_workspaces` | workspace name           | signature of `status.json`, what it held  |
//!
//! A signature is size, mtime and ctime. What a `status.json` held is one of: corrupt
//! (not a status, or over its cap), not terminal, or terminal with its fingerprint and
//! a synced flag that is set only once the Ledger has said it holds that fingerprint
//! (the Ledger only grows, and a new fingerprint means a new `status.json`).
//!
//! Keys are names with `/` replaced by `\0`. Since `\0` sorts before every byte a name
//! can hold, the byte order of keys is the walk's order (names compared component by
//! component, see [`super::rules`]): each worker reads the rows below its part of the
//! root with one range scan, in step with its walk ([`Cursor`]), instead of a lookup
//! per workspace, and any row the walk passes without visiting is stale (the directory
//! or workspace is gone) and deleted on the way. Rows of a top-level entry that is gone
//! are deleted when the root is listed again ([`prune_tops`]).
//!
//! Values are a small versioned binary encoding ([`ROW_VERSION`](row::ROW_VERSION)),
//! not JSON: a cold scan of 100,000 workspaces writes 100,000 of them. A row that does not decode (a
//! newer version, corruption) is ignored, which makes it a miss, and the walk writes a
//! fresh one in its place.
//!
//! # When a row is trusted
//!
//! A row is used only when the signature on disk equals the stored one, and only rows
//! whose mtime was older than [`RACY_WINDOW`] when the scan that wrote them started are
//! ever stored: a file changed twice within one tick of a coarse clock could keep its
//! mtime, so a fresh one is read again every time until it has settled (git's "racily
//! clean" rule). Directories follow the same rule: creating, removing or renaming an
//! entry changes a directory's mtime, so an unchanged directory is not listed again.
//! Reads that failed for a reason that may pass (permissions, I/O) are never stored.
//!
//! # Crash semantics and concurrency
//!
//! The cache is an optimisation only: losing any of it costs reads, never a dispatch.
//! Rows are written in batches with `Durability::None` (an `fsync` each would double
//! the cost of a cold scan), and each scan that wrote anything ends with one durable
//! commit. The scan's own thread hands its batches to a thread of their own
//! ([`Writes::behind`]), which commits them in order; the durable commit waits for the
//! last. A crash loses at most the rows of the scan it interrupted. The synced flag
//! is written after the Ledger's answer, so a durable synced row implies a durable
//! ledger entry (commits are durable in order). Two scans at once each read their own
//! snapshot and write rows that are each true of the file version they name; at worst
//! one deletes or overwrites a row the other just wrote, which costs a read later.
//!
//! # Where
//!
//! | module   | what                                                              |
//! |----------|-------------------------------------------------------------------|
//! | `row`    | the binary encoding of a row, and what a row says ([`Known`])     |
//! | `reader` | a worker's snapshot and its range reads in step with the walk     |
//! | `writer` | batched row changes, the writer thread, pruning of gone entries   |

mod reader;
mod row;
mod writer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::TableDefinition;

pub(crate) use reader::{Cursor, Seek, Snapshot};
pub(crate) use row::{unsettled, DirRow, Known, WorkspaceRow};
pub(crate) use writer::{prune_tops, WriteLog, Writes};

use super::sys::Signature;
use crate::store::schema::{SCAN_DIRS, SCAN_WORKSPACES};

/// An mtime this close to the caching scan's start is not trusted (coarse clocks).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Nanoseconds since the epoch, now.
pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// True when `signature` may be stored by a scan that started at `started_ns`: old
/// enough that no same-tick rewrite can hide behind it.
pub(crate) fn settled(signature: &Signature, started_ns: i128) -> bool {
    signature.mtime_ns + (RACY_WINDOW.as_nanos() as i128) < started_ns
}

/// The key of a name (`o/r/t` -> `o\0r\0t`); see the module docs.
pub(crate) fn key(name: &str) -> String {
    name.replace('/', "\0")
}

/// Which of the two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// `scan_dirs`.
    Dirs,
    /// `scan_workspaces`.
    Workspaces,
}

impl Which {
    /// Its definition in the store's schema.
    pub(crate) fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Which::Dirs => SCAN_DIRS,
            Which::Workspaces => SCAN_WORKSPACES,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use redb::Durability;

    use super::row::ROW_VERSION;
    use super::*;
    use crate::scanner::walk::testing::{age_tree, rows, write, Fixture, DONE, FP};
    use crate::scanner::walk::Resolver;

    #[test]
    fn keys_sort_in_walk_order() {
        let mut names = vec!["a-b/r/t", "a/r/t", "a/r-x/t", "a", "ab/c", "a/r"];
        names.sort_by_key(|n| key(n));
        assert_eq!(names, ["a", "a/r", "a/r/t", "a/r-x/t", "a-b/r/t", "ab/c"]);
    }

    #[test]
    fn a_settled_synced_workspace_costs_no_read_and_no_question() {
        let mut f = Fixture::new();
        write(f.root(), "o/r/a", DONE);
        age_tree(f.root());
        assert_eq!(f.found(), ["o/r/a"]);
        f.peers.sync_all();
        // The first scan after the delivery learns "synced" from the Ledger...
        let after = f.scan();
        assert_eq!((after.status_reads, after.found), (0, 0));
        let asked = f.peers.asked;
        // ... and from then on the workspace costs a stat: no read, no question.
        let rescan = f.scan();
        assert_eq!(
            (
                rescan.workspaces,
                rescan.skipped,
                rescan.status_reads,
                rescan.found
            ),
            (1, 0, 0, 0)
        );
        assert_eq!(f.peers.asked, asked);
    }

    #[test]
    fn a_rewrite_that_keeps_size_and_mtime_is_caught_by_the_ctime() {
        let mut f = Fixture::new();
        let dir = write(f.root(), "o/r/a", DONE);
        age_tree(f.root());
        f.scan();
        f.peers.sync_all();
        f.scan();
        // Same size, same mtime, another fingerprint: only the ctime moved.
        let status = dir.join("status.json");
        let mtime = std::fs::metadata(&status).unwrap().modified().unwrap();
        std::fs::write(&status, DONE.replace("\"runs\":1", "\"runs\":7")).unwrap();
        File::open(&status).unwrap().set_modified(mtime).unwrap();
        let rescan = f.scan();
        assert_eq!(rescan.status_reads, 1);
        assert_eq!(
            f.peers.deliveries.last().unwrap()[0].fingerprint,
            "2026-01-01T00:00:00Z#7"
        );
    }

    #[test]
    fn racy_status_rewritten_in_the_same_tick_is_read_again() {
        let mut f = Fixture::new();
        let dir = write(f.root(), "o/r/a", DONE);
        f.scan();
        f.peers.sync_all();
        // Rewritten at once with the same size: its mtime is too fresh to have been
        // trusted, so it was never cached and is read again.
        std::fs::write(
            dir.join("status.json"),
            DONE.replace("\"runs\":1", "\"runs\":2"),
        )
        .unwrap();
        let rescan = f.scan();
        assert_eq!(rescan.status_reads, 1);
        assert_eq!(
            f.peers.deliveries.last().unwrap()[0].fingerprint,
            "2026-01-01T00:00:00Z#2"
        );
        assert_eq!(
            rows(&f.store, Which::Workspaces),
            0,
            "racy rows are never stored"
        );
    }

    #[test]
    fn changed_status_of_a_synced_dispatch_is_found_again() {
        let mut f = Fixture::new();
        let dir = write(f.root(), "o/r/a", DONE);
        age_tree(f.root());
        f.scan();
        f.peers.sync_all();
        assert!(f.found().is_empty());
        std::fs::write(
            dir.join("status.json"),
            DONE.replace("\"runs\":1", "\"runs\":3"),
        )
        .unwrap();
        assert_eq!(f.found(), ["o/r/a"]);
        assert_eq!(
            f.peers.deliveries.last().unwrap()[0].fingerprint,
            "2026-01-01T00:00:00Z#3"
        );
    }

    #[test]
    fn a_queued_dispatch_is_neither_built_nor_read_again_and_an_unqueued_one_is() {
        let mut f = Fixture::new();
        write(f.root(), "o/r/a", DONE);
        age_tree(f.root());
        assert_eq!(f.found(), ["o/r/a"]);
        // Still queued (the platform is down): asked about, not built, not read.
        let rescan = f.scan();
        assert_eq!((rescan.status_reads, rescan.found), (0, 0));
        // Gone from the queue without reaching the Ledger (say, a dead letter
        // requeued elsewhere): built again, from a fresh read.
        f.peers.queued.clear();
        assert_eq!(f.found(), ["o/r/a"]);
        assert_eq!(f.peers.deliveries.last().unwrap()[0].fingerprint, FP);
    }

    #[test]
    fn new_and_removed_workspaces_in_cached_directories_are_seen_and_stale_rows_go() {
        let mut f = Fixture::new();
        write(f.root(), "o/r/a", DONE);
        write(f.root(), "gone/r/a", DONE);
        age_tree(f.root());
        f.scan();
        f.peers.sync_all();
        write(f.root(), "o/r/b", DONE);
        assert_eq!(f.found(), ["o/r/b"]);
        std::fs::remove_dir_all(f.root().join("o/r/a")).unwrap();
        std::fs::remove_dir_all(f.root().join("gone")).unwrap();
        age_tree(f.root());
        let rescan = f.scan();
        assert_eq!(rescan.workspaces, 1);
        // Only o/r/b is left: the rows of o/r/a (below a cached part) and of the whole
        // part `gone` are deleted.
        assert_eq!(rows(&f.store, Which::Workspaces), 1);
        // Root, o, o/r.
        assert_eq!(rows(&f.store, Which::Dirs), 3);
    }

    #[test]
    fn a_corrupt_cache_row_is_ignored_and_rebuilt() {
        let mut f = Fixture::new();
        write(f.root(), "o/r/a", DONE);
        write(f.root(), "o/r/b", DONE);
        age_tree(f.root());
        f.scan();
        f.peers.sync_all();
        f.scan();
        assert_eq!(f.scan().status_reads, 0);
        f.store
            .write("corrupt", Durability::Immediate, |txn| {
                let mut ws = txn.open_table(SCAN_WORKSPACES)?;
                ws.insert(key("o/r/a").as_str(), &b"\x01garbage"[..])?;
                let mut dirs = txn.open_table(SCAN_DIRS)?;
                dirs.insert(key("o/r").as_str(), &[ROW_VERSION + 9][..])?;
                Ok(())
            })
            .unwrap();
        // The bad row is a miss: o/r is listed again, o/r/a read again (and found
        // synced by the Ledger); o/r/b still comes from the cache.
        let rescan = f.scan();
        assert_eq!(
            (rescan.workspaces, rescan.status_reads, rescan.found),
            (2, 1, 0)
        );
        // And rebuilt: the next scan reads nothing.
        assert_eq!(f.scan().status_reads, 0);
    }

    #[test]
    fn both_resolvers_remember_the_same_things() {
        let mut f = Fixture::new();
        write(f.root(), "o/r/a", DONE);
        write(f.root(), "o/r/b", "{corrupt");
        write(f.root(), "o/r/c", r#"{"status":"running"}"#);
        age_tree(f.root());
        for resolver in [Resolver::Native, Resolver::Portable, Resolver::Native] {
            f.options.resolver = resolver;
            f.scan();
            f.peers.sync_all();
            f.scan();
            let rescan = f.scan();
            assert_eq!(
                (rescan.workspaces, rescan.skipped, rescan.status_reads),
                (3, 1, 0),
                "{resolver:?}"
            );
        }
    }
}
