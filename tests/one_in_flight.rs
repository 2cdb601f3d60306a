//! One request in flight (R1): the Pusher sends entries one at a time in FIFO order,
//! each outcome committed before the next lease, and a drain stops at the first
//! transient failure so the Queue's decisions keep their order.

use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::messages::*;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;

/// Actors with `max_batch` dispatches per entry that do not drain at start.
fn start(dirs: &Dirs, url: &str, max_batch: usize) -> SyncActors {
    let opts = Options {
        drain_on_start: false,
        ..Options::max_batch(max_batch)
    };
    start_online(dirs, url, &opts).0
}

/// Drains until nothing more is sent: the enqueue already woke the Pusher, so which
/// drain delivered what is not the point; what reached the platform and what is left is.
/// Returns the dispatches delivered by these drains and what is still queued.
async fn drain_twice(actors: &SyncActors) -> PushReport {
    let first = drain(actors).await;
    let second = drain(actors).await;
    PushReport {
        count: first.count + second.count,
        queued: second.queued,
    }
}

fn delivered_count(platform: &LoopbackPlatform) -> usize {
    platform
        .delivered()
        .iter()
        .map(|r| r.dispatch_ids().len())
        .sum()
}

fn sent_ids(platform: &LoopbackPlatform) -> Vec<String> {
    platform
        .pushes()
        .iter()
        .flat_map(|r| r.dispatch_ids())
        .collect()
}

#[actix::test]
async fn entries_are_delivered_one_request_at_a_time_in_fifo_order() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), 1);
    let ids: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    enqueue(&actors, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let report = drain_twice(&actors).await;
    assert_eq!((delivered_count(&platform), report.queued), (10, 0));
    assert_eq!(sent_ids(&platform), ids, "one POST per entry, in seq order");
    let records = records(&actors, None).await;
    assert_eq!(records.len(), 10, "one push record per delivered entry");
    assert!(queue(&actors).await.is_empty());
    platform.stop().await;
}

#[actix::test]
async fn a_transient_failure_stops_the_drain_and_leaves_the_rest_untouched() {
    let platform = LoopbackPlatform::start().await;
    platform.respond(Scripted::ok());
    platform.respond(Scripted::ok());
    platform.respond(Scripted::status(503));
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), 1);
    enqueue(&actors, &["a", "b", "c", "d", "e"]).await;
    let report = drain_twice(&actors).await;
    assert_eq!((delivered_count(&platform), report.queued), (2, 3));
    assert_eq!(
        sent_ids(&platform),
        ["a", "b", "c"],
        "nothing after the failure is sent"
    );
    let queue = queue(&actors).await;
    let state: Vec<(String, u32)> = queue
        .iter()
        .map(|e| (e.dispatches[0].id().unwrap(), e.attempts))
        .collect();
    assert_eq!(state, [("c".into(), 1), ("d".into(), 0), ("e".into(), 0)]);
    // The lease was given back: the head is now only waiting for its backoff.
    assert!(matches!(
        actors.queue.send(LeaseNext).await.unwrap().unwrap(),
        Lease::Waiting { .. }
    ));
    platform.stop().await;
}

#[actix::test]
async fn a_rejected_entry_is_dead_lettered_and_the_drain_goes_on_in_order() {
    let platform = LoopbackPlatform::start().await;
    platform.respond(Scripted::ok());
    platform.respond(Scripted::status(422));
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), 1);
    enqueue(&actors, &["a", "b", "c", "d"]).await;
    let report = drain_twice(&actors).await;
    assert_eq!((delivered_count(&platform), report.queued), (3, 0));
    assert_eq!(sent_ids(&platform), ["a", "b", "c", "d"]);
    let dead = dead_letters(&actors).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].status, dead[0].entry.dispatches[0].id().as_deref()),
        (422, Some("b"))
    );
    platform.stop().await;
}

#[actix::test]
async fn split_parts_are_sent_before_the_next_entry() {
    let platform = LoopbackPlatform::start().await;
    platform.respond(Scripted::status(413));
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), 4);
    enqueue(&actors, &["a1", "a2", "a3", "a4", "b1"]).await;
    let report = drain_twice(&actors).await;
    assert_eq!((delivered_count(&platform), report.queued), (5, 0));
    let pushes = platform.pushes();
    let sent: Vec<(Vec<String>, String)> = pushes
        .iter()
        .map(|r| (r.dispatch_ids(), r.idempotency_key()))
        .collect();
    let key = &sent[0].1;
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(sent[0].0, ids(&["a1", "a2", "a3", "a4"]));
    assert_eq!(sent[1], (ids(&["a1", "a2"]), format!("{key}.1")));
    assert_eq!(sent[2], (ids(&["a3", "a4"]), format!("{key}.2")));
    assert_eq!(sent[3].0, ids(&["b1"]));
    assert_eq!(sent.len(), 4);
    platform.stop().await;
}

