//! The workspace walk behind the Scanner, with a cache that makes a rescan cheap.
//!
//! Walk rules (DESIGN 4.1): a directory is a workspace when it holds a regular
//! `status.json` and it is at depth 1 or 3, or it has both `repo/` and `.meta/`. The
//! walk does not descend into a workspace, never follows a symlink, and reads
//! `status.json` (1 MiB) and `.meta/report.json` (8 MiB) only below a size cap.
//! Anything unreadable or corrupt is skipped with a `warn!` and the walk goes on (R4).
//!
//! # The rescan cache
//!
//! A fleet host has tens of thousands of finished workspaces that never change. The
//! [`WalkCache`] remembers, per directory, its mtime and child directories, and per
//! workspace the size and mtime of its `status.json` and what it held (not terminal,
//! corrupt, or terminal with a fingerprint the Ledger already has). On a rescan:
//!
//! - a directory whose mtime is unchanged is not listed again (creating, removing or
//!   renaming an entry changes a directory's mtime);
//! - a `status.json` whose size and mtime are unchanged is not read again; a dispatch
//!   the Ledger reported as synced is not even looked up again (the Ledger only grows,
//!   and a new fingerprint means a new `status.json`);
//! - **racy entries are never trusted**: anything whose mtime is within
//!   [`RACY_WINDOW`] of the scan that cached it may have changed again in the same
//!   clock tick, so it is read again next time (git's "racily clean" rule).
//!
//! Report files are only read for dispatches that are about to be queued, so an
//! unchanged, synced workspace costs two `stat` calls per rescan.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::model::{attach_report, ScannedDispatch, WorkspaceStatus};

/// Largest `status.json` read.
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Largest `.meta/report.json` read.
pub const MAX_REPORT_BYTES: u64 = 8 * 1024 * 1024;
/// Deepest directory looked at (branch-named tasks nest a few levels).
const MAX_DEPTH: usize = 8;
/// An mtime this close to the caching scan's start is not trusted (coarse clocks).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What a walk found, before the Ledger filters it.
#[derive(Debug, Default)]
pub struct TreeScan {
    /// Terminal dispatches not known to be synced, in walk order.
    pub terminal: Vec<ScannedDispatch>,
    /// Workspaces found.
    pub workspaces: usize,
    /// Workspaces skipped with a warning.
    pub skipped: usize,
}

/// Size and modification time: the cheap identity of a file or directory version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Signature {
    len: u64,
    mtime: SystemTime,
}

impl Signature {
    fn of(meta: &Metadata) -> Option<Signature> {
        Some(Signature {
            len: meta.len(),
            mtime: meta.modified().ok()?,
        })
    }

    /// Safe to trust on a later scan: old enough that no same-tick rewrite can hide.
    fn settled_before(&self, scan_started: SystemTime) -> bool {
        self.mtime + RACY_WINDOW < scan_started
    }
}

/// What an unchanged `status.json` held last time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    /// Not JSON, or unreadable: skipped (and counted) without a new warning.
    Corrupt,
    /// Not a terminal status: nothing to push.
    NotTerminal,
    /// Terminal; `synced` once the Ledger has this fingerprint.
    Terminal { fingerprint: String, synced: bool },
}

/// The cached view of one directory.
#[derive(Debug)]
struct DirState {
    /// The directory's own signature when listed.
    signature: Signature,
    /// Its child directories, sorted.
    children: Vec<PathBuf>,
}

/// The cached view of one workspace's `status.json`.
#[derive(Debug)]
struct WorkspaceState {
    signature: Signature,
    known: Known,
}

/// Remembers the last walk (see the module docs). Owned by the Scanner.
#[derive(Debug, Default)]
pub struct WalkCache {
    /// Listed directories by path.
    dirs: HashMap<PathBuf, DirState>,
    /// Workspaces by name (= dispatch id).
    workspaces: HashMap<String, WorkspaceState>,
}

impl WalkCache {
    /// Records that the Ledger has these dispatches at these fingerprints.
    pub fn mark_synced<'a>(&mut self, synced: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (id, fingerprint) in synced {
            if let Some(state) = self.workspaces.get_mut(id) {
                if let Known::Terminal {
                    fingerprint: known,
                    synced,
                } = &mut state.known
                {
                    if known == fingerprint {
                        *synced = true;
                    }
                }
            }
        }
    }
}

/// Walks `root` without a cache.
pub fn scan_tree(root: &Path) -> TreeScan {
    scan_tree_cached(root, &mut WalkCache::default())
}

/// Walks `root`, reusing and refreshing `cache`.
pub fn scan_tree_cached(root: &Path, cache: &mut WalkCache) -> TreeScan {
    let started = SystemTime::now();
    let mut scan = TreeScan::default();
    let mut seen = HashMap::with_capacity(cache.workspaces.len());
    let mut dirs = HashMap::with_capacity(cache.dirs.len());
    visit_workspaces(
        root,
        &mut |dir, name, status_meta| {
            scan.workspaces += 1;
            let previous = cache.workspaces.remove(name);
            if let Some(state) =
                visit_workspace(dir, name, status_meta, previous, started, &mut scan)
            {
                seen.insert(name.to_string(), state);
            }
        },
        &mut |path, list| cache_listing(&mut cache.dirs, &mut dirs, path, list, started),
    );
    // Whatever was not seen this time is gone from disk: forget it.
    cache.workspaces = seen;
    cache.dirs = dirs;
    scan
}

