//! Egress through an HTTP proxy (design.md §5, §7.4): which proxy, if any, carries a
//! request to the platform, decided as Go's `http.ProxyFromEnvironment` decides it.
//!
//! The settings ([`ProxyConfig`]) are the three values Go reads from `HTTPS_PROXY`,
//! `HTTP_PROXY` and `NO_PROXY`. The library never reads the environment: the
//! `agent-sync` crate's `SyncConfig::from_env` fills them in, or a host sets them.
//! [`ProxyConfig::routes`] parses them once, and [`Routes::route`] decides for one
//! scheme, host and port:
//!
//! 1. no proxy set for the scheme (`https` -> `HTTPS_PROXY`, `http` -> `HTTP_PROXY`;
//!    no fallback from one to the other): direct;
//! 2. `localhost` and loopback addresses: direct, always;
//! 3. a host `NO_PROXY` names ([`no_proxy`]): direct;
//! 4. otherwise through the proxy, in an HTTP `CONNECT` tunnel ([`tunnel`]): TLS to the
//!    platform runs inside it, so the platform's certificate is checked as without a
//!    proxy. A plain `http` platform is tunnelled too (Go would forward the request).
//!
//! A proxy is `http://[user:password@]host[:port]` (port 80 by default) or just
//! `host:port`. `user:password`, percent-decoded, is sent as `Proxy-Authorization:
//! Basic` in the `CONNECT` request and nowhere else: [`Proxy`] shows only `host:port`,
//! its `Debug` redacts the credentials, errors name the proxy by `host:port`.
//! `https://` and `socks5://` proxies are refused at validation
//! ([`PlatformConfigError::InvalidProxy`]).
//!
//! [`ProxyConfig::route_to`] describes the route of a URL (the platform's, for a
//! start line or a diagnostic command).
//!
//! The platform client uses this module (its connector is [`tunnel::ProxyConnector`]);
//! this module knows nothing of the platform.

pub mod no_proxy;
pub mod tunnel;

use std::fmt;

use crate::error::PlatformConfigError;
use crate::redact::REDACTED;
use no_proxy::NoProxy;

/// Which proxies carry requests to the platform: Go's `httpproxy.Config`. The default
/// is none: every request goes directly.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The proxy of `https` requests (`HTTPS_PROXY`); `None` or blank: direct.
    pub https_proxy: Option<String>,
    /// The proxy of `http` requests (`HTTP_PROXY`); `None` or blank: direct.
    pub http_proxy: Option<String>,
    /// The hosts reached directly whatever the proxies (`NO_PROXY`), comma-separated.
    pub no_proxy: Option<String>,
}

/// Shows the settings without their credentials: they reach logs through `Debug` of
/// the whole configuration.
impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<String>| v.as_deref().map(without_credentials);
        f.debug_struct("ProxyConfig")
            .field("https_proxy", &shown(&self.https_proxy))
            .field("http_proxy", &shown(&self.http_proxy))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxyConfig {
    /// Every request through `proxy` (both schemes), except to loopback: an explicit
    /// setting that overrides the environment.
    pub fn through(proxy: impl Into<String>) -> ProxyConfig {
        let proxy = proxy.into();
        ProxyConfig {
            https_proxy: Some(proxy.clone()),
            http_proxy: Some(proxy),
            no_proxy: None,
        }
    }

    /// Parses the settings. Never fails: a proxy that cannot be used is kept as its
    /// error, and every request it would carry fails with it (never silently direct);
    /// [`validate`](Self::validate) reports it up front.
    pub fn routes(&self) -> Routes {
        Routes {
            https: parse_setting(self.https_proxy.as_deref()),
            http: parse_setting(self.http_proxy.as_deref()),
            no_proxy: NoProxy::parse(self.no_proxy.as_deref()),
        }
    }

    /// The first proxy that cannot be used, named without its credentials.
    pub fn validate(&self) -> Result<(), PlatformConfigError> {
        let routes = self.routes();
        routes.https.and(routes.http).map(|_| ())
    }
}

/// A proxy setting: none (blank), a usable proxy, or why it is not usable.
fn parse_setting(value: Option<&str>) -> Result<Option<Proxy>, PlatformConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(value) => Proxy::parse(value).map(Some),
    }
}

/// A proxy as the tunnel uses it: where it listens, and the credentials it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host name or IP address (an IPv6 one without brackets).
    host: String,
    /// Port; 80 when the setting names none (as Go).
    port: u16,
    /// `Basic <base64(user:password)>` when the setting has `user:password@`.
    authorization: Option<String>,
}

