//! Talking to the platform API (design.md §5): the token, the URL policy, and the
//! awc client behind the [`Platform`] trait.
//!
//! Why a trait: the Pusher and Puller only need "POST this, GET that"; real HTTP is
//! [`HttpPlatform`], and tests of backoff schedules under paused tokio time use an
//! in-process stand-in, because paused time and real sockets do not mix.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::backoff::RetryAfter;
use crate::error::PlatformConfigError;
use crate::messages::DeliveryOutcome;
use crate::proxy::tunnel::ProxyConnector;
use crate::proxy::{ProxyConfig, Route};
use crate::redact::REDACTED;

/// A boxed future on the current arbiter (awc is `!Send`).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// The API token. Never printed: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token; `None` for an empty or blank one.
    pub fn new(value: impl Into<String>) -> Option<Token> {
        let value = value.into().trim().to_string();
        (!value.is_empty()).then_some(Token(value))
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where the token comes from, read again before every push and pull so that a key
/// provisioned while the daemon runs is picked up without a restart.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A token known up front (from the environment), or none: offline.
    Fixed(Option<Token>),
    /// The trimmed contents of a key file (`~/.claude/brain.key`); missing = offline.
    KeyFile(PathBuf),
}

impl TokenSource {
    /// The current token, if any.
    pub fn read(&self) -> Option<Token> {
        match self {
            TokenSource::Fixed(token) => token.clone(),
            TokenSource::KeyFile(path) => {
                // A key is short; refuse to slurp something that is not one.
                let meta = std::fs::metadata(path).ok()?;
                if !meta.is_file() || meta.len() > 64 * 1024 {
                    return None;
                }
                warn_if_exposed(path, &meta);
                Token::new(std::fs::read_to_string(path).ok()?)
            }
        }
    }
}

/// Set once the key file warning was given: the daemon reads the file every cycle,
/// and one line says it all (as ssh does).
static KEY_FILE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Warns once per process when the key file can be read by group or others. Names
/// the file and its mode, never its content.
fn warn_if_exposed(path: &std::path::Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 == 0 || KEY_FILE_WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    log::warn!(
        "key file {} is readable by group or others (mode {mode:04o}); \
         restrict it: chmod 600 {}",
        path.display(),
        path.display()
    );
}

/// How to reach the platform and how far to trust it.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    /// Base URL, e.g. `https://api.lthn.sh` (no trailing slash needed).
    pub base_url: String,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for a whole request, including reading the response body.
    pub request_timeout: Duration,
    /// Largest context body accepted from a pull (L2).
    pub max_context_bytes: usize,
    /// Allow plain `http://` to non-loopback hosts (the token travels in clear).
    pub allow_insecure_http: bool,
    /// The proxies requests go through (`HTTPS_PROXY`, ...); none by default, since the
    /// library reads no environment of its own (`crate::proxy`).
    pub proxy: ProxyConfig,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            base_url: "https://api.lthn.sh".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_context_bytes: 16 * 1024 * 1024,
            allow_insecure_http: false,
            proxy: ProxyConfig::default(),
        }
    }
}

impl PlatformConfig {
    /// How requests to the platform's URL go, with this configuration's proxies (for
    /// a start line or a diagnostic command).
    pub fn route(&self) -> Route {
        self.proxy.route_to(&self.base_url)
    }

