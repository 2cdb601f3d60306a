//! The pull path (L1, L2) against a real loopback platform, and `SyncService` wiring:
//! push, pull, status, abort with a request in flight (R3), the state lock (R2).

use std::collections::HashMap;
use std::time::Duration;

use agent_sync::actors::messages::{SyncPull, SyncPush};
use agent_sync::actors::platform::{Token, TokenSource};
use agent_sync::actors::sync_record::Direction;
use agent_sync::actors::SyncActors;
use agent_sync::{StartError, SyncConfig, SyncService};
use agent_sync_testkit::*;
use serde_json::{json, Value};

/// Starts the actors against `url` with a pull body limit of `limit` bytes.
fn actors_with_limit(dirs: &Dirs, url: &str, token: Option<&str>, limit: usize) -> SyncActors {
    let opts = Options {
        max_context_bytes: limit,
        ..Options::default()
    };
    start_actors_with(dirs.root(), dirs.state(), url, token, &opts).0
}

fn query_of(recorded: &Recorded) -> HashMap<String, String> {
    actix_web::web::Query::<HashMap<String, String>>::from_query(&recorded.query)
        .expect("a well-formed query")
        .into_inner()
}

#[actix::test]
async fn l1_pull_sends_agent_id_and_since_encoded_and_caches_the_result() {
    let platform = LoopbackPlatform::start().await;
    platform
        .set_default(Scripted::ok().json(json!({"data": {"context": [{"id": "a"}, {"id": "b"}]}})));
    let dirs = Dirs::new();
    let actors = actors_with_limit(&dirs, &platform.url(), Some(TOKEN), 1 << 20);
    let since = "2026-01-01T00:00:00+01:00 & more";
    let report = actors
        .puller
        .send(SyncPull {
            agent_id: Some("codex one/é".into()),
            since: Some(since.into()),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.count, 2);
    let requests = platform.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, PULL_PATH);
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer test-token")
    );
    let query = query_of(&requests[0]);
    assert_eq!(query["agent_id"], "codex one/é");
    assert_eq!(query["since"], since);

    let cached = cached_context(&actors).await;
    assert_eq!(cached, vec![json!({"id": "a"}), json!({"id": "b"})]);
    let state = sync_state(&actors).await;
    assert!(state.last_pull_at.is_some());
    let records = records(&actors, None).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].direction, Direction::Pull);
    assert_eq!(records[0].items_count, 2);
    // payload_size is the response body length.
    let body_len = serde_json::to_vec(&json!({"data": {"context": [{"id": "a"}, {"id": "b"}]}}))
        .unwrap()
        .len();
    assert_eq!(records[0].payload_size, body_len as u64);
    platform.stop().await;
}

#[actix::test]
async fn l1_every_envelope_over_http_replaces_the_cache() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = actors_with_limit(&dirs, &platform.url(), Some(TOKEN), 1 << 20);
    let envelopes = [
        json!({"data": [{"id": 1}]}),
        json!({"data": {"context": [{"id": 2}]}}),
        json!({"data": {"items": [{"id": 3}]}}),
        json!({"data": {"memories": [{"id": 4}]}}),
        json!({"context": [{"id": 5}]}),
        json!({"items": [{"id": 6}]}),
        json!({"memories": [{"id": 7}, "dropped", 8]}),
        json!([{"id": 8}]),
    ];
    for (n, envelope) in envelopes.iter().enumerate() {
        platform.respond(Scripted::ok().json(envelope.clone()));
        let report = pull(&actors, None).await;
        let want = vec![json!({"id": n + 1})];
        assert_eq!(report.context, want, "envelope {envelope}");
        assert_eq!(cached_context(&actors).await, want);
    }
    platform.stop().await;
}

#[actix::test]
async fn l1_since_merges_into_the_cache_by_id() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = actors_with_limit(&dirs, &platform.url(), Some(TOKEN), 1 << 20);
    platform.respond(Scripted::ok().json(json!({"items": [{"id": 1, "v": "old"}, {"id": 2}]})));
    pull(&actors, None).await;
    platform.respond(Scripted::ok().json(json!({"items": [{"id": 1, "v": "new"}, {"id": 3}]})));
    let report = pull(&actors, Some("2026-01-01T00:00:00Z")).await;
    assert_eq!(report.count, 2, "the reply counts what was received");
    let cached = cached_context(&actors).await;
    assert_eq!(
        cached,
        vec![
            json!({"id": 1, "v": "new"}),
            json!({"id": 2}),
            json!({"id": 3})
        ]
    );
    platform.stop().await;
}

