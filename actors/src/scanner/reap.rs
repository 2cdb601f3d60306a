//! The ghost reap (design.md §7.3): a `running` workspace whose worker's pid is gone
//! is rewritten to `failed`, so it becomes syncable.
//!
//! Two ways:
//!
//! - [`reap`] (the daemon's start, and `ReapGhosts`): walks the whole tree and
//!   reads every `status.json`; the host may have restarted and every worker with it.
//! - [`reap_running`] (`ReapRunning`, on the watcher's events and the fallback
//!   rescan): only the workspaces the rescan cache knows to be running, pid liveness
//!   first (`kill(pid, 0)`), and a `status.json` is read only when its pid is gone, so
//!   an idle host with 20,000 live workers costs 20,000 signals-0 and no file read.
//!
//! Both reach a workspace by the walk's rules, never through a symlink, and log one
//! summary line; a stop ends them before their next workspace.

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::Path;

use serde_json::{Map, Value};

use super::atomic_write::write_atomically;
use crate::messages::ReapReport;
use crate::scanner::walk::sys::{process_exists, Dir};
use crate::scanner::walk::{
    list_children, read_status_bytes, running, visit_named, visit_tree, Resolver, StatusLookup,
    Visitor, Walk, Workspace,
};
use crate::store::Store;

/// Question written into a reaped ghost.
pub const GHOST_QUESTION: &str = "dead worker on restart";

/// What a reap visits a workspace's parents with: the whole tree, or named workspaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Walk every directory.
    Tree,
    /// Only the named workspaces: never descend.
    Named,
}

/// Reaps the workspaces the rescan cache in `store` knows to be running whose pid is
/// gone: no file of a workspace whose worker lives is read. Each is read again by the
/// walk's rules before it is rewritten (it may have finished meanwhile).
pub(crate) fn reap_running(
    root: &Path,
    store: &Store,
    resolver: Resolver,
    stopped: &dyn Fn() -> bool,
) -> ReapReport {
    let dead: Vec<String> = running(store)
        .into_iter()
        .filter(|(_, pid)| !process_exists(*pid))
        .map(|(name, _)| name)
        .collect();
    if dead.is_empty() {
        log::debug!("ghost reap: no ghost workspace");
        return ReapReport::default();
    }
    let Ok(root_dir) = Dir::open_root(root) else {
        return ReapReport::default();
    };
    let walk = Walk {
        root,
        resolver,
        status_lookup: StatusLookup::Stat,
    };
    let mut reap = Reap::new(stopped, Scope::Named);
    for name in &dead {
        if reap.ended_early {
            break;
        }
        visit_named(walk, &root_dir, name, &mut reap);
    }
    reap.finish()
}

/// What became of one workspace the reap visited.
enum Reaped {
    /// Not a ghost (or unreadable: the scan warns about that).
    No,
    /// Rewritten to `failed`.
    Yes,
    /// A ghost that could not be rewritten, and why.
    Failed(std::io::Error),
}

/// Rewrites every `running` workspace whose `pid` is gone to `failed`, opening files
/// the way `resolver` says; asks `stopped` before each workspace and ends there when
/// it says so. Logs one summary line (each workspace at debug), so a tree of
/// 20,000 ghosts is one line at info, not 20,000.
pub(crate) fn reap(root: &Path, resolver: Resolver, stopped: &dyn Fn() -> bool) -> ReapReport {
    let mut reap = Reap::new(stopped, Scope::Tree);
    let walk = Walk {
        root,
        resolver,
        status_lookup: StatusLookup::Stat,
    };
    visit_tree(walk, &mut reap);
    reap.finish()
}

/// Reaps as it walks.
struct Reap<'a> {
    /// What was rewritten.
    report: ReapReport,
    /// Ghosts that could not be rewritten.
    failed: usize,
    /// The first of those, for the summary line: its name and why.
    first_failure: Option<(String, std::io::Error)>,
    /// Asked before each workspace: the service is stopping.
    stopped: &'a dyn Fn() -> bool,
    /// The walk ended because `stopped` said so.
    ended_early: bool,
    /// Whether directories are walked into.
    scope: Scope,
}

impl<'a> Reap<'a> {
    fn new(stopped: &'a dyn Fn() -> bool, scope: Scope) -> Self {
        Reap {
            report: ReapReport::default(),
            failed: 0,
            first_failure: None,
            stopped,
            ended_early: false,
            scope,
        }
    }

    /// Logs the summary line and answers.
    fn finish(self) -> ReapReport {
        log_summary(
            &self.report,
            self.failed,
            self.first_failure,
            self.ended_early,
        );
        self.report
    }
}

impl Visitor for Reap<'_> {
    fn children(&mut self, walk: Walk<'_>, prefix: &str, dir: &Dir) -> Option<Vec<OsString>> {
        match self.scope {
            Scope::Tree => list_children(walk, prefix, dir),
            Scope::Named => None,
        }
    }

    fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()> {
        if (self.stopped)() {
            self.ended_early = true;
            return ControlFlow::Break(());
        }
        match reap_one(ws) {
            Reaped::No => {}
            Reaped::Yes => self.report.reaped.push(ws.name.to_string()),
            Reaped::Failed(e) => {
                self.failed += 1;
                self.first_failure
                    .get_or_insert_with(|| (ws.name.to_string(), e));
            }
        }
        ControlFlow::Continue(())
    }
}

