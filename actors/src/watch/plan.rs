//! What is watched (design.md §4.3), and what an event means.
//!
//! The rule, in priority order, within the budget:
//!
//! 1. every directory the walk walks into (the root, organisations, repos, the levels
//!    of branch-named tasks): a new workspace appears as an entry of one of them;
//! 2. every workspace the rescan cache does not know to be terminal (running, queued,
//!    not cached yet): its `status.json` is what turns terminal;
//! 3. every workspace whose `status.json` changed within [`RECENT`] (a re-run).
//!
//! Older terminal workspaces are not watched: they are done, and a change to one is
//! found by the fallback rescan. Nothing inside a workspace (its `repo/` clone, its
//! `.meta/`) is ever watched. A watch is added before its directory is listed, so an
//! entry created meanwhile is either listed or signalled. Directories are reached the
//! walk's way (listed as real directories, opened with `O_NOFOLLOW`): a symlink is
//! never watched through, and an event only ever names what a scan then reads by the
//! walk's rules. What does not fit the budget, or cannot be watched, is covered by
//! the fallback rescan only ([`Tree::partial`]).

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::backend::{AddError, Backend};
use crate::scanner::walk::sys::Dir;
use crate::scanner::walk::{
    list_children, not_terminal_rows, visit_named, visit_tree, Resolver, StatusLookup, Visitor,
    Walk, Workspace,
};
use crate::store::Store;

/// A terminal workspace whose `status.json` changed more recently than this stays
/// watched (a re-run rewrites it).
pub const RECENT: Duration = Duration::from_secs(3600);

/// The watched directories of one tree, relative to its root (`""` is the root).
pub(crate) struct Tree {
    /// The workspace root as configured.
    root: PathBuf,
    /// How directories are opened.
    resolver: Resolver,
    /// Most watches to hold.
    budget: usize,
    /// Watched directories the walk walks into.
    levels: BTreeSet<String>,
    /// Watched workspaces.
    workspaces: BTreeSet<String>,
    /// Something could not be watched (budget, limit, failure): the fallback rescan
    /// alone covers it.
    pub partial: bool,
}

impl Tree {
    /// An empty plan of `root`.
    pub(crate) fn new(root: PathBuf, resolver: Resolver, budget: usize) -> Tree {
        Tree {
            root,
            resolver,
            budget,
            levels: BTreeSet::new(),
            workspaces: BTreeSet::new(),
            partial: false,
        }
    }

    /// Watches held.
    pub(crate) fn watched(&self) -> usize {
        self.levels.len() + self.workspaces.len()
    }

    /// Watches `rel` (a level or a workspace) unless it is already, within the budget;
    /// `false` when it is not watched.
    fn add(&mut self, backend: &mut dyn Backend, rel: &str, workspace: bool) -> bool {
        let (into, other) = if workspace {
            (&mut self.workspaces, &mut self.levels)
        } else {
            (&mut self.levels, &mut self.workspaces)
        };
        if other.remove(rel) {
            into.insert(rel.to_string());
            return true;
        }
        if into.contains(rel) {
            return true;
        }
        if self.levels.len() + self.workspaces.len() >= self.budget {
            self.partial = true;
            return false;
        }
        match backend.add(&self.root.join(rel)) {
            Ok(()) => {
                let into = if workspace {
                    &mut self.workspaces
                } else {
                    &mut self.levels
                };
                into.insert(rel.to_string());
                true
            }
            Err(AddError::Gone) => false,
            Err(e) => {
                if !self.partial {
                    log::warn!(
                        "cannot watch {}: {e:?}; the fallback rescan covers what is not watched",
                        self.root.join(rel).display()
                    );
                }
                self.partial = true;
                false
            }
        }
    }

    /// Plans the whole tree: watches what the rule says, drops the watches it no
    /// longer says (gone, or terminal and settled). Reads no `status.json`: what is
    /// not terminal comes from the rescan cache in `store`.
    pub(crate) fn plan(&mut self, backend: &mut dyn Backend, store: Option<&Store>) {
        self.partial = false;
        let not_terminal: HashSet<String> = store
            .map(not_terminal_rows)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let recent = SystemTime::now()
            .checked_sub(RECENT)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let mut planner = Planner {
            tree: self,
            backend,
            not_terminal: &not_terminal,
            recent,
            levels: BTreeSet::new(),
            first: Vec::new(),
            then: Vec::new(),
        };
        let walk = Walk {
            root: &planner.tree.root.clone(),
            resolver: planner.tree.resolver,
            status_lookup: StatusLookup::Stat,
        };
        visit_tree(walk, &mut planner);
        let Planner {
            levels,
            first,
            then,
            ..
        } = planner;
        let wanted: BTreeSet<String> = first.iter().chain(&then).cloned().collect();
        // Stale watches go first, so the budget is spent on what the rule wants.
        for stale in self.levels.difference(&levels).cloned().collect::<Vec<_>>() {
            self.levels.remove(&stale);
            backend.remove(&self.root.join(&stale));
        }
        for stale in self
            .workspaces
            .difference(&wanted)
            .cloned()
            .collect::<Vec<_>>()
        {
            self.workspaces.remove(&stale);
            backend.remove(&self.root.join(&stale));
        }
        for name in first.iter().chain(&then) {
            self.add(backend, name, true);
        }
    }

