//! What tests put on disk and hand to the actors: temp dirs, workspaces
//! (`<root>/<name>/status.json`, `.meta/report.json`) and host dispatches.

use std::fs;
use std::path::{Path, PathBuf};

use agent_sync_actors::dispatch::Dispatch;
use serde_json::{json, Value};

/// A workspace root and a state dir, removed on drop.
pub struct Dirs {
    root: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Dirs {
    /// Two fresh temp dirs.
    pub fn new() -> Self {
        Dirs {
            root: tempfile::tempdir().expect("temp workspace root"),
            state: tempfile::tempdir().expect("temp state dir"),
        }
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The state dir.
    pub fn state(&self) -> &Path {
        self.state.path()
    }
}

impl Default for Dirs {
    fn default() -> Self {
        Dirs::new()
    }
}

/// Writes `<root>/<name>/status.json`; returns the workspace dir.
pub fn write_workspace(root: &Path, name: &str, status_json: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).expect("create the workspace dir");
    fs::write(dir.join("status.json"), status_json).expect("write status.json");
    dir
}

/// Writes `<root>/<name>/.meta/report.json`.
pub fn write_report(root: &Path, name: &str, report_json: &str) {
    let meta = root.join(name).join(".meta");
    fs::create_dir_all(&meta).expect("create .meta");
    fs::write(meta.join("report.json"), report_json).expect("write report.json");
}

/// A minimal `status.json` body.
pub fn status_json(status: &str, updated_at: &str, runs: i64) -> String {
    json!({
        "status": status,
        "agent": "codex",
        "updated_at": updated_at,
        "runs": runs,
    })
    .to_string()
}

/// Writes a `completed` workspace updated at `2026-04-14T12:00:00Z`, run once.
pub fn write_done(root: &Path, name: &str) -> PathBuf {
    write_workspace(
        root,
        name,
        &status_json("completed", "2026-04-14T12:00:00Z", 1),
    )
}

/// [`write_done`] with a report whose summary is `report_bytes` bytes long: a
/// workspace whose dispatch is that much larger.
pub fn write_done_with_report(root: &Path, name: &str, report_bytes: usize) -> PathBuf {
    let dir = write_done(root, name);
    let report = json!({"summary": "r".repeat(report_bytes)});
    write_report(root, name, &report.to_string());
    dir
}

/// A host dispatch as a host hands it over: `{"id", "status": "completed", "agent"}`.
pub fn host(id: &str) -> Value {
    json!({"id": id, "status": "completed", "agent": "host-agent"})
}

/// The dispatches `{"id", "status": "completed"}` of these ids, as the Queue takes
/// them in an `Enqueue`.
pub fn dispatches(ids: &[&str]) -> Vec<Dispatch> {
    ids.iter().map(|id| dispatch(id)).collect()
}

/// One dispatch `{"id", "status": "completed"}` as the Queue takes it.
pub fn dispatch(id: &str) -> Dispatch {
    let value = json!({"id": id, "status": "completed"});
    Dispatch::from(value.as_object().cloned().expect("an object"))
}
