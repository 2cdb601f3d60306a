//! Egress through a proxy (design.md §5, §7.4), end to end: the binary with
//! `HTTPS_PROXY`/`NO_PROXY` in its environment, a recording `CONNECT` proxy on
//! 127.0.0.1 ([`ConnectProxy`]), and a TLS platform on 127.0.0.1 that only the proxy
//! can reach, by the name `platform.invalid` (the `.invalid` TLD never resolves).
//! The platform's certificate, for that name, is signed by a test CA the binary
//! trusts through `SSL_CERT_FILE`.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse};
use agent_sync_testkit::*;
use serde_json::json;

/// A token distinctive enough that finding it anywhere is a leak.
const SECRET: &str = "proxy-token-5b1e97c2";
/// The agent id every test runs as.
const AGENT: &str = "proxy-agent";
/// The platform's name, known to the proxy only.
const NAME: &str = "platform.invalid";

/// One request the TLS platform received: method, path, `Authorization`.
type Seen = (String, String, Option<String>);

/// A TLS platform on 127.0.0.1 with a certificate for [`NAME`], and the CA's PEM.
struct TlsPlatform {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsPlatform {
    async fn start() -> TlsPlatform {
        let cert = TestCert::signed_for(NAME);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorder = seen.clone();
        let (_, port) = cert.serve(move |req: HttpRequest| answer(req, recorder.clone()));
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &cert.ca_pem).unwrap();
        TlsPlatform {
            port,
            seen,
            ca_file,
            _dir: dir,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Records `req` in `seen`, then answers a push with a 201 and a pull with one item.
async fn answer(req: HttpRequest, seen: Arc<Mutex<Vec<Seen>>>) -> HttpResponse {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().to_string();
    seen.lock()
        .unwrap()
        .push((method.clone(), req.path().to_string(), authorization));
    if method == "POST" {
        HttpResponse::Created().json(json!({"data": {"synced": 1}}))
    } else {
        HttpResponse::Ok().json(json!({"data": [{"id": "c1", "content": "fleet note"}]}))
    }
}

/// A sandbox, its proxy mapping [`NAME`]:443 to the platform, and the platform.
async fn setup() -> (Sandbox, ConnectProxy, TlsPlatform) {
    let platform = TlsPlatform::start().await;
    let proxy = ConnectProxy::start();
    proxy.map(&format!("{NAME}:443"), platform.addr());
    (
        Sandbox::new(agent_sync_bin!(), AGENT, SECRET),
        proxy,
        platform,
    )
}

/// The binary online against `https://platform.invalid`, trusting the test CA, with
/// `env` on top.
fn cmd(sandbox: &Sandbox, platform: &TlsPlatform, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = sandbox.online(&format!("https://{NAME}"), args);
    cmd.env("SSL_CERT_FILE", &platform.ca_file);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// `push --dispatches` of one dispatch `id`; its output, redacted.
async fn push(sandbox: &Sandbox, platform: &TlsPlatform, id: &str, env: &[(&str, &str)]) -> Out {
    let file = sandbox.dispatch_file(id, &[id]);
    run_async(cmd(
        sandbox,
        platform,
        &["push", "--dispatches", &file],
        env,
    ))
    .await
    .redact(SECRET)
    .ok()
}

#[actix::test]
async fn a_push_and_a_pull_reach_a_tls_platform_by_a_name_only_the_proxy_resolves() {
    let (sandbox, proxy, platform) = setup().await;
    let env = [("HTTPS_PROXY", proxy.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = push(&sandbox, &platform, "through-proxy", &env).await;
    assert_eq!(out.stdout.trim(), "synced: 1", "{out:?}");
    note(&format!(
        "$ HTTPS_PROXY={} SSL_CERT_FILE=ca.pem CORE_API_URL=https://{NAME} agent-sync push \
         --dispatches through-proxy.json\n{}proxy tunnels: {:?}",
        proxy.url(),
        out.stdout,
        proxy.tunnels()
    ));
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(tunnels[0].target, "platform.invalid:443");
    assert_eq!(
        (tunnels[0].status, tunnels[0].authorization.clone()),
        (200, None)
    );
    // TLS inside the tunnel: a handshake record first, and nothing readable after it.
    assert_eq!(tunnels[0].sent.first(), Some(&0x16), "{tunnels:?}");
    let sent = String::from_utf8_lossy(&tunnels[0].sent);
    assert!(!sent.contains(SECRET) && !sent.contains("through-proxy"));
    let bearer = Some(format!("Bearer {SECRET}"));
    assert_eq!(
        platform.seen(),
        [("POST".into(), PUSH_PATH.into(), bearer.clone())]
    );

    let out = run_async(cmd(&sandbox, &platform, &["pull"], &env))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "context items: 1", "{out:?}");
    assert_eq!(platform.seen()[1], ("GET".into(), PULL_PATH.into(), bearer));
    assert_eq!(proxy.tunnels().len(), 2);
    assert!(sandbox.queue().is_empty());
}

#[actix::test]
async fn inside_the_tunnel_the_certificate_is_checked_against_the_platforms_name() {
    let (sandbox, proxy, platform) = setup().await;
    // The proxy takes `impostor.invalid` to the same server, whose certificate is
    // for platform.invalid only.
    proxy.map("impostor.invalid:443", platform.addr());
    let file = sandbox.dispatch_file("x", &["x"]);
    let mut cmd = sandbox.online("https://impostor.invalid", &["push", "--dispatches", &file]);
    cmd.env("SSL_CERT_FILE", &platform.ca_file)
        .env("HTTPS_PROXY", proxy.url());
    let out = run_async(cmd).await.ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(
        (tunnels[0].target.as_str(), tunnels[0].status),
        ("impostor.invalid:443", 200)
    );
    assert!(
        platform.seen().is_empty(),
        "no request over an unverified TLS"
    );
    let queue = sandbox.queue();
    assert_eq!(queue[0]["attempts"], 1, "{queue:?}");
}

#[actix::test]
async fn no_proxy_and_loopback_bypass_the_proxy() {
    let (_, proxy, platform) = setup().await;
    let url = proxy.url();
    // NO_PROXY naming the platform: direct, where the name does not resolve.
    for (variable, list) in [
        ("NO_PROXY", NAME),
        ("no_proxy", ".invalid"),
        ("NO_PROXY", "example.com, platform.invalid:443"),
        ("NO_PROXY", "*"),
    ] {
        let sandbox = Sandbox::new(agent_sync_bin!(), AGENT, SECRET);
        let env = [("HTTPS_PROXY", url.as_str()), (variable, list)];
        let out = push(&sandbox, &platform, "direct", &env).await;
        assert_eq!(out.stdout.trim(), "synced: 0", "{list}: {out:?}");
        assert!(proxy.tunnels().is_empty(), "{list}: {:?}", proxy.tunnels());
        let queue = sandbox.queue();
        assert_eq!(queue[0]["attempts"], 1, "{list}: {queue:?}");
        let error = queue[0]["last_error"].as_str().unwrap();
        assert!(!error.contains("proxy"), "{list}: {error}");
    }
    // A list that does not name it: through the proxy (lower-case variable too).
    let sandbox = Sandbox::new(agent_sync_bin!(), AGENT, SECRET);
    let env = [
        ("https_proxy", url.as_str()),
        ("NO_PROXY", "other.invalid,10.0.0.0/8"),
    ];
    let out = push(&sandbox, &platform, "proxied", &env).await;
    assert_eq!(out.stdout.trim(), "synced: 1", "{out:?}");
    assert_eq!(proxy.tunnels()[0].target, "platform.invalid:443");

    // Loopback is never proxied, even with both proxies set.
    let loopback = LoopbackPlatform::start().await;
    let file = sandbox.dispatch_file("loop", &["loop"]);
    let mut direct = sandbox.online(&loopback.url(), &["push", "--dispatches", &file]);
    direct.env("HTTPS_PROXY", &url).env("HTTP_PROXY", &url);
    let out = run_async(direct).await.ok();
    assert_eq!(out.stdout.trim(), "synced: 1", "{out:?}");
    assert_eq!(loopback.delivered().len(), 1);
    assert_eq!(proxy.tunnels().len(), 1, "loopback went through the proxy");
}

/// Runs `push --queue-only` until the queue is empty (the backoff window passes),
/// failing after 30 s; `first` is the output of the first try.
async fn wait_for_delivery(
    sandbox: &Sandbox,
    platform: &TlsPlatform,
    env: &[(&str, &str)],
    first: Out,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = first;
    while !sandbox.queue().is_empty() {
        assert!(Instant::now() < deadline, "never delivered: {out:?}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        out = run_async(cmd(sandbox, platform, &["push", "--queue-only"], env))
            .await
            .ok();
    }
}

#[actix::test]
async fn proxy_credentials_are_sent_as_basic_auth_and_never_shown() {
    let (sandbox, proxy, platform) = setup().await;
    // The password is "S3cr@t-pw-41c9" percent-encoded in the URL.
    let (user, password, encoded) = ("egress-user", "S3cr@t-pw-41c9", "S3cr%40t-pw-41c9");
    let url = proxy.url_with(user, encoded);
    let basic = basic_auth(user, password);
    let env = [("HTTPS_PROXY", url.as_str()), ("RUST_LOG", "trace")];
    let delivered = push(&sandbox, &platform, "with-auth", &env).await;
    assert_eq!(delivered.stdout.trim(), "synced: 1");
    assert_eq!(
        proxy.tunnels()[0].authorization.as_deref(),
        Some(basic.as_str())
    );

    // Refused (the test proxy echoes the credentials back in its answer).
    proxy.refuse_with(Some(407));
    let refused = push(&sandbox, &platform, "refused", &env).await;
    assert_eq!(refused.stdout.trim(), "synced: 0");
    let error = sandbox.queue()[0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&proxy.address()) && error.contains("407"),
        "{error}"
    );

    let mut shown = vec![delivered, refused];
    for args in [
        &["--json", "queue"][..],
        &["--json", "status"],
        &["--json", "history"],
    ] {
        shown.push(run_async(cmd(&sandbox, &platform, args, &env)).await.ok());
    }
    let mut text: String = shown
        .iter()
        .map(|o| format!("{}{}", o.stdout, o.stderr))
        .collect();
    text.push_str(&String::from_utf8_lossy(
        &std::fs::read(sandbox.db()).unwrap(),
    ));
    assert!(text.len() > 1000, "trace logs were written: {}", text.len());
    let secrets = [
        ("user", user),
        ("password", password),
        ("encoded password", encoded),
        ("Proxy-Authorization", basic.as_str()),
        ("base64 credentials", &basic[6..]),
    ];
    for (what, secret) in secrets {
        assert!(!text.contains(secret), "the proxy's {what} leaked");
    }
}

#[actix::test]
async fn a_proxy_refusing_the_tunnel_is_a_transient_failure_retried_with_backoff() {
    for status in [407, 403, 502] {
        let (sandbox, proxy, platform) = setup().await;
        proxy.refuse_with(Some(status));
        let env = [("HTTPS_PROXY", proxy.url())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = push(&sandbox, &platform, "held", &env).await;
        assert_eq!(out.stdout.trim(), "synced: 0", "{status}: {out:?}");
        let status_json = run_async(sandbox.cmd(&["--json", "status"]))
            .await
            .ok()
            .json();
        let head = &status_json["head"];
        assert_eq!(head["attempts"], 1, "{status}: {status_json}");
        assert!(head["next_attempt"].is_string(), "{status}: {status_json}");
        let error = head["last_error"].as_str().unwrap();
        let expected = format!(
            "proxy {} refused the tunnel to platform.invalid:443: HTTP {status}",
            proxy.address()
        );
        assert!(error.contains(&expected), "{error}");
        // The proxy's 403 is not the platform's: the token is not blamed.
        assert_eq!(status_json["auth_failed"], false);
        assert_eq!(sandbox.queue().len(), 1);
        assert!(platform.seen().is_empty());
        if status == 407 {
            // Once the proxy lets it through, the backoff timer's retry delivers it.
            proxy.refuse_with(None);
            let out = run_async(cmd(&sandbox, &platform, &["push", "--queue-only"], &env))
                .await
                .ok();
            wait_for_delivery(&sandbox, &platform, &env, out).await;
            assert_eq!(platform.seen().len(), 1, "delivered once");
        }
    }

    // A proxy nobody listens on is named too.
    let (sandbox, _proxy, platform) = setup().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let out = push(&sandbox, &platform, "nobody", &[("HTTPS_PROXY", &dead)]).await;
    assert_eq!(out.stdout.trim(), "synced: 0");
    let error = sandbox.queue()[0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("proxy {dead} cannot be reached")),
        "{error}"
    );
}
