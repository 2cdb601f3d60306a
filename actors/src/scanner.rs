//! The Scanner: finds finished dispatches under the workspace root.
//!
//! Walk rules (DESIGN 4.1): a directory is a workspace when it holds a regular
//! `status.json` and it is at depth 1 or 3, or it has both `repo/` and `.meta/`. The walk
//! does not descend into a workspace, never follows a symlink, and reads `status.json`
//! (1 MiB) and `.meta/report.json` (8 MiB) only below a size cap. Anything unreadable
//! or corrupt is skipped with a `warn!` and the scan goes on (R4).
//!
//! The walk is blocking file I/O, so it runs on tokio's blocking pool; the arbiter
//! stays free for the Pusher's HTTP and the other actors' messages.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use serde_json::{Map, Value};

use crate::error::SyncError;
use crate::messages::{ReapGhosts, ReapReport, Scan, ScanReport, Unsynced};
use crate::model::{attach_report, ScannedDispatch, WorkspaceStatus};

/// Largest `status.json` read.
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Largest `.meta/report.json` read.
pub const MAX_REPORT_BYTES: u64 = 8 * 1024 * 1024;
/// Deepest directory looked at (branch-named tasks nest a few levels).
const MAX_DEPTH: usize = 8;
/// Question written into a reaped ghost.
pub const GHOST_QUESTION: &str = "dead worker on restart";

/// Walks the workspace root; holds no state of its own.
pub struct Scanner {
    /// `<root>/<org>/<repo>/<task>/`.
    root: PathBuf,
    /// The Ledger's filter.
    ledger: Recipient<Unsynced>,
}

impl Scanner {
    /// A Scanner of `root` that filters through `ledger`.
    pub fn new(root: PathBuf, ledger: Recipient<Unsynced>) -> Self {
        Scanner { root, ledger }
    }
}

impl Actor for Scanner {
    type Context = Context<Self>;
}

impl Handler<Scan> for Scanner {
    type Result = ResponseFuture<Result<ScanReport, SyncError>>;

    fn handle(&mut self, _: Scan, _: &mut Self::Context) -> Self::Result {
        let root = self.root.clone();
        let ledger = self.ledger.clone();
        Box::pin(async move {
            let walk = actix_rt::task::spawn_blocking(move || scan_tree(&root))
                .await
                .map_err(|_| SyncError::Stopped)?;
            let unsynced = ledger
                .send(Unsynced {
                    candidates: walk.terminal,
                })
                .await??;
            Ok(ScanReport {
                unsynced,
                workspaces: walk.workspaces,
                skipped: walk.skipped,
            })
        })
    }
}

impl Handler<ReapGhosts> for Scanner {
    type Result = ResponseFuture<ReapReport>;

    fn handle(&mut self, _: ReapGhosts, _: &mut Self::Context) -> Self::Result {
        let root = self.root.clone();
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || reap_tree(&root))
                .await
                .unwrap_or_default()
        })
    }
}

/// What a walk found, before the Ledger filters it.
#[derive(Debug, Default)]
pub struct TreeScan {
    /// Terminal dispatches, in walk order.
    pub terminal: Vec<ScannedDispatch>,
    /// Workspaces found.
    pub workspaces: usize,
    /// Workspaces skipped with a warning.
    pub skipped: usize,
}

/// Walks `root` and builds a dispatch for every terminal workspace.
pub fn scan_tree(root: &Path) -> TreeScan {
    let mut scan = TreeScan::default();
    visit_workspaces(root, &mut |dir, name| {
        scan.workspaces += 1;
        let Some((status, _)) = read_status(dir) else {
            scan.skipped += 1;
            return;
        };
        if status.is_terminal() {
            let mut record = status.to_dispatch(name);
            if let Some(report) = read_report(dir) {
                attach_report(&mut record, report);
            }
            scan.terminal.push(ScannedDispatch {
                id: name.to_string(),
                fingerprint: status.fingerprint(),
                record,
            });
        }
    });
    scan
}

/// Rewrites every `running` workspace whose `pid` is gone to `failed`.
pub fn reap_tree(root: &Path) -> ReapReport {
    let mut report = ReapReport::default();
    visit_workspaces(root, &mut |dir, name| {
        let Some((status, mut object)) = read_status(dir) else {
            return;
        };
        if status.status != "running" || status.pid <= 0 || pid_alive(status.pid) {
            return;
        }
        object.insert("status".into(), "failed".into());
        object.insert("question".into(), GHOST_QUESTION.into());
        match write_atomically(&dir.join("status.json"), &object) {
            Ok(()) => {
                log::info!("reaped ghost workspace {name} (pid {} is gone)", status.pid);
                report.reaped.push(name.to_string());
            }
            Err(e) => log::warn!("cannot reap ghost workspace {name}: {e}"),
        }
    });
    report
}

