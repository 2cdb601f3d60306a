//! Named workspaces: what a targeted scan and the cheap ghost reap look at instead of
//! the whole tree.
//!
//! - A host (or the watcher) names the workspaces that changed; each name is checked
//!   ([`relative_name`]: below the root, no `..`, no empty or absolute component) and
//!   its directory is reached from the opened root one component at a time, never
//!   through a symlink ([`Dir::open_dir`]), then classified by the walk's own rules
//!   ([`visit_child`]): a name that is not a workspace is ignored, and a named
//!   directory is never descended into.
//! - The rescan cache records every running workspace with its worker's pid (also
//!   while its file is too recent to be trusted, under a signature that never
//!   matches), so the reap lists them ([`running`]) without touching the tree.

use std::ffi::{OsStr, OsString};
use std::ops::ControlFlow;
use std::path::Path;

use super::cache::{self, unsettled, Known, WorkspaceRow, Writes};
use super::candidate::{Candidate, Counts};
use super::read::{read_status, StatusRead};
use super::rules::{visit_child, StatusLookup, Visitor, Walk, Workspace, MAX_DEPTH};
use super::sys::Dir;
use crate::store::schema::SCAN_WORKSPACES;
use crate::store::Store;

/// The workspaces the cache knows to be running, with their workers' pids, in walk
/// order. Empty when the cache cannot be read.
pub(crate) fn running(store: &Store) -> Vec<(String, i64)> {
    let mut rows = not_terminal_rows(store);
    rows.retain(|(_, pid)| *pid > 0);
    rows
}

/// Every workspace the cache knows not to be terminal (pid 0 when not running), in
/// walk order: what the watcher keeps a watch on. Empty when the cache cannot be read.
pub(crate) fn not_terminal_rows(store: &Store) -> Vec<(String, i64)> {
    let read = store.read("list workspaces not terminal", |txn| {
        let table = txn.open_table(SCAN_WORKSPACES)?;
        let mut out = Vec::new();
        for row in redb::ReadableTable::iter(&table)? {
            let (key, value) = row?;
            if let Some(WorkspaceRow {
                known: Known::NotTerminal { pid },
                ..
            }) = WorkspaceRow::decode(value.value())
            {
                out.push((key.value().replace('\0', "/"), pid));
            }
        }
        Ok(out)
    });
    read.unwrap_or_else(|e| {
        log::debug!("rescan cache: {e}");
        Vec::new()
    })
}

/// `given` as a workspace name relative to `root`: a relative name, or an absolute
/// path below `root`; `Err` names why it is refused (outside the root, `..`, empty).
pub fn relative_name(root: &Path, given: &str) -> Result<String, String> {
    let path = Path::new(given);
    let relative = if path.is_absolute() {
        path.strip_prefix(root)
            .map_err(|_| format!("{given}: outside the workspace root"))?
    } else {
        path
    };
    let text = relative
        .to_str()
        .ok_or_else(|| format!("{given}: not UTF-8"))?
        .trim_end_matches('/');
    let parts: Vec<&str> = text.split('/').collect();
    if text.is_empty() || parts.len() > MAX_DEPTH {
        return Err(format!("{given}: not a workspace below the root"));
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!("{given}: outside the workspace root"));
    }
    Ok(parts.join("/"))
}

/// Visits the workspace `name` (checked by [`relative_name`]) below `root` by the
/// walk's rules, reaching it without following any symlink. A missing or unopenable
/// directory is nothing.
pub(crate) fn visit_named(walk: Walk<'_>, root: &Dir, name: &str, visitor: &mut dyn Visitor) {
    let parts: Vec<&str> = name.split('/').collect();
    let Some((entry, above)) = parts.split_last() else {
        return;
    };
    let mut opened: Option<Dir> = None;
    for part in above {
        let parent = opened.as_ref().unwrap_or(root);
        match parent.open_dir(OsStr::new(part)) {
            Ok(dir) => opened = Some(dir),
            Err(e) => {
                log::debug!("{name}: cannot open {part}: {e}");
                return;
            }
        }
    }
    let parent = opened.as_ref().unwrap_or(root);
    // Only a real directory, as a listing would have it: a symlink is never entered.
    match parent.stat_at(entry.as_bytes()) {
        Ok(stat) if stat.is_dir() => {}
        _ => return,
    }
    let prefix = above.join("/");
    let _ = visit_child(
        walk,
        parent,
        OsStr::new(entry),
        &prefix,
        parts.len(),
        visitor,
    );
}

/// The candidates among `names` (terminal workspaces), read afresh; rows of what is
/// not terminal are written through `writes`, as a walk writes them.
pub(crate) fn candidates(
    root_path: &Path,
    root: &Dir,
    resolver: super::sys::Resolver,
    names: &[String],
    writes: &mut Writes,
    started: i128,
) -> (Vec<Candidate>, Counts) {
    let walk = Walk {
        root: root_path,
        resolver,
        status_lookup: StatusLookup::Open,
    };
    let mut named = Named {
        writes,
        started,
        buffer: Vec::with_capacity(4096),
        found: Vec::new(),
        counts: Counts::default(),
    };
    for name in names {
        visit_named(walk, root, name, &mut named);
    }
    (named.found, named.counts)
}

/// Reads the named workspaces, as a walk's worker does without a cache hit.
struct Named<'a> {
    /// Rows of what is not terminal.
    writes: &'a mut Writes,
    /// The racy rule's reference.
    started: i128,
    /// Read buffer.
    buffer: Vec<u8>,
    /// Terminal workspaces, for the chunk pipeline.
    found: Vec<Candidate>,
    /// What was counted.
    counts: Counts,
}

impl Visitor for Named<'_> {
    fn children(&mut self, _: Walk<'_>, _: &str, _: &Dir) -> Option<Vec<OsString>> {
        // A named directory that is not a workspace is not descended into.
        None
    }

    fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()> {
        self.counts.workspaces += 1;
        self.counts.status_reads += 1;
        let signature = ws.status.signature;
        let settled = cache::settled(&signature, self.started);
        match read_status(ws, &mut self.buffer) {
            StatusRead::Parsed(status) if status.is_terminal() => {
                self.found
                    .push(Candidate::read_afresh(ws, status, signature, settled));
            }
            StatusRead::Parsed(status) => {
                let known = Known::not_terminal(&status);
                let running = matches!(known, Known::NotTerminal { pid } if pid > 0);
                if settled || running {
                    let signature = if settled {
                        signature
                    } else {
                        unsettled(signature)
                    };
                    self.writes
                        .put_workspace(ws.name, &WorkspaceRow { signature, known });
                } else {
                    self.writes.delete_workspace(ws.name);
                }
            }
            StatusRead::Corrupt | StatusRead::Unreadable => self.counts.skipped += 1,
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_outside_the_root_is_refused_and_one_below_it_is_made_relative() {
        let root = Path::new("/srv/ws");
        assert_eq!(relative_name(root, "o/r/t").unwrap(), "o/r/t");
        assert_eq!(relative_name(root, "/srv/ws/o/r/t/").unwrap(), "o/r/t");
        for bad in [
            "/etc",
            "/srv/wsx/o/r/t",
            "../x",
            "o/../../x",
            "o//t",
            "",
            "./o",
        ] {
            assert!(relative_name(root, bad).is_err(), "{bad:?} was accepted");
        }
    }
}
