//! The Scanner: finds finished dispatches under the workspace root, and reaps ghosts.
//!
//! The walk itself (rules, size caps, the rescan cache) is in [`crate::walk`]. It is
//! blocking file I/O, so it runs on tokio's blocking pool; the arbiter stays free for
//! the Pusher's HTTP and the other actors' messages. The Scanner owns the
//! [`WalkCache`] and tells it which dispatches the Ledger already has.

use std::fs::File;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use serde_json::{Map, Value};

use crate::error::SyncError;
use crate::messages::{ReapGhosts, ReapReport, Scan, ScanReport, Unsynced};
#[cfg(test)]
use crate::walk::scan_tree;
use crate::walk::{read_status_object, scan_tree_cached, visit_workspaces, Probe, WalkCache};

/// Question written into a reaped ghost.
pub const GHOST_QUESTION: &str = "dead worker on restart";

/// Walks the workspace root; holds no state of its own.
pub struct Scanner {
    /// `<root>/<org>/<repo>/<task>/`.
    root: PathBuf,
    /// The Ledger's filter.
    ledger: Recipient<Unsynced>,
    /// The last walk; `None` while a scan has it on the blocking pool.
    cache: Option<WalkCache>,
}

impl Scanner {
    /// A Scanner of `root` that filters through `ledger`.
    pub fn new(root: PathBuf, ledger: Recipient<Unsynced>) -> Self {
        Scanner {
            root,
            ledger,
            cache: Some(WalkCache::default()),
        }
    }
}

impl Actor for Scanner {
    type Context = Context<Self>;
}

impl Handler<Scan> for Scanner {
    type Result = ResponseActFuture<Self, Result<ScanReport, SyncError>>;

    fn handle(&mut self, _: Scan, _: &mut Self::Context) -> Self::Result {
        let root = self.root.clone();
        let ledger = self.ledger.clone();
        // A second scan while one runs walks without the cache (and does not keep it).
        let cache = self.cache.take();
        let work = async move {
            let (walk, cache) = actix_rt::task::spawn_blocking(move || {
                let mut own = cache.unwrap_or_default();
                let walk = scan_tree_cached(&root, &mut own);
                (walk, own)
            })
            .await
            .map_err(|_| SyncError::Stopped)?;
            let asked: Vec<(String, String)> = walk
                .terminal
                .iter()
                .map(|d| (d.id.clone(), d.fingerprint.clone()))
                .collect();
            let unsynced = ledger
                .send(Unsynced {
                    candidates: walk.terminal,
                })
                .await??;
            Ok::<_, SyncError>((walk.workspaces, walk.skipped, asked, unsynced, cache))
        };
        Box::pin(work.into_actor(self).map(|result, act, _| {
            let (workspaces, skipped, asked, unsynced, mut cache) = result?;
            let pending: std::collections::HashSet<(&str, &str)> = unsynced
                .iter()
                .map(|d| (d.id.as_str(), d.fingerprint.as_str()))
                .collect();
            cache.mark_synced(
                asked
                    .iter()
                    .map(|(id, fp)| (id.as_str(), fp.as_str()))
                    .filter(|pair| !pending.contains(pair)),
            );
            act.cache.get_or_insert(cache);
            Ok(ScanReport {
                unsynced,
                workspaces,
                skipped,
            })
        }))
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

/// Rewrites every `running` workspace whose `pid` is gone to `failed`.
pub fn reap_tree(root: &Path) -> ReapReport {
    let mut report = ReapReport::default();
    visit_workspaces(
        root,
        Probe::Stat,
        &mut |ws| {
            let (dir, name) = (ws.dir, ws.name);
            let Some((status, mut object)) = read_status_object(ws) else {
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
        },
        &mut |_, list| list(),
    );
    report
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
