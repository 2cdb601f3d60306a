//! Storage faults under redb, in process (design.md §6 R1, R4): the actors run over a
//! [`Faults`] backend (`testkit/src/faults/`) that fails writes or syncs on demand (a
//! full disk) or cuts the power at a chosen sync, and the state is then read back
//! with the plain `Store::open`, as after a restart. What is checked is the Queue's
//! promise: an enqueue is acknowledged only once durable, so whatever the fault,
//! every acknowledged enqueue is queued, whole, in order, once; one that failed is
//! absent or whole, never partial. The harness's own counting is checked here too:
//! one sync per durable enqueue commit (the benchmark counts fsyncs with it).
//!
//! The actors are offline (no token): nothing but their own commits touches the
//! store, so sync points are the same on every run. Each run holding a faulty store
//! lives in a System of its own ([`in_own_system`]), which drops the store with it.
//! Process-level faults (`RLIMIT_FSIZE`, truncated files) are in `storage_faults.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use agent_sync_actors::dispatch::Dispatch;
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::error::StoreError;
use agent_sync_actors::messages::*;
use agent_sync_actors::sync_record::{Direction, SyncRecord};
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;
use serde_json::json;

/// A dispatch `{"id", "status", "pad"}` of about `pad` bytes more than a plain one.
fn padded(id: &str, pad: usize) -> Dispatch {
    let value = json!({"id": id, "status": "completed", "pad": "p".repeat(pad)});
    Dispatch::from(value.as_object().cloned().expect("an object"))
}

/// `n` dispatches `<prefix>-0..n`, each padded by `pad` bytes.
fn batch(prefix: &str, n: usize, pad: usize) -> Vec<Dispatch> {
    (0..n)
        .map(|j| padded(&format!("{prefix}-{j}"), pad))
        .collect()
}

/// The ids of a batch, in order.
fn ids(batch: &[Dispatch]) -> Vec<String> {
    batch.iter().map(|d| d.id().expect("dispatch id")).collect()
}

/// Every dispatch id of the queue, head first.
fn queued_ids(entries: &[QueueEntry]) -> Vec<String> {
    entries.iter().flat_map(entry_ids).collect()
}

/// An enqueue of host dispatches whose failure is an answer, not a panic.
async fn try_enqueue(
    actors: &SyncActors,
    batch: Vec<Dispatch>,
) -> Result<EnqueueReceipt, StoreError> {
    actors
        .queue
        .send(Enqueue {
            agent_id: AGENT_ID.into(),
            fleet_node_id: None,
            batch: EnqueueBatch::Host(batch),
        })
        .await
        .expect("the queue is running")
}

/// One enqueue as the caller saw it: its ids, and whether it was acknowledged (the
/// error's text when not).
type Step = (Vec<String>, Result<(), String>);

/// Sends `batch` and records how it was answered.
async fn step(actors: &SyncActors, batch: Vec<Dispatch>) -> Step {
    let ids = ids(&batch);
    let answer = try_enqueue(actors, batch)
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    (ids, answer)
}

/// `queued` is the enqueues of `steps` in order, each whole: every acknowledged one,
/// and any subset of the refused ones (a refused commit may still have reached the
/// file). Returns the refused enqueues found queued.
#[track_caller]
fn assert_acknowledged_whole_in_order(what: &str, steps: &[Step], queued: &[String]) -> usize {
    let mut unique = queued.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        queued.len(),
        "{what}: a duplicate in {queued:?}"
    );
    let mut at = 0;
    let mut refused_but_queued = 0;
    for (ids, answer) in steps {
        let whole = queued[at..].starts_with(ids);
        match answer {
            Ok(()) => assert!(
                whole,
                "{what}: acknowledged {ids:?} is not queued whole at {at} of {queued:?}"
            ),
            Err(_) if whole => refused_but_queued += 1,
            Err(_) => {
                let any = ids.iter().any(|id| queued.contains(id));
                assert!(
                    !any,
                    "{what}: refused {ids:?} is queued in part: {queued:?}"
                );
                continue;
            }
        }
        at += ids.len();
    }
    assert_eq!(
        at,
        queued.len(),
        "{what}: queued beyond the enqueues: {queued:?}"
    );
    refused_but_queued
}

/// Owned paths of `dirs`, for a System of their own.
fn paths(dirs: &Dirs) -> (PathBuf, PathBuf) {
    (dirs.root().to_path_buf(), dirs.state().to_path_buf())
}

/// How the disk fills in [`a_failed_enqueue_commit_is_refused_and_nothing_is_half_queued`].
#[derive(Clone, Copy, Debug)]
enum Full {
    /// Every write fails: the commit never reaches the file.
    Writes,
    /// Every sync fails: the commit's writes reach the file, its fsync does not.
    Syncs,
}

