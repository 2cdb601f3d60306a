//! The walk rules (design.md §4.1): which directories are workspaces, how deep the walk
//! goes, and what it never does.
//!
//! - A directory is a workspace when it holds a regular `status.json` and it is at
//!   depth 1 or 3, or it has both `repo/` and `.meta/` (branch-named tasks nest).
//! - The walk does not descend into a workspace, nor into a workspace-shaped directory
//!   (`repo/` and `.meta/`) that has no `status.json` yet (its clone is being made).
//! - It never follows a symlink: only entries listed as real directories are walked,
//!   each opened relative to its parent with `O_NOFOLLOW`; files are opened with no
//!   symlink in any component (see [`super::sys`]).
//! - A name that is not UTF-8 cannot be a dispatch id: skipped with a warning.
//! - Nothing deeper than [`MAX_DEPTH`] is looked at.
//! - Children are visited in bytewise order of their names, depth first: the walk
//!   order, which is the queue's order and the rescan cache's key order.
//!
//! This module walks one subtree sequentially; [`super::parallel`] runs it on the
//! root's entries in parallel, where each job ([`super::job`]) answers listings from
//! the rescan cache through the [`Visitor`].

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::sys::{Dir, FileStat, Resolver};

/// Deepest directory looked at (branch-named tasks nest a few levels).
pub(crate) const MAX_DEPTH: usize = 8;

/// The file whose presence makes a workspace.
pub(crate) const STATUS_FILE: &str = "status.json";

/// How one walk looks at `status.json`: a cold walk reads almost every one, so it
/// opens it and `fstat`s the descriptor (no second lookup); a rescan usually only
/// compares, so a plain `lstat` is cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusLookup {
    /// Open, then `fstat` the descriptor.
    Open,
    /// `lstat` only.
    Stat,
}

/// What every step of one walk needs to know.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Walk<'a> {
    /// The workspace root as configured (for messages; lookups go through descriptors).
    pub root: &'a Path,
    /// How multi-component paths are opened.
    pub resolver: Resolver,
    /// How `status.json` is looked at.
    pub status_lookup: StatusLookup,
}

/// One workspace as the walk hands it to a [`Visitor`].
pub(crate) struct Workspace<'a> {
    /// Its name relative to the root, `/`-separated: the dispatch id.
    pub name: &'a str,
    /// The stat of its `status.json` (a regular file).
    pub status: FileStat,
    /// `status.json` already open when the walk opened it to look, taken by the first read;
    /// its stat is then `status` (an `fstat` of this very descriptor).
    status_file: Cell<Option<File>>,
    /// The directory it was listed in.
    parent: &'a Dir,
    /// Its entry name in `parent`.
    entry: &'a OsStr,
    /// The walk it belongs to.
    walk: Walk<'a>,
}

impl Workspace<'_> {
    /// Its directory, for messages and rewrites.
    pub(crate) fn path(&self) -> PathBuf {
        self.walk.root.join(self.name)
    }

    /// Opens `status.json`; the stat is known when the descriptor the walk opened is handed
    /// over (it was `fstat`ed), else the caller `fstat`s.
    pub(crate) fn open_status(&self) -> (io::Result<File>, Option<FileStat>) {
        match self.status_file.take() {
            Some(file) => (Ok(file), Some(self.status)),
            None => (self.open(STATUS_FILE), None),
        }
    }

    /// Whether `rest` (`.meta/report.json`) may be there: `false` only when a stat
    /// below the workspace finds nothing. A hint that spares the record builder an
    /// open on the scan's thread; the open itself applies every rule.
    pub(crate) fn may_have(&self, rest: &str) -> bool {
        !matches!(
            self.parent.stat_at(&join_bytes(self.entry, rest)),
            Err(e) if e.kind() == io::ErrorKind::NotFound
        )
    }

    /// Opens `rest` (`status.json`, `.meta/report.json`) below the workspace with no
    /// symlink in any component: a `.meta` linked out of the root is never read through.
    pub(crate) fn open(&self, rest: &str) -> io::Result<File> {
        self.parent
            .open_beneath(&join_bytes(self.entry, rest), self.walk.resolver)
    }
}