#[actix::test]
async fn l1_a_large_since_merge_replaces_in_place_and_appends_in_order() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = actors_with_limit(&dirs, &platform.url(), Some(TOKEN), 1 << 20);
    // 3,000 cached: ids 0..3000, every 500th item without an id.
    let first: Vec<Value> = (0..3000)
        .map(|i| match i % 500 {
            0 => json!({"note": i}),
            _ => json!({"id": i, "v": "old"}),
        })
        .collect();
    platform.respond(Scripted::ok().json(json!({"items": first.clone()})));
    assert_eq!(pull(&actors, None).await.count, 3000);
    // Since: every third cached id replaced, 1,500 new ids, items without an id, the
    // string "7" (not the number 7), and one new id twice (the last one wins).
    let mut since: Vec<Value> = Vec::new();
    for i in (1..3000).step_by(3).filter(|i| i % 500 != 0) {
        since.push(json!({"id": i, "v": "new"}));
        if i % 300 == 1 {
            since.push(json!({"id": 3000 + i, "v": "fresh"}));
        }
    }
    since.extend((4000..5490).map(|i| json!({"id": i, "v": "fresh"})));
    since.push(json!({"note": "no id"}));
    since.push(json!({"id": "7", "v": "a string id"}));
    since.push(json!({"id": 4001, "v": "twice"}));
    platform.respond(Scripted::ok().json(json!({"items": since.clone()})));
    let report = pull(&actors, Some("2026-01-01T00:00:00Z")).await;
    assert_eq!(report.count, since.len(), "the reply is what was received");

    // The model: existing order kept, replaced in place, new ones appended in order.
    let mut expected = first;
    let mut appended: Vec<Value> = Vec::new();
    for item in &since {
        let id = item.get("id");
        let cached = id.and_then(|id| expected.iter().position(|c| c.get("id") == Some(id)));
        let fresh = id.and_then(|id| appended.iter().position(|c| c.get("id") == Some(id)));
        match (cached, fresh) {
            (Some(i), _) => expected[i] = item.clone(),
            (None, Some(i)) => appended[i] = item.clone(),
            (None, None) => appended.push(item.clone()),
        }
    }
    expected.extend(appended);
    let cached = cached_context(&actors).await;
    assert_eq!(cached.len(), expected.len());
    assert_eq!(cached, expected);
    // Spot checks that do not lean on the model.
    assert_eq!(cached[1], json!({"id": 1, "v": "new"}));
    assert_eq!(cached[2], json!({"id": 2, "v": "old"}));
    assert_eq!(cached[500], json!({"note": 500}));
    assert_eq!(cached[3000], json!({"id": 3001, "v": "fresh"}));
    let twice: Vec<&Value> = cached.iter().filter(|c| c["id"] == 4001).collect();
    assert_eq!(twice, [&json!({"id": 4001, "v": "twice"})]);
    assert_eq!(cached.iter().filter(|c| c["id"] == json!("7")).count(), 1);
    assert_eq!(cached[7], json!({"id": 7, "v": "new"}));
    assert_eq!(cached.last(), Some(&json!({"id": "7", "v": "a string id"})));
    platform.stop().await;
}