    /// Checks the URL: http(s) with a host; plain http only to loopback unless allowed;
    /// and that the proxies can be used.
    pub fn validate(&self) -> Result<(), PlatformConfigError> {
        self.proxy.validate()?;
        let url = self.base_url.trim();
        let invalid = || PlatformConfigError::InvalidUrl {
            url: url.to_string(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or("");
        let host = if let Some(v6) = host_port.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            host_port.split(':').next().unwrap_or("")
        };
        if host.is_empty() {
            return Err(invalid());
        }
        match scheme.to_ascii_lowercase().as_str() {
            "https" => Ok(()),
            "http" if self.allow_insecure_http || is_loopback(host) => Ok(()),
            "http" => Err(PlatformConfigError::InsecureUrl {
                url: url.to_string(),
            }),
            _ => Err(invalid()),
        }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.base_url.trim().trim_end_matches('/'), path)
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One push: the JSON body and the key that makes retries of it idempotent.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// `{"agent_id":..., "dispatches":[...], "fleet_node_id":...}`.
    pub body: Vec<u8>,
    /// The entry's (or part's) idempotency key.
    pub idempotency_key: String,
}

/// The platform's answer to a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// A 2xx body, within the size limit.
    Body(Vec<u8>),
    /// A status >= 300 (a 401/403 sets `auth_failed`).
    Status(u16),
    /// No usable answer: network error, timeout, or a body over the limit.
    Failed(String),
}

/// The two calls agent-sync makes. Implementations live on one arbiter.
pub trait Platform {
    /// `POST /v1/agent/sync`.
    fn push(&self, token: &Token, request: PushRequest) -> LocalFuture<DeliveryOutcome>;
    /// `GET /v1/agent/context?agent_id=..[&since=..]`.
    fn pull(&self, token: &Token, agent_id: &str, since: Option<&str>) -> LocalFuture<PullOutcome>;
}

/// Largest push response body read (only a refusal's is read, for its excerpt).
const MAX_PUSH_RESPONSE_BYTES: usize = 64 * 1024;

/// The most bytes of a platform's answer (or of an error's text) kept where people
/// read it: `last_error`, a dead letter's reason, `queue`, `status`, log lines.
pub const EXCERPT_BYTES: usize = 200;

