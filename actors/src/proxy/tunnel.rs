//! The `CONNECT` tunnel, as awc's TCP connector service: [`ProxyConnector`] opens a
//! connection to the platform's host and port either directly or through the proxy
//! [`Routes`] picks, and hands awc a stream to that host and port. awc then runs TLS
//! (SNI and certificate checks against the platform's own name) and HTTP over it,
//! and pools it, as over any connection.
//!
//! A proxy that cannot be reached, or that answers the `CONNECT` with anything but a
//! 2xx (407 wrong or missing credentials, 403 not allowed, 502 the platform
//! unreachable from it), fails the connection with an I/O error naming the proxy by
//! `host:port` and the status: to the Queue a network error, so a transient outcome
//! retried with backoff, with that text in `last_error`. Nothing the proxy sends is
//! kept (a hostile proxy could echo the credentials), only its status code.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;

use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService, Host};
use awc::http::{StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Proxy, Route, Routes};

/// The most bytes of the proxy's answer to a `CONNECT` read (its status line and
/// headers); a longer head is refused.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// awc's TCP connector with proxies in front: give it to
/// `awc::Connector::new().connector(..)`.
#[derive(Clone)]
pub struct ProxyConnector {
    /// Resolves and connects, to the platform or to the proxy (actix-tls' default).
    tcp: ConnectorService,
    /// Which requests go through which proxy.
    routes: Rc<Routes>,
}

impl ProxyConnector {
    /// A connector that routes by `routes`.
    pub fn new(routes: Routes) -> ProxyConnector {
        ProxyConnector {
            tcp: ConnectorService::default(),
            routes: Rc::new(routes),
        }
    }
}

impl Service<ConnectInfo<Uri>> for ProxyConnector {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    // Boxed and `!Send`, as awc's connectors are.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_service::always_ready!();

    fn call(&self, info: ConnectInfo<Uri>) -> Self::Future {
        let scheme = info.request().scheme_str().unwrap_or("http");
        match self.routes.route(scheme, info.hostname(), info.port()) {
            Route::Direct | Route::Loopback | Route::Excluded => Box::pin(self.tcp.call(info)),
            Route::Tunnel(proxy) => Box::pin(open(self.tcp.clone(), proxy, info)),
            Route::Unusable(e) => {
                Box::pin(async move { Err(ConnectError::Io(io::Error::other(e.to_string()))) })
            }
        }
    }
}

/// The proxy's address as actix-tls resolves it (a bracket-less IPv6 literal parses
/// as an address and skips DNS).
struct ProxyAddress {
    /// Host name or address.
    host: String,
    /// Port.
    port: u16,
}

impl Host for ProxyAddress {
    fn hostname(&self) -> &str {
        &self.host
    }

    fn port(&self) -> Option<u16> {
        Some(self.port)
    }
}

/// Connects to `proxy`, asks it for a tunnel to the host and port of `info`, and
/// returns the stream once it answers 2xx.
async fn open(
    tcp: ConnectorService,
    proxy: Proxy,
    info: ConnectInfo<Uri>,
) -> Result<Connection<Uri, TcpStream>, ConnectError> {
    let target = format!("{}:{}", info.hostname(), info.port());
    let failed = |what: String| ConnectError::Io(io::Error::other(format!("proxy {proxy} {what}")));
    let address = ProxyAddress {
        host: proxy.host().to_string(),
        port: proxy.port(),
    };
    let (mut stream, _) = tcp
        .call(ConnectInfo::new(address))
        .await
        .map_err(|e| failed(format!("cannot be reached: {}", connect_error(&e))))?
        .into_parts();
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = proxy.authorization() {
        request.push_str("Proxy-Authorization: ");
        request.push_str(authorization);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(format!("closed the connection: {e}")))?;
    let head = read_head(&mut stream)
        .await
        .map_err(|e| failed(format!("did not answer the CONNECT to {target}: {e}")))?;
    match status_of(&head) {
        Some(status) if (200..300).contains(&status) => {
            log::debug!("tunnel to {target} open through the proxy {proxy}");
            Ok(Connection::new(info.request().clone(), stream))
        }
        Some(status) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            Err(failed(format!(
                "refused the tunnel to {target}: HTTP {status} {reason}"
            )))
        }
        None => Err(failed(format!(
            "answered the CONNECT to {target} with something other than HTTP"
        ))),
    }
}

/// What an actix-tls connect error says, with its cause (its `Display` alone is
/// "I/O error").
fn connect_error(e: &ConnectError) -> String {
    match e {
        ConnectError::Io(e) => e.to_string(),
        ConnectError::Resolver(e) => format!("resolving its host name failed: {e}"),
        other => other.to_string(),
    }
}

/// Reads the answer's head, byte by byte up to its blank line, so that nothing of
/// the tunnel behind it is consumed.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_ANSWER_HEAD {
            return Err(io::Error::other("its answer's head is too long"));
        }
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "it closed the connection",
            ));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// The status of an `HTTP/1.x NNN ...` head.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    let version = words.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status = words.next()?;
    (status.len() == 3).then(|| status.parse().ok()).flatten()
}

/// Standard base64 (RFC 4648, with padding), for `Proxy-Authorization: Basic`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn the_status_of_an_answer_head() {
        assert_eq!(
            status_of(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(status_of(b"HTTP/1.0 407 Auth\r\nX: y\r\n\r\n"), Some(407));
        assert_eq!(status_of(b"HTTP/1.1 502\r\n\r\n"), Some(502));
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 20 x\r\n\r\n"), None);
        assert_eq!(status_of(b"HTTP/2 200\r\n\r\n"), None);
    }
}