#[actix::test]
async fn l1_the_context_cache_keeps_its_cap_dropping_the_oldest() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let mut config = service_config(&dirs, &platform.url(), Some(TOKEN));
    config.max_context_items = 3;
    config.drain_on_start = false;
    let service = SyncService::start(config).unwrap();
    let since = || SyncPull {
        since: Some("2026-01-01T00:00:00Z".into()),
        ..SyncPull::default()
    };

    platform.respond(Scripted::ok().json(json!({"items": [{"id": 1}, {"id": 2}]})));
    assert_eq!(service.pull(SyncPull::default()).await.unwrap().count, 2);
    // One replaced in place, two new: four items, the oldest (1) goes.
    platform.respond(
        Scripted::ok().json(json!({"items": [{"id": 2, "v": "new"}, {"id": 3}, {"id": 4}]})),
    );
    let report = service.pull(since()).await.unwrap();
    assert_eq!(report.count, 3, "the reply counts what was received");
    assert_eq!(
        service.context().await.unwrap(),
        [
            json!({"id": 2, "v": "new"}),
            json!({"id": 3}),
            json!({"id": 4})
        ]
    );
    // A full pull over the cap keeps its newest (last) items.
    platform.respond(
        Scripted::ok()
            .json(json!({"items": (10..15).map(|i| json!({"id": i})).collect::<Vec<_>>()})),
    );
    let report = service.pull(SyncPull::default()).await.unwrap();
    assert_eq!(report.count, 5);
    assert_eq!(
        service.context().await.unwrap(),
        [json!({"id": 12}), json!({"id": 13}), json!({"id": 14})]
    );
    assert_eq!(service.status().await.unwrap().context_count, 3);
    service.stop().await;
    platform.stop().await;
}

#[actix::test]
async fn l1_recognised_empty_array_empties_the_cache() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = actors_with_limit(&dirs, &platform.url(), Some(TOKEN), 1 << 20);
    platform.respond(Scripted::ok().json(json!({"context": [{"id": 1}]})));
    pull(&actors, None).await;
    platform.respond(Scripted::ok().json(json!({"data": {"context": []}})));
    let report = pull(&actors, None).await;
    assert_eq!(report.count, 0);
    assert!(cached_context(&actors).await.is_empty());
    platform.stop().await;
}

#[actix::test]
async fn l2_every_failure_returns_the_cache_untouched() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = actors_with_limit(&dirs, &platform.url(), Some(TOKEN), 4096);
    let good = vec![json!({"id": "kept"})];
    platform.respond(Scripted::ok().json(json!({"context": good.clone()})));
    pull(&actors, None).await;
    let state_before = sync_state(&actors).await;
    let big = json!({"context": [{"id": "x", "blob": "y".repeat(8192)}]});
    let failures = [
        (
            "500",
            Scripted::status(500).json(json!({"context": [{"id": "bad"}]})),
        ),
        ("404", Scripted::status(404)),
        ("unparseable body", Scripted::ok().body("<html>not json")),
        (
            "unknown envelope",
            Scripted::ok().json(json!({"data": {"other": [{"id": "bad"}]}})),
        ),
        ("null data", Scripted::ok().json(json!({"data": null}))),
        ("body over the limit", Scripted::ok().json(big)),
    ];
    for (what, answer) in failures {
        platform.respond(answer);
        let report = pull(&actors, None).await;
        assert_eq!(report.context, good, "{what}: the cache comes back");
        assert!(report.from_cache, "{what}");
        assert_eq!(cached_context(&actors).await, good, "{what}");
    }
    let records = records(&actors, None).await;
    assert_eq!(records.len(), 1, "no history for failed pulls");
    let state_after = sync_state(&actors).await;
    assert_eq!(state_after.last_pull_at, state_before.last_pull_at);
    assert!(!state_after.auth_failed);

    // 401 also returns the cache, and sets auth_failed until the next success.
    platform.respond(Scripted::status(401));
    assert_eq!(pull(&actors, None).await.context, good);
    assert!(sync_state(&actors).await.auth_failed);
    platform.respond(Scripted::ok().json(json!({"context": []})));
    pull(&actors, None).await;
    assert!(!sync_state(&actors).await.auth_failed);
    platform.stop().await;
}

#[actix::test]
async fn l2_network_error_and_no_token_return_the_cache() {
    let dirs = Dirs::new();
    let actors = actors_with_limit(&dirs, &dead_url(), Some(TOKEN), 1 << 20);
    let report = pull(&actors, None).await;
    assert!(report.from_cache);
    assert_eq!(report.count, 0);
    drop(actors);

    let platform = LoopbackPlatform::start().await;
    let offline = Dirs::new();
    let actors = actors_with_limit(&offline, &platform.url(), None, 1 << 20);
    assert!(pull(&actors, None).await.from_cache);
    assert!(
        platform.requests().is_empty(),
        "no token: no request at all"
    );
    platform.stop().await;
}

