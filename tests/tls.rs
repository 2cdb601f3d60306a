//! HTTPS to the platform (design.md §7.4): certificates are verified against the system's
//! roots (`SSL_CERT_FILE` here, the usual override), over a real rustls server on
//! 127.0.0.1. One test in this binary, because it sets a process-wide variable.

use actix_web::HttpResponse;
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;

fn actors(dir: &std::path::Path, port: u16) -> SyncActors {
    let opts = Options {
        agent_id: "tls-agent".into(),
        history_limit: 10,
        ..Options::no_drain()
    };
    let url = format!("https://localhost:{port}");
    let (actors, _store) = start_actors_with(
        &dir.join("workspace"),
        &dir.join("state"),
        &url,
        Some("tls-token"),
        &opts,
    );
    actors
}

async fn push_one(actors: &SyncActors) -> Vec<QueueEntry> {
    enqueue_as(actors, "tls-agent", None, &["over-tls"]).await;
    drain(actors).await;
    drain(actors).await;
    queue(actors).await
}

#[actix::test]
async fn https_verifies_the_platform_against_the_system_roots() {
    let cert = TestCert::signed_for("localhost");
    let (handle, port) =
        cert.serve(|| async { HttpResponse::Ok().json(serde_json::json!({"ok": true})) });
    let dir = tempfile::tempdir().unwrap();

    // The system roots do not know the test CA: the handshake is refused, nothing lost.
    let untrusting = actors(&dir.path().join("a"), port);
    let queued = push_one(&untrusting).await;
    assert_eq!(queued.len(), 1, "refused TLS keeps the entry");
    let error = queued[0].last_error.clone().unwrap_or_default();
    assert_eq!(queued[0].attempts, 1, "{error}");

    // With the CA in SSL_CERT_FILE (how operators add a private CA) it is delivered.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert.ca_pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &ca_file);
    let trusting = actors(&dir.path().join("b"), port);
    let queued = push_one(&trusting).await;
    assert!(
        queued.is_empty(),
        "delivered over https: {:?}",
        queued.first().map(|e| &e.last_error)
    );
    handle.stop(true).await;
}
