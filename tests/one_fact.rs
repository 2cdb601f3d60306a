//! One fact, one commit (design.md §4.5): whether a scanned (id, fingerprint) is
//! queued, dead-lettered or delivered is read and changed by the Queue in the commit
//! that inserts or records it, so no overlap of a scan, a host push and a delivery
//! can queue a delivered dispatch again, lose a version, or move the Ledger back.
//!
//! - a scan whose questions (`NotQueued`, `Unsynced`) were answered before another
//!   path queued and delivered (or refused) the same dispatch queues nothing;
//! - two versions of one id in one entry are both queued at their positions, and
//!   their delivery leaves the newer one in the Ledger and no key behind;
//! - a split part marks exactly the scanned keys it carried, by position, never by id;
//! - delivering a requeued older dead letter never moves the Ledger back;
//! - a stop that arrives while the lease is being taken sends nothing and gives the
//!   lease back;
//! - after a restart a never-leased tail that is not the head is reopened; the head
//!   and an attempted tail are not.
//!
//! The tests play the Scanner (they ask the Queue and the Ledger, then enqueue) and,
//! where a test looks between two outcomes, the Pusher (`LeaseNext`, then `Report`):
//! the Queue's decisions are the subject. A fingerprint is `updated_at#runs`; the
//! three versions used are ordered by time, then by runs as numbers (`#9` < `#10`,
//! which text order would get wrong).

use std::sync::Arc;

use agent_sync_actors::dispatch::{DispatchKey, ScannedDispatch};
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::messages::*;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;

/// The oldest version of a dispatch.
const F1: &str = "2026-04-14T12:00:00Z#9";
/// Newer than [`F1`]: the same time, more runs.
const F2: &str = "2026-04-14T12:00:00Z#10";
/// Newer than [`F2`]: a later time, fewer runs.
const F3: &str = "2026-04-15T08:00:00Z#1";

/// The scanned dispatch `id` at `fingerprint`.
fn scanned(id: &str, fingerprint: &str) -> ScannedDispatch {
    ScannedDispatch {
        id: id.to_string(),
        fingerprint: fingerprint.to_string(),
        record: dispatch(id),
    }
}

/// `(id, fingerprint)` pairs as scanned dispatches.
fn candidates(keys: &[(&str, &str)]) -> Vec<ScannedDispatch> {
    keys.iter().map(|(id, f)| scanned(id, f)).collect()
}

/// `(id, fingerprint)` pairs as the keys a scan asks about.
fn keys_of(keys: &[(&str, &str)]) -> Vec<DispatchKey> {
    keys.iter()
        .map(|(id, f)| DispatchKey {
            id: id.to_string(),
            fingerprint: f.to_string(),
        })
        .collect()
}

/// `(id, fingerprint)` of each key.
fn pairs(keys: &[DispatchKey]) -> Vec<(String, String)> {
    keys.iter()
        .map(|d| (d.id.clone(), d.fingerprint.clone()))
        .collect()
}

/// `keys` as owned pairs, for comparing with [`pairs`].
fn owned(keys: &[(&str, &str)]) -> Vec<(String, String)> {
    keys.iter()
        .map(|(id, f)| (id.to_string(), f.to_string()))
        .collect()
}

/// A scan's enqueue of these (id, fingerprint) pairs, in one message.
async fn enqueue_scanned(actors: &SyncActors, keys: &[(&str, &str)]) -> EnqueueReceipt {
    actors
        .queue
        .send(Enqueue {
            agent_id: AGENT_ID.into(),
            fleet_node_id: None,
            batch: EnqueueBatch::Scanned(candidates(keys)),
        })
        .await
        .expect("the queue is running")
        .expect("enqueue")
}

/// The scan's question to the Queue: which of `keys` no entry or dead letter holds.
async fn not_queued(actors: &SyncActors, keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let fresh = actors
        .queue
        .send(NotQueued {
            candidates: keys_of(keys),
        })
        .await
        .expect("the queue is running")
        .expect("NotQueued");
    pairs(&fresh)
}

/// The scan's question to the Ledger: which of `keys` it does not cover.
async fn unsynced(actors: &SyncActors, keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let fresh = actors
        .ledger
        .send(Unsynced {
            candidates: keys_of(keys),
        })
        .await
        .expect("the ledger is running")
        .expect("Unsynced");
    pairs(&fresh)
}

