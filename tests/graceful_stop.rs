//! Graceful stop of an embedded `SyncService` (R3) and enqueue that never waits on the
//! network: a stop lets the request in flight finish (or time out at the shutdown
//! deadline) and commits its outcome, so nothing is sent twice after the restart; a
//! host push is durable at once even while a drain hangs on a silent platform.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_sync::actors::messages::{ListQueue, QueueStatus, RecentRecords, SyncPush};
use agent_sync::actors::model::{Direction, QueueEntry, SyncRecord};
use agent_sync::actors::platform::{HttpPlatform, Platform, PlatformConfig, Token, TokenSource};
use agent_sync::actors::time::Clock;
use agent_sync::actors::{Store, SyncActors};
use agent_sync::{SyncConfig, SyncService};
use common::*;
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

/// The queue and history of a stopped service's state, read in a System of its own.
async fn reopen(dirs: &Dirs) -> (Vec<QueueEntry>, Vec<SyncRecord>) {
    let state = dirs.state().to_path_buf();
    in_own_system(move || async move {
        let store = Store::open(&state).expect("the stopped service closed the state");
        let mut config = actors_config(&state, None, &Options::default());
        config.drain_on_start = false;
        let platform: Rc<dyn Platform> = Rc::new(HttpPlatform::new(PlatformConfig::default()));
        let actors = SyncActors::start(store, config, platform, Clock::system());
        let queue = actors
            .queue
            .send(ListQueue::default())
            .await
            .unwrap()
            .unwrap();
        let history = actors
            .history
            .send(RecentRecords::default())
            .await
            .unwrap()
            .unwrap();
        (queue, history)
    })
    .await
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

    let (queue, history) = reopen(&dirs).await;
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
    let (queue, _) = reopen(&dirs).await;
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

/// A platform on 127.0.0.1 that accepts connections and never answers; counts them.
fn silent_platform() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.set_nonblocking(true);
            let _ = stream.read(&mut buf);
            held.push(stream);
        }
    });
    (url, accepted)
}

#[actix::test]
async fn a_host_push_is_durable_at_once_while_a_drain_hangs_on_a_silent_platform() {
    let (url, accepted) = silent_platform();
    let dirs = Dirs::new();
    let service = SyncService::start(service_config(&dirs, &url)).unwrap();
    let _first = actix_rt::spawn(service.push_recipient().send(host_push("first")));
    wait_until(
        "the drain to hang on the platform",
        Duration::from_secs(10),
        || accepted.load(Ordering::SeqCst) > 0,
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
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e.dispatches[0]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["first", "second"]);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one request in flight, ever"
    );
    service.abort();
}
