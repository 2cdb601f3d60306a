//! Platform faults (design.md §5, §6 R4, §7.4, §12): whatever the platform does at
//! the HTTP or the TCP level, each fault ends in its documented outcome, nothing that
//! was acknowledged is lost, and nothing hangs. Storage faults are in
//! `storage_faults.rs`.
//!
//! Not repeated here because other files prove them: the 5xx/408/429/501/4xx classes,
//! `Retry-After` in seconds and as a date, 401/403 then recovery, 413 splitting,
//! a delayed answer cut by the request timeout (`response_classes.rs`); a pull body
//! over a small limit (`pull_and_service.rs`).
//!
//! Platforms that misbehave at the TCP level are [`Raw`] servers (resets, silence,
//! lies about lengths, endless bodies); the tests of the binary use them too, so they
//! need no actix System. Only 127.0.0.1 is used.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_sync_actors::messages::*;
use agent_sync_actors::platform::{HttpPlatform, Platform, PlatformConfig};
use agent_sync_actors::queue::Jitter;
use agent_sync_actors::sync_record::Direction;
use agent_sync_actors::time::Clock;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;
use serde_json::{json, Value};

/// The token of the binary's tests: distinctive enough that finding it is a leak.
const SECRET: &str = "faults-secret-5c7e21";
/// The agent the binary runs as.
const AGENT: &str = "faults-agent";

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

fn with_timeout(timeout: Duration) -> Options {
    Options {
        request_timeout: timeout,
        ..Options::default()
    }
}

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
async fn a_5xx_storm_then_recovery_delivers_everything_in_order_with_stable_keys() {
    use agent_sync_actors::backoff::backoff;
    tokio::time::pause();
    let platform = ScriptedPlatform::delivering();
    let network = || DeliveryOutcome::Network {
        detail: "connection reset by peer".into(),
    };
    let storm: Vec<DeliveryOutcome> = [500, 502, 503, 504, 599, 408, 429, 0, 500, 503, 502, 0]
        .into_iter()
        .map(|s| if s == 0 { network() } else { status_outcome(s) })
        .collect();
    for outcome in &storm {
        platform.respond(outcome.clone());
    }
    let dirs = Dirs::new();
    // Exact steps: this is about the storm, not the jitter.
    let opts = Options {
        jitter: Jitter::Off,
        ..Options::max_batch(1)
    };
    let (actors, _store) = platform.start_actors(&dirs, &opts);
    assert_eq!(push_host_ids(&actors, &["a", "b", "c"]).await.count, 0);
    // Only the head is tried while the platform is down; each try at its backoff.
    for attempt in 1..storm.len() {
        let head = queue(&actors).await.remove(0);
        assert_eq!(head.attempts as usize, attempt);
        assert_eq!(head.dispatches[0].id().as_deref(), Some("a"));
        tokio::time::sleep(backoff(attempt as u32) + millis(500)).await;
        assert_eq!(
            platform.push_times().len(),
            attempt + 1,
            "one try per backoff"
        );
        if attempt == 6 {
            // New work during the storm queues behind the head and sends nothing (P5).
            let report = push_host_ids(&actors, &["d"]).await;
            assert_eq!((report.count, report.queued), (0, 4));
            assert_eq!(platform.push_times().len(), attempt + 1);
        }
    }
    let storm_keys: Vec<String> = platform
        .push_requests()
        .iter()
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert!(storm_keys.iter().all(|k| *k == storm_keys[0]), "one key");
    assert_eq!(queue(&actors).await[0].attempts as usize, storm.len());

    // Recovery: at the next try everything goes, in order.
    tokio::time::sleep(backoff(storm.len() as u32) + millis(500)).await;
    let requests = platform.push_requests();
    assert_eq!(requests.len(), storm.len() + 4);
    let order: Vec<String> = requests[storm.len()..]
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["dispatches"][0]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
    assert_eq!(requests[storm.len()].idempotency_key, storm_keys[0]);
    assert!(queue(&actors).await.is_empty());
    assert!(
        dead_letters(&actors).await.is_empty(),
        "transient failures never dead-letter"
    );
    let history = records(&actors, None).await;
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|r| r.direction == Direction::Push));
    let state = sync_state(&actors).await;
    assert!(!state.auth_failed);
}

