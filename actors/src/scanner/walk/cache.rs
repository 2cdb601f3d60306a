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
//! Values are a small versioned binary encoding ([`ROW_VERSION`]), not JSON: a cold
//! scan of 100,000 workspaces writes 100,000 of them. A row that does not decode (a
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

use std::ffi::OsString;
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{AccessGuard, Durability, Range, ReadOnlyTable, TableDefinition};

use super::sys::Signature;
use crate::store::schema::{SCAN_DIRS, SCAN_WORKSPACES};
use crate::store::Store;

/// An mtime this close to the caching scan's start is not trusted (coarse clocks).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// First byte of every row; a row of another version is ignored (version 1 rows,
/// without the pid of a running workspace, are misses and rebuilt).
const ROW_VERSION: u8 = 2;

/// Row writes gathered before one commit.
const FLUSH_OPS: usize = 2048;

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

/// What an unchanged `status.json` held last time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// Not a status (not JSON, not an object, over its cap): skipped and counted,
    /// without a new warning.
    Corrupt,
    /// Not a terminal status: nothing to push. `pid` is the worker's when the status
    /// is `running` with a pid (0 otherwise): the cheap ghost reap checks only these
    /// pids and reads no file of a workspace whose worker is alive.
    NotTerminal {
        /// The worker's pid while `running`, else 0.
        pid: i64,
    },
    /// Terminal with this fingerprint; `synced` once the Ledger holds it.
    Terminal {
        /// `updated_at#runs`, as computed when it was read.
        fingerprint: String,
        /// The Ledger said it holds this fingerprint.
        synced: bool,
    },
}

/// One row of `scan_workspaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkspaceRow {
    /// The `status.json` this row describes.
    pub signature: Signature,
    /// What it held.
    pub known: Known,
}

/// One row of `scan_dirs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirRow {
    /// The directory this row describes.
    pub signature: Signature,
    /// Its child directories, sorted bytewise.
    pub children: Vec<OsString>,
}

fn put_signature(out: &mut Vec<u8>, signature: &Signature) {
    out.push(ROW_VERSION);
    out.extend_from_slice(&signature.len.to_le_bytes());
    out.extend_from_slice(&signature.mtime_ns.to_le_bytes());
    out.extend_from_slice(&signature.ctime_ns.to_le_bytes());
}

/// Bytes of the version and signature prefix.
const SIGNATURE_BYTES: usize = 1 + 8 + 16 + 16;

fn take_signature(bytes: &[u8]) -> Option<(Signature, &[u8])> {
    if bytes.len() < SIGNATURE_BYTES || bytes[0] != ROW_VERSION {
        return None;
    }
    let len = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
    let mtime_ns = i128::from_le_bytes(bytes[9..25].try_into().ok()?);
    let ctime_ns = i128::from_le_bytes(bytes[25..41].try_into().ok()?);
    Some((
        Signature {
            len,
            mtime_ns,
            ctime_ns,
        },
        &bytes[SIGNATURE_BYTES..],
    ))
}

impl WorkspaceRow {
    /// `version, len u64, mtime i128, ctime i128, kind u8, fingerprint` (little endian).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNATURE_BYTES + 1 + 24);
        put_signature(&mut out, &self.signature);
        match &self.known {
            Known::Corrupt => out.push(0),
            Known::NotTerminal { pid } => {
                out.push(1);
                out.extend_from_slice(&pid.to_le_bytes());
            }
            Known::Terminal {
                fingerprint,
                synced,
            } => {
                out.push(if *synced { 3 } else { 2 });
                out.extend_from_slice(fingerprint.as_bytes());
            }
        }
        out
    }

    /// The row, or `None` for anything this version did not write.
    pub(crate) fn decode(bytes: &[u8]) -> Option<WorkspaceRow> {
        let (signature, rest) = take_signature(bytes)?;
        let (&kind, fingerprint) = rest.split_first()?;
        let known = match kind {
            0 if !fingerprint.is_empty() => return None,
            0 => Known::Corrupt,
            1 => Known::NotTerminal {
                pid: i64::from_le_bytes(fingerprint.try_into().ok()?),
            },
            2 | 3 => Known::Terminal {
                fingerprint: std::str::from_utf8(fingerprint)
                    .ok()
                    .filter(|f| !f.is_empty())?
                    .to_string(),
                synced: kind == 3,
            },
            _ => return None,
        };
        Some(WorkspaceRow { signature, known })
    }
}

