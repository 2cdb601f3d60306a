//! An embedded `SyncService`: it serves the control socket to the CLI, pages
//! listings through it, can turn it off, and syncs without one when the state dir is
//! too long for a socket path.

use agent_sync::actors::platform::{Token, TokenSource};
use agent_sync::control::ControlClient;
use agent_sync::messages::SyncPush;
use agent_sync::{SyncConfig, SyncService};
use agent_sync_testkit::*;
use serde_json::{json, Value};

use crate::{sandbox, served_by, AGENT, SECRET};

#[actix_rt::test]
async fn an_embedded_service_serves_the_socket_and_the_cli_talks_to_it() {
    let sandbox = sandbox();
    let mut config = SyncConfig::new(sandbox.root(), sandbox.state());
    config.agent_id = AGENT.into();
    // Offline: whatever is pushed stays queued, so the host and the CLI see one queue.
    config.tokens = TokenSource::Fixed(None::<Token>);
    config.flush_interval = None;
    let service = SyncService::start(config).expect("start the embedded service");
    assert_eq!(service.control_socket(), Some(sandbox.socket().as_path()));
    service
        .push(SyncPush {
            dispatches: Some(vec![json!({"id": "host/embedded"})]),
            ..SyncPush::default()
        })
        .await
        .unwrap();

    let via_cli = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    let direct = serde_json::to_value(service.status().await.unwrap()).unwrap();
    assert_eq!(via_cli, direct);
    assert_eq!(via_cli["queued_dispatches"], 1);

    let file = sandbox.dispatch_file("cli", &["cli/one", "cli/two"]);
    let out = run_async(sandbox.cmd(&["--json", "push", "--dispatches", &file]))
        .await
        .ok();
    assert_eq!(
        out.json(),
        json!({"success": true, "count": 0, "queued": 3})
    );
    let queued: Vec<Value> = service
        .queue(None)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| e.dispatches.iter().map(|d| d.to_object()["id"].clone()))
        .collect();
    assert_eq!(
        queued,
        [json!("host/embedded"), json!("cli/one"), json!("cli/two")]
    );
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(
        queue.as_array().map(Vec::len),
        Some(service.queue(None).await.unwrap().len())
    );
    assert_eq!(
        served_by(&sandbox.socket()).await,
        u64::from(std::process::id())
    );

    // Stopped, the socket is gone and the CLI opens the state itself.
    service.stop().await;
    assert!(!sandbox.socket().exists());
    let after = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(after["queued_dispatches"], 3);
}

