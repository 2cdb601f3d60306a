//! HTTPS to the platform (design.md §7.4): certificates are verified against the system's
//! roots (`SSL_CERT_FILE` here, the usual override), over a real rustls server on
//! 127.0.0.1. One test in this binary, because it sets a process-wide variable.

use actix_web::{web, App, HttpResponse, HttpServer};
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test CA and a `localhost` certificate it signed.
struct TestPki {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
}

fn test_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.der().clone(),
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    }
}

fn tls_server(pki: &TestPki) -> (actix_web::dev::Server, u16) {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
        .unwrap();
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Ok().json(serde_json::json!({"ok": true}))
        }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind_rustls_0_23(("127.0.0.1", 0), config)
    .unwrap();
    let port = server.addrs()[0].port();
    (server.run(), port)
}

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
    let pki = test_pki();
    let (server, port) = tls_server(&pki);
    let handle = server.handle();
    actix_rt::spawn(server);
    let dir = tempfile::tempdir().unwrap();

    // The system roots do not know the test CA: the handshake is refused, nothing lost.
    let untrusting = actors(&dir.path().join("a"), port);
    let queued = push_one(&untrusting).await;
    assert_eq!(queued.len(), 1, "refused TLS keeps the entry");
    let error = queued[0].last_error.clone().unwrap_or_default();
    assert_eq!(queued[0].attempts, 1, "{error}");

    // With the CA in SSL_CERT_FILE (how operators add a private CA) it is delivered.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
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