/// Which of the versions [`F1`], [`F2`], [`F3`] of `id` the Ledger covers: `[]` when
/// it has none, `[F1, F2]` when it holds `F2`.
async fn ledger_covers(actors: &SyncActors, id: &str) -> Vec<&'static str> {
    let fresh = unsynced(actors, &[(id, F1), (id, F2), (id, F3)]).await;
    [F1, F2, F3]
        .into_iter()
        .filter(|f| !fresh.iter().any(|(_, g)| g == f))
        .collect()
}

/// `LeaseNext`, which must hand out the head.
async fn lease(actors: &SyncActors) -> Arc<QueueEntry> {
    match actors
        .queue
        .send(LeaseNext)
        .await
        .expect("the queue is running")
        .expect("lease")
    {
        Lease::Ready(entry) => entry,
        other => panic!("expected the head to be leased, got {other:?}"),
    }
}

/// `Report`s `outcome` for the leased entry `seq`: the Queue's decision.
async fn report(actors: &SyncActors, seq: u64, outcome: DeliveryOutcome) -> Decision {
    actors
        .queue
        .send(Report {
            seq,
            outcome,
            payload_size: 0,
        })
        .await
        .expect("the queue is running")
        .expect("the outcome is recorded")
}

/// A 2xx.
fn ok() -> DeliveryOutcome {
    DeliveryOutcome::Delivered { payload_size: 0 }
}

/// Leases the head and reports a 2xx: what a delivery of it does.
async fn deliver_head(actors: &SyncActors) -> Decision {
    let entry = lease(actors).await;
    report(actors, entry.seq, ok()).await
}

/// `(index, id, fingerprint)` of each scanned key of `entry`.
fn scanned_keys(entry: &QueueEntry) -> Vec<(usize, &str, &str)> {
    entry
        .fingerprints
        .iter()
        .map(|k| (k.index, k.id.as_str(), k.fingerprint.as_str()))
        .collect()
}

/// The ids of the dispatches the next POST of `entry` carries.
fn part_ids(entry: &QueueEntry) -> Vec<String> {
    entry
        .next_part()
        .iter()
        .map(|d| d.id().expect("dispatch id"))
        .collect()
}

/// No (id, fingerprint) pair.
fn none() -> Vec<(String, String)> {
    Vec::new()
}

/// Every queued entry's dispatch ids, head first.
async fn queued_ids(actors: &SyncActors) -> Vec<Vec<String>> {
    queue(actors).await.iter().map(entry_ids).collect()
}

/// Offline actors (token from `<state>/key`, absent until [`go_online`]), so a test
/// decides when anything is sent.
fn start_keyed(dirs: &Dirs, url: &str) -> SyncActors {
    let opts = Options {
        key_file: Some(dirs.state().join("key")),
        ..Options::no_drain()
    };
    start_actors_with(dirs.root(), dirs.state(), url, None, &opts).0
}

fn go_online(dirs: &Dirs) {
    std::fs::write(dirs.state().join("key"), TOKEN).expect("write the key");
}

// ------------------------------------------------------------ the scan overlaps

#[actix::test]
async fn a_scan_answered_before_another_path_delivered_its_dispatch_queues_nothing() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = start_keyed(&dirs, &platform.url());
    let x = [("o/r/x", F2)];

    // The scan asks about X@F2: new to the Queue and to the Ledger.
    assert_eq!(not_queued(&actors, &x).await, owned(&x));
    assert_eq!(unsynced(&actors, &x).await, owned(&x));

    // Meanwhile another push queues X@F2 and delivers it.
    assert_eq!(enqueue_scanned(&actors, &x).await.dispatches, 1);
    go_online(&dirs);
    assert_eq!(drain(&actors).await, pushed(1, 0));
    assert_eq!(platform.pushes().len(), 1);
    assert_eq!(ledger_covers(&actors, "o/r/x").await, [F1, F2]);

    // The first scan's enqueue arrives now; so does one of an older version.
    let late = enqueue_scanned(&actors, &x).await;
    assert_eq!(
        late,
        EnqueueReceipt {
            entries: 0,
            dispatches: 0,
            duplicates: 1
        },
        "a scanned dispatch the ledger covers is dropped in the inserting commit"
    );
    let older = enqueue_scanned(&actors, &[("o/r/x", F1)]).await;
    assert_eq!(
        (older.dispatches, older.duplicates),
        (0, 1),
        "an older version than the delivered one is covered too"
    );
    let status = summary(&actors).await;
    assert_eq!((status.entries, status.dispatches), (0, 0), "{status:?}");

    assert_eq!(drain(&actors).await, pushed(0, 0));
    assert_eq!(platform.pushes().len(), 1, "X@F2 went out once, ever");
    platform.stop().await;
}

