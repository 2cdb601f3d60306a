//! Plain HTTP/1.1 `GET`s, as a scraper or `curl` would send them: over the control
//! socket (design.md §13) and over TCP (`run --metrics-addr`). Blocking, and an async
//! form of each that runs on the blocking pool, so a System serving a platform keeps
//! serving.

use std::path::Path;
use std::time::Duration;

/// A plain HTTP/1.1 `GET target` over any stream (`Connection: close`): the status
/// and the body. Blocking; for the control socket and `--metrics-addr`.
pub fn http_get_on(mut stream: impl std::io::Read + std::io::Write, target: &str) -> (u16, String) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    (status, body.to_string())
}

/// `GET target` on the Unix socket at `path`.
pub fn http_get_unix(path: &Path, target: &str) -> (u16, String) {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    http_get_on(stream, target)
}

/// `GET target` on TCP `addr` (e.g. `127.0.0.1:9464`).
pub fn http_get_tcp(addr: &str, target: &str) -> (u16, String) {
    let stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    http_get_on(stream, target)
}

/// [`http_get_unix`] on the blocking pool.
pub async fn get_unix(path: &Path, target: &str) -> (u16, String) {
    let (path, target) = (path.to_path_buf(), target.to_string());
    actix_rt::task::spawn_blocking(move || http_get_unix(&path, &target))
        .await
        .expect("the blocking pool")
}

/// [`http_get_tcp`] on the blocking pool.
pub async fn get_tcp(addr: &str, target: &str) -> (u16, String) {
    let (addr, target) = (addr.to_string(), target.to_string());
    actix_rt::task::spawn_blocking(move || http_get_tcp(&addr, &target))
        .await
        .expect("the blocking pool")
}
