//! Each dispatch goes out once: not again after a restart until its fingerprint
//! changes (P7), one queued copy however often it is pushed while the platform is down
//! (P8).

use agent_sync_actors::Store;
use agent_sync_testkit::*;

// ------------------------------------------------------------------------- P7

#[actix::test]
async fn p7_delivered_dispatches_not_pushed_again_after_reopen_until_fingerprint_changes() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    write_done(dirs.root(), "core/go-io/task-2");
    let (root, state, url) = (
        dirs.root().to_path_buf(),
        dirs.state().to_path_buf(),
        server.url(),
    );
    in_own_system(move || async move {
        let (actors, _store) = start_actors(&root, &state, &url, Some(TOKEN));
        assert_eq!(push_default(&actors).await, pushed(2, 0));
        assert_eq!(push_default(&actors).await, pushed(0, 0));
        assert_eq!(ledger_size(&actors).await, 2);
        // While these actors hold the database, nobody else can open it.
        assert!(Store::open(&state).is_err());
    })
    .await;
    assert_eq!(server.pushes().len(), 1);

    // Every actor of that System is gone with it: the database opens again.
    drop(Store::open(dirs.state()).expect("reopen after the first System stopped"));
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    assert_eq!(ledger_size(&actors).await, 2);
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.pushes().len(), 1, "re-pushed after a restart");

    // A new `runs` is a new fingerprint.
    write_workspace(
        dirs.root(),
        "core/go-io/task-1",
        &status_json("completed", "2026-04-14T12:00:00Z", 2),
    );
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].dispatch_ids(), ["core/go-io/task-1"]);
    assert_eq!(pushes[1].dispatches()[0]["runs"], 2);
    assert_eq!(push_default(&actors).await.count, 0);

    // So is a new `updated_at`.
    write_workspace(
        dirs.root(),
        "core/go-io/task-2",
        &status_json("merged", "2026-04-15T08:00:00Z", 1),
    );
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 3);
    assert_eq!(pushes[2].dispatch_ids(), ["core/go-io/task-2"]);
    assert_eq!(
        pushes[2].dispatches()[0]["updated_at"],
        "2026-04-15T08:00:00Z"
    );

    // The same fingerprint written differently (another offset) is not new.
    write_workspace(
        dirs.root(),
        "core/go-io/task-2",
        &status_json("merged", "2026-04-15T10:00:00+02:00", 1),
    );
    assert_eq!(push_default(&actors).await.count, 0);
    assert_eq!(server.pushes().len(), 3);
    server.stop().await;
}

// ------------------------------------------------------------------------- P8

#[actix::test]
async fn p8_five_pushes_while_down_leave_one_queued_copy() {
    let server = LoopbackPlatform::start().await;
    server.set_default(Scripted::status(503));
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/a");
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    for i in 0..5 {
        if i == 2 {
            write_done(dirs.root(), "core/go-io/b");
        }
        let report = push_default(&actors).await;
        assert_eq!(report.count, 0, "push {i}");
        assert_eq!(report.queued, if i < 2 { 1 } else { 2 }, "push {i}");
    }
    let entries = queue(&actors).await;
    let ids: Vec<String> = entries.iter().flat_map(entry_ids).collect();
    assert_eq!(ids, ["core/go-io/a", "core/go-io/b"], "{entries:?}");
    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dispatches), (2, 2));
    let tried = server.pushes();
    assert!(!tried.is_empty());
    assert!(
        tried.iter().all(|p| p.dispatch_ids() == ["core/go-io/a"]),
        "only the head is tried while it fails: {tried:?}"
    );

    // Platform back: each dispatch is delivered exactly once.
    server.set_default(Scripted::ok());
    wait_until("both entries are delivered", secs(15), || {
        server.delivered().len() == 2
    })
    .await;
    let delivered: Vec<String> = server
        .delivered()
        .iter()
        .flat_map(|p| p.dispatch_ids())
        .collect();
    assert_eq!(delivered, ["core/go-io/a", "core/go-io/b"]);
    // The server has answered; wait for the Pusher to have recorded it too.
    for _ in 0..500 {
        if summary(&actors).await.entries == 0 {
            break;
        }
        actix_rt::time::sleep(millis(10)).await;
    }
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.delivered().len(), 2);
    server.stop().await;
}