#[actix::test]
async fn a_scan_answered_before_another_path_dead_lettered_its_dispatch_queues_nothing() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = start_keyed(&dirs, &platform.url());
    let x = [("o/r/x", F1)];
    assert_eq!(not_queued(&actors, &x).await, owned(&x));
    assert_eq!(unsynced(&actors, &x).await, owned(&x));

    // Another path queues X@F1 and the platform refuses it for good.
    assert_eq!(enqueue_scanned(&actors, &x).await.dispatches, 1);
    let entry = lease(&actors).await;
    assert_eq!(
        report(&actors, entry.seq, status_outcome(422)).await,
        Decision::DeadLettered {
            dispatches: 1,
            status: 422
        }
    );

    let late = enqueue_scanned(&actors, &x).await;
    assert_eq!(
        (late.dispatches, late.duplicates),
        (0, 1),
        "a dead-lettered (id, fingerprint) is held: only an operator's requeue sends it"
    );
    assert_eq!(summary(&actors).await.entries, 0);
    assert_eq!(dead_letters(&actors).await.len(), 1);
    go_online(&dirs);
    assert_eq!(drain(&actors).await, pushed(0, 0));
    assert!(platform.pushes().is_empty(), "{:?}", platform.pushes());
    platform.stop().await;
}

// ------------------------------------------------- two versions in one entry

#[actix::test]
async fn two_versions_of_one_id_share_an_entry_and_the_ledger_keeps_the_newer() {
    // Either order of arrival: the Ledger ends at the newer version.
    for (first, second) in [(F1, F2), (F2, F1)] {
        let what = format!("{first} then {second}");
        let dirs = Dirs::new();
        let actors = start_offline(dirs.root(), dirs.state());
        let x = "o/r/x";
        let a = enqueue_scanned(&actors, &[(x, first)]).await;
        let b = enqueue_scanned(&actors, &[(x, second)]).await;
        assert_eq!(
            (a.entries, a.dispatches, b.entries, b.dispatches),
            (1, 1, 0, 1),
            "{what}"
        );
        let entries = queue(&actors).await;
        assert_eq!(entries.len(), 1, "{what}: one open entry");
        assert_eq!(entry_ids(&entries[0]), [x, x], "{what}");
        assert_eq!(
            scanned_keys(&entries[0]),
            [(0, x, first), (1, x, second)],
            "{what}: each version keeps its own key at its position"
        );
        assert_eq!(
            not_queued(&actors, &[(x, F1), (x, F2)]).await,
            none(),
            "{what}: both versions are held"
        );

        assert_eq!(
            deliver_head(&actors).await,
            Decision::Delivered { dispatches: 2 },
            "{what}"
        );
        assert_eq!(
            ledger_covers(&actors, x).await,
            [F1, F2],
            "{what}: the ledger holds the newer version, F2"
        );
        assert_eq!(
            not_queued(&actors, &[(x, F1), (x, F2)]).await,
            owned(&[(x, F1), (x, F2)]),
            "{what}: both keys left queue_keys with the delivery"
        );

        // A rescan finds either version: both are covered.
        for f in [F1, F2] {
            let again = enqueue_scanned(&actors, &[(x, f)]).await;
            assert_eq!((again.dispatches, again.duplicates), (0, 1), "{what}: {f}");
        }
        assert_eq!(summary(&actors).await.entries, 0, "{what}");
    }
}

// ------------------------------------------------------------ split parts