/// The reap's one line: at info when it rewrote anything or ended early, at warn when
/// a ghost could not be rewritten (naming the first), else at debug.
fn log_summary(
    report: &ReapReport,
    failed: usize,
    first_failure: Option<(String, std::io::Error)>,
    ended_early: bool,
) {
    let reaped = report.reaped.len();
    let ended = if ended_early {
        "; stopped early (the service is stopping), the rest is reaped at the next start"
    } else {
        ""
    };
    match first_failure {
        Some((name, e)) => log::warn!(
            "ghost reap: {reaped} ghost workspace(s) rewritten to failed, {failed} could \
             not be rewritten (first: {name}: {e}; each one at debug){ended}"
        ),
        None if reaped > 0 || ended_early => log::info!(
            "ghost reap: {reaped} ghost workspace(s) rewritten to failed, 0 could not be \
             rewritten{ended}"
        ),
        None => log::debug!("ghost reap: no ghost workspace"),
    }
}

fn reap_one(ws: &Workspace<'_>) -> Reaped {
    let Some((status, bytes)) = read_status_bytes(ws) else {
        return Reaped::No;
    };
    if status.status != "running" || status.pid <= 0 || process_exists(status.pid) {
        return Reaped::No;
    }
    // Every field is kept: the object the parser accepted, rewritten in two fields.
    let mut object = match serde_json::from_slice::<Map<String, Value>>(&bytes) {
        Ok(object) => object,
        Err(e) => return Reaped::Failed(std::io::Error::other(e)),
    };
    object.insert("status".into(), "failed".into());
    object.insert("question".into(), GHOST_QUESTION.into());
    let written = serde_json::to_vec_pretty(&object)
        .map_err(std::io::Error::other)
        .and_then(|body| write_atomically(&ws.path().join("status.json"), &body));
    match written {
        Ok(()) => {
            log::debug!(
                "reaped ghost workspace {} (pid {} is gone)",
                ws.name,
                status.pid
            );
            Reaped::Yes
        }
        Err(e) => {
            log::debug!("cannot reap ghost workspace {}: {e}", ws.name);
            Reaped::Failed(e)
        }
    }
}

/// Ghost workspaces for the tests of the reap and of the Scanner.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    /// Writes `<root>/<name>/status.json`.
    pub(crate) fn workspace(root: &Path, name: &str, status: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("status.json"), status).unwrap();
        dir
    }

    /// A dead worker's status: pid_max on Linux is at most 2^22, so this pid cannot exist.
    pub(crate) const GHOST: &str = r#"{"status":"running","pid":99999999}"#;

    /// Whether the workspace in `dir` was rewritten to failed.
    pub(crate) fn is_reaped(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("status.json")).is_ok_and(|s| s.contains("failed"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::testing::{is_reaped, workspace, GHOST};
    use super::*;
    use crate::scanner::walk::running;

    #[test]
    fn ghost_with_dead_pid_is_reaped_to_failed_keeping_other_fields() {
        for resolver in [Resolver::Native, Resolver::Portable] {
            let root = tempfile::tempdir().unwrap();
            // pid_max on Linux is at most 2^22; this pid cannot exist.
            let dir = workspace(
                root.path(),
                "o/r/t",
                r#"{"status":"running","pid":99999999,"agent":"codex"}"#,
            );
            let alive = format!(r#"{{"status":"running","pid":{}}}"#, std::process::id());
            workspace(root.path(), "o/r/alive", &alive);
            let report = reap(root.path(), resolver, &|| false);
            assert_eq!(report.reaped, ["o/r/t"]);
            let status: Map<String, Value> =
                serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
            assert_eq!(status["status"], "failed");
            assert_eq!(status["question"], GHOST_QUESTION);
            assert_eq!(status["agent"], "codex");
        }
    }

    #[test]
    fn a_reap_ends_at_the_first_workspace_after_the_stop_is_seen() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..10)
            .map(|i| workspace(root.path(), &format!("o/r/t-{i}"), GHOST))
            .collect();
        let asked = std::cell::Cell::new(0);
        // Stopped from the fourth question on: three workspaces are rewritten.
        let report = reap(root.path(), Resolver::Native, &|| {
            asked.set(asked.get() + 1);
            asked.get() > 3
        });
        assert_eq!(report.reaped, ["o/r/t-0", "o/r/t-1", "o/r/t-2"]);
        assert_eq!(asked.get(), 4, "nothing is visited after the stop");
        let rewritten: Vec<bool> = dirs.iter().map(|d| is_reaped(d)).collect();
        assert_eq!(rewritten, [[true; 3].as_slice(), &[false; 7]].concat());
    }

    #[test]
    fn the_cheap_reap_reads_no_status_json_of_a_workspace_not_known_running_with_a_dead_pid() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let done = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;
        let alive = format!(r#"{{"status":"running","pid":{}}}"#, std::process::id());
        let ghost = workspace(root.path(), "o/r/ghost", GHOST);
        let live = workspace(root.path(), "o/r/live", &alive);
        let finished = workspace(root.path(), "o/r/done", done);
        let waiting = workspace(root.path(), "o/r/waiting", r#"{"status":"queued"}"#);
        // The scan teaches the cache who is running (fresh files included).
        let mut peers = crate::scanner::walk::testing::FakePeers::default();
        peers.scan(
            root.path(),
            Some(&store),
            crate::scanner::walk::WalkOptions::default(),
        );
        assert_eq!(running(&store).len(), 2);
        // Were any of these read, it would be reaped: none may be.
        std::fs::write(live.join("status.json"), GHOST).unwrap();
        std::fs::write(finished.join("status.json"), GHOST).unwrap();
        std::fs::write(waiting.join("status.json"), GHOST).unwrap();
        let report = reap_running(root.path(), &store, Resolver::Native, &|| false);
        assert_eq!(report.reaped, ["o/r/ghost"]);
        assert!(is_reaped(&ghost));
        for untouched in [&live, &finished, &waiting] {
            assert!(!is_reaped(untouched), "{}", untouched.display());
        }
    }
}
