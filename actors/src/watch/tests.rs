//! The watcher with a fake backend: what is watched, what an event becomes, and that a
//! lost event or a failed watch becomes a rescan.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::*;

/// Records watches; refuses every add once `limit` are held.
struct Fake {
    /// Directories watched now.
    watched: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// Most watches the "kernel" allows.
    limit: usize,
}

impl Backend for Fake {
    fn add(&mut self, dir: &Path) -> Result<(), AddError> {
        let mut watched = self.watched.lock().unwrap();
        if watched.len() >= self.limit {
            return Err(AddError::Limit);
        }
        watched.insert(dir.to_path_buf());
        Ok(())
    }

    fn remove(&mut self, dir: &Path) {
        self.watched.lock().unwrap().remove(dir);
    }
}

/// A watcher over `root` with a fake backend: its watches, its work, its channel.
struct Rig {
    watched: Arc<Mutex<BTreeSet<PathBuf>>>,
    work: Arc<Mutex<Vec<Work>>>,
    signals: Sender<Signal>,
    _watcher: TreeWatcher,
}

fn rig(root: &Path, limit: usize) -> Rig {
    rig_with(root, limit, DEFAULT_MAX_PLAN_AGE)
}

fn rig_with(root: &Path, limit: usize, max_plan_age: Duration) -> Rig {
    let watched = Arc::new(Mutex::new(BTreeSet::new()));
    let work = Arc::new(Mutex::new(Vec::new()));
    let (signals, receiver) = channel();
    let sink_work = work.clone();
    let config = WatchConfig {
        budget: 1000,
        debounce: Duration::from_millis(20),
        resolver: Resolver::Native,
        max_plan_age,
    };
    let backend = Fake {
        watched: watched.clone(),
        limit,
    };
    let watcher = TreeWatcher::start_with(
        root.to_path_buf(),
        None,
        config,
        Stats::default(),
        Box::new(backend),
        (signals.clone(), receiver),
        move |w, _: &Replan| sink_work.lock().unwrap().push(w),
    );
    Rig {
        watched,
        work,
        signals,
        _watcher: watcher,
    }
}

impl Rig {
    /// Waits (generously) until `done` holds of the work handed on.
    fn wait_for(&self, what: &str, done: impl Fn(&[Work]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.work.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "no {what}: {:?}",
                self.work.lock()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The watched directories relative to `root`.
    fn watched(&self, root: &Path) -> Vec<String> {
        let watched = self.watched.lock().unwrap();
        watched
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_str().unwrap().to_string())
            .collect()
    }
}

fn write(root: &Path, name: &str, status: &str, age: Option<Duration>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("repo/src")).unwrap();
    std::fs::create_dir_all(dir.join(".meta")).unwrap();
    let file = dir.join("status.json");
    std::fs::write(&file, status).unwrap();
    if let Some(age) = age {
        let old = SystemTime::now() - age;
        std::fs::File::open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    dir
}

const DONE: &str = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;
const RUNNING: &str = r#"{"status":"running","pid":1}"#;
const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn levels_and_workspaces_not_known_terminal_are_watched_nothing_inside_nor_through_a_symlink() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(root.path(), "o/r/old-done", DONE, Some(DAY));
    write(root.path(), "o/r/fresh", RUNNING, None);
    write(outside.path(), "x/y/z", RUNNING, None);
    std::os::unix::fs::symlink(outside.path().join("x"), root.path().join("x")).unwrap();
    let rig = rig(root.path(), usize::MAX);
    rig.wait_for("plan", |_| rig.watched.lock().unwrap().len() >= 4);
    std::thread::sleep(Duration::from_millis(100));
    // The root, the org, the repo, and the one workspace that may still change.
    assert_eq!(rig.watched(root.path()), ["", "o", "o/r", "o/r/fresh"]);
}

