//! A scan whose questions (`NotQueued`, `Unsynced`) were answered before another
//! path queued and delivered, or refused, the same dispatch queues nothing: the Queue
//! asks again in the commit that inserts.

use agent_sync_actors::messages::*;
use agent_sync_testkit::*;

use crate::{
    enqueue_scanned, go_online, lease, ledger_covers, not_queued, owned, report, start_keyed,
    unsynced, F1, F2,
};

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
