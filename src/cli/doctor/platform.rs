//! The platform checks of `doctor`: the route (direct, or which proxy), DNS and TCP to
//! the first hop (the platform, or the proxy that tunnels to it), TLS, the token and
//! the clock, the last three from one `GET /v1/agent/status` over the client a push
//! uses. A later step is not tried once an earlier one failed.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use agent_sync::actors::diagnose::{probe_status, ProbeAnswer, ProbeError};
use agent_sync::actors::platform::Token;
use agent_sync::actors::proxy::Route;
use agent_sync::SyncConfig;

use super::Check;

/// A clock further off than this is warned about: `Retry-After` dates, history
/// times and the platform's records drift apart.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(60);

/// The platform checks, in order.
pub async fn checks(config: &SyncConfig, token: Option<&Token>) -> Vec<Check> {
    let platform = &config.platform;
    let mut checks = Vec::new();
    let route = platform.route();
    let Some((scheme, host, port)) = parts(&platform.base_url) else {
        // The api url line already failed on it.
        return checks;
    };
    let hop = match &route {
        Route::Unusable(e) => {
            checks.push(Check::fail(
                "proxy",
                e.to_string(),
                "use an http:// proxy in HTTPS_PROXY/HTTP_PROXY, or unset it",
            ));
            return checks;
        }
        Route::Tunnel(proxy) => {
            checks.push(Check::ok("proxy", route.to_string()));
            (proxy.host().to_string(), proxy.port(), "the proxy")
        }
        _ => {
            checks.push(Check::ok("proxy", route.to_string()));
            (host.clone(), port, "the platform")
        }
    };
    let (hop_host, hop_port, hop_name) = hop;
    // DNS.
    let addrs: Vec<SocketAddr> = match (hop_host.as_str(), hop_port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            checks.push(Check::fail(
                "dns",
                format!("{hop_name}'s host {hop_host} does not resolve: {e}"),
                "check the host name and this host's resolver (/etc/resolv.conf)",
            ));
            return checks;
        }
    };
    let shown: Vec<String> = addrs.iter().take(3).map(|a| a.ip().to_string()).collect();
    checks.push(Check::ok(
        "dns",
        format!("{hop_host} -> {}", shown.join(", ")),
    ));
    // TCP.
    match connect(&addrs, platform.connect_timeout) {
        Ok(addr) => checks.push(Check::ok(
            "tcp",
            format!("connected to {hop_name} at {addr}"),
        )),
        Err(e) => {
            checks.push(Check::fail(
                "tcp",
                format!("cannot connect to {hop_name} at {hop_host}:{hop_port}: {e}"),
                "is it up and listening on that port? check firewalls, and the URL's port",
            ));
            return checks;
        }
    }
    // TLS, the token, the clock: one GET.
    let answer = probe_status(platform, token, &config.agent_id).await;
    let https = scheme.eq_ignore_ascii_case("https");
    match (&answer, https) {
        (Err(ProbeError::Certificate { detail }), _) => {
            let unknown = detail.to_ascii_lowercase().contains("unknownissuer");
            let what = if unknown {
                "the platform's certificate is signed by an unknown issuer (a private CA?)"
            } else {
                "the platform's certificate is refused"
            };
            checks.push(Check::fail(
                "tls",
                format!("{what}: {detail}"),
                "if the platform uses a private CA, point SSL_CERT_FILE at its PEM \
                 (e.g. in the unit's Environment=); else check the URL's host name and \
                 the certificate's dates",
            ));
            return checks;
        }
        (Err(ProbeError::Failed { detail }), _) => {
            checks.push(Check::fail(
                if https { "tls" } else { "http" },
                format!("no answer from the platform: {detail}"),
                "check the URL (https for a TLS platform) and the proxy's rules",
            ));
            return checks;
        }
        (Ok(_), true) => checks.push(Check::ok("tls", format!("handshake with {host} verified"))),
        (Ok(_), false) => {}
    }
    if let Ok(answer) = answer {
        checks.push(token_check(&answer, token));
        checks.push(clock_check(&answer));
    }
    checks
}

/// The first address that takes a TCP connection within `timeout`.
fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<SocketAddr, std::io::Error> {
    let mut last = std::io::Error::other("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => return Ok(*addr),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What the status GET's answer says about the token.
fn token_check(answer: &ProbeAnswer, token: Option<&Token>) -> Check {
    let status = answer.status;
    let took = answer.elapsed.as_millis();
    match (status, token) {
        (_, None) => Check::warn(
            "token accepted",
            format!("not checked: no token (the platform answered HTTP {status} in {took} ms)"),
            "configure a token to sync (see the token line)",
        ),
        (200..=299, Some(_)) => Check::ok(
            "token accepted",
            format!("GET /v1/agent/status: HTTP {status} in {took} ms"),
        ),
        (401 | 403, Some(_)) => Check::fail(
            "token accepted",
            format!("the platform refused the token (HTTP {status})"),
            "replace the token (CORE_AGENT_API_KEY or the key file) with a valid one",
        ),
        (404 | 405, Some(_)) => Check::warn(
            "token accepted",
            format!("not checked: the platform has no /v1/agent/status (HTTP {status})"),
            "check that the API URL is the platform's API base",
        ),
        (408 | 429 | 500..=599, Some(_)) => Check::warn(
            "token accepted",
            format!("not checked: the platform answered HTTP {status}"),
            "a platform problem; pushes are retried with backoff, try again later",
        ),
        (_, Some(_)) => Check::fail(
            "token accepted",
            format!("the platform answered HTTP {status}"),
            "check the API URL and the agent id",
        ),
    }
}

/// The offset between this host's clock and the platform's `Date`.
fn clock_check(answer: &ProbeAnswer) -> Check {
    let Some(date) = answer.date else {
        return Check::warn(
            "clock",
            "the platform sent no Date header: offset unknown",
            "keep the host's clock synchronised (NTP)",
        );
    };
    // Date has a resolution of a second; the request's own time is within it.
    let (offset, direction) = match answer.received_at.duration_since(date) {
        Ok(ahead) => (ahead, "ahead of"),
        Err(behind) => (behind.duration(), "behind"),
    };
    let secs = offset.as_secs();
    if offset > CLOCK_TOLERANCE {
        Check::warn(
            "clock",
            format!("this host is {secs} s {direction} the platform's clock"),
            "synchronise the clock (timedatectl set-ntp true, chrony or ntpd)",
        )
    } else {
        Check::ok(
            "clock",
            format!("within {}s of the platform's Date", secs.max(1)),
        )
    }
}

/// `(scheme, host, port)` of a URL, the port defaulted by the scheme.
fn parts(url: &str) -> Option<(String, String, u16)> {
    let uri: awc::http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_string();
    let host = uri.host()?.trim_matches(['[', ']']).to_string();
    let default = if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        443
    };
    Some((scheme, host, uri.port_u16().unwrap_or(default)))
}
