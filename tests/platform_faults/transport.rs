//! Faults below HTTP: a connection reset mid-request or mid-response, a platform
//! that never answers or never accepts, a 2xx whose body stalls, and a connection reused
//! once a body is drained.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use agent_sync_actors::sync_record::Direction;
use agent_sync_testkit::*;
use serde_json::json;

use crate::with_timeout;

#[actix::test]
async fn a_reset_mid_request_body_is_transient_then_the_same_entry_is_delivered() {
    let server = Raw::with(
        |index, _| {
            if index == 0 {
                Early::ResetMidBody
            } else {
                Early::ReadBody
            }
        },
        |_, _| Reply::ok(),
    );
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::default());
    let report = push_host_ids(&actors, &["a", "b"]).await;
    assert_eq!((report.count, report.queued), (0, 2));
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert!(entry.last_error.is_some(), "{entry:?}");
    assert!(
        dead_letters(&actors).await.is_empty(),
        "a reset is never a refusal"
    );

    wait_until("the retry on the backoff timer", secs(10), || {
        server.delivered().len() == 1
    })
    .await;
    let log = server.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].0.key(), entry.idempotency_key, "the same key");
    assert_eq!(log[1].0.key(), entry.idempotency_key, "the same key");
    assert_eq!(log[1].0.ids(), ["a", "b"]);
    eventually_empty(&actors).await;
}

#[actix::test]
async fn a_reset_mid_response_body_keeps_the_status_2xx_delivered_5xx_retried() {
    let server = Raw::start(|index, _| match index {
        // The head says 200; the body breaks off: the platform did accept it.
        0 => Reply::ThenReset(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"ok\":".to_vec()),
        1 => Reply::ThenReset(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000\r\n\r\n<html>".to_vec(),
        ),
        _ => Reply::ok(),
    });
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::max_batch(1));
    let report = push_host_ids(&actors, &["a", "b"]).await;
    assert_eq!((report.count, report.queued), (1, 1), "a delivered, b kept");
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.dispatches[0].id().as_deref(), Some("b"));
    assert_eq!(entry.attempts, 1);
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{entry:?}"
    );
    wait_until("b on the retry", secs(10), || {
        server.delivered().iter().any(|r| r.ids() == ["b"])
    })
    .await;
    assert_eq!(server.log().len(), 3);
    eventually_empty(&actors).await;
    assert!(dead_letters(&actors).await.is_empty());
}

#[actix::test]
async fn a_platform_that_never_answers_times_out_and_nothing_hangs() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    // The bound: the timeout, plus slack for a loaded machine; never the 30 s default.
    const BOUND: Duration = Duration::from_secs(6);

    // Accepts and reads the request, then says nothing.
    let silent = Raw::start(|_, _| Reply::Silence);
    // Never even accepts: the kernel completes the handshake into the backlog.
    let backlog = TcpListener::bind("127.0.0.1:0").expect("bind");
    let backlog_url = format!("http://{}", backlog.local_addr().unwrap());
    for (what, url) in [("silent", silent.url()), ("backlog", backlog_url)] {
        let dirs = Dirs::new();
        let (actors, _store) = start_online(&dirs, &url, &with_timeout(TIMEOUT));
        let started = Instant::now();
        let report = push_host_ids(&actors, &["a"]).await;
        let took = started.elapsed();
        assert!(took < BOUND, "{what}: the push took {took:?}");
        assert!(took >= TIMEOUT - millis(100), "{what}: {took:?}");
        assert_eq!((report.count, report.queued), (0, 1), "{what}");
        let entry = queue(&actors).await.remove(0);
        assert_eq!(entry.attempts, 1, "{what}");
        assert!(entry.last_error.is_some(), "{what}");
        assert!(dead_letters(&actors).await.is_empty(), "{what}");

        // A pull from the same platform: the cache, as quickly.
        let started = Instant::now();
        let report = pull(&actors, None).await;
        assert!(started.elapsed() < BOUND, "{what}: the pull hung");
        assert!(report.from_cache, "{what}");
    }

    // The head of a 2xx arrives, then the body stalls: the body read has a timeout too.
    // A push is delivered (the status is the platform's acceptance); a pull keeps the
    // cache.
    let stalling = Raw::start(|index, req| {
        if index == 0 && req.head.method == "GET" {
            return Reply::json(200, json!({"context": [{"id": "kept"}]}));
        }
        // A head promising 100 bytes, 5 of them, then silence.
        Reply::Stall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"ok\"".to_vec())
    });
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &stalling.url(), &with_timeout(TIMEOUT));
    assert_eq!(pull(&actors, None).await.count, 1, "the cache is seeded");
    let started = Instant::now();
    let report = pull(&actors, None).await;
    assert!(started.elapsed() < BOUND, "the pull hung on a stalled body");
    assert!(report.from_cache);
    assert_eq!(report.context, [json!({"id": "kept"})]);
    let started = Instant::now();
    let report = push_host_ids(&actors, &["s"]).await;
    assert!(started.elapsed() < BOUND, "the push hung on a stalled body");
    assert_eq!(
        (report.count, report.queued),
        (1, 0),
        "a 2xx head is delivery"
    );
}

#[actix::test]
async fn a_2xx_whose_body_stalls_is_delivered_without_waiting_for_the_body() {
    // Far beyond any wait of this test: a delivery must not depend on the body.
    const TIMEOUT: Duration = Duration::from_secs(30);
    const PROMPTLY: Duration = Duration::from_secs(10);
    let heads: [&[u8]; 2] = [
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"data\"",
        b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n",
    ];
    for head in heads {
        let server = Raw::start(move |_, _| Reply::Stall(head.to_vec()));
        let dirs = Dirs::new();
        let (actors, _store) = start_online(&dirs, &server.url(), &with_timeout(TIMEOUT));
        let started = Instant::now();
        let report = push_host_ids(&actors, &["a", "b"]).await;
        let took = started.elapsed();
        assert!(
            took < PROMPTLY,
            "the push waited {took:?} for a stalled body"
        );
        assert_eq!(
            (report.count, report.queued),
            (2, 0),
            "a 201 head is delivery"
        );
        assert_eq!(server.pushes().len(), 1, "sent once");
        assert_eq!(server.log()[0].1, 201);
        assert!(queue(&actors).await.is_empty());
        let history = records(&actors, None).await;
        assert_eq!(directions(&history), [(Direction::Push, 2)]);
    }
}

#[actix::test]
async fn deliveries_reuse_the_connection_once_the_body_is_drained_on_the_side() {
    let server = Raw::start(|_, _| Reply::json(201, json!({"data": {"synced": 1}})));
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::max_batch(1));
    let report = push_host_ids(&actors, &["a", "b", "c", "d", "e"]).await;
    assert_eq!((report.count, report.queued), (5, 0));
    assert_eq!(server.delivered().len(), 5);
    // Not a new connection (a TLS handshake against the real platform) per push: 5
    // when the body is left unread. One more is allowed for a body still on its way
    // when the next push starts.
    let connections = server.connections();
    assert!(connections <= 2, "{connections} connections for 5 pushes");
}
