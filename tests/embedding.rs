//! The embedding API as a new host meets it: README's example is `examples/embed.rs`
//! (compared here) and runs against a loopback platform; a host's registry shows a
//! push's timestamp as soon as the push returns, with no refresh call.

use std::path::Path;

use agent_sync::prelude::*;
use agent_sync_testkit::{parse_exposition, sample, write_done, LoopbackPlatform};

/// README's embedding example, compiled here as a module so that it runs in the tests.
#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

/// The first fenced Rust block of README.md's embedding section.
fn readme_embedding_block() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Embedding"))
        .expect("README.md has an embedding section");
    let start = section.find("```rust\n").expect("a ```rust block") + "```rust\n".len();
    let len = section[start..].find("```\n").expect("the block ends");
    section[start..start + len].to_string()
}

#[test]
fn the_readme_embedding_example_is_examples_embed_rs() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/embed.rs"))
            .expect("examples/embed.rs");
    assert!(
        readme_embedding_block() == example,
        "README.md's embedding block and examples/embed.rs differ: copy the file into the \
         README"
    );
}

#[actix::test]
async fn the_readme_example_pushes_pulls_and_shows_the_push_in_the_metrics() {
    let platform = LoopbackPlatform::start().await;
    let base = tempfile::tempdir().unwrap();
    write_done(&base.path().join("workspace"), "core/go-io/task-5");

    let metrics = embed::sync_once(&platform.url(), "test-token", base.path())
        .await
        .unwrap();

    let delivered: Vec<String> = platform
        .delivered()
        .iter()
        .flat_map(|r| r.dispatch_ids())
        .collect();
    assert_eq!(delivered, ["core/go-io/task-5"]);
    assert!(base.path().join("data/sync/sync.redb").is_file());
    let samples = parse_exposition(&metrics);
    assert!(sample(&samples, "agent_sync_last_push_timestamp_seconds", &[]) > 0.0);
    assert_eq!(sample(&samples, "agent_sync_queue_dispatches", &[]), 0.0);
    platform.stop().await;
}

#[actix::test]
async fn a_host_registry_encoded_right_after_a_push_shows_its_timestamp() {
    let platform = LoopbackPlatform::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = SyncConfig::builder()
        .api_url(platform.url())
        .token("test-token")
        .unwrap()
        .workspace_root(dir.path().join("workspace"))
        .state_dir(dir.path().join("sync"))
        .control_socket(false)
        .build()
        .unwrap();
    let service = SyncService::start(config).unwrap();
    let mut registry = Registry::default();
    service.register_metrics(&mut registry);
    let encode = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        parse_exposition(&text)
    };
    let before = encode(&registry);
    assert_eq!(
        sample(&before, "agent_sync_last_push_timestamp_seconds", &[]),
        0.0
    );

    let push = SyncPush {
        dispatches: Some(vec![
            serde_json::json!({"id": "host/1", "status": "completed"}),
        ]),
        ..SyncPush::default()
    };
    let report = service.push(push).await.unwrap();
    assert_eq!((report.count, report.queued), (1, 0));

    // No refresh, no wait: the gauges are read from the committed state as encoded.
    let after = encode(&registry);
    let pushed_at = service
        .status()
        .await
        .unwrap()
        .last_push_at
        .expect("a push time");
    let seconds = sample(&after, "agent_sync_last_push_timestamp_seconds", &[]);
    assert_eq!(seconds, pushed_at.unix_millis() as f64 / 1000.0);
    assert_eq!(sample(&after, "agent_sync_queue_entries", &[]), 0.0);
    assert_eq!(
        sample(&after, "agent_sync_dispatches_delivered_total", &[]),
        1.0
    );

    // After the stop the registry neither keeps the database open nor shows stale
    // gauges: another service opens the same state at once.
    service.stop().await;
    let text = {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    assert!(
        !text.contains("agent_sync_last_push_timestamp_seconds"),
        "{text}"
    );
    let reopened = SyncConfig::builder()
        .workspace_root(dir.path().join("workspace"))
        .state_dir(dir.path().join("sync"))
        .control_socket(false)
        .build()
        .unwrap();
    SyncService::start(reopened).unwrap().stop().await;
    platform.stop().await;
}