/// Calls `visit(dir, name)` for every workspace under `root`, in lexical order.
fn visit_workspaces(root: &Path, visit: &mut dyn FnMut(&Path, &str)) {
    visit_dir(root, root, 0, visit);
}

fn visit_dir(root: &Path, dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path, &str)) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            if depth > 0 || e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot read {}: {e}; skipped", dir.display());
            }
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        // `file_type` does not follow symlinks: a link is never walked.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort_unstable();
    for child in children {
        let child_depth = depth + 1;
        let has = |name: &str, want_dir: bool| {
            std::fs::symlink_metadata(child.join(name)).is_ok_and(|m| {
                if want_dir {
                    m.is_dir()
                } else {
                    m.is_file()
                }
            })
        };
        let shaped = has("repo", true) && has(".meta", true);
        if has("status.json", false) && (child_depth == 1 || child_depth == 3 || shaped) {
            match workspace_name(root, &child) {
                Some(name) => visit(&child, &name),
                None => log::warn!(
                    "workspace {} has a name that is not UTF-8; skipped",
                    child.display()
                ),
            }
        } else if !shaped && child_depth < MAX_DEPTH {
            // A workspace-shaped directory without status.json is still being set up:
            // never walk into its clone.
            visit_dir(root, &child, child_depth, visit);
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

fn read_status(dir: &Path) -> Option<(WorkspaceStatus, Map<String, Value>)> {
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
    if !path.exists() {
        return None;
    }
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

fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Temp file in the same directory, fsync, rename: a reader sees old or new, never half.
fn write_atomically(path: &Path, object: &Map<String, Value>) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(object).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(root: &Path, name: &str, status: &str, extra_dirs: bool) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if extra_dirs {
            std::fs::create_dir_all(dir.join("repo")).unwrap();
            std::fs::create_dir_all(dir.join(".meta")).unwrap();
        }
        std::fs::write(dir.join("status.json"), status).unwrap();
        dir
    }

    #[test]
    fn walk_accepts_depth_one_three_and_shaped_workspaces_only() {
        let root = tempfile::tempdir().unwrap();
        let done = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;
        workspace(root.path(), "flat", done, false);
        workspace(root.path(), "core/go-io/task-5", done, false);
        workspace(root.path(), "core/go-io/feature/x", done, true);
        workspace(root.path(), "core/too-shallow", done, false);
        workspace(
            root.path(),
            "core/go-io/running",
            r#"{"status":"running"}"#,
            false,
        );
        let scan = scan_tree(root.path());
        let ids: Vec<_> = scan.terminal.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["core/go-io/feature/x", "core/go-io/task-5", "flat"]);
        assert_eq!(scan.workspaces, 4);
        assert_eq!(scan.terminal[1].fingerprint, "2026-01-01T00:00:00Z#1");
    }

    #[test]
    fn corrupt_status_is_skipped_and_the_scan_goes_on() {
        let root = tempfile::tempdir().unwrap();
        workspace(root.path(), "a/b/bad", "{not json", false);
        workspace(root.path(), "a/b/good", r#"{"status":"failed"}"#, false);
        let scan = scan_tree(root.path());
        assert_eq!(scan.skipped, 1);
        assert_eq!(scan.terminal.len(), 1);
        assert_eq!(scan.terminal[0].id, "a/b/good");
    }

    #[test]
    fn symlinks_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        workspace(outside.path(), "x/y/z", r#"{"status":"completed"}"#, false);
        std::os::unix::fs::symlink(outside.path().join("x"), root.path().join("x")).unwrap();
        std::os::unix::fs::symlink(root.path(), root.path().join("loop")).unwrap();
        assert!(scan_tree(root.path()).terminal.is_empty());
    }

    #[test]
    fn ghost_with_dead_pid_is_reaped_to_failed_keeping_other_fields() {
        let root = tempfile::tempdir().unwrap();
        // pid_max on Linux is at most 2^22; this pid cannot exist.
        let dir = workspace(
            root.path(),
            "o/r/t",
            r#"{"status":"running","pid":99999999,"agent":"codex"}"#,
            false,
        );
        let alive = format!(r#"{{"status":"running","pid":{}}}"#, std::process::id());
        workspace(root.path(), "o/r/alive", &alive, false);
        let report = reap_tree(root.path());
        assert_eq!(report.reaped, ["o/r/t"]);
        let status: Map<String, Value> =
            serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
        assert_eq!(status["status"], "failed");
        assert_eq!(status["question"], GHOST_QUESTION);
        assert_eq!(status["agent"], "codex");
    }
}