#[actix::test]
async fn hostile_or_malformed_retry_after_is_capped_or_ignored() {
    let day = secs(24 * 3600);
    let cases: [(&str, Duration); 8] = [
        ("99999999999", day),
        ("18446744073709551615", day),
        ("Fri, 31 Dec 9999 23:59:59 GMT", day),
        ("soon", secs(1)),
        ("-5", secs(1)),
        ("1.5", secs(1)),
        ("0", secs(1)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", secs(1)),
    ];
    let server = LoopbackPlatform::start().await;
    for (value, expected) in cases {
        server.respond(Scripted::status(503).header("Retry-After", value));
        let dirs = Dirs::new();
        let (actors, _store) = start_online(&dirs, &server.url(), &Options::default());
        let before = now();
        assert_eq!(push_host_ids(&actors, &["a"]).await.queued, 1, "{value}");
        let after = now();
        let entry = queue(&actors).await.remove(0);
        let next = entry.next_attempt.expect("next_attempt");
        let low = before.saturating_add(expected).unix_millis() - 1000;
        let high = after.saturating_add(expected).unix_millis() + 1000;
        assert!(
            (low..=high).contains(&next.unix_millis()),
            "Retry-After {value:?}: next attempt {next}, expected about now + {expected:?}"
        );
        assert_eq!(entry.attempts, 1);
    }
    server.stop().await;
}

/// A proxy with a 64 KiB limit that answers 413 before reading the body; `polite`
/// reads and discards the body before closing (nginx's lingering close), else the close
/// with unread bytes resets the connection, which may reach the client first.
async fn push_through_a_413_proxy(polite: bool) -> (SyncActors, Raw, Dirs, PushReport) {
    const LIMIT: usize = 64 * 1024;
    let server = Raw::with(
        move |_, head| match head.length > LIMIT {
            true if polite => Early::RefuseThenDrain(413),
            true => Early::RefuseUnread(413),
            false => Early::ReadBody,
        },
        |_, _| Reply::ok(),
    );
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::default());
    // One entry of 8 dispatches, 240 KiB: split to halves of 4, then 2, to get through.
    let dispatches: Vec<Value> = (0..8)
        .map(|i| json!({"id": format!("big-{i}"), "blob": "b".repeat(30 * 1024)}))
        .collect();
    let report = actors
        .pusher
        .send(SyncPush {
            dispatches: Some(dispatches),
            ..SyncPush::default()
        })
        .await
        .unwrap()
        .unwrap();
    (actors, server, dirs, report)
}

fn all_big() -> Vec<String> {
    (0..8).map(|i| format!("big-{i}")).collect()
}

#[actix::test]
async fn a_413_answered_before_the_body_is_read_splits_and_delivers() {
    let (actors, server, _dirs, report) = push_through_a_413_proxy(true).await;
    assert_eq!((report.count, report.queued), (8, 0));
    let mut delivered: Vec<String> = server.delivered().iter().flat_map(Req::ids).collect();
    delivered.sort();
    assert_eq!(delivered, all_big(), "each dispatch delivered once");
    let sizes: Vec<(usize, u16)> = server
        .log()
        .iter()
        .map(|(r, s)| (r.head.length / 1024, *s))
        .collect();
    assert_eq!(
        sizes.iter().filter(|(_, s)| *s == 413).count(),
        3,
        "{sizes:?}"
    );
    assert!(dead_letters(&actors).await.is_empty());
}

#[actix::test]
async fn a_413_with_a_reset_connection_is_retried_then_split_and_nothing_is_lost() {
    let (actors, server, _dirs, report) = push_through_a_413_proxy(false).await;
    // awc may see the reset before the 413 on a reused connection: then the part is a
    // transient failure (kept, backing off) rather than split at once.
    let queued: Vec<String> = queue(&actors)
        .await
        .iter()
        .flat_map(|e| e.dispatches.iter().map(|d| d.id().unwrap()))
        .collect();
    let delivered: Vec<String> = server.delivered().iter().flat_map(Req::ids).collect();
    let mut all: Vec<String> = delivered.iter().chain(&queued).cloned().collect();
    all.sort();
    assert_eq!(all, all_big(), "nothing lost, nothing doubled");
    assert_eq!(report.count, delivered.len());
    assert!(dead_letters(&actors).await.is_empty(), "never a refusal");
    wait_until("the rest on the backoff timer", secs(20), || {
        server.delivered().iter().flat_map(Req::ids).count() == 8
    })
    .await;
    let mut delivered: Vec<String> = server.delivered().iter().flat_map(Req::ids).collect();
    delivered.sort();
    assert_eq!(delivered, all_big(), "each dispatch delivered once");
    eventually_empty(&actors).await;
}

