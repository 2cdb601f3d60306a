//! The generated workspace tree and the dispatches the queue phases push.
//!
//! Layout (design.md §4.1): `<root>/org-OO/repo-RR/task-TTTTTT/` with `status.json`, an
//! empty `repo/` and a `.meta/` directory, 1,000 workspaces per org, 50 per repo.
//! Four in five workspaces are terminal (completed, merged, failed, blocked), one in
//! five is `running`; one workspace in ten also has a small `.meta/report.json`.
//! Every file and directory is then backdated by an hour, as finished workspaces are:
//! a fresh mtime would fall in the Scanner cache's "racy" window and never be cached.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use agent_sync_actors::dispatch::Dispatch;
use agent_sync_actors::time::Timestamp;
use serde_json::{json, Map, Value};

/// Workspaces per repo directory.
pub const TASKS_PER_REPO: usize = 50;
/// Repo directories per org.
const REPOS_PER_ORG: usize = 20;
/// 2026-01-01T00:00:00Z: every generated time is this plus a few seconds.
const BASE_MILLIS: i64 = 1_767_225_600_000;

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tree {
    /// Workspaces (directories with `status.json`).
    pub workspaces: usize,
    /// Those with a terminal status.
    pub terminal: usize,
    /// Those with a `.meta/report.json`.
    pub reports: usize,
}

/// Writes `count` workspaces under `root` (which must not exist yet).
pub fn generate(root: &Path, count: usize) -> io::Result<Tree> {
    let mut tree = Tree::default();
    for i in 0..count {
        let dir = workspace_dir(root, i);
        fs::create_dir_all(dir.join("repo"))?;
        fs::create_dir_all(dir.join(".meta"))?;
        let status = status(i);
        if status["status"] != "running" {
            tree.terminal += 1;
        }
        fs::write(dir.join("status.json"), pretty(&status)?)?;
        if i % 10 == 1 {
            fs::write(dir.join(".meta").join("report.json"), pretty(&report(i))?)?;
            tree.reports += 1;
        }
        tree.workspaces += 1;
    }
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    backdate(
        root,
        fs::FileTimes::new()
            .set_modified(hour_ago)
            .set_accessed(hour_ago),
    )?;
    Ok(tree)
}

/// Sets `times` on `path` and everything below it.
fn backdate(path: &Path, times: fs::FileTimes) -> io::Result<()> {
    let file = fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        for entry in fs::read_dir(path)? {
            backdate(&entry?.path(), times)?;
        }
    }
    // After the children: listing a directory does not change its mtime, but be safe.
    file.set_times(times)
}

/// `org-OO/repo-RR` of workspace `i`, relative to the root.
pub fn repo_of(i: usize) -> String {
    let org = i / (TASKS_PER_REPO * REPOS_PER_ORG);
    let repo = (i / TASKS_PER_REPO) % REPOS_PER_ORG;
    format!("org-{org:02}/repo-{repo:02}")
}

/// `org-OO/repo-RR/task-IIIIII` of workspace `i`, relative to the root: its
/// dispatch id once scanned.
pub fn workspace_of(i: usize) -> String {
    format!("{}/task-{i:06}", repo_of(i))
}

fn workspace_dir(root: &Path, i: usize) -> PathBuf {
    root.join(workspace_of(i))
}

fn pretty(value: &Value) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(io::Error::other)
}

fn time(i: usize, offset_seconds: i64) -> String {
    let seconds = i64::try_from(i).unwrap_or(i64::MAX / 2_000) + offset_seconds;
    Timestamp::from_unix_millis(BASE_MILLIS + seconds * 1_000).to_rfc3339_seconds()
}

/// A `status.json` of workspace `i`, with every field of design.md §4.1 set.
fn status(i: usize) -> Value {
    let status = match i % 5 {
        0 => "running",
        1 => "completed",
        2 => "merged",
        3 => "failed",
        _ => "blocked",
    };
    let org = i / (TASKS_PER_REPO * REPOS_PER_ORG);
    let repo = (i / TASKS_PER_REPO) % REPOS_PER_ORG;
    let agent = ["codex", "claude", "gemini"][i % 3];
    json!({
        "status": status,
        "agent": agent,
        "repo": format!("repo-{repo:02}"),
        "org": format!("org-{org:02}"),
        "task": format!("task-{i:06}"),
        "branch": format!("agent/task-{i:06}"),
        "issue": i + 1,
        "pid": 0,
        "process_id": format!("proc-{i:06}"),
        "started_at": time(i, 0),
        "updated_at": time(i, 600),
        "question": if status == "blocked" { "Which API version should the client target?" } else { "" },
        "runs": 1 + i % 3,
        "pr_url": format!("https://forge.example/org-{org:02}/repo-{repo:02}/pulls/{}", i + 1),
    })
}

fn report(i: usize) -> Value {
    json!({
        "summary": "Implemented the change and added tests.",
        "findings": [
            {"file": "src/lib.rs", "line": 10 + i % 90, "message": "unchecked error return"}
        ],
        "changes": {"files": 3, "insertions": 42, "deletions": 7},
    })
}

/// A host dispatch shaped like what the Scanner builds for workspace `i` (~450 bytes
/// of JSON), used by the enqueue, drain and RSS phases.
pub fn dispatch(i: usize) -> Dispatch {
    Dispatch::from(dispatch_object(i))
}

/// The `id` (and workspace) of host dispatch `i`.
pub fn dispatch_id(i: usize) -> String {
    format!("host/bench/task-{i:06}")
}

/// [`dispatch`] as the JSON object a host hands to `SyncPush`.
pub fn dispatch_object(i: usize) -> Map<String, Value> {
    let mut record = Map::new();
    let name = dispatch_id(i);
    record.insert("id".into(), name.clone().into());
    record.insert("workspace".into(), name.into());
    if let Value::Object(status) = status(i) {
        for (key, value) in status {
            if key != "pid" {
                record.insert(key, value);
            }
        }
    }
    record.insert("status".into(), "completed".into());
    record
}

/// What a floor walk read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Walk {
    /// `status.json` files read.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
}

/// The floor: std::fs recursion over org/repo/task (depth 3) that reads each
/// `status.json` fully and does nothing else.
pub fn floor_walk(root: &Path) -> io::Result<Walk> {
    let mut walk = Walk::default();
    for org in fs::read_dir(root)? {
        for repo in fs::read_dir(org?.path())? {
            for task in fs::read_dir(repo?.path())? {
                let bytes = fs::read(task?.path().join("status.json"))?;
                walk.files += 1;
                walk.bytes += bytes.len() as u64;
            }
        }
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_what_the_scanner_and_the_floor_see() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let tree = generate(&root, 120).unwrap();
        assert_eq!(
            (tree.workspaces, tree.terminal, tree.reports),
            (120, 96, 12)
        );
        assert_eq!(floor_walk(&root).unwrap().files, 120);
        let scan = agent_sync_actors::scanner::walk::scan_tree(&root);
        assert_eq!((scan.workspaces, scan.terminal.len()), (120, 96));
        assert_eq!(scan.skipped, 0);
        let with_report = scan
            .terminal
            .iter()
            .filter(|d| d.record.to_object().contains_key("report"))
            .count();
        assert_eq!(with_report, 12);
    }
}
