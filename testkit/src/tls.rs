//! HTTPS on 127.0.0.1: a certificate for one name signed by a fresh test CA, and an
//! actix-web server presenting it. Nothing trusts the CA until a test says so (by
//! writing [`TestCert::ca_pem`] to the file `SSL_CERT_FILE` names), so one
//! certificate serves both the "unknown issuer" tests and the trusted ones.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, FromRequest, Handler, HttpServer, Responder};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh test CA and a server certificate it signed.
pub struct TestCert {
    /// The CA's certificate, PEM: what a client must trust to accept the server.
    pub ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl TestCert {
    /// A new CA, and a certificate for `name` (a DNS name) that it signed.
    pub fn signed_for(name: &str) -> TestCert {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca_pem = ca_params.self_signed(&ca_key).expect("the CA").pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("a server key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("a certificate for the name")
            .signed_by(&key, &issuer)
            .expect("the CA signs");
        TestCert {
            ca_pem,
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// Serves `handler` for every request, over TLS with this certificate, on an
    /// ephemeral port of 127.0.0.1, on the current actix System (one worker, no
    /// signal handling, a 1 s shutdown: like [`crate::LoopbackPlatform`]). Returns
    /// the server's handle (to stop it) and its port.
    pub fn serve<F, Args>(&self, handler: F) -> (ServerHandle, u16)
    where
        F: Handler<Args> + Send,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .expect("the certificate and its key match");
        let server = HttpServer::new(move || App::new().default_service(web::to(handler.clone())))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .bind_rustls_0_23(("127.0.0.1", 0), config)
            .expect("bind the TLS server");
        let port = server
            .addrs()
            .first()
            .map(|addr| addr.port())
            .expect("the TLS server bound an address");
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        (handle, port)
    }
}