#[actix_rt::test]
async fn listings_page_through_the_socket_and_return_every_entry_exactly_once() {
    const QUEUED: usize = 2_500;
    const DEAD: usize = 25;
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    let mut config = SyncConfig::new(sandbox.root(), sandbox.state());
    config.agent_id = AGENT.into();
    config.tokens = TokenSource::Fixed(Token::new(SECRET));
    config.platform.base_url = platform.url();
    config.flush_interval = None;
    // One dispatch per entry: a backlog of thousands of entries.
    config.max_batch = 1;
    let service = SyncService::start(config).expect("start the embedded service");
    let host = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("{prefix}/{i}")}))
            .collect()
    };
    // Refused for good: dead letters (the drain goes on after each).
    platform.set_default(Scripted::status(422).body("bad dispatch"));
    let push = |dispatches| SyncPush {
        dispatches: Some(dispatches),
        ..SyncPush::default()
    };
    service.push(push(host("dead", DEAD))).await.unwrap();
    // Then the platform is down: the head is tried once, everything stays queued.
    platform.set_default(Scripted::status(503));
    let report = service.push(push(host("queued", QUEUED))).await.unwrap();
    assert_eq!(report.queued, QUEUED as u64);
    let direct: Vec<u64> = service
        .queue(None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(direct.len(), QUEUED);
    let direct_dead: Vec<u64> = service
        .dead_letters()
        .await
        .unwrap()
        .iter()
        .map(|l| l.entry.seq)
        .collect();
    assert_eq!(direct_dead.len(), DEAD);

    // Through the socket, 7 at a time: every entry once, in order.
    let client = ControlClient::connect(&sandbox.state()).expect("the service's socket");
    let (mut seqs, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = client.queue_page(after, 7).await.unwrap();
        pages += 1;
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        seqs.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, direct, "every entry exactly once, oldest first");
    assert_eq!(pages, QUEUED.div_ceil(7) + 1, "the empty page ends it");
    let (mut dead, mut after) = (Vec::new(), None);
    loop {
        let page = client.dead_letters_page(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.entry.seq);
        dead.extend(page.iter().map(|l| l.entry.seq));
    }
    assert_eq!(dead, direct_dead);
    let all = client.queue().await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), direct);

    // As curl sees it: a default page of 1,000, the next one after its last seq, and a
    // limit over the page size refused rather than cut.
    let socket = sandbox.socket();
    let page = |target: String| {
        let socket = socket.clone();
        async move {
            let (status, body) = get_unix(&socket, &target).await;
            assert_eq!(status, 200, "{target}: {body}");
            let page: Value = serde_json::from_str(&body).expect("JSON");
            page.as_array()
                .expect("an array")
                .iter()
                // A dead letter holds its entry.
                .map(|e| {
                    e["seq"]
                        .as_u64()
                        .or(e["entry"]["seq"].as_u64())
                        .expect("a seq")
                })
                .collect::<Vec<u64>>()
        }
    };
    let first = page("/v1/queue".into()).await;
    assert_eq!(first, direct[..1000]);
    let second = page(format!("/v1/queue?after={}", first[999])).await;
    assert_eq!(second, direct[1000..2000]);
    let tail = page(format!("/v1/queue?after={}&limit=1000", direct[2399])).await;
    assert_eq!(tail, direct[2400..]);
    let dead_page = page(format!("/v1/dead-letters?after={}&limit=5", direct_dead[9])).await;
    assert_eq!(dead_page, direct_dead[10..15]);
    for target in [
        "/v1/queue?limit=1001",
        "/v1/queue?limit=many",
        "/v1/dead-letters?after=-1",
    ] {
        let (status, body) = get_unix(&socket, target).await;
        assert_eq!(status, 400, "{target}: {body}");
        let error: Value = serde_json::from_str(&body).expect("an error body");
        assert_eq!(error["kind"], "request", "{target}: {body}");
    }

    // The CLI through the socket pages too: more than one page, all of it.
    let out = run_async(sandbox.cmd(&["--json", "queue"])).await.ok();
    let listed: Vec<u64> = out
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, direct);
    let out = run_async(sandbox.cmd(&["queue", "--limit", "1001"]))
        .await
        .ok();
    assert_eq!(out.stdout.lines().count(), 1001);
    let out = run_async(sandbox.cmd(&["--json", "dead-letters", "--limit", "20"]))
        .await
        .ok();
    assert_eq!(out.json().as_array().map(Vec::len), Some(20));
    service.stop().await;
    platform.stop().await;
}

#[actix_rt::test]
async fn a_host_can_turn_the_control_socket_off() {
    let sandbox = sandbox();
    let mut config = SyncConfig::new(sandbox.root(), sandbox.state());
    config.control_socket = false;
    let service = SyncService::start(config).expect("start");
    assert_eq!(service.control_socket(), None);
    assert!(!sandbox.socket().exists());
    // Without a socket the CLI cannot reach it: the state is in use, by this pid.
    let out = run_async(sandbox.cmd(&["status"])).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&format!(
            "in use by another agent-sync process (pid {})",
            std::process::id()
        )),
        "{}",
        out.stderr
    );
    service.stop().await;
}

#[actix_rt::test]
async fn a_state_dir_too_long_for_a_socket_still_syncs_without_one_and_says_why() {
    let sandbox = sandbox();
    let deep = sandbox.path().join("d".repeat(60)).join("e".repeat(60));
    let mut config = SyncConfig::new(sandbox.root(), &deep);
    config.tokens = TokenSource::Fixed(None::<Token>);
    let service = SyncService::start(config).expect("it starts without the socket");
    assert_eq!(service.control_socket(), None);
    assert!(!deep.join("agent-sync.sock").exists());
    let report = service
        .push(SyncPush {
            dispatches: Some(vec![json!({"id": "deep"})]),
            ..SyncPush::default()
        })
        .await
        .unwrap();
    assert_eq!(report.queued, 1, "it still queues");
    service.stop().await;
}