impl Proxy {
    /// Parses `http://[user:password@]host[:port][/...]`, or the same without
    /// `http://`. Errors never hold the credentials.
    pub fn parse(setting: &str) -> Result<Proxy, PlatformConfigError> {
        let setting = setting.trim();
        let invalid = |reason: &str| PlatformConfigError::InvalidProxy {
            proxy: without_credentials(setting),
            reason: reason.to_string(),
        };
        let rest = match setting.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(invalid(&format!(
                    "{scheme}:// proxies are not supported; use an http:// proxy (a CONNECT \
                     tunnel carries the TLS to the platform)"
                )))
            }
            None => setting,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None | Some("") => 80,
            Some(port) => port
                .parse()
                .map_err(|_| invalid("the port is not a number"))?,
        };
        let authorization = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let (Some(mut pair), Some(password)) =
                    (percent_decode(user), percent_decode(password))
                else {
                    return Err(invalid("the credentials are not valid percent-encoding"));
                };
                pair.push(b':');
                pair.extend_from_slice(&password);
                Some(format!("Basic {}", tunnel::base64(&pair)))
            }
        };
        Ok(Proxy {
            host: host.to_string(),
            port,
            authorization,
        })
    }

    /// The host, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether credentials are sent to it.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// The `Proxy-Authorization` value: for the `CONNECT` request only.
    pub(crate) fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }
}

/// `host:port` (`[v6]:port`): how logs and errors name a proxy, never with credentials.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.to_string())
            .field(
                "credentials",
                &self.authorization.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}

/// The parsed settings: which proxy, if any, for each request.
#[derive(Debug, Clone)]
pub struct Routes {
    /// For `https` requests.
    https: Result<Option<Proxy>, PlatformConfigError>,
    /// For `http` requests.
    http: Result<Option<Proxy>, PlatformConfigError>,
    /// Hosts reached directly.
    no_proxy: NoProxy,
}

impl Routes {
    /// How a request with `scheme` to `host` (a name, or an IP address with or without
    /// brackets) on `port` goes.
    pub fn route(&self, scheme: &str, host: &str, port: u16) -> Route {
        let proxy = match scheme.to_ascii_lowercase().as_str() {
            "https" => &self.https,
            "http" => &self.http,
            _ => return Route::Direct,
        };
        let proxy = match proxy {
            Ok(None) => return Route::Direct,
            Ok(Some(proxy)) => proxy,
            Err(e) => return Route::Unusable(e.clone()),
        };
        if is_loopback(host) {
            Route::Loopback
        } else if self.no_proxy.matches(host, port) {
            Route::Excluded
        } else {
            Route::Tunnel(proxy.clone())
        }
    }
}

/// Go's exemption: the name `localhost` and loopback addresses, never proxied.
fn is_loopback(host: &str) -> bool {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// How a request reaches its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Directly: no proxy is set for the scheme.
    Direct,
    /// Directly: loopback is never proxied.
    Loopback,
    /// Directly: `NO_PROXY` names the host.
    Excluded,
    /// Through a `CONNECT` tunnel of this proxy.
    Tunnel(Proxy),
    /// Not at all: the proxy set for the scheme cannot be used.
    Unusable(PlatformConfigError),
}

/// One line for people: `direct (NO_PROXY)`, `through the proxy host:port ...`.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("direct (no proxy set)"),
            Route::Loopback => f.write_str("direct (loopback is never proxied)"),
            Route::Excluded => f.write_str("direct (NO_PROXY names the host)"),
            Route::Tunnel(proxy) => write!(
                f,
                "through the proxy {proxy} (CONNECT tunnel, {})",
                if proxy.has_credentials() {
                    "with credentials"
                } else {
                    "no credentials"
                }
            ),
            Route::Unusable(e) => write!(f, "none: {e}"),
        }
    }
}

impl ProxyConfig {
    /// How requests to `url` go with these proxies; an unparsable URL goes nowhere.
    pub fn route_to(&self, url: &str) -> Route {
        let url = url.trim();
        match url.parse::<awc::http::Uri>() {
            Ok(uri) => {
                let scheme = uri.scheme_str().unwrap_or("");
                let default = if scheme.eq_ignore_ascii_case("http") {
                    80
                } else {
                    443
                };
                let port = uri.port_u16().unwrap_or(default);
                self.routes().route(scheme, uri.host().unwrap_or(""), port)
            }
            Err(_) => Route::Unusable(PlatformConfigError::InvalidUrl {
                url: url.to_string(),
            }),
        }
    }
}

/// A proxy setting with any `user:password@` shown as `<redacted>@`.
pub fn without_credentials(setting: &str) -> String {
    let (scheme, rest) = match setting.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), setting),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}{REDACTED}{}", &rest[at..]),
        None => setting.to_string(),
    }
}

/// Decodes `%XX` escapes; `None` for a malformed one.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
