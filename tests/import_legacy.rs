//! `agent-sync import-legacy` end to end (design.md §8): the Go agent's sync dir is
//! imported once, its files are left as they were, the imported queue delivers, and
//! the ledger fingerprints derived at import match what a scan finds; a corrupt file
//! imports nothing, and neither does an import whose one commit fails (a full disk, a
//! power cut: the testkit's faulty storage backend). The harness is
//! `tests/cli/main.rs`'s.

use std::fs;
use std::path::{Path, PathBuf};

use agent_sync::actors::dispatch::{Dispatch, ScannedDispatch};
use agent_sync::actors::Store;
use agent_sync::legacy::{self, LegacyError};
use agent_sync::messages::{CachedContext, Enqueue, EnqueueBatch, LedgerSize};
use agent_sync::SyncConfig;
use agent_sync_testkit::*;
use serde_json::{json, Value};

/// A token distinctive enough that finding it anywhere in output is a leak.
const SECRET: &str = "import-secret-94d27be613";
/// The agent id every command runs as.
const AGENT: &str = "import-agent";

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// The Go agent's sync dir, as it wrote it (RFC 3339 with nanoseconds and offsets,
/// zero times, `runs` read back as a float).
fn write_go_state(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fs::create_dir_all(dir).unwrap();
    let files = [
        (
            "queue.json",
            json!([{
                "agent_id": "go-agent",
                "fleet_node_id": 3,
                "dispatches": [{
                    "id": "core/go-io/task-9", "workspace": "core/go-io/task-9",
                    "status": "completed", "runs": 2.0,
                    "updated_at": "2026-04-14T13:00:00.123456789+01:00"
                }],
                "queued_at": "2026-04-14T12:36:44.987654321+01:00",
                "attempts": 2,
                "next_attempt": "0001-01-01T00:00:00Z"
            }]),
        ),
        (
            "ledger.json",
            json!({
                "core/go-io/task-1": "2026-04-10T09:00:00Z#1",
                "core/go-io/task-2": "2026-04-11T09:00:00.5+02:00#0"
            }),
        ),
        (
            "records.json",
            json!([
                {"agent_id": "go-agent", "direction": "push", "payload_size": 512, "items_count": 3,
                 "synced_at": "2026-04-13T10:00:00Z"},
                {"agent_id": "go-agent", "fleet_node_id": 3, "direction": "pull", "payload_size": 100,
                 "items_count": 1, "synced_at": "2026-04-13T11:00:00Z"}
            ]),
        ),
        (
            "status.json",
            json!({
                "last_push_at": "2026-04-13T11:00:00.5+01:00",
                "last_pull_at": "0001-01-01T00:00:00Z"
            }),
        ),
        (
            "context.json",
            json!([{"id": "m1", "content": "remember this"}]),
        ),
    ];
    files
        .iter()
        .map(|(name, value)| {
            let path = dir.join(name);
            let bytes = serde_json::to_vec_pretty(value).unwrap();
            fs::write(&path, &bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

#[actix_rt::test]
async fn import_legacy_runs_once_leaves_the_files_and_its_queue_delivers() {
    let sandbox = sandbox();
    // Default --from is the state dir, where the Go agent kept its files.
    let files = write_go_state(&sandbox.state());

    let first = run_async(sandbox.cmd(&["--json", "import-legacy"]))
        .await
        .ok()
        .json();
    assert_eq!(first["already_imported"], false, "{first}");
    assert_eq!(first["queue_entries"], 1);
    assert_eq!(first["queued_dispatches"], 1);
    assert_eq!(first["ledger_entries"], 2);
    assert_eq!(first["history_records"], 2);
    assert_eq!(first["context_items"], 1);
    assert_eq!(first["last_push_at"], "2026-04-13T10:00:00.5Z");
    assert_eq!(first["last_pull_at"], Value::Null);

    let second = run_async(sandbox.cmd(&["import-legacy"])).await.ok().stdout;
    assert!(second.contains("already imported: yes"), "{second}");
    assert!(second.contains("queue entries: 0"), "{second}");
    for (path, bytes) in &files {
        assert_eq!(
            &fs::read(path).unwrap(),
            bytes,
            "{} was modified",
            path.display()
        );
    }

    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue.as_array().map(Vec::len), Some(1), "{queue}");
    assert_eq!(queue[0]["agent_id"], "go-agent");
    assert_eq!(queue[0]["attempts"], 2);
    assert_eq!(queue[0]["next_attempt"], Value::Null);
    assert_eq!(queue[0]["queued_at"], "2026-04-14T11:36:44.987Z");
    assert_eq!(queue[0]["dispatches"][0]["id"], "core/go-io/task-9");
    let history = run_async(sandbox.cmd(&["--json", "history"]))
        .await
        .ok()
        .json();
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    assert_eq!(history[0]["direction"], "push");
    assert_eq!(history[1]["fleet_node_id"], 3);
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["ledger_entries"], 2);
    assert_eq!(status["context_count"], 1);
    assert_eq!(status["queued_entries"], 1);
    assert_eq!(status["last_push_at"], "2026-04-13T10:00:00.5Z");
    assert_eq!(status["head"]["attempts"], 2);

    // Delivering the imported entry marks the ledger with the fingerprint derived at
    // import, so the same workspace found by a scan is not pushed again.
    let platform = LoopbackPlatform::start().await;
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 1");
    let delivered = platform.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].json()["agent_id"], "go-agent");
    assert_eq!(delivered[0].json()["fleet_node_id"], 3);
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["ledger_entries"], 3);
    assert_eq!(status["queued_entries"], 0);
    write_workspace(
        &sandbox.root(),
        "core/go-io/task-9",
        &status_json("completed", "2026-04-14T13:00:00+01:00", 2),
    );
    let out = run_async(sandbox.online(&platform.url(), &["push"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    assert_eq!(
        platform.pushes().len(),
        1,
        "the imported fingerprint matched the scan"
    );
    platform.stop().await;
}

#[test]
fn import_legacy_refuses_a_corrupt_file_and_imports_nothing() {
    let sandbox = sandbox();
    let go = sandbox.path().join("go-sync");
    write_go_state(&go);
    fs::write(go.join("records.json"), "{\"oops\"").unwrap();
    let out = run(sandbox.cmd(&["import-legacy", "--from", go.to_str().unwrap()]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("records.json"),
        "{}",
        out.stderr
    );
    let status = run(sandbox.cmd(&["--json", "status"])).ok().json();
    assert_eq!(
        (
            status["queued_entries"].clone(),
            status["ledger_entries"].clone()
        ),
        (json!(0), json!(0))
    );
    // Fixed, it imports (no marker was written by the failed run).
    write_go_state(&go);
    let out = run(sandbox.cmd(&["import-legacy", "--from", go.to_str().unwrap()])).ok();
    assert!(out.stdout.contains("queue entries: 1"), "{}", out.stdout);
}

/// What an import of [`write_go_state`] left in a closed state: queue entries, ledger
/// pairs, history records, context items, and whether the marker is set.
async fn left_in(dirs: &Dirs) -> (usize, u64, usize, usize, bool) {
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    let store = Store::open(&state).expect("open the state");
    let marker = store.marker(legacy::MARKER).unwrap().is_some();
    drop(store);
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        let ledger = actors.ledger.send(LedgerSize).await.unwrap().unwrap();
        let context = actors.puller.send(CachedContext).await.unwrap().unwrap();
        (
            queue(&actors).await.len(),
            ledger,
            records(&actors, None).await.len(),
            context.len(),
            marker,
        )
    })
    .await
}

#[actix_rt::test]
async fn an_import_that_fails_to_commit_leaves_nothing_and_a_rerun_imports_everything_once() {
    const NOTHING: (usize, u64, usize, usize, bool) = (0, 0, 0, 0, false);
    const EVERYTHING: (usize, u64, usize, usize, bool) = (1, 2, 2, 1, true);
    let go = tempfile::tempdir().unwrap();
    write_go_state(go.path());
    // A power cut at each sync in turn (the file put back as the last sync left it),
    // until the import gets through; first a full disk.
    for cut_at in 0.. {
        let dirs = Dirs::new();
        let config = SyncConfig {
            agent_id: AGENT.into(),
            ..SyncConfig::new(dirs.root(), dirs.state())
        };
        let faults = Faults::with_power_cuts();
        let store = faults.open_store(dirs.state()).expect("open the state");
        if cut_at == 0 {
            faults.fail_writes(true);
        } else {
            faults.cut_at_sync(cut_at, Cut::BeforeSync);
        }
        let result = legacy::import_into(&store, &config, go.path());
        drop(store);
        if result.is_ok() {
            assert!(cut_at > 1, "the import's commit syncs");
            assert_eq!(left_in(&dirs).await, EVERYTHING);
            break;
        }
        assert!(matches!(result, Err(LegacyError::Sync(_))), "{result:?}");
        assert_eq!(left_in(&dirs).await, NOTHING, "cut at sync {cut_at}");
        // No marker was left either: the rerun imports everything, and only once.
        let first = legacy::import(&config, go.path()).expect("the rerun imports");
        assert!(!first.already_imported);
        let second = legacy::import(&config, go.path()).expect("a second rerun");
        assert!(second.already_imported);
        assert_eq!(left_in(&dirs).await, EVERYTHING, "cut at sync {cut_at}");
    }
}

#[actix_rt::test]
async fn a_go_dispatch_already_queued_here_or_delivered_is_not_imported_again() {
    // One Go entry of three: task-7 is in Go's own ledger too (Go crashed between the
    // delivery and the queue write), task-8 this agent-sync already queued from a
    // scan, task-9 is new. Only task-9 may be queued again.
    let go = tempfile::tempdir().unwrap();
    let at = |hour: u32| format!("2026-04-14T{hour:02}:00:00Z");
    let go_dispatch = |task: u32, hour: u32| {
        json!({"id": format!("core/go-io/task-{task}"), "status": "completed",
               "runs": 1.0, "updated_at": at(hour)})
    };
    fs::write(
        go.path().join("queue.json"),
        json!([{"agent_id": AGENT, "queued_at": at(9), "attempts": 1,
                "dispatches": [go_dispatch(7, 7), go_dispatch(8, 8), go_dispatch(9, 9)]}])
        .to_string(),
    )
    .unwrap();
    fs::write(
        go.path().join("ledger.json"),
        json!({"core/go-io/task-7": format!("{}#1", at(7))}).to_string(),
    )
    .unwrap();
    let dirs = Dirs::new();
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    let task_8 = ("core/go-io/task-8".to_string(), format!("{}#1", at(8)));
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        let receipt = actors
            .queue
            .send(Enqueue {
                agent_id: AGENT.into(),
                fleet_node_id: None,
                batch: EnqueueBatch::Scanned(vec![ScannedDispatch {
                    id: task_8.0.clone(),
                    fingerprint: task_8.1,
                    record: Dispatch::from(json!({"id": task_8.0}).as_object().unwrap().clone()),
                }]),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(receipt.dispatches, 1);
    })
    .await;

    let config = SyncConfig {
        agent_id: AGENT.into(),
        ..SyncConfig::new(dirs.root(), dirs.state())
    };
    let report = legacy::import(&config, go.path()).expect("the import");
    assert_eq!(
        (
            report.queue_entries,
            report.queued_dispatches,
            report.already_held
        ),
        (1, 1, 2),
        "{report:?}"
    );
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    let entries =
        in_own_system(move || async move { queue(&start_offline(&root, &state)).await }).await;
    let ids: Vec<Vec<String>> = entries.iter().map(entry_ids).collect();
    assert_eq!(ids, [["core/go-io/task-8"], ["core/go-io/task-9"]]);
    // The imported entry's one scanned key points at its one dispatch, so its
    // delivery marks task-9, not a position that is gone.
    let keys: Vec<(usize, &str)> = entries[1]
        .fingerprints
        .iter()
        .map(|k| (k.index, k.id.as_str()))
        .collect();
    assert_eq!(keys, [(0, "core/go-io/task-9")]);
}
