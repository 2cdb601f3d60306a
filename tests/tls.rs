//! HTTPS to the platform (design.md §7.4): certificates are verified against the system's
//! roots (`SSL_CERT_FILE` here, the usual override), over a real rustls server on
//! 127.0.0.1. One test in this binary, because it sets a process-wide variable.

use std::rc::Rc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use agent_sync_actors::messages::{Drain, Enqueue, EnqueueBatch, ListQueue};
use agent_sync_actors::platform::{HttpPlatform, Platform, PlatformConfig, Token, TokenSource};
use agent_sync_actors::queue::QueueConfig;
use agent_sync_actors::time::Clock;
use agent_sync_actors::{ActorsConfig, Store, SyncActors};
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
    let platform: Rc<dyn Platform> = Rc::new(HttpPlatform::new(PlatformConfig {
        base_url: format!("https://localhost:{port}"),
        request_timeout: Duration::from_secs(5),
        ..PlatformConfig::default()
    }));
    let config = ActorsConfig {
        workspace_root: dir.join("workspace"),
        agent_id: "tls-agent".into(),
        fleet_node_id: None,
        tokens: TokenSource::Fixed(Token::new("tls-token")),
        queue: QueueConfig::default(),
        history_limit: 10,
        flush_interval: None,
        drain_on_start: false,
    };
    SyncActors::start(
        Store::open(&dir.join("state")).unwrap(),
        config,
        platform,
        Clock::system(),
    )
}

async fn push_one(actors: &SyncActors) -> Vec<agent_sync_actors::model::QueueEntry> {
    let dispatch = serde_json::json!({"id": "over-tls"})
        .as_object()
        .unwrap()
        .clone();
    actors
        .queue
        .send(Enqueue {
            agent_id: "tls-agent".into(),
            fleet_node_id: None,
            batch: EnqueueBatch::Host(vec![dispatch]),
        })
        .await
        .unwrap()
        .unwrap();
    actors.pusher.send(Drain).await.unwrap().unwrap();
    actors.pusher.send(Drain).await.unwrap().unwrap();
    actors
        .queue
        .send(ListQueue::default())
        .await
        .unwrap()
        .unwrap()
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