fn service_config(dirs: &Dirs, url: &str, token: Option<&str>) -> SyncConfig {
    let mut config = SyncConfig::new(dirs.root(), dirs.state());
    config.agent_id = "svc-agent".into();
    config.tokens = TokenSource::Fixed(token.and_then(Token::new));
    config.platform.base_url = url.into();
    config.platform.request_timeout = Duration::from_secs(10);
    config.flush_interval = None;
    config
}

#[actix::test]
async fn service_push_pull_status_and_history() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    write_done(dirs.root(), "core/go-io/task-1");
    write_done(dirs.root(), "core/go-io/task-2");
    let service = SyncService::start(service_config(&dirs, &platform.url(), Some(TOKEN))).unwrap();

    let pushed = service.push(SyncPush::default()).await.unwrap();
    assert_eq!((pushed.count, pushed.queued), (2, 0));
    let body = platform.pushes()[0].json();
    assert_eq!(body["agent_id"], "svc-agent");

    platform.respond(Scripted::ok().json(json!({"memories": [{"id": "m"}]})));
    let pulled = service.pull(SyncPull::default()).await.unwrap();
    assert_eq!(pulled.count, 1);

    let status = service.status().await.unwrap();
    assert_eq!(status.agent_id, "svc-agent");
    assert_eq!(
        (
            status.queued_entries,
            status.queued_dispatches,
            status.dead_letters
        ),
        (0, 0, 0)
    );
    assert_eq!(status.ledger_entries, 2);
    assert_eq!(status.context_count, 1);
    assert!(status.last_push_at.is_some() && status.last_pull_at.is_some());
    assert!(status.head.is_none());
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["head"], Value::Null);

    let directions: Vec<_> = service
        .history(None)
        .await
        .unwrap()
        .iter()
        .map(|r| r.direction)
        .collect();
    assert_eq!(directions, [Direction::Push, Direction::Pull]);
    service.stop().await;
    platform.stop().await;
}

#[actix::test]
async fn r3_abort_with_a_request_in_flight_leaves_the_entry_queued() {
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(Duration::from_secs(30)));
    let dirs = Dirs::new();
    let service = SyncService::start(service_config(&dirs, &platform.url(), Some(TOKEN))).unwrap();
    let push = service.push_recipient().send(SyncPush {
        dispatches: Some(vec![json!({"id": "in-flight"})]),
        ..SyncPush::default()
    });
    let pending = actix_rt::spawn(push);
    wait_until(
        "the POST reaches the platform",
        Duration::from_secs(10),
        || !platform.pushes().is_empty(),
    )
    .await;

    let started = std::time::Instant::now();
    service.abort();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "abort does not wait for the slow platform"
    );
    assert!(
        pending.await.unwrap().is_err(),
        "the caller learns the service stopped"
    );

    // The database is closed and the entry is still queued, untouched.
    let (queued, _) = reopen(dirs.root(), dirs.state()).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].dispatches[0].id().as_deref(), Some("in-flight"));
    assert_eq!(queued[0].attempts, 0);
    platform.stop().await;
}

#[actix::test]
async fn r2_second_service_on_the_same_state_is_refused() {
    let dirs = Dirs::new();
    let first = SyncService::start(service_config(&dirs, &dead_url(), None)).unwrap();
    match SyncService::start(service_config(&dirs, &dead_url(), None)) {
        Err(e @ StartError::InUse { .. }) => {
            assert!(
                e.to_string()
                    .contains("is in use by another agent-sync process"),
                "{e}"
            )
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a second service opened the same state"),
    }
    first.stop().await;
    SyncService::start(service_config(&dirs, &dead_url(), None))
        .expect("free again after stop")
        .stop()
        .await;
}

#[actix::test]
async fn insecure_url_is_refused_before_anything_is_opened() {
    let dirs = Dirs::new();
    let err = SyncService::start(service_config(&dirs, "http://api.example.com", Some(TOKEN)))
        .err()
        .expect("refused");
    assert!(matches!(err, StartError::Platform(_)), "{err}");
    assert!(!err.to_string().contains(TOKEN));
    assert!(!dirs.state().join("sync.redb").exists(), "nothing opened");
}