impl DirRow {
    /// `version, len u64, mtime i128, ctime i128, count u32, (len u32, name)*`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let names: usize = self.children.iter().map(|c| c.len() + 4).sum();
        let mut out = Vec::with_capacity(SIGNATURE_BYTES + 4 + names);
        put_signature(&mut out, &self.signature);
        out.extend_from_slice(&(self.children.len() as u32).to_le_bytes());
        for child in &self.children {
            out.extend_from_slice(&(child.len() as u32).to_le_bytes());
            out.extend_from_slice(child.as_bytes());
        }
        out
    }

    /// The row, or `None` for anything this version did not write.
    pub(crate) fn decode(bytes: &[u8]) -> Option<DirRow> {
        let (signature, mut rest) = take_signature(bytes)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            rest = tail;
            Some(head)
        };
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut children = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let name = take(len)?;
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                return None;
            }
            children.push(OsString::from_vec(name.to_vec()));
        }
        if !rest.is_empty() || !children.windows(2).all(|w| w[0] < w[1]) {
            return None;
        }
        Some(DirRow {
            signature,
            children,
        })
    }
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
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Which::Dirs => SCAN_DIRS,
            Which::Workspaces => SCAN_WORKSPACES,
        }
    }
}

/// A read-only table of the cache.
type CacheTable = ReadOnlyTable<&'static str, &'static [u8]>;
/// One row as a range scan yields it.
type RawRow = (
    AccessGuard<'static, &'static str>,
    AccessGuard<'static, &'static [u8]>,
);

/// The cache as one worker reads it: a consistent snapshot for its whole walk.
pub(crate) struct Snapshot {
    /// `scan_dirs`.
    dirs: CacheTable,
    /// `scan_workspaces`.
    workspaces: CacheTable,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) struct Seek<R> {
    /// A row was stored under the key (decodable or not).
    pub existed: bool,
    /// The row, when it decodes.
    pub row: Option<R>,
}

impl<R> Seek<R> {
    /// Nothing stored under the key.
    pub(crate) fn miss() -> Self {
        Seek {
            existed: false,
            row: None,
        }
    }
}

impl Snapshot {
    /// A snapshot of the cache in `store`; `None` (the walk then reads everything)
    /// when it cannot be read.
    pub(crate) fn open(store: &Store) -> Option<Snapshot> {
        store
            .read("read the rescan cache", |txn| {
                Ok(Snapshot {
                    dirs: txn.open_table(SCAN_DIRS)?,
                    workspaces: txn.open_table(SCAN_WORKSPACES)?,
                })
            })
            .map_err(|e| log::debug!("walking without the rescan cache: {e}"))
            .ok()
    }

    /// The root's row.
    pub(crate) fn root(&self) -> Seek<DirRow> {
        match self.dirs.get("") {
            Ok(Some(bytes)) => Seek {
                existed: true,
                row: DirRow::decode(bytes.value()),
            },
            Ok(None) => Seek::miss(),
            Err(e) => {
                log::debug!("rescan cache: {e}");
                Seek::miss()
            }
        }
    }

    /// Cursors over the rows below the top-level entry `top`.
    pub(crate) fn part(&self, top: &str) -> (Cursor<DirRow>, Cursor<WorkspaceRow>) {
        (
            Cursor::new(&self.dirs, Which::Dirs, top, DirRow::decode),
            Cursor::new(
                &self.workspaces,
                Which::Workspaces,
                top,
                WorkspaceRow::decode,
            ),
        )
    }
}

/// The rows below one top-level entry, read in key order in step with the walk (see
/// the module docs): a lookup skips, and deletes, every row before its key.
pub(crate) struct Cursor<R> {
    /// Which table the rows come from (for deletes).
    which: Which,
    /// The range scan; `None` once it ended or failed.
    rows: Option<Range<'static, &'static str, &'static [u8]>>,
    /// The next row, not yet looked up.
    current: Option<RawRow>,
    /// Decodes a value.
    decode: fn(&[u8]) -> Option<R>,
}

impl<R> Cursor<R> {
    fn new(table: &CacheTable, which: Which, top: &str, decode: fn(&[u8]) -> Option<R>) -> Self {
        // Every key of the part is `top` or starts with `top\0`; `top\x01` is past them
        // all and before any other top-level entry.
        let end = format!("{top}\u{1}");
        let rows = match table.range::<&str>(top..end.as_str()) {
            Ok(rows) => Some(rows),
            Err(e) => {
                log::debug!("rescan cache: {e}");
                None
            }
        };
        let mut cursor = Cursor {
            which,
            rows,
            current: None,
            decode,
        };
        cursor.advance();
        cursor
    }

    fn advance(&mut self) {
        self.current = match self.rows.as_mut().and_then(Iterator::next) {
            Some(Ok(row)) => Some(row),
            Some(Err(e)) => {
                log::debug!("rescan cache: {e}");
                self.rows = None;
                None
            }
            None => {
                self.rows = None;
                None
            }
        };
    }