#[actix::test]
async fn a_split_part_marks_only_the_versions_it_carried() {
    let dirs = Dirs::new();
    let actors = start_offline(dirs.root(), dirs.state());
    let (x, a, b) = ("o/r/x", "o/r/a", "o/r/b");
    let receipt = enqueue_scanned(&actors, &[(x, F1), (a, F1), (b, F1), (x, F2)]).await;
    assert_eq!((receipt.entries, receipt.dispatches), (1, 4));
    let whole = lease(&actors).await;
    assert_eq!(
        scanned_keys(&whole),
        [(0, x, F1), (1, a, F1), (2, b, F1), (3, x, F2)]
    );
    assert_eq!(
        report(&actors, whole.seq, status_outcome(413)).await,
        Decision::Split
    );

    // First half: X@F1 and a.
    let half = lease(&actors).await;
    assert_eq!(part_ids(&half), [x, a]);
    assert_eq!(half.next_part_key(), format!("{}.1", whole.idempotency_key));
    assert_eq!(
        report(&actors, half.seq, ok()).await,
        Decision::Delivered { dispatches: 2 }
    );
    assert_eq!(
        ledger_covers(&actors, x).await,
        [F1],
        "the first half carried X@F1 only: the ledger holds F1, not F2"
    );
    assert_eq!(ledger_covers(&actors, a).await, [F1]);
    assert_eq!(ledger_covers(&actors, b).await, [] as [&str; 0]);
    assert_eq!(
        not_queued(&actors, &[(x, F1), (x, F2), (b, F1)]).await,
        owned(&[(x, F1)]),
        "X@F2 and b are still held by the second half"
    );
    let rest = queue(&actors).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(entry_ids(&rest[0]), [b, x]);
    assert_eq!(
        scanned_keys(&rest[0]),
        [(0, b, F1), (1, x, F2)],
        "the second half keeps its keys at their new positions"
    );
    let again = enqueue_scanned(&actors, &[(x, F1), (x, F2)]).await;
    assert_eq!((again.dispatches, again.duplicates), (0, 2));

    // Second half: b and X@F2.
    let half = lease(&actors).await;
    assert_eq!(half.next_part_key(), format!("{}.2", whole.idempotency_key));
    assert_eq!(
        report(&actors, half.seq, ok()).await,
        Decision::Delivered { dispatches: 2 }
    );
    assert_eq!(ledger_covers(&actors, x).await, [F1, F2], "now F2");
    assert_eq!(ledger_covers(&actors, b).await, [F1]);
    assert_eq!(
        not_queued(&actors, &[(x, F1), (x, F2), (a, F1), (b, F1)]).await,
        owned(&[(x, F1), (x, F2), (a, F1), (b, F1)]),
        "nothing left in queue_keys"
    );
    assert_eq!(summary(&actors).await.entries, 0);
}

#[actix::test]
async fn a_host_dispatch_with_a_scanned_id_does_not_mark_the_scanned_one() {
    let dirs = Dirs::new();
    let actors = start_offline(dirs.root(), dirs.state());
    let (x, a, b) = ("o/r/x", "o/r/a", "o/r/b");
    // The host pushes its own X (no fingerprint); a scan then queues a, b and X@F2:
    // one entry [X (host), a, b, X@F2].
    enqueue(&actors, &[x]).await;
    enqueue_scanned(&actors, &[(a, F1), (b, F1), (x, F2)]).await;
    let whole = lease(&actors).await;
    assert_eq!(entry_ids(&whole), [x, a, b, x]);
    assert_eq!(scanned_keys(&whole), [(1, a, F1), (2, b, F1), (3, x, F2)]);
    assert_eq!(
        report(&actors, whole.seq, status_outcome(413)).await,
        Decision::Split
    );

    // The first half carries the host's X and a.
    assert_eq!(
        deliver_head(&actors).await,
        Decision::Delivered { dispatches: 2 }
    );
    assert_eq!(
        ledger_covers(&actors, x).await,
        [] as [&str; 0],
        "the host's X is not the scanned X@F2 of the second half: nothing marked for X"
    );
    assert_eq!(
        not_queued(&actors, &[(x, F2)]).await,
        none(),
        "X@F2 is still held by the second half"
    );
    let rest = queue(&actors).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(scanned_keys(&rest[0]), [(0, b, F1), (1, x, F2)]);

    // The second half is refused: X@F2 is dead-lettered, still unmarked.
    let half = lease(&actors).await;
    assert_eq!(
        report(&actors, half.seq, status_outcome(422)).await,
        Decision::DeadLettered {
            dispatches: 2,
            status: 422
        }
    );
    assert_eq!(ledger_covers(&actors, x).await, [] as [&str; 0]);
    let letters = dead_letters(&actors).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(scanned_keys(&letters[0].entry), [(0, b, F1), (1, x, F2)]);
    assert_eq!(not_queued(&actors, &[(x, F2)]).await, none());
}

// ------------------------------------------------- the ledger never moves back