#[actix::test]
async fn a_failed_enqueue_commit_is_refused_and_nothing_is_half_queued() {
    let platform = LoopbackPlatform::start().await;
    // Small, the refused commit fits the file; large, it must grow it first (a sync
    // of its own, before any of the commit's pages is written).
    for (full, pad) in [
        (Full::Writes, 100),
        (Full::Writes, 6_000),
        (Full::Syncs, 100),
        (Full::Syncs, 6_000),
    ] {
        let what = format!("{full:?}, padded {pad}");
        let dirs = Dirs::new();
        let (root, state) = paths(&dirs);
        let url = platform.url();
        let faults = Faults::new();
        let (steps, live) = in_own_system(move || async move {
            let store = faults
                .open_store(&state)
                .expect("open over the faulty backend");
            let actors = start_actors_over(&store, &root, &url, None, &Options::max_batch(4));
            let mut steps = vec![step(&actors, batch("a", 3, 100)).await];
            match full {
                Full::Writes => faults.fail_writes(true),
                Full::Syncs => faults.fail_syncs(true),
            }
            // In two entries: a partial commit would show.
            steps.push(step(&actors, batch("b", 6, pad)).await);
            // The store reopens the file on next use, and that fails too while full.
            steps.push(step(&actors, batch("c", 1, 100)).await);
            faults.heal();
            steps.push(step(&actors, batch("d", 2, 100)).await);
            // The same process goes on once there is room: the store reopened the file.
            (steps, queued_ids(&queue(&actors).await))
        })
        .await;
        let answers: Vec<bool> = steps.iter().map(|(_, a)| a.is_ok()).collect();
        assert_eq!(answers, [true, false, false, true], "{what}: {steps:?}");
        for (_, answer) in &steps[1..3] {
            let error = answer.as_ref().unwrap_err();
            assert!(
                error.contains("No space left on device") && error.contains("disk space"),
                "{what}: the caller is told why: {error}"
            );
        }
        let refused_but_queued =
            assert_acknowledged_whole_in_order(&format!("{what}, live"), &steps, &live);
        let (entries, _) = reopen(dirs.root(), dirs.state()).await;
        let reopened = queued_ids(&entries);
        assert_eq!(
            reopened, live,
            "{what}: a restart finds what the process saw"
        );
        assert_acknowledged_whole_in_order(&format!("{what}, reopened"), &steps, &reopened);
        if matches!(full, Full::Writes) {
            assert_eq!(refused_but_queued, 0, "no write, no commit: {reopened:?}");
        }
        note(&format!(
            "full disk ({what}): {refused_but_queued} refused enqueue(s) found queued after \
             the fault cleared"
        ));
    }
    assert!(platform.pushes().is_empty(), "offline: nothing is sent");
}

/// The enqueues of the power-cut test: 1 to 3 dispatches each, every third one large
/// enough that its commit grows the file (a sync of its own), in entries of up to 4.
fn sequence() -> Vec<Vec<Dispatch>> {
    (0..9)
        .map(|i| {
            let pad = if i % 3 == 2 { 60_000 } else { 200 };
            batch(&format!("e{i}"), 1 + i % 3, pad)
        })
        .collect()
}

/// Runs [`sequence`] over a faulty store in `dirs` (cut at `cut`, if given) in a
/// System of its own: how each enqueue was answered, and the syncs they made.
async fn run_sequence(
    dirs: &Dirs,
    url: String,
    faults: Arc<Faults>,
    cut: Option<(u64, Cut)>,
) -> (Vec<Step>, u64) {
    let (root, state) = paths(dirs);
    in_own_system(move || async move {
        let store = faults
            .open_store(&state)
            .expect("open over the faulty backend");
        let actors = start_actors_over(&store, &root, &url, None, &Options::max_batch(4));
        let before = faults.syncs();
        if let Some((k, side)) = cut {
            faults.cut_at_sync(k, side);
        }
        let mut steps = Vec::new();
        for batch in sequence() {
            steps.push(step(&actors, batch).await);
        }
        (steps, faults.syncs() - before)
    })
    .await
}