    /// True when no row is left: a part never cached before.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.current.is_none()
    }

    /// The row stored under `key`, which must be greater than every key looked up
    /// before; rows passed on the way are deleted through `writes`.
    pub(crate) fn seek(&mut self, key: &str, writes: &mut Writes) -> Seek<R> {
        loop {
            let order = match &self.current {
                None => return Seek::miss(),
                Some((k, _)) => k.value().cmp(key),
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some((k, _)) = &self.current {
                        writes.delete(self.which, k.value().to_string());
                    }
                    self.advance();
                }
                std::cmp::Ordering::Equal => {
                    let row = self
                        .current
                        .as_ref()
                        .and_then(|(_, v)| (self.decode)(v.value()));
                    self.advance();
                    return Seek { existed: true, row };
                }
                std::cmp::Ordering::Greater => return Seek::miss(),
            }
        }
    }

    /// Deletes every row not looked up: what the walk did not find any more.
    pub(crate) fn finish(&mut self, writes: &mut Writes) {
        while let Some((k, _)) = &self.current {
            writes.delete(self.which, k.value().to_string());
            self.advance();
        }
    }
}

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
    use super::*;
    use crate::scanner::walk::testing::FakePeers;
    use crate::scanner::walk::{Resolver, WalkOptions};
    use redb::ReadableTableMetadata;
    use std::fs::File;
    use std::path::{Path, PathBuf};

    const DONE: &str = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;
    const FP: &str = "2026-01-01T00:00:00Z#1";

    fn signature(n: i128) -> Signature {
        Signature {
            len: 380,
            mtime_ns: n,
            ctime_ns: n + 1,
        }
    }

    fn write(root: &Path, name: &str, body: &str) -> PathBuf {
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

    fn age_tree(root: &Path) {
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

    fn rows(store: &Store, which: Which) -> u64 {
        store
            .read("count", |txn| Ok(txn.open_table(which.table())?.len()?))
            .unwrap()
    }

    struct Fixture {
        root: tempfile::TempDir,
        _state: tempfile::TempDir,
        store: Store,
        peers: FakePeers,
        options: WalkOptions,
    }

    impl Fixture {
        fn new() -> Self {
            let state = tempfile::tempdir().unwrap();
            Fixture {
                root: tempfile::tempdir().unwrap(),
                store: Store::open(state.path()).unwrap(),
                _state: state,
                peers: FakePeers::default(),
                options: WalkOptions::default(),
            }
        }

        fn root(&self) -> &Path {
            self.root.path()
        }

        fn scan(&mut self) -> crate::scanner::walk::ScanTotals {
            let root = self.root.path().to_path_buf();
            self.peers.scan(&root, Some(&self.store), self.options)
        }

        /// Scans, and returns the ids delivered by that scan.
        fn found(&mut self) -> Vec<String> {
            let before = self.peers.deliveries.len();
            self.scan();
            self.peers.deliveries[before..]
                .iter()
                .flatten()
                .map(|d| d.id.clone())
                .collect()
        }
    }

    #[test]
    fn rows_round_trip_and_anything_else_is_ignored() {
        for known in [
            Known::Corrupt,
            Known::NotTerminal { pid: 0 },
            Known::NotTerminal { pid: 4242 },
            Known::Terminal {
                fingerprint: "2026-01-01T00:00:00Z#1".into(),
                synced: false,
            },
            Known::Terminal {
                fingerprint: "2026-01-01T00:00:00Z#2".into(),
                synced: true,
            },
        ] {
            let row = WorkspaceRow {
                signature: signature(-5),
                known,
            };
            let bytes = row.encode();
            assert_eq!(WorkspaceRow::decode(&bytes), Some(row));
            for cut in 0..bytes.len().min(SIGNATURE_BYTES + 1) {
                assert_eq!(WorkspaceRow::decode(&bytes[..cut]), None, "cut at {cut}");
            }
        }
        let dir = DirRow {
            signature: signature(7),
            children: vec!["a".into(), "a-b".into(), OsString::from_vec(vec![0xff])],
        };
        let bytes = dir.encode();
        assert_eq!(DirRow::decode(&bytes), Some(dir));
        for cut in 0..bytes.len() {
            assert_eq!(DirRow::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut newer = bytes.clone();
        newer[0] = ROW_VERSION + 1;
        assert_eq!(DirRow::decode(&newer), None);
        assert_eq!(
            WorkspaceRow::decode(b"garbage that is long enough to pass the length"),
            None
        );
        assert_eq!(WorkspaceRow::decode(&[]), None);
    }

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
        impl crate::scanner::walk::Visitor for Names<'_> {
            fn children(
                &mut self,
                walk: crate::scanner::walk::Walk<'_>,
                prefix: &str,
                dir: &crate::scanner::walk::sys::Dir,
            ) -> Option<Vec<OsString>> {
                crate::scanner::walk::list_children(walk, prefix, dir)
            }
            fn workspace(
                &mut self,
                ws: &crate::scanner::walk::Workspace<'_>,
            ) -> std::ops::ControlFlow<()> {
                self.0.push(ws.name.to_string());
                std::ops::ControlFlow::Continue(())
            }
        }
        crate::scanner::walk::visit_tree(
            crate::scanner::walk::Walk {
                root: f.root(),
                resolver: Resolver::Native,
                status_lookup: crate::scanner::walk::StatusLookup::Stat,
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
        let failed = crate::scanner::walk::scan(&root, Some(&f.store), &f.options, &mut f.peers);
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