#[actix::test]
async fn a_2xx_with_a_garbage_or_lying_body_is_delivered() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(200).body("<html>oops</html>"));
    server.respond(Scripted::status(202).body(vec![0xff, 0x00, 0xfe, 0x80]));
    server.respond(Scripted::status(204));
    // Over the 64 KiB the pusher reads of an answer.
    server.respond(
        Scripted::status(200)
            .header("content-type", "application/json")
            .body(vec![b'['; 200 * 1024]),
    );
    server.respond(Scripted::status(201).json(json!({"data": null, "error": "none"})));
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::max_batch(1));
    let report = push_host_ids(&actors, &["a", "b", "c", "d", "e"]).await;
    assert_eq!((report.count, report.queued), (5, 0));
    assert!(dead_letters(&actors).await.is_empty());
    let history = records(&actors, None).await;
    assert_eq!(history.len(), 5);
    server.stop().await;

    // A head promising 1000 bytes, 5 sent, then a normal close.
    let liar = Raw::start(|_, _| {
        Reply::ThenClose(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nshort".to_vec())
    });
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &liar.url(), &Options::default());
    let report = push_host_ids(&actors, &["f"]).await;
    assert_eq!((report.count, report.queued), (1, 0));
}

/// A token of its own, so that any 6-character piece of it found is a leak.
const ECHOED: &str = "Zq7x-echoed-secret-91ad4e";

#[actix::test]
async fn a_refusal_echoing_the_token_across_the_excerpt_cut_leaves_no_piece_of_it() {
    // The body is cut at 200 bytes (design.md §7.4); the token starts around there.
    for at in [180, 190, 194, 195, 196, 198, 200] {
        let server = Raw::start(move |_, req| {
            // "Bearer <token>", as a platform echoing the request would show it.
            let echoed = req
                .head
                .headers
                .get("authorization")
                .cloned()
                .unwrap_or_default();
            let mut body = "e".repeat(at - "Bearer ".len());
            body.push_str(&echoed);
            body.push_str(" was not accepted, try again later");
            Reply::Answer {
                status: 503,
                headers: vec![("content-type", "text/plain".into())],
                body: body.into_bytes(),
            }
        });
        let dirs = Dirs::new();
        let (actors, _store) = start_actors_with(
            dirs.root(),
            dirs.state(),
            &server.url(),
            Some(ECHOED),
            &Options::default(),
        );
        let report = push_host_ids(&actors, &["a"]).await;
        assert_eq!((report.count, report.queued), (0, 1), "token at {at}");
        let echoed = server.log()[0].0.head.headers["authorization"].clone();
        assert_eq!(echoed, format!("Bearer {ECHOED}"), "the token was sent");
        // What `status` shows: the Queue's own head.
        let head = summary(&actors).await.head.expect("the entry is queued");
        let error = head.last_error.expect("last_error is set");
        assert!(error.starts_with("HTTP 503"), "{error}");
        assert!(error.contains("eeee"), "the body is quoted: {error}");
        // What `queue` shows.
        let listed = queue(&actors)
            .await
            .remove(0)
            .last_error
            .unwrap_or_default();
        for shown in [&error, &listed] {
            for piece in ECHOED.as_bytes().windows(6) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(
                    !shown.contains(piece),
                    "token at {at}: {piece:?} of the token is in {shown:?}"
                );
            }
        }
    }
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

#[actix::test]
async fn a_pull_body_over_the_default_16_mib_limit_keeps_the_cache() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    // Default platform settings but the URL: the 16 MiB limit of design.md §6 L2.
    let config = PlatformConfig {
        base_url: server.url(),
        ..PlatformConfig::default()
    };
    assert_eq!(config.max_context_bytes, 16 * 1024 * 1024);
    let platform: std::rc::Rc<dyn Platform> = std::rc::Rc::new(HttpPlatform::new(config));
    let (actors, _store) = start_actors_on(
        dirs.root(),
        dirs.state(),
        platform,
        Some(TOKEN),
        &Options::default(),
        Clock::system(),
    );
    let kept = vec![json!({"id": "kept"})];
    server.respond(Scripted::ok().json(json!({"context": kept.clone()})));
    assert_eq!(pull(&actors, None).await.context, kept);
    // A valid envelope, 17 MiB.
    let blob = "y".repeat(17 * 1024 * 1024);
    server.respond(Scripted::ok().json(json!({"context": [{"id": "huge", "blob": blob}]})));
    let report = pull(&actors, None).await;
    assert!(report.from_cache);
    assert_eq!(report.context, kept);
    assert_eq!(cached_context(&actors).await, kept);
    let records = records(&actors, None).await;
    assert_eq!(records.len(), 1, "no history for the refused body");
    server.stop().await;

    // A body that never ends (chunked, no length): cut at the limit, quickly.
    let endless = Raw::start(|_, _| Reply::Endless);
    let config = PlatformConfig {
        base_url: endless.url(),
        ..PlatformConfig::default()
    };
    let platform: std::rc::Rc<dyn Platform> = std::rc::Rc::new(HttpPlatform::new(config));
    let dirs2 = Dirs::new();
    let (actors, _store) = start_actors_on(
        dirs2.root(),
        dirs2.state(),
        platform,
        Some(TOKEN),
        &Options::default(),
        Clock::system(),
    );
    let started = Instant::now();
    let report = pull(&actors, None).await;
    assert!(report.from_cache);
    assert!(started.elapsed() < secs(20), "took {:?}", started.elapsed());
}

