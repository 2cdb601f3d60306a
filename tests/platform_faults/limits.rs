//! Size limits on either side: a proxy's 413 answered before the body is read
//! (with a lingering close, or a reset), and a pull body over the default 16 MiB.

use std::time::Instant;

use agent_sync_actors::messages::*;
use agent_sync_actors::platform::{HttpPlatform, Platform, PlatformConfig};
use agent_sync_actors::time::Clock;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;
use serde_json::{json, Value};

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