/// What a walk calls back into: where listings come from, and what a workspace does.
pub(crate) trait Visitor {
    /// The child directories of `dir`, whose name relative to the root is `prefix`
    /// (`""` for the root); `None` to skip it. [`list_children`] reads them from disk.
    fn children(&mut self, walk: Walk<'_>, prefix: &str, dir: &Dir) -> Option<Vec<OsString>>;

    /// One workspace, in walk order. `Break` ends the walk.
    fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()>;
}

/// Lists `dir` from disk (directories only, sorted), warning when it cannot be read.
pub(crate) fn list_children(walk: Walk<'_>, prefix: &str, dir: &Dir) -> Option<Vec<OsString>> {
    match dir.list_dirs() {
        Ok(children) => Some(children),
        Err(e) => {
            log::warn!(
                "cannot read {}: {e}; skipped",
                walk.root.join(prefix).display()
            );
            None
        }
    }
}

/// Walks the whole tree below `root` sequentially (ghost reap and tests; scans use
/// [`super::parallel`]).
pub(crate) fn visit_tree(walk: Walk<'_>, visitor: &mut dyn Visitor) {
    let Some(root) = open_root(walk.root) else {
        return;
    };
    let _ = visit_dir(walk, &root, "", 0, visitor);
}

/// Opens the root; a missing root is an empty tree, without a warning.
pub(crate) fn open_root(root: &Path) -> Option<Dir> {
    match Dir::open_root(root) {
        Ok(dir) => Some(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            log::warn!("cannot read {}: {e}; skipped", root.display());
            None
        }
    }
}

/// Visits the children of `dir` (named `prefix`, at `depth`).
fn visit_dir(
    walk: Walk<'_>,
    dir: &Dir,
    prefix: &str,
    depth: usize,
    visitor: &mut dyn Visitor,
) -> ControlFlow<()> {
    let Some(children) = visitor.children(walk, prefix, dir) else {
        return ControlFlow::Continue(());
    };
    for child in &children {
        visit_child(walk, dir, child, prefix, depth + 1, visitor)?;
    }
    ControlFlow::Continue(())
}

/// Classifies one listed entry of `parent`: visits it as a workspace, or walks into it.
pub(crate) fn visit_child(
    walk: Walk<'_>,
    parent: &Dir,
    entry: &OsStr,
    prefix: &str,
    depth: usize,
    visitor: &mut dyn Visitor,
) -> ControlFlow<()> {
    let Some(entry_name) = entry.to_str() else {
        log::warn!(
            "{} has a name that is not UTF-8; skipped",
            walk.root.join(prefix).join(entry).display()
        );
        return ControlFlow::Continue(());
    };
    let status_path = join_bytes(entry, STATUS_FILE);
    let (status, status_file) = match walk.status_lookup {
        StatusLookup::Stat => (parent.stat_at(&status_path).ok(), None),
        StatusLookup::Open => match parent.open_beneath(&status_path, walk.resolver) {
            Ok(file) => match file.metadata() {
                Ok(meta) => (Some(FileStat::of_metadata(&meta)), Some(file)),
                Err(_) => (parent.stat_at(&status_path).ok(), None),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
            // There but not openable (permissions, a symlink): a stat decides whether
            // it is a workspace, whose read then fails with a warning instead of
            // vanishing silently.
            Err(_) => (parent.stat_at(&status_path).ok(), None),
        },
    };
    let status = status.filter(FileStat::is_file);
    let is_dir = |name: &str| {
        parent
            .stat_at(&join_bytes(entry, name))
            .is_ok_and(|s| s.is_dir())
    };
    // Depth 1 and 3 need no more stats; elsewhere the shape decides.
    let accepted = status.is_some() && (depth == 1 || depth == 3);
    let shaped = !accepted && is_dir("repo") && is_dir(".meta");
    let name = if prefix.is_empty() {
        entry_name.to_string()
    } else {
        format!("{prefix}/{entry_name}")
    };
    if let Some(status) = status.filter(|_| accepted || shaped) {
        return visitor.workspace(&Workspace {
            name: &name,
            status,
            status_file: Cell::new(status_file.filter(|_| status.is_file())),
            parent,
            entry,
            walk,
        });
    }
    if shaped || depth >= MAX_DEPTH {
        // A workspace-shaped directory without status.json is still being set up:
        // never walk into its clone.
        return ControlFlow::Continue(());
    }
    match parent.open_dir(entry) {
        Ok(dir) => visit_dir(walk, &dir, &name, depth, visitor),
        Err(e) => {
            log::warn!(
                "cannot open {}: {e}; skipped",
                walk.root.join(&name).display()
            );
            ControlFlow::Continue(())
        }
    }
}

/// `entry/rest` as bytes.
pub(crate) fn join_bytes(entry: &OsStr, rest: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entry.len() + rest.len() + 1);
    bytes.extend_from_slice(entry.as_bytes());
    bytes.push(b'/');
    bytes.extend_from_slice(rest.as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::walk::{scan_tree_with, TreeScan};

    const DONE: &str = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;
    const BOTH: [Resolver; 2] = [Resolver::Native, Resolver::Portable];

    fn workspace(root: &Path, name: &str, status: &str, shaped: bool) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if shaped {
            std::fs::create_dir_all(dir.join("repo")).unwrap();
            std::fs::create_dir_all(dir.join(".meta")).unwrap();
        }
        std::fs::write(dir.join(STATUS_FILE), status).unwrap();
        dir
    }

    fn ids(scan: &TreeScan) -> Vec<&str> {
        scan.terminal.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn walk_accepts_depth_one_three_and_shaped_workspaces_only() {
        let root = tempfile::tempdir().unwrap();
        workspace(root.path(), "flat", DONE, false);
        workspace(root.path(), "core/go-io/task-5", DONE, false);
        workspace(root.path(), "core/go-io/feature/x", DONE, true);
        workspace(root.path(), "core/too-shallow", DONE, false);
        workspace(
            root.path(),
            "core/go-io/running",
            r#"{"status":"running"}"#,
            false,
        );
        // Inside a workspace: never walked into.
        workspace(root.path(), "core/go-io/task-5/nested/x", DONE, true);
        // Shaped but without status.json yet: its clone is never walked.
        std::fs::create_dir_all(root.path().join("core/go-io/setup/repo/a/b")).unwrap();
        std::fs::create_dir_all(root.path().join("core/go-io/setup/.meta")).unwrap();
        workspace(root.path(), "core/go-io/setup/repo/a/b", DONE, false);
        for resolver in BOTH {
            let scan = scan_tree_with(root.path(), resolver);
            assert_eq!(
                ids(&scan),
                ["core/go-io/feature/x", "core/go-io/task-5", "flat"],
                "{resolver:?}"
            );
            assert_eq!(scan.workspaces, 4);
            assert_eq!(scan.terminal[1].fingerprint, "2026-01-01T00:00:00Z#1");
        }
    }

    #[test]
    fn corrupt_status_is_skipped_and_the_scan_goes_on() {
        let root = tempfile::tempdir().unwrap();
        workspace(root.path(), "a/b/bad", "{not json", false);
        workspace(root.path(), "a/b/good", r#"{"status":"failed"}"#, false);
        for resolver in BOTH {
            let scan = scan_tree_with(root.path(), resolver);
            assert_eq!(scan.skipped, 1);
            assert_eq!(ids(&scan), ["a/b/good"]);
        }
    }

    #[test]
    fn symlinks_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        workspace(outside.path(), "x/y/z", DONE, false);
        workspace(outside.path(), "ws", DONE, true);
        std::os::unix::fs::symlink(outside.path().join("x"), root.path().join("x")).unwrap();
        std::os::unix::fs::symlink(root.path(), root.path().join("loop")).unwrap();
        let linked = workspace(root.path(), "o/r/linked-meta", DONE, false);
        std::os::unix::fs::symlink(outside.path().join("ws/.meta"), linked.join(".meta")).unwrap();
        std::fs::write(outside.path().join("ws/.meta/report.json"), r#"{"leak":1}"#).unwrap();
        std::fs::create_dir_all(root.path().join("o/r/link-status")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("ws/status.json"),
            root.path().join("o/r/link-status/status.json"),
        )
        .unwrap();
        for resolver in BOTH {
            let scan = scan_tree_with(root.path(), resolver);
            assert_eq!(ids(&scan), ["o/r/linked-meta"], "{resolver:?}");
            assert!(!scan.terminal[0].record.to_object().contains_key("report"));
        }
    }

    #[test]
    fn a_fifo_or_a_directory_named_status_json_is_skipped_without_hanging() {
        let root = tempfile::tempdir().unwrap();
        let fifo_dir = root.path().join("o/r/fifo");
        std::fs::create_dir_all(&fifo_dir).unwrap();
        crate::scanner::walk::sys::mkfifo(&fifo_dir.join(STATUS_FILE)).unwrap();
        let report_fifo = workspace(root.path(), "o/r/fifo-report", DONE, true);
        crate::scanner::walk::sys::mkfifo(&report_fifo.join(".meta/report.json")).unwrap();
        std::fs::create_dir_all(root.path().join("o/r/dir/status.json")).unwrap();
        workspace(root.path(), "o/r/ok", DONE, false);
        for resolver in BOTH {
            let scan = scan_tree_with(root.path(), resolver);
            assert_eq!(ids(&scan), ["o/r/fifo-report", "o/r/ok"], "{resolver:?}");
            assert!(!scan.terminal[0].record.to_object().contains_key("report"));
        }
    }

    #[test]
    fn the_walk_order_is_bytewise_by_component_not_by_path_string() {
        let root = tempfile::tempdir().unwrap();
        // As strings "a-b/..." < "a/...", by component "a" < "a-b": the walk (and the
        // cache's keys) go by component.
        workspace(root.path(), "a-b/r/t", DONE, false);
        workspace(root.path(), "a/r/t", DONE, false);
        workspace(root.path(), "a/r-x/t", DONE, false);
        for resolver in BOTH {
            let scan = scan_tree_with(root.path(), resolver);
            assert_eq!(ids(&scan), ["a/r/t", "a/r-x/t", "a-b/r/t"], "{resolver:?}");
        }
    }
}