#[actix::test]
async fn delivering_a_requeued_older_dead_letter_never_moves_the_ledger_back() {
    let dirs = Dirs::new();
    let actors = start_offline(dirs.root(), dirs.state());
    let x = "o/r/x";

    // X@F1 is refused for good.
    enqueue_scanned(&actors, &[(x, F1)]).await;
    let entry = lease(&actors).await;
    assert!(matches!(
        report(&actors, entry.seq, status_outcome(422)).await,
        Decision::DeadLettered { .. }
    ));
    let letter = dead_letters(&actors).await[0].entry.seq;

    // X@F2 comes and is delivered.
    assert_eq!(enqueue_scanned(&actors, &[(x, F2)]).await.dispatches, 1);
    assert_eq!(
        deliver_head(&actors).await,
        Decision::Delivered { dispatches: 1 }
    );
    assert_eq!(ledger_covers(&actors, x).await, [F1, F2]);

    // The operator requeues the old refusal, and it is delivered this time.
    let requeued = actors
        .queue
        .send(Requeue {
            seqs: Some(vec![letter]),
        })
        .await
        .expect("the queue is running")
        .expect("requeue");
    assert_eq!(requeued.requeued.len(), 1, "{requeued:?}");
    assert_eq!(
        not_queued(&actors, &[(x, F1)]).await,
        none(),
        "the requeued entry holds X@F1"
    );
    assert_eq!(
        deliver_head(&actors).await,
        Decision::Delivered { dispatches: 1 }
    );
    assert_eq!(
        ledger_covers(&actors, x).await,
        [F1, F2],
        "the ledger still holds F2: delivering F1 after it never moves it back"
    );
    assert_eq!(
        not_queued(&actors, &[(x, F1), (x, F2)]).await,
        owned(&[(x, F1), (x, F2)]),
        "queue_keys holds nothing for X"
    );
    let status = summary(&actors).await;
    assert_eq!((status.entries, status.dead_letters), (0, 0), "{status:?}");
    // F2 is still what a rescan compares against: neither version is queued again,
    // a newer one is.
    let rescan = enqueue_scanned(&actors, &[(x, F1), (x, F2), (x, F3)]).await;
    assert_eq!((rescan.dispatches, rescan.duplicates), (1, 2));
}

// -------------------------------------------------------- stop while leasing

#[actix::test]
async fn a_stop_while_the_lease_is_being_taken_sends_nothing_and_gives_the_lease_back() {
    tokio::time::pause();
    let platform = ScriptedPlatform::delivering();
    let dirs = Dirs::new();
    let opts = Options {
        key_file: Some(dirs.state().join("key")),
        ..Options::no_drain()
    };
    let (actors, _store) = platform.start_actors(&dirs, &opts);
    enqueue(&actors, &["a"]).await;
    // The enqueue woke the Pusher; offline, its drain sent nothing. A Drain behind
    // that wake-up in the Pusher's mailbox returns once it was handled.
    assert_eq!(drain(&actors).await, pushed(0, 1));
    go_online(&dirs);

    // Everything runs on this thread, in order. The Drain is in the Pusher's mailbox
    // (the Pusher is scheduled), then `stopper` is spawned behind it. The Pusher runs:
    // it starts the drain, whose first step checks the stop (none) and sends
    // `LeaseNext` (the Queue is scheduled). `stopper` runs next and puts `StopPushing`
    // in the Pusher's mailbox. The Queue leases the head and answers. The Pusher runs
    // its mailbox before its drain: the stop is set when the drain reads the lease.
    let drained = actors.pusher.send(Drain);
    let pusher = actors.pusher.clone();
    let stopper =
        actix_rt::spawn(async move { pusher.send(StopPushing { deadline: secs(30) }).await });
    let report = drained
        .await
        .expect("the pusher is running")
        .expect("the drain ends without an error");
    stopper
        .await
        .expect("the stop task")
        .expect("the stop is answered");

    assert!(
        platform.push_requests().is_empty(),
        "a stop that came while LeaseNext was pending must start no request: {:?}",
        platform.push_requests()
    );
    assert_eq!(report, pushed(0, 1));
    // The lease was taken (an entry is sealed when leased, so b starts an entry of its
    // own): the stop did come while LeaseNext was pending, not before.
    enqueue(&actors, &["b"]).await;
    assert_eq!(
        queued_ids(&actors).await,
        [vec!["a"], vec!["b"]],
        "the drain leased a before it saw the stop"
    );
    // Given back unsent: a is the head, never attempted, and leasable at once.
    let head = lease(&actors).await;
    assert_eq!(entry_ids(&head), ["a"]);
    assert_eq!((head.attempts, head.next_attempt), (0, None));
    assert!(platform.push_requests().is_empty());
}

// ------------------------------------------------------------ restarts

/// One process life: offline actors over the state in a System of their own (the
/// state is closed again when it returns), one enqueue message per id, then the
/// queue as that process leaves it.
async fn life(dirs: &Dirs, ids: &'static [&'static str]) -> Vec<QueueEntry> {
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        for id in ids {
            enqueue(&actors, &[id]).await;
        }
        queue(&actors).await
    })
    .await
}

