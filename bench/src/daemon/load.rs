//! What the daemon phase ([`crate::daemon`]) does to the tree while the daemon
//! watches it, and what the loopback platform saw of it.
//!
//! A workspace finishes as a host finishes one: its `status.json` is written whole to
//! `status.json.tmp` in the workspace's directory and renamed over `status.json`
//! (atomic; the scan never sees half a file). Two kinds:
//!
//! - **new**: a task directory that did not exist is created in an existing repo
//!   directory, then its `status.json` is written (temp file + rename) inside it;
//! - **turned**: a `running` workspace of the fixture gets a `completed` status.json
//!   (temp file + rename over the old one).
//!
//! The dispatch id of a scanned workspace is its path relative to the root, so the
//! requests the platform recorded (testkit's `LoopbackPlatform`, with their bodies)
//! say when each one was answered: it answers 200 as soon as it has recorded the
//! request (no delay is set), so the recorded arrival is the 2xx to within
//! microseconds.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync_actors::time::Clock;
use serde_json::{json, Value};

use crate::fixture::{repo_of, workspace_of, TASKS_PER_REPO};
use crate::support::{BenchResult, Rng};
use agent_sync_testkit::LoopbackPlatform;

/// The temp file a status is written to before the rename.
const TEMP: &str = "status.json.tmp";

/// How a workspace finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new task directory.
    New,
    /// A running workspace of the fixture turned `completed`.
    Turned,
}

/// One finished workspace: its dispatch id and the instant just before its rename.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The dispatch id (its path relative to the root).
    pub id: String,
    /// How it finished.
    pub kind: Kind,
    /// Taken right before the `rename` that made the status visible.
    pub renamed: Instant,
}

/// The tree the phase writes into: the root and the fixture's size.
pub struct Tree<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// Workspaces the fixture wrote (its layout gives their directories).
    pub workspaces: usize,
}

impl Tree<'_> {
    /// Repo directories of the fixture.
    pub fn repos(&self) -> usize {
        self.workspaces.div_ceil(TASKS_PER_REPO)
    }

    /// Writes `status` to the temp file in `dir`, then renames it over `status.json`.
    fn publish(&self, dir: &Path, status: &Value) -> BenchResult<Instant> {
        let temp = dir.join(TEMP);
        std::fs::write(&temp, serde_json::to_vec_pretty(status)?)?;
        let renamed = Instant::now();
        std::fs::rename(&temp, dir.join("status.json"))?;
        Ok(renamed)
    }

    /// A new task directory `task` in the `repo`-th repo directory, finished.
    pub fn finish_new(&self, repo: usize, task: &str) -> BenchResult<Finished> {
        let rel = format!("{}/{task}", repo_of(repo * TASKS_PER_REPO));
        let dir = self.root.join(&rel);
        std::fs::create_dir(&dir)?;
        let (org, repo_name) = rel.split_once('/').map_or(("", ""), |(o, r)| {
            (o, r.split_once('/').map_or(r, |(r, _)| r))
        });
        let now = Clock::system().now().to_rfc3339_seconds();
        let status = json!({
            "status": "completed",
            "agent": "claude",
            "repo": repo_name,
            "org": org,
            "task": task,
            "branch": format!("agent/{task}"),
            "issue": 1,
            "pid": 0,
            "process_id": format!("proc-{task}"),
            "started_at": now,
            "updated_at": now,
            "question": "",
            "runs": 1,
            "pr_url": format!("https://forge.example/{org}/{repo_name}/pulls/1"),
        });
        let renamed = self.publish(&dir, &status)?;
        Ok(Finished {
            id: rel,
            kind: Kind::New,
            renamed,
        })
    }

    /// Fixture workspace `i` (which must be running) turned `completed`.
    pub fn finish_running(&self, i: usize) -> BenchResult<Finished> {
        let rel = workspace_of(i);
        let dir = self.root.join(&rel);
        let mut status: Value = serde_json::from_slice(&std::fs::read(dir.join("status.json"))?)?;
        if status["status"] != "running" {
            return Err(format!("daemon: {rel} is {}, not running", status["status"]).into());
        }
        status["status"] = "completed".into();
        status["updated_at"] = Clock::system().now().to_rfc3339_seconds().into();
        let renamed = self.publish(&dir, &status)?;
        Ok(Finished {
            id: rel,
            kind: Kind::Turned,
            renamed,
        })
    }

    /// `count` distinct running fixture workspaces (every fifth is running), at random.
    pub fn pick_running(&self, count: usize, rng: &mut Rng) -> BenchResult<Vec<usize>> {
        let running = self.workspaces / 5;
        if running < count {
            return Err(format!("daemon: {running} running workspaces, {count} wanted").into());
        }
        let mut picked = std::collections::BTreeSet::new();
        while picked.len() < count {
            picked.insert(5 * (rng.next_u64() as usize % running));
        }
        Ok(picked.into_iter().collect())
    }
}

