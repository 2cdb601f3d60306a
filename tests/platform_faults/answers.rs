//! Answers that are odd but HTTP: a storm of 5xx then recovery, hostile or
//! malformed `Retry-After`, a 2xx with a garbage or lying body, a refusal that echoes the
//! token.

use std::time::Duration;

use agent_sync_actors::messages::*;
use agent_sync_actors::queue::Jitter;
use agent_sync_actors::sync_record::Direction;
use agent_sync_testkit::*;
use serde_json::{json, Value};

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
            let echoed = req.authorization();
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
        let echoed = server.log()[0].0.authorization();
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