#[actix::test]
async fn a_power_cut_at_any_sync_keeps_exactly_the_acknowledged_enqueues_in_order() {
    let platform = LoopbackPlatform::start().await;
    // Without a cut: every sync point of the sequence.
    let dirs = Dirs::new();
    let (steps, total) = run_sequence(&dirs, platform.url(), Faults::new(), None).await;
    assert!(steps.iter().all(|(_, a)| a.is_ok()), "{steps:?}");
    let enqueues = steps.len() as u64;
    assert!(
        total > enqueues,
        "one sync per enqueue and some for growing the file: {total}"
    );
    note(&format!(
        "power cut: {total} sync points in {enqueues} enqueues"
    ));
    for side in [Cut::BeforeSync, Cut::AfterSync] {
        for k in 1..=total {
            let what = format!("cut {side:?} sync {k} of {total}");
            let dirs = Dirs::new();
            let faults = Faults::with_power_cuts();
            let (steps, _) =
                run_sequence(&dirs, platform.url(), faults.clone(), Some((k, side))).await;
            assert!(faults.is_cut(), "{what}: the cut happened");
            // Acknowledged until the cut, refused from it on.
            let acknowledged = steps.iter().take_while(|(_, a)| a.is_ok()).count();
            assert!(
                steps[acknowledged..].iter().all(|(_, a)| a.is_err()),
                "{what}: a dead machine acknowledges nothing: {steps:?}"
            );
            let (entries, _) = reopen(dirs.root(), dirs.state()).await;
            let queued = queued_ids(&entries);
            let expected: Vec<String> = steps[..acknowledged]
                .iter()
                .flat_map(|(ids, _)| ids.clone())
                .collect();
            // Exactly: a commit cut before its last sync is lost, and its caller was
            // told so; one cut after it was acknowledged and is kept.
            assert_eq!(queued, expected, "{what}");
            assert_acknowledged_whole_in_order(&what, &steps, &queued);
        }
    }
    assert!(platform.pushes().is_empty(), "offline: nothing is sent");
}

#[actix::test]
async fn syncs_counted_move_by_one_per_durable_enqueue_commit() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let faults = Faults::new();
    let store = faults
        .open_store(dirs.state())
        .expect("open over the faulty backend");
    let actors = start_actors_over(
        &store,
        dirs.root(),
        &platform.url(),
        None,
        &Options::default(),
    );
    // One at a time: one commit each.
    for i in 0..20 {
        let (syncs, grows) = (faults.syncs(), faults.grows());
        enqueue(&actors, &[&format!("one-{i}")]).await;
        assert_eq!(
            faults.grows(),
            grows,
            "a small enqueue does not grow the file"
        );
        assert_eq!(faults.syncs() - syncs, 1, "enqueue {i}");
    }
    // Fifty in the mailbox at once: one group commit.
    let syncs = faults.syncs();
    let sent: Vec<_> = (0..50)
        .map(|i| {
            actors.queue.send(Enqueue {
                agent_id: AGENT_ID.into(),
                fleet_node_id: None,
                batch: EnqueueBatch::Host(dispatches(&[&format!("group-{i}")])),
            })
        })
        .collect();
    for answer in sent {
        answer
            .await
            .expect("the queue is running")
            .expect("enqueue");
    }
    assert_eq!(faults.syncs() - syncs, 1, "one group commit, one sync");
    // A large enqueue: one more sync per growth of the file, and no other.
    let (syncs, grows) = (faults.syncs(), faults.grows());
    try_enqueue(&actors, batch("large", 4, 200_000))
        .await
        .expect("enqueue");
    let grown = faults.grows() - grows;
    assert!(grown > 0, "800 kB grow the file");
    assert_eq!(faults.syncs() - syncs, 1 + grown);
    // A commit without durability (History's) syncs nothing.
    let syncs = faults.syncs();
    record_a_push(&actors).await;
    assert_eq!(faults.syncs(), syncs, "Durability::None");
    assert_eq!(summary(&actors).await.dispatches, 20 + 50 + 4);
    assert!(platform.pushes().is_empty(), "offline: nothing is sent");
}

/// Records a push in History: a commit with `Durability::None`.
async fn record_a_push(actors: &SyncActors) {
    actors
        .history
        .send(Record(SyncRecord {
            agent_id: AGENT_ID.into(),
            fleet_node_id: None,
            direction: Direction::Push,
            payload_size: 10,
            items_count: 1,
            synced_at: now(),
        }))
        .await
        .expect("history is running")
        .expect("record");
}

#[actix::test]
async fn a_power_cut_drops_an_unsynced_write_and_keeps_the_synced_ones() {
    let dirs = Dirs::new();
    let faults = Faults::with_power_cuts();
    let store = faults
        .open_store(dirs.state())
        .expect("open over the faulty backend");
    let actors = start_actors_over(&store, dirs.root(), &dead_url(), None, &Options::no_drain());
    enqueue(&actors, &["kept"]).await;
    record_a_push(&actors).await;
    assert_eq!(
        records(&actors, None).await.len(),
        1,
        "the live process sees it"
    );
    faults.power_cut().expect("cut the power");
    // The dead process acknowledges nothing more.
    let after = try_enqueue(&actors, dispatches(&["after"])).await;
    assert!(after.is_err(), "{after:?}");
    // The file opens with the plain store while the dead one still exists: its locks
    // went with the power.
    let (entries, history) = reopen(dirs.root(), dirs.state()).await;
    assert_eq!(queued_ids(&entries), ["kept"]);
    assert!(history.is_empty(), "never synced, so lost: {history:?}");
}