/// What the platform answered in one epoch.
#[derive(Debug, Default)]
pub struct Answered {
    /// When each wanted id was first answered 2xx.
    pub first: HashMap<String, Instant>,
    /// Requests received in the epoch, whatever their answer.
    pub requests: usize,
    /// Dispatches in the 2xx ones, counted each time they came.
    pub received: usize,
}

/// Waits until the platform has answered 2xx to every id of `wanted` (or `limit`
/// passed; `Duration::ZERO` looks once); what it answered in `epoch`.
pub fn answered(
    server: &LoopbackPlatform,
    epoch: u32,
    wanted: &[String],
    limit: Duration,
) -> Answered {
    let started = Instant::now();
    loop {
        let mut got = Answered::default();
        for arrival in server.requests_in(epoch) {
            got.requests += 1;
            if !(200..300).contains(&arrival.status) {
                continue;
            }
            for id in arrival.dispatch_ids() {
                got.received += 1;
                got.first.entry(id).or_insert(arrival.received_at);
            }
        }
        let done = wanted.iter().all(|id| got.first.contains_key(id));
        if done || started.elapsed() >= limit {
            let wanted: std::collections::HashSet<&String> = wanted.iter().collect();
            got.first.retain(|id, _| wanted.contains(id));
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `q` quantile (nearest rank) of sorted `values`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Writes `count` new task directories spread round-robin over the fixture's repo
/// directories, evenly over `span` (in 20 slices); what finished.
pub fn burst(tree: &Tree<'_>, count: usize, span: Duration) -> BenchResult<Vec<Finished>> {
    const SLICES: usize = 20;
    let repos = tree.repos().max(1);
    let started = Instant::now();
    let mut out = Vec::with_capacity(count);
    for slice in 0..SLICES {
        for k in (slice * count / SLICES)..((slice + 1) * count / SLICES) {
            out.push(tree.finish_new(k % repos, &format!("task-b{k:06}"))?);
        }
        let due = started + span.mul_f64((slice + 1) as f64 / SLICES as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(out)
}

/// The pickup run: `count` workspaces, half new and half turned, in random order,
/// each after a random 0.2-1.5 s.
pub fn pickups(tree: &Tree<'_>, count: usize, rng: &mut Rng) -> BenchResult<Vec<Finished>> {
    let turned = tree.pick_running(count / 2, rng)?;
    let mut kinds: Vec<Option<usize>> = turned.into_iter().map(Some).collect();
    kinds.resize(count, None);
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.next_u64() as usize % (i + 1));
    }
    let repos = tree.repos().max(1);
    let mut out = Vec::with_capacity(count);
    for (k, kind) in kinds.into_iter().enumerate() {
        std::thread::sleep(Duration::from_secs_f64(0.2 + 1.3 * rng.next_f64()));
        out.push(match kind {
            Some(i) => tree.finish_running(i)?,
            None => tree.finish_new(rng.next_u64() as usize % repos, &format!("task-p{k:06}"))?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_workspaces_are_what_the_fixture_layout_says() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        crate::fixture::generate(&root, 120).unwrap();
        let tree = Tree {
            root: &root,
            workspaces: 120,
        };
        assert_eq!(tree.repos(), 3);
        let mut rng = Rng::new(7);
        let picked = tree.pick_running(4, &mut rng).unwrap();
        assert!(picked.iter().all(|i| i % 5 == 0 && *i < 120));
        let turned = tree.finish_running(picked[0]).unwrap();
        assert!(tree.finish_running(picked[0]).is_err());
        let new = tree.finish_new(2, "task-x").unwrap();
        assert_eq!(new.id, "org-00/repo-02/task-x");
        let scan = agent_sync_actors::scanner::walk::scan_tree(&root);
        let ids: Vec<String> = scan.terminal.iter().filter_map(|d| d.record.id()).collect();
        assert!(ids.contains(&turned.id) && ids.contains(&new.id));
        assert!(!root.join(&new.id).join(TEMP).exists());
        let ms = |n| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=50).map(ms).collect();
        assert_eq!(quantile(&sorted, 0.5), ms(25));
        assert_eq!(quantile(&sorted, 0.99), ms(50));
    }
}