/// A bounded excerpt of `body` that cannot hold the token (design.md §7.4): every
/// occurrence of the token is replaced first, then the trimmed text is cut to at most
/// `max` bytes at a character boundary. In that order: cutting first could split
/// the token at the edge and leave its prefix, which no longer matches, in the text.
/// Invalid UTF-8 is shown as U+FFFD. Use it for every body or error text that is kept
/// or logged.
pub fn excerpt(body: &[u8], token: Option<&Token>, max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let redacted = match token {
        Some(token) => std::borrow::Cow::Owned(text.replace(token.expose(), REDACTED)),
        None => text,
    };
    cut_at_char_boundary(redacted.trim(), max).to_string()
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character.
fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The real platform over awc. Build it on the arbiter that uses it (`awc::Client`
/// is `!Send`).
pub struct HttpPlatform {
    /// Shared connection pool with connect and request timeouts.
    client: awc::Client,
    /// URL, limits and timeouts.
    config: PlatformConfig,
}

impl HttpPlatform {
    /// Builds the client. Call [`PlatformConfig::validate`] first.
    pub fn new(config: PlatformConfig) -> Self {
        log::debug!("platform {}: {}", config.base_url, config.route());
        let client = client(&config);
        HttpPlatform { client, config }
    }
}

/// The awc client every platform request goes through (pushes, pulls, diagnostics):
/// direct or through a CONNECT tunnel (`crate::proxy`), the connect timeout covering
/// the proxy and its answer, TLS roots as [`tls_config`] finds them, redirects off.
pub(crate) fn client(config: &PlatformConfig) -> awc::Client {
    let mut connector = awc::Connector::new()
        .connector(ProxyConnector::new(config.proxy.routes()))
        .timeout(config.connect_timeout);
    if let Some(tls) = tls_config() {
        connector = connector.rustls_0_23(tls);
    }
    awc::Client::builder()
        .connector(connector)
        .timeout(config.request_timeout)
        // A redirect could carry the Bearer token to another host.
        .disable_redirects()
        .finish()
}

impl Platform for HttpPlatform {
    fn push(&self, token: &Token, request: PushRequest) -> LocalFuture<DeliveryOutcome> {
        let payload_size = request.body.len() as u64;
        let send = self
            .client
            .post(self.config.endpoint("/v1/agent/sync"))
            .insert_header(("Authorization", format!("Bearer {}", token.expose())))
            .insert_header(("Accept", "application/json"))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Idempotency-Key", request.idempotency_key))
            .send_body(request.body);
        let body_timeout = self.config.request_timeout;
        let token = token.clone();
        Box::pin(async move {
            let mut response = match send.await {
                // Body reads have no timeout of their own.
                Ok(response) => response.timeout(body_timeout),
                Err(e) => {
                    return DeliveryOutcome::Network {
                        detail: excerpt(e.to_string().as_bytes(), Some(&token), EXCERPT_BYTES),
                    }
                }
            };
            let status = response.status();
            if status.is_success() {
                // The status line is the platform's acceptance. The outcome does not
                // wait for the body: one that stalls must not turn a delivery into a
                // timeout (and a retry that stores the dispatches twice), and a garbled
                // one changes nothing. It is drained on the side (bounded by the
                // request timeout and the size limit) so that the connection can go
                // back to the pool instead of a new TLS handshake per push.
                actix_rt::spawn(async move {
                    let _ = response.body().limit(MAX_PUSH_RESPONSE_BYTES).await;
                });
                return DeliveryOutcome::Delivered { payload_size };
            }
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(RetryAfter::parse);
            // A platform echoing the request must not put the token in `last_error`.
            let said = match response.body().limit(MAX_PUSH_RESPONSE_BYTES).await {
                Ok(body) => excerpt(&body, Some(&token), EXCERPT_BYTES),
                Err(_) => String::new(),
            };
            DeliveryOutcome::Status {
                status: status.as_u16(),
                retry_after,
                detail: format!("HTTP {status}: {said}"),
            }
        })
    }

    fn pull(&self, token: &Token, agent_id: &str, since: Option<&str>) -> LocalFuture<PullOutcome> {
        let mut url = self.config.endpoint("/v1/agent/context");
        url.push_str("?agent_id=");
        url.push_str(&percent_encode(agent_id));
        if let Some(since) = since.filter(|s| !s.is_empty()) {
            url.push_str("&since=");
            url.push_str(&percent_encode(since));
        }
        let send = self
            .client
            .get(url)
            .insert_header(("Authorization", format!("Bearer {}", token.expose())))
            .insert_header(("Accept", "application/json"))
            .send();
        let limit = self.config.max_context_bytes;
        let body_timeout = self.config.request_timeout;
        let token = token.clone();
        // The Puller logs it: the same excerpt rule as a push's `last_error`.
        let failed = move |detail: String| {
            PullOutcome::Failed(excerpt(detail.as_bytes(), Some(&token), EXCERPT_BYTES))
        };
        Box::pin(async move {
            let mut response = match send.await {
                Ok(response) => response.timeout(body_timeout),
                Err(e) => return failed(e.to_string()),
            };
            let status = response.status();
            if !status.is_success() {
                return PullOutcome::Status(status.as_u16());
            }
            match response.body().limit(limit).await {
                Ok(body) => PullOutcome::Body(body.to_vec()),
                Err(e) => failed(format!("reading the context body: {e}")),
            }
        })
    }
}

/// TLS with the ring provider (the only one compiled in) and the system's roots:
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the OS store. A machine with no
/// roots at all falls back to the bundled Mozilla roots rather than failing every
/// request. `None` (logged) if rustls refuses the provider: https then fails cleanly.
pub(crate) fn tls_config() -> Option<std::sync::Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        log::debug!("reading system root certificates: {error}");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        log::warn!(
            "no system root certificates found (install ca-certificates or set SSL_CERT_FILE); \
             using the bundled Mozilla roots"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        Err(e) => {
            log::error!("TLS is unavailable ({e}); https requests will fail");
            return None;
        }
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(std::sync::Arc::new(config))
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved characters.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, allow: bool) -> PlatformConfig {
        PlatformConfig {
            base_url: url.into(),
            allow_insecure_http: allow,
            ..PlatformConfig::default()
        }
    }

    #[test]
    fn plain_http_is_refused_for_non_loopback_hosts_unless_allowed() {
        assert!(config("https://api.example.com", false).validate().is_ok());
        assert!(config("http://127.0.0.1:8080", false).validate().is_ok());
        assert!(config("http://localhost", false).validate().is_ok());
        assert!(config("http://[::1]:9/x", false).validate().is_ok());
        assert_eq!(
            config("http://api.example.com", false).validate(),
            Err(PlatformConfigError::InsecureUrl {
                url: "http://api.example.com".into()
            })
        );
        assert!(config("http://api.example.com", true).validate().is_ok());
        assert!(config("ftp://x", true).validate().is_err());
        assert!(config("https://", true).validate().is_err());
    }

    #[test]
    fn an_unusable_proxy_fails_validation_and_routes_the_platform_nowhere() {
        let config = PlatformConfig {
            proxy: ProxyConfig::through("socks5://proxy:1080"),
            ..config("https://api.example.com", false)
        };
        assert!(config.validate().is_err());
        assert!(matches!(config.route(), Route::Unusable(_)));
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = Token::new(" secret-value \n").unwrap();
        assert_eq!(token.expose(), "secret-value");
        let shown = format!("{:?}", TokenSource::Fixed(Some(token)));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(Token::new("  ").is_none());
    }

    #[test]
    fn an_excerpt_is_redacted_before_it_is_cut_wherever_the_token_straddles_the_cut() {
        let secret = "Zq7-tok-3f9a1c7e5b2d";
        let token = Token::new(secret).unwrap();
        let prefix = &secret[..6];
        let mut straddled = 0;
        // Single- and multi-byte filler, so the cut also falls inside characters.
        for filler in ["x", "é", "日"] {
            for at in 150..=EXCERPT_BYTES + 10 {
                let mut body = String::new();
                while body.len() < at {
                    body.push_str(filler);
                }
                body.push_str("Bearer ");
                let starts = body.len();
                body.push_str(secret);
                body.push_str(" and more text after the echoed header");
                let cut = excerpt(body.as_bytes(), Some(&token), EXCERPT_BYTES);
                assert!(
                    !cut.contains(prefix),
                    "token at {starts}, {filler:?}: {cut}"
                );
                assert!(
                    cut.len() <= EXCERPT_BYTES,
                    "token at {starts}: {}",
                    cut.len()
                );
                let whole = body.replace(secret, REDACTED);
                assert!(whole.starts_with(&cut), "token at {starts}: {cut}");
                assert!(cut.len() + filler.len() > EXCERPT_BYTES.min(whole.len()));
                if starts + prefix.len() <= EXCERPT_BYTES && starts + secret.len() > EXCERPT_BYTES {
                    // Cutting first (the old order) leaves a prefix of the token here.
                    let naive = String::from_utf8_lossy(&body.as_bytes()[..EXCERPT_BYTES])
                        .replace(secret, REDACTED);
                    assert!(naive.contains(prefix), "token at {starts}");
                    straddled += 1;
                }
            }
        }
        assert!(straddled >= 3 * 10, "the straddling cases ran: {straddled}");
        // Every occurrence is replaced; invalid UTF-8 is shown; whitespace trimmed.
        let mut body = b"  ".to_vec();
        body.extend_from_slice(secret.as_bytes());
        body.push(0xff);
        body.extend_from_slice(secret.as_bytes());
        body.extend_from_slice(b"  ");
        assert_eq!(
            excerpt(&body, Some(&token), 100),
            format!("{REDACTED}\u{fffd}{REDACTED}")
        );
        assert_eq!(excerpt(b"ab\xffcd", None, 100), "ab\u{fffd}cd");
        assert_eq!(excerpt("aé".as_bytes(), None, 2), "a");
        assert_eq!(excerpt(b"  short  ", None, EXCERPT_BYTES), "short");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
