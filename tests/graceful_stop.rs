//! Graceful stop of an embedded `SyncService` (R3) and enqueue that never waits on the
//! network: a stop lets the request in flight finish (or time out at the shutdown
//! deadline) and commits its outcome, so nothing is sent twice after the restart; a
//! host push is durable at once even while a drain hangs on a silent platform.

use std::time::{Duration, Instant};

use agent_sync::actors::messages::{QueueStatus, SyncPush};
use agent_sync::actors::platform::{Token, TokenSource};
use agent_sync::actors::sync_record::Direction;
use agent_sync::{SyncConfig, SyncService};
use agent_sync_testkit::*;
use serde_json::json;

fn service_config(dirs: &Dirs, url: &str) -> SyncConfig {
    let mut config = SyncConfig::new(dirs.root(), dirs.state());
    config.agent_id = "svc-agent".into();
    config.tokens = TokenSource::Fixed(Token::new(TOKEN));
    config.platform.base_url = url.into();
    config.platform.request_timeout = Duration::from_secs(30);
    config.flush_interval = None;
    config
}

fn host_push(id: &str) -> SyncPush {
    SyncPush {
        dispatches: Some(vec![json!({"id": id})]),
        ..SyncPush::default()
    }
}

#[actix::test]
async fn r3_graceful_stop_lets_the_request_in_flight_finish_and_commits_it() {
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(Duration::from_millis(800)));
    let dirs = Dirs::new();
    let service = SyncService::start(service_config(&dirs, &platform.url())).unwrap();
    let push = actix_rt::spawn(service.push_recipient().send(host_push("in-flight")));
    wait_until(
        "the POST reaches the platform",
        Duration::from_secs(10),
        || !platform.pushes().is_empty(),
    )
    .await;
    service.stop().await;
    assert_eq!(platform.delivered().len(), 1, "the request was let finish");
    let _ = push.await;

    let (queue, history) = reopen(dirs.root(), dirs.state()).await;
    assert!(queue.is_empty(), "the delivery was committed: {queue:?}");
    let pushes: Vec<u64> = history
        .iter()
        .filter(|r| r.direction == Direction::Push)
        .map(|r| r.items_count)
        .collect();
    assert_eq!(pushes, [1], "and recorded");

    // Started again, it has nothing to send: nothing reaches the platform twice.
    let service = SyncService::start(service_config(&dirs, &platform.url())).unwrap();
    let report = service.push(SyncPush::default()).await.unwrap();
    assert_eq!((report.count, report.queued), (0, 0));
    service.stop().await;
    assert_eq!(platform.pushes().len(), 1);
    platform.stop().await;
}

#[actix::test]
async fn r3_graceful_stop_times_the_request_out_at_the_shutdown_deadline() {
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(Duration::from_secs(30)));
    let dirs = Dirs::new();
    let mut config = service_config(&dirs, &platform.url());
    config.shutdown_timeout = Duration::from_millis(300);
    let service = SyncService::start(config).unwrap();
    let _push = actix_rt::spawn(service.push_recipient().send(host_push("slow")));
    wait_until(
        "the POST reaches the platform",
        Duration::from_secs(10),
        || !platform.pushes().is_empty(),
    )
    .await;
    let started = Instant::now();
    service.stop().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "the stop waited for the deadline, not for the platform: {took:?}"
    );
    let (queue, _) = reopen(dirs.root(), dirs.state()).await;
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(
        queue[0].attempts, 1,
        "the timeout was committed as an attempt"
    );
    assert!(
        queue[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("shutdown deadline")),
        "{queue:?}"
    );
    platform.stop().await;
}

#[actix::test]
async fn a_host_push_is_durable_at_once_while_a_drain_hangs_on_a_silent_platform() {
    // Accepts and reads each request, then never answers.
    let silent = Raw::start(|_, _| Reply::Silence);
    let dirs = Dirs::new();
    let service = SyncService::start(service_config(&dirs, &silent.url())).unwrap();
    let _first = actix_rt::spawn(service.push_recipient().send(host_push("first")));
    wait_until(
        "the drain to hang on the platform",
        Duration::from_secs(10),
        || silent.connections() > 0,
    )
    .await;
    let _second = actix_rt::spawn(service.push_recipient().send(host_push("second")));
    let queue = service.actors().queue.clone();
    let started = Instant::now();
    loop {
        let status = queue.send(QueueStatus).await.unwrap().unwrap();
        if status.dispatches == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second push never became durable while the drain hung"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // It became durable while the first request was still unanswered (the request
    // timeout is 30 s), in its own entry: the one in flight is sealed.
    assert!(started.elapsed() < Duration::from_secs(10));
    let entries = service.queue(None).await.unwrap();
    let ids: Vec<String> = entries
        .iter()
        .map(|e| e.dispatches[0].id().unwrap())
        .collect();
    assert_eq!(ids, ["first", "second"]);
    assert_eq!(silent.connections(), 1, "one request in flight, ever");
    service.abort();
}
