//! Pushes that send nothing now, and what they keep for later: no token (P3), the
//! platform down (P4), an entry inside its backoff window (P5), a queue-only push on an
//! empty queue (P6).

use agent_sync_actors::messages::*;
use agent_sync_testkit::*;

// ------------------------------------------------------------------------- P3

#[actix::test]
async fn p3_no_token_queues_host_dispatches_but_not_scanned() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    let (root, state, url) = (
        dirs.root().to_path_buf(),
        dirs.state().to_path_buf(),
        server.url(),
    );
    in_own_system(move || async move {
        let (actors, _store) = start_actors(&root, &state, &url, None);
        let report = push_host(&actors, vec![host("h-1"), host("h-2")]).await;
        assert_eq!(report, pushed(0, 2));
        // A scanning push and a drain offline: nothing more queued, nothing sent.
        assert_eq!(push_default(&actors).await, pushed(0, 2));
        assert_eq!(drain(&actors).await, pushed(0, 2));
        let entries = queue(&actors).await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entry_ids(&entries[0]), ["h-1", "h-2"]);
        assert!(entries[0].fingerprints.is_empty());
        assert_eq!((entries[0].attempts, entries[0].next_attempt), (0, None));
        // The workspace was not queued, so a later scan finds it again.
        assert_eq!(scan_ids(&actors, &root).await, ["core/go-io/task-1"]);
        assert_eq!(sync_state(&actors).await.last_push_at, None);
    })
    .await;
    assert!(
        server.requests().is_empty(),
        "offline sent requests: {:?}",
        server.requests()
    );

    // Durable: reopened with a token, the queued entry goes out at start without a
    // push, and the next scan finds the workspace.
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    wait_until("the queued entry is delivered at start", secs(10), || {
        server.delivered().len() == 1
    })
    .await;
    assert_eq!(server.pushes()[0].dispatches(), [host("h-1"), host("h-2")]);
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].dispatch_ids(), ["core/go-io/task-1"]);
    server.stop().await;
}

// ------------------------------------------------------------------------- P4

#[actix::test]
async fn p4_platform_down_keeps_entry_with_one_attempt_and_1s_backoff() {
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &dead_url(), Some(TOKEN));

    let before = now();
    let report = push_default(&actors).await;
    let after = now();

    assert_eq!(report, pushed(0, 1));
    let entries = queue(&actors).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry_ids(entry), ["core/go-io/task-1"]);
    assert_eq!(
        entry
            .fingerprints
            .iter()
            .find(|k| k.id == "core/go-io/task-1")
            .map(|k| k.fingerprint.as_str()),
        Some("2026-04-14T12:00:00Z#1")
    );
    assert_eq!(entry.attempts, 1);
    assert_backoff(entry.next_attempt, before, after, secs(1));
    assert!(
        entry.last_error.as_deref().is_some_and(|e| !e.is_empty()),
        "{entry:?}"
    );
    assert!(!entry.idempotency_key.is_empty());

    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dispatches, s.dead_letters), (1, 1, 0));
    let head = s.head.expect("a head");
    assert_eq!(head.seq, entry.seq);
    assert_eq!(head.attempts, 1);
    assert_eq!(head.next_attempt, entry.next_attempt);
    assert_eq!(head.last_error, entry.last_error);

    // Not delivered: not marked, not recorded.
    assert_eq!(ledger_size(&actors).await, 0);
    assert_eq!(sync_state(&actors).await.last_push_at, None);
    assert!(records(&actors, None).await.is_empty());
}

// ------------------------------------------------------------------------- P5

#[actix::test]
async fn p5_entry_in_backoff_window_sends_no_request() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(503).header("Retry-After", "3"));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    let before = now();
    assert_eq!(push_host(&actors, vec![host("a")]).await, pushed(0, 1));
    let after = now();
    assert_eq!(server.pushes().len(), 1);
    let head = queue(&actors).await.remove(0);
    assert_next_attempt(head.next_attempt, before, after, secs(3));
    let until = head.next_attempt.unwrap();

    // Inside the window, no way of pushing sends anything; new work queues behind.
    assert_eq!(drain(&actors).await, pushed(0, 1));
    assert_eq!(push_queue_only(&actors).await, pushed(0, 1));
    write_done(dirs.root(), "core/go-io/task-1");
    assert_eq!(push_default(&actors).await, pushed(0, 2));
    assert_eq!(push_host(&actors, vec![host("b")]).await, pushed(0, 3));
    assert_eq!(
        actors.queue.send(LeaseNext).await.unwrap().unwrap(),
        Lease::Waiting { until }
    );
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
    assert!(now() < until, "the checks above must run inside the window");

    // After the window the Pusher's own timer sends the head, then the rest, in order:
    // the scanned and the host dispatch queued behind it share one never-sent entry.
    wait_until("the queue is delivered", secs(10), || {
        server.delivered().len() == 2
    })
    .await;
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 3, "{pushes:?}");
    assert_eq!(pushes[1].dispatch_ids(), ["a"]);
    assert_eq!(pushes[1].idempotency_key(), pushes[0].idempotency_key());
    assert!(
        pushes[1].received_at - pushes[0].received_at >= millis(2900),
        "retried after {:?}",
        pushes[1].received_at - pushes[0].received_at
    );
    assert_eq!(pushes[2].dispatch_ids(), ["core/go-io/task-1", "b"]);
    server.stop().await;
}

// ------------------------------------------------------------------------- P6

#[actix::test]
async fn p6_queue_only_push_never_scans_and_empty_queue_sends_nothing() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    assert_eq!(push_queue_only(&actors).await, pushed(0, 0));
    assert_eq!(drain(&actors).await, pushed(0, 0));
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert_eq!(summary(&actors).await.entries, 0);
    assert_eq!(ledger_size(&actors).await, 0);
    assert!(records(&actors, None).await.is_empty());

    // The workspace was there to be found: a scanning push sends it.
    assert_eq!(push_default(&actors).await, pushed(1, 0));
    assert_eq!(server.pushes().len(), 1);
    server.stop().await;
}