/// Decides what one workspace contributes; returns what to remember about it.
fn visit_workspace(
    dir: &Path,
    name: &str,
    status_meta: &Metadata,
    previous: Option<WorkspaceState>,
    started: SystemTime,
    scan: &mut TreeScan,
) -> Option<WorkspaceState> {
    let signature = Signature::of(status_meta)?;
    if let Some(previous) =
        previous.filter(|p| p.signature == signature && signature.settled_before(started))
    {
        match &previous.known {
            Known::Corrupt => scan.skipped += 1,
            Known::NotTerminal | Known::Terminal { synced: true, .. } => {}
            Known::Terminal { synced: false, .. } => {
                // Still unsynced (or queued): rebuild the record, which needs the report.
                if let Some((status, _)) = read_status(dir) {
                    scan.terminal.push(dispatch_of(dir, name, &status));
                }
            }
        }
        return Some(previous);
    }
    let known = match read_status(dir) {
        None => {
            scan.skipped += 1;
            Known::Corrupt
        }
        Some((status, _)) if status.is_terminal() => {
            let dispatch = dispatch_of(dir, name, &status);
            let fingerprint = dispatch.fingerprint.clone();
            scan.terminal.push(dispatch);
            Known::Terminal {
                fingerprint,
                synced: false,
            }
        }
        Some(_) => Known::NotTerminal,
    };
    Some(WorkspaceState { signature, known })
}

fn dispatch_of(dir: &Path, name: &str, status: &WorkspaceStatus) -> ScannedDispatch {
    let mut record = status.to_dispatch(name);
    if let Some(report) = read_report(dir) {
        attach_report(&mut record, report);
    }
    ScannedDispatch {
        id: name.to_string(),
        fingerprint: status.fingerprint(),
        record,
    }
}

/// The child directories of `path`: from the cache when `path` is unchanged, else
/// listed (and cached when settled).
fn cache_listing(
    old: &mut HashMap<PathBuf, DirState>,
    new: &mut HashMap<PathBuf, DirState>,
    path: &Path,
    list: &mut dyn FnMut() -> Option<Vec<PathBuf>>,
    started: SystemTime,
) -> Option<Vec<PathBuf>> {
    let signature = std::fs::symlink_metadata(path)
        .ok()
        .as_ref()
        .and_then(Signature::of);
    let cached = old.remove(path).filter(|d| Some(d.signature) == signature);
    let children = match cached {
        Some(state) => state.children,
        None => list()?,
    };
    if let Some(signature) = signature.filter(|s| s.settled_before(started)) {
        new.insert(
            path.to_path_buf(),
            DirState {
                signature,
                children: children.clone(),
            },
        );
    }
    Some(children)
}

/// A workspace visitor: its directory, its name, the metadata of its `status.json`.
pub(crate) type Visit<'a> = dyn FnMut(&Path, &str, &Metadata) + 'a;
/// Returns a directory's children; the closure it is given lists them from disk.
pub(crate) type Listing<'a> =
    dyn FnMut(&Path, &mut dyn FnMut() -> Option<Vec<PathBuf>>) -> Option<Vec<PathBuf>> + 'a;

/// Calls `visit` for every workspace under `root`, in lexical order, listing
/// directories through `listing` (which may answer from a cache).
pub(crate) fn visit_workspaces(root: &Path, visit: &mut Visit<'_>, listing: &mut Listing<'_>) {
    visit_dir(root, root, 0, visit, listing);
}

/// Lists `dir` from disk: child directories only, sorted, symlinks excluded.
pub(crate) fn list_dirs(dir: &Path, depth: usize) -> Option<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            if depth > 0 || e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot read {}: {e}; skipped", dir.display());
            }
            return None;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        // `file_type` does not follow symlinks: a link is never walked.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort_unstable();
    Some(children)
}

fn visit_dir(
    root: &Path,
    dir: &Path,
    depth: usize,
    visit: &mut Visit<'_>,
    listing: &mut Listing<'_>,
) {
    let Some(children) = listing(dir, &mut || list_dirs(dir, depth)) else {
        return;
    };
    for child in children {
        let child_depth = depth + 1;
        let is_dir =
            |name: &str| std::fs::symlink_metadata(child.join(name)).is_ok_and(|m| m.is_dir());
        let status_meta = std::fs::symlink_metadata(child.join("status.json"))
            .ok()
            .filter(Metadata::is_file);
        // Depth 1 and 3 need no more stats; elsewhere the shape decides.
        let accepted = status_meta.is_some() && (child_depth == 1 || child_depth == 3);
        let shaped = !accepted && is_dir("repo") && is_dir(".meta");
        if let Some(meta) = status_meta.filter(|_| accepted || shaped) {
            match workspace_name(root, &child) {
                Some(name) => visit(&child, &name, &meta),
                None => log::warn!(
                    "workspace {} has a name that is not UTF-8; skipped",
                    child.display()
                ),
            }
        } else if !shaped && child_depth < MAX_DEPTH {
            // A workspace-shaped directory without status.json is still being set up:
            // never walk into its clone.
            visit_dir(root, &child, child_depth, visit, listing);
        }
    }
}