#[test]
fn a_new_task_directory_and_a_status_that_changed_become_one_targeted_batch() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "o/r/t-1", RUNNING, None);
    let rig = rig(root.path(), usize::MAX);
    rig.wait_for("plan", |_| rig.watched.lock().unwrap().len() >= 4);
    // A new repo with a task in it, and t-1 turning completed.
    write(root.path(), "o/r2/t-9", DONE, None);
    std::fs::write(root.path().join("o/r/t-1/status.json"), DONE).unwrap();
    for path in ["o/r2", "o/r/t-1/status.json", "o/r/t-1/status.json"] {
        rig.signals
            .send(Signal::Changed(root.path().join(path)))
            .unwrap();
    }
    rig.wait_for("the batch", |work| !work.is_empty());
    assert_eq!(
        rig.work.lock().unwrap()[0],
        Work::Workspaces(vec!["o/r/t-1".into(), "o/r2/t-9".into()])
    );
    assert!(rig.watched(root.path()).contains(&"o/r2/t-9".to_string()));
}

#[test]
fn an_overflow_becomes_a_rescan() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "o/r/t-1", RUNNING, None);
    let rig = rig(root.path(), usize::MAX);
    rig.signals.send(Signal::Overflow).unwrap();
    rig.wait_for("a rescan", |work| {
        work.iter().any(|w| matches!(w, Work::Rescan(_)))
    });
    assert_eq!(rig._watcher.stats().overflows(), 1);
}

#[test]
fn a_watch_the_kernel_refuses_becomes_a_rescan() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "o/r/t-1", RUNNING, None);
    // Room for the root and the org only.
    let rig = rig(root.path(), 2);
    rig.wait_for("a rescan", |work| {
        work.iter().any(|w| matches!(w, Work::Rescan(_)))
    });
    // A new directory that cannot be watched either: a rescan again, not a miss.
    rig.work.lock().unwrap().clear();
    write(root.path(), "o/r3/t-2", DONE, None);
    rig.signals
        .send(Signal::Changed(root.path().join("o/r3")))
        .unwrap();
    rig.wait_for("a rescan or the workspace", |work| {
        work.iter().any(|w| match w {
            Work::Rescan(_) => true,
            Work::Workspaces(names) => names.contains(&"o/r3/t-2".to_string()),
        })
    });
}

#[test]
fn a_symlink_planted_in_a_watched_directory_is_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(root.path(), "o/r/t-1", RUNNING, None);
    write(outside.path(), "evil", DONE, None);
    let rig = rig(root.path(), usize::MAX);
    rig.wait_for("plan", |_| rig.watched.lock().unwrap().len() >= 4);
    std::os::unix::fs::symlink(outside.path().join("evil"), root.path().join("o/r/evil")).unwrap();
    std::fs::create_dir_all(root.path().join("o/r/real")).unwrap();
    for path in ["o/r/evil", "o/r/real"] {
        rig.signals
            .send(Signal::Changed(root.path().join(path)))
            .unwrap();
    }
    // The real directory is watched (it settles the burst); the link never is.
    rig.wait_for("the real directory", |_| {
        rig.watched
            .lock()
            .unwrap()
            .contains(&root.path().join("o/r/real"))
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(!rig.watched(root.path()).iter().any(|w| w.contains("evil")));
    assert!(rig.work.lock().unwrap().iter().all(|w| match w {
        Work::Workspaces(names) => names.iter().all(|n| !n.contains("evil")),
        Work::Rescan(_) => true,
    }));
}

#[test]
fn a_periodic_refresh_plans_again_only_once_the_plan_is_old() {
    for (max_plan_age, planned_again) in [(DAY, false), (Duration::ZERO, true)] {
        let root = tempfile::tempdir().unwrap();
        let t1 = write(root.path(), "o/r/t-1", RUNNING, None);
        let rig = rig_with(root.path(), usize::MAX, max_plan_age);
        rig.wait_for("plan", |_| rig.watched.lock().unwrap().len() >= 4);
        // A repo whose events never reach the watcher: only a plan can find it.
        write(root.path(), "o/r2/t-2", RUNNING, None);
        rig.signals.send(Signal::Refresh).unwrap();
        // Signals are handled in order: once this change is handed on, so is the
        // refresh.
        std::fs::write(t1.join("status.json"), DONE).unwrap();
        rig.signals
            .send(Signal::Changed(t1.join("status.json")))
            .unwrap();
        rig.wait_for("the change", |work| {
            work.iter()
                .any(|w| matches!(w, Work::Workspaces(names) if names == &["o/r/t-1"]))
        });
        let watched = rig.watched(root.path());
        assert_eq!(
            watched.iter().any(|d| d == "o/r2"),
            planned_again,
            "max plan age {max_plan_age:?}: {watched:?}"
        );
    }
}