// ======================================================= the binary

#[test]
fn the_daemon_outlasts_a_refused_connection_and_delivers_once_the_platform_is_up() {
    let sandbox = sandbox();
    let (file, ids) = sandbox.padded_dispatches("offline", 3, 10);
    let out = run(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A port where nothing listens yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.online(&url, &["run", "--scan-interval", "0"]),
    );
    daemon.wait_for("the refused attempt", |log| {
        log.contains("push of entry 1 failed")
    });
    // The platform comes up on that port; the backoff timer (1 s) finds it.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    let server = Raw::on(listener, |_, _| Early::ReadBody, |_, _| Reply::ok());
    wait_for("delivery after the refusal", secs(15), || {
        server.delivered().len() == 1
    });
    assert_eq!(server.delivered()[0].ids(), ids);
    daemon.wait_for("the delivery to be recorded", |log| {
        log.contains("pushed entry 1: 3 dispatch(es)")
    });
    assert_eq!(daemon.terminate_blocking().code(), Some(0));
    assert_eq!(sandbox.status()["queued_entries"], 0);
}

#[test]
fn the_token_never_appears_in_the_daemon_log_at_trace_level() {
    let sandbox = sandbox();
    let pushes = Arc::new(AtomicUsize::new(0));
    let counter = pushes.clone();
    let server = Raw::start(move |_, req| {
        if req.head.method == "GET" {
            return Reply::json(200, json!({"data": {"context": [{"id": "m1"}]}}));
        }
        // The first push is refused with the credentials echoed back, the worst case.
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            let echoed = req
                .head
                .headers
                .get("authorization")
                .cloned()
                .unwrap_or_default();
            return Reply::Answer {
                status: 401,
                headers: vec![("www-authenticate", format!("Bearer error=\"{echoed}\""))],
                body: format!("rejected credentials: {echoed}").into_bytes(),
            };
        }
        Reply::ok()
    });
    write_done_with_report(&sandbox.root(), "core/go-io/one", 100);
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("trace"),
        sandbox.online(
            &server.url(),
            &["run", "--scan-interval", "1s", "--pull-interval", "1s"],
        ),
    );
    wait_for("the 401 and its retry", secs(20), || {
        server.delivered().len() == 1
    });
    write_done_with_report(&sandbox.root(), "core/go-io/two", 100);
    wait_for("a second workspace and two pulls", secs(20), || {
        server.delivered().len() == 2
            && server
                .log()
                .iter()
                .filter(|(r, _)| {
                    r.head.method == "GET" && r.head.path.starts_with("/v1/agent/context?")
                })
                .count()
                >= 2
    });
    wait_for("the daemon to record both deliveries", secs(20), || {
        recorded_dispatches(&daemon.log()) == 2
    });
    let status = daemon.terminate_blocking();
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "{}", log.replace(SECRET, "<TOKEN>"));
    assert!(log.contains("TRACE"), "trace logging was on");
    assert!(log.contains("401"), "the refusal is logged");
    assert!(
        !log.contains(SECRET),
        "the token leaked into the daemon's log:\n{}",
        log.lines()
            .filter(|l| l.contains(SECRET))
            .take(5)
            .map(|l| l.replace(SECRET, "<TOKEN>"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = run(sandbox.cmd(&["--json", "queue"]));
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
    let status = sandbox.status();
    assert_eq!(status["auth_failed"], false, "{status}");
    assert_eq!(status["ledger_entries"], 2, "{status}");
    assert!(pushes.load(Ordering::SeqCst) >= 3);
}