fn workspace_name(root: &Path, dir: &Path) -> Option<String> {
    let relative = dir.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = relative
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    Some(parts?.join("/"))
}

/// Reads a regular file of at most `cap` bytes; `None` (with a warning) otherwise.
fn read_capped(path: &Path, cap: u64, what: &str) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > cap {
        log::warn!(
            "{what} {} is {} bytes, over the {cap}-byte cap; skipped",
            path.display(),
            meta.len()
        );
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` guards against a file that grew since the size check.
    match File::open(path).and_then(|f| f.take(cap + 1).read_to_end(&mut bytes)) {
        Ok(n) if n as u64 > cap => {
            log::warn!(
                "{what} {} grew over the {cap}-byte cap; skipped",
                path.display()
            );
            None
        }
        Ok(_) => Some(bytes),
        Err(e) => {
            log::warn!("cannot read {what} {}: {e}; skipped", path.display());
            None
        }
    }
}

/// Parses `<dir>/status.json`; also returns the raw object (ghost reap rewrites it).
pub(crate) fn read_status(dir: &Path) -> Option<(WorkspaceStatus, Map<String, Value>)> {
    let path = dir.join("status.json");
    let bytes = read_capped(&path, MAX_STATUS_BYTES, "status file")?;
    match serde_json::from_slice::<Map<String, Value>>(&bytes) {
        Ok(object) => Some((WorkspaceStatus::from_object(&object), object)),
        Err(e) => {
            log::warn!("corrupt status file {}: {e}; skipped", path.display());
            None
        }
    }
}

fn read_report(dir: &Path) -> Option<Map<String, Value>> {
    let path = dir.join(".meta").join("report.json");
    let bytes = read_capped(&path, MAX_REPORT_BYTES, "report file")?;
    match serde_json::from_slice::<Map<String, Value>>(&bytes) {
        Ok(report) => Some(report),
        Err(e) => {
            log::warn!(
                "corrupt report file {}: {e}; dispatch pushed without it",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DONE: &str = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;

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
        for entry in walk_all(root) {
            age(&entry);
        }
        age(root);
    }

    fn walk_all(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk_all(&path));
            }
            out.push(path);
        }
        out
    }

    fn ids(scan: &TreeScan) -> Vec<&str> {
        scan.terminal.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn settled_unchanged_status_is_not_read_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/a"]);
        cache.mark_synced([("o/r/a", "2026-01-01T00:00:00Z#1")]);
        // Same size, same mtime, different bytes: only a cache hit can miss this.
        let status = dir.join("status.json");
        let mtime = std::fs::metadata(&status).unwrap().modified().unwrap();
        std::fs::write(&status, "x".repeat(DONE.len())).unwrap();
        File::open(&status).unwrap().set_modified(mtime).unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!(
            (rescan.workspaces, rescan.skipped, rescan.terminal.len()),
            (1, 0, 0)
        );
    }

    #[test]
    fn racy_status_rewritten_in_the_same_tick_is_read_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = write(root.path(), "o/r/a", DONE);
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        cache.mark_synced([("o/r/a", "2026-01-01T00:00:00Z#1")]);
        // Rewritten at once with the same size: its mtime is too fresh to trust.
        std::fs::write(
            dir.join("status.json"),
            DONE.replace("\"runs\":1", "\"runs\":2"),
        )
        .unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!(rescan.terminal.len(), 1);
        assert_eq!(rescan.terminal[0].fingerprint, "2026-01-01T00:00:00Z#2");
    }

    #[test]
    fn changed_status_of_a_synced_dispatch_is_found_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        cache.mark_synced([("o/r/a", "2026-01-01T00:00:00Z#1")]);
        assert!(scan_tree_cached(root.path(), &mut cache)
            .terminal
            .is_empty());
        std::fs::write(
            dir.join("status.json"),
            DONE.replace("\"runs\":1", "\"runs\":3"),
        )
        .unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!(rescan.terminal[0].fingerprint, "2026-01-01T00:00:00Z#3");
    }

    #[test]
    fn unsynced_dispatch_stays_a_candidate_on_every_rescan() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/a"]);
        assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/a"]);
    }

    #[test]
    fn new_and_removed_workspaces_in_cached_directories_are_seen() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        write(root.path(), "o/r/b", DONE);
        assert_eq!(
            ids(&scan_tree_cached(root.path(), &mut cache)),
            ["o/r/a", "o/r/b"]
        );
        std::fs::remove_dir_all(root.path().join("o/r/a")).unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!((ids(&rescan), rescan.workspaces), (vec!["o/r/b"], 1));
        assert!(
            !cache.workspaces.contains_key("o/r/a"),
            "forgotten once gone"
        );
    }
}