fn ids_of(entries: &[QueueEntry]) -> Vec<Vec<String>> {
    entries.iter().map(entry_ids).collect()
}

#[actix::test]
async fn after_a_restart_a_never_leased_tail_that_is_not_the_head_takes_new_dispatches() {
    let dirs = Dirs::new();
    assert_eq!(ids_of(&life(&dirs, &["h"]).await), [vec!["h"]]);
    let second = life(&dirs, &["t1"]).await;
    assert_eq!(
        ids_of(&second),
        [vec!["h"], vec!["t1"]],
        "the head stays sealed"
    );
    let third = life(&dirs, &["t2", "t3"]).await;
    assert_eq!(
        ids_of(&third),
        [vec!["h"], vec!["t1", "t2", "t3"]],
        "the tail after the head was never leased: it is reopened"
    );
    assert_eq!(
        third[1].idempotency_key, second[1].idempotency_key,
        "the reopened entry keeps the key minted with it"
    );
    assert_eq!(third[1].seq, second[1].seq);
}

#[actix::test]
async fn after_a_restart_the_head_is_never_reopened() {
    let dirs = Dirs::new();
    life(&dirs, &["h"]).await;
    assert_eq!(
        ids_of(&life(&dirs, &["n"]).await),
        [vec!["h"], vec!["n"]],
        "a lone entry is the head: it may have been in flight when the process died"
    );
    life(&dirs, &["n2"]).await;

    // The head is delivered; the former tail [n, n2] becomes the head.
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        assert_eq!(
            deliver_head(&actors).await,
            Decision::Delivered { dispatches: 1 }
        );
    })
    .await;
    assert_eq!(
        ids_of(&life(&dirs, &["late"]).await),
        [vec!["n", "n2"], vec!["late"]],
        "the last entry is now the head: it stays sealed after a restart"
    );
}

#[actix::test]
async fn after_a_restart_an_attempted_tail_is_not_reopened() {
    let dirs = Dirs::new();
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        enqueue(&actors, &["h"]).await;
        // The only way a tail that is not the head has attempts: an import (the Go
        // agent's queue keeps its entries' attempts).
        let imported = QueueEntry {
            attempts: 2,
            last_error: Some("HTTP 503".into()),
            ..QueueEntry::new(AGENT_ID.into(), None, dispatches(&["imported"]), now())
        };
        let count = actors
            .queue
            .send(ImportEntries {
                entries: vec![imported],
            })
            .await
            .expect("the queue is running")
            .expect("import");
        assert_eq!(count, 1);
    })
    .await;
    let after = life(&dirs, &["n"]).await;
    assert_eq!(
        ids_of(&after),
        [vec!["h"], vec!["imported"], vec!["n"]],
        "an attempted tail takes no new dispatches"
    );
    assert_eq!(after[1].attempts, 2);
}

#[actix::test]
async fn after_a_restart_a_requeued_or_imported_tail_is_not_reopened() {
    let dirs = Dirs::new();
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        enqueue(&actors, &["refused"]).await;
        let entry = lease(&actors).await;
        let decision = report(&actors, entry.seq, status_outcome(422)).await;
        assert!(
            matches!(decision, Decision::DeadLettered { .. }),
            "{decision:?}"
        );
        enqueue(&actors, &["h"]).await;
        let requeued = actors
            .queue
            .send(Requeue { seqs: None })
            .await
            .expect("the queue is running")
            .expect("requeue");
        assert_eq!(requeued.requeued.len(), 1);
    })
    .await;
    let after = life(&dirs, &["n"]).await;
    assert_eq!(
        ids_of(&after),
        [vec!["h"], vec!["refused"], vec!["n"]],
        "a requeued entry had a life before this queue: it takes no new dispatches"
    );
    // An import with no attempts is sealed the same way.
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        let imported = QueueEntry::new(AGENT_ID.into(), None, dispatches(&["imported"]), now());
        let entries = vec![imported];
        let count = actors
            .queue
            .send(ImportEntries { entries })
            .await
            .expect("the queue is running")
            .expect("import");
        assert_eq!(count, 1);
    })
    .await;
    let after = life(&dirs, &["m"]).await;
    assert_eq!(
        ids_of(&after),
        [
            vec!["h"],
            vec!["refused"],
            vec!["n"],
            vec!["imported"],
            vec!["m"]
        ]
    );
}