    /// What the changed `paths` mean: the workspaces to scan (sorted). New
    /// directories are explored (watched, and their workspaces named); watches of
    /// what is gone are dropped.
    pub(crate) fn changed(&mut self, backend: &mut dyn Backend, paths: &[PathBuf]) -> Vec<String> {
        let mut dirty = BTreeSet::new();
        let mut explore = BTreeSet::new();
        for path in paths {
            let Some(rel) = path
                .strip_prefix(&self.root)
                .ok()
                .and_then(Path::to_str)
                .map(|s| s.trim_end_matches('/').to_string())
            else {
                continue;
            };
            let (parent, entry) = match rel.rsplit_once('/') {
                Some((parent, entry)) => (parent.to_string(), entry),
                None => (String::new(), rel.as_str()),
            };
            if self.workspaces.contains(&parent) {
                dirty.insert(parent);
            } else if self.levels.contains(&parent) && !rel.is_empty() {
                // A new entry of a level, or its status.json: the level may now be a
                // workspace itself.
                explore.insert(if entry == "status.json" { parent } else { rel });
            } else if self.workspaces.contains(&rel) || self.levels.contains(&rel) {
                explore.insert(rel);
            }
        }
        for rel in explore {
            if rel.is_empty() || std::fs::symlink_metadata(self.root.join(&rel)).is_err() {
                self.forget(backend, &rel);
                continue;
            }
            dirty.extend(self.explore(backend, &rel));
        }
        dirty.into_iter().collect()
    }

    /// Drops the watches of `rel` and everything below it (it is gone).
    fn forget(&mut self, backend: &mut dyn Backend, rel: &str) {
        let below = format!("{rel}/");
        for set in [&mut self.levels, &mut self.workspaces] {
            let gone: Vec<String> = set
                .iter()
                .filter(|n| !rel.is_empty() && (*n == rel || n.starts_with(&below)))
                .cloned()
                .collect();
            for name in gone {
                set.remove(&name);
                backend.remove(&self.root.join(&name));
            }
        }
    }

    /// Watches the new directory `rel` and what the rule says below it; the
    /// workspaces found there.
    fn explore(&mut self, backend: &mut dyn Backend, rel: &str) -> Vec<String> {
        let Ok(root) = Dir::open_root(&self.root) else {
            return Vec::new();
        };
        let root_path = self.root.clone();
        let walk = Walk {
            root: &root_path,
            resolver: self.resolver,
            status_lookup: StatusLookup::Stat,
        };
        let mut explorer = Explorer {
            tree: self,
            backend,
            found: Vec::new(),
        };
        visit_named(walk, &root, rel, &mut explorer);
        explorer.found
    }
}

/// The whole tree's walk of [`Tree::plan`].
struct Planner<'a> {
    tree: &'a mut Tree,
    backend: &'a mut dyn Backend,
    /// Workspaces the cache knows not to be terminal.
    not_terminal: &'a HashSet<String>,
    /// `status.json` changed after this (ns since the epoch): recent.
    recent: i128,
    /// Levels seen.
    levels: BTreeSet<String>,
    /// Workspaces of rule 2 (and those the cache does not know), then of rule 3.
    first: Vec<String>,
    /// Recent terminal workspaces.
    then: Vec<String>,
}

impl Visitor for Planner<'_> {
    fn children(&mut self, walk: Walk<'_>, prefix: &str, dir: &Dir) -> Option<Vec<OsString>> {
        // Watched before listed: an entry created meanwhile is listed or signalled.
        self.tree.add(self.backend, prefix, false);
        self.levels.insert(prefix.to_string());
        list_children(walk, prefix, dir)
    }

    fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()> {
        // The mtime (a host that backdates a finished file means it is old).
        let recent = ws.status.signature.mtime_ns > self.recent;
        if self.not_terminal.contains(ws.name) {
            self.first.push(ws.name.to_string());
        } else if recent {
            self.then.push(ws.name.to_string());
        }
        ControlFlow::Continue(())
    }
}

/// A new directory's walk of [`Tree::explore`].
struct Explorer<'a> {
    tree: &'a mut Tree,
    backend: &'a mut dyn Backend,
    /// Workspaces found.
    found: Vec<String>,
}

impl Visitor for Explorer<'_> {
    fn children(&mut self, walk: Walk<'_>, prefix: &str, dir: &Dir) -> Option<Vec<OsString>> {
        self.tree.add(self.backend, prefix, false);
        list_children(walk, prefix, dir)
    }

    fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()> {
        self.tree.add(self.backend, ws.name, true);
        self.found.push(ws.name.to_string());
        ControlFlow::Continue(())
    }
}
