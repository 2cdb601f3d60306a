//! What an outcome marks in the Ledger: two versions of one id in one entry (the
//! newer kept, no key left behind), a split part (only the versions it carried, by
//! position), a host dispatch that shares a scanned id (nothing), a requeued older dead
//! letter (never a step back).

use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::messages::*;
use agent_sync_testkit::*;

use crate::{
    deliver_head, enqueue_scanned, lease, ledger_covers, not_queued, ok, owned, report, F1, F2, F3,
};

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