#[actix::test]
async fn a_drain_without_a_token_keeps_the_pending_backoff_timer() {
    tokio::time::pause();
    let dirs = Dirs::new();
    let key_file = dirs.state().join("brain.key");
    std::fs::write(&key_file, TOKEN).unwrap();
    let platform = ScriptedPlatform::delivering();
    platform.respond(status_outcome(503));
    let opts = Options {
        key_file: Some(key_file.clone()),
        ..Options::no_drain()
    };
    let (actors, _store) = platform.start_actors(&dirs, &opts);
    enqueue(&actors, &["a"]).await;
    actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(
        platform.push_times().len(),
        1,
        "the enqueue woke the Pusher: one 503"
    );

    // The key disappears and a drain runs with nothing to send: the 1 s timer survives.
    std::fs::remove_file(&key_file).unwrap();
    drain_twice(&actors).await;
    std::fs::write(&key_file, TOKEN).unwrap();
    actix_rt::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        platform.push_times().len(),
        2,
        "the backoff timer still fired"
    );
    assert!(queue(&actors).await.is_empty());
}

#[actix::test]
async fn a_requeued_dead_letter_is_sent_under_a_fresh_idempotency_key() {
    let platform = LoopbackPlatform::start().await;
    platform.respond(Scripted::status(422));
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), 1);
    enqueue(&actors, &["a"]).await;
    drain_twice(&actors).await;
    let dead = dead_letters(&actors).await;
    let refused_key = dead[0].entry.idempotency_key.clone();
    actors
        .queue
        .send(Requeue { seqs: None })
        .await
        .unwrap()
        .unwrap();
    drain_twice(&actors).await;
    let keys: Vec<String> = platform
        .pushes()
        .iter()
        .map(|r| r.idempotency_key())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], refused_key);
    assert_ne!(
        keys[1], refused_key,
        "a platform caching its 4xx per key must see a new key"
    );
    platform.stop().await;
}

#[actix::test]
async fn a_token_echoed_in_an_error_body_is_redacted_from_last_error() {
    let platform = LoopbackPlatform::start().await;
    let echo = format!("bad request: Authorization: Bearer {TOKEN}");
    platform.respond(Scripted::status(503).body(echo.clone()));
    platform.respond(Scripted::status(400).body(echo));
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), 1);
    enqueue(&actors, &["a"]).await;
    drain_twice(&actors).await;
    let queued = queue(&actors).await;
    let last_error = queued[0].last_error.clone().unwrap();
    assert!(
        last_error.contains("<redacted>") && !last_error.contains(TOKEN),
        "{last_error}"
    );
    platform.stop().await;
}

/// Leases the head and reports `outcome` for it; returns what was leased.
async fn lease_and_report(actors: &SyncActors, outcome: DeliveryOutcome) -> (QueueEntry, Decision) {
    let entry = match actors.queue.send(LeaseNext).await.unwrap().unwrap() {
        Lease::Ready(entry) => entry,
        other => panic!("expected a lease, got {other:?}"),
    };
    let decision = actors
        .queue
        .send(Report {
            seq: entry.seq,
            outcome,
            payload_size: 1,
        })
        .await
        .unwrap()
        .unwrap();
    (QueueEntry::clone(&entry), decision)
}

#[actix::test]
async fn leases_served_from_memory_always_equal_the_stored_rows() {
    // Offline, so only this test leases. Three entries: two sealed by a change of
    // agent (kept decoded by the Queue), the last still open.
    let dirs = Dirs::new();
    let (actors, _) = start_actors_with(
        dirs.root(),
        dirs.state(),
        "http://127.0.0.1:9",
        None,
        &Options::no_drain(),
    );
    enqueue_as(&actors, "a", None, &["a1", "a2"]).await;
    enqueue_as(&actors, "b", None, &["b1"]).await;
    enqueue_as(&actors, "a", None, &["a3"]).await;
    let stored = queue(&actors).await;
    assert_eq!(stored.len(), 3);
    let delivered = DeliveryOutcome::Delivered { payload_size: 1 };
    let too_large = DeliveryOutcome::Status {
        status: 413,
        retry_after: None,
        detail: String::new(),
    };

    // A sealed head, leased from memory, is what the table holds; its 413 splits the
    // stored row, and the next lease reads that row, not the stale copy.
    let (first, decision) = lease_and_report(&actors, too_large).await;
    assert_eq!(first, stored[0]);
    assert_eq!(decision, Decision::Split);
    let split = queue(&actors).await;
    assert_eq!(split[0].parts.len(), 2, "the row records the split");
    let (half, _) = lease_and_report(&actors, delivered.clone()).await;
    assert_eq!(
        half, split[0],
        "a lease after a change reads the changed row"
    );
    assert_eq!(half.next_part_len(), 1);
    let (rest, decision) = lease_and_report(&actors, delivered.clone()).await;
    assert_eq!(rest.dispatches.len(), 1);
    assert_eq!(decision, Decision::Delivered { dispatches: 1 });

    // The second sealed entry and the open tail, each leased and delivered whole.
    let (second, _) = lease_and_report(&actors, delivered.clone()).await;
    assert_eq!(second, stored[1]);
    let (third, _) = lease_and_report(&actors, delivered).await;
    assert_eq!(third, stored[2]);
    let summary = summary(&actors).await;
    assert_eq!((summary.entries, summary.dispatches), (0, 0));
    assert_eq!(
        actors.queue.send(LeaseNext).await.unwrap().unwrap(),
        Lease::Empty
    );
}
