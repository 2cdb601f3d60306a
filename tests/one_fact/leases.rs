//! Leases and the tail: a stop that arrives while the lease is being taken sends
//! nothing and gives it back; after a restart a never-leased tail that is not the head
//! takes new dispatches, and the head or a tail that was attempted, requeued or imported
//! does not.

use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::import::Import;
use agent_sync_actors::messages::*;
use agent_sync_actors::{Store, SyncActors};
use agent_sync_testkit::*;

use crate::{deliver_head, go_online, lease, report};

/// Every queued entry's dispatch ids, head first.
async fn queued_ids(actors: &SyncActors) -> Vec<Vec<String>> {
    queue(actors).await.iter().map(entry_ids).collect()
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

/// Imports `entry` into the closed state, as an import does before any actor runs.
fn import(dirs: &Dirs, entry: QueueEntry) {
    let store = Store::open(dirs.state()).expect("open the state");
    let count = Import::commit(&store, |import| import.queue_entries(vec![entry])).expect("import");
    assert_eq!(count.entries, 1);
}

/// Each entry's dispatch ids, head first.
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
    assert_eq!(ids_of(&life(&dirs, &["h"]).await), [vec!["h"]]);
    // The only way a tail that is not the head has attempts: an import (the Go
    // agent's queue keeps its entries' attempts).
    import(
        &dirs,
        QueueEntry {
            attempts: 2,
            last_error: Some("HTTP 503".into()),
            ..QueueEntry::new(AGENT_ID.into(), None, dispatches(&["imported"]), now())
        },
    );
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
    import(
        &dirs,
        QueueEntry::new(AGENT_ID.into(), None, dispatches(&["imported"]), now()),
    );
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
