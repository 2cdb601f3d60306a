//! [`ConnectProxy`]: a small HTTP `CONNECT` proxy on 127.0.0.1 that records what it
//! tunnels, for the egress tests (`tests/proxy.rs`).
//!
//! It resolves nothing: a tunnel target (`platform.invalid:443`) is reached only when
//! the test [`map`](ConnectProxy::map)s it to a loopback address, so a name only the
//! proxy knows stands for a platform only the proxy can reach. Every `CONNECT` is
//! recorded ([`Tunnel`]): its target, its `Proxy-Authorization`, the status answered,
//! and the first bytes the client sent through it (a TLS record, when the client runs
//! TLS inside). [`refuse_with`](ConnectProxy::refuse_with) makes it refuse tunnels
//! with a status (407, 403, 502); a refusal echoes the client's credentials in a
//! header and the body, as a careless proxy might, so a test can check that nothing
//! of the answer is kept. Plain threads: it needs no actix System.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::lock;

/// The most bytes of a tunnel's client side recorded.
const RECORDED_BYTES: usize = 64 * 1024;

/// One `CONNECT` the proxy received.
#[derive(Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The request target, `host:port`.
    pub target: String,
    /// The `Proxy-Authorization` header, when sent.
    pub authorization: Option<String>,
    /// The status the proxy answered.
    pub status: u16,
    /// The first bytes the client sent through the tunnel (at most 64 KiB).
    pub sent: Vec<u8>,
}

/// Redacts the credentials, so a failing assertion does not print them.
impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("target", &self.target)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("status", &self.status)
            .field("sent_bytes", &self.sent.len())
            .finish()
    }
}

/// What the accept loop and the tunnels share with the test.
#[derive(Default)]
struct State {
    /// `host:port` -> the loopback address it stands for.
    map: HashMap<String, SocketAddr>,
    /// Refuse every tunnel with this status, when set.
    refuse: Option<u16>,
    /// Every `CONNECT`, in arrival order.
    tunnels: Vec<Tunnel>,
}

/// A recording `CONNECT` proxy on `127.0.0.1:0`; stops accepting when dropped.
pub struct ConnectProxy {
    /// Its port.
    port: u16,
    /// The map, the refusal and the records.
    state: Arc<Mutex<State>>,
    /// Set on drop: the accept loop ends at its next connection.
    stopped: Arc<AtomicBool>,
}

impl ConnectProxy {
    /// Binds `127.0.0.1:0` and accepts on a thread of its own.
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stopped = Arc::new(AtomicBool::new(false));
        let (shared, stop) = (state.clone(), stopped.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(client) = client {
                    let shared = shared.clone();
                    thread::spawn(move || serve(client, &shared));
                }
            }
        });
        ConnectProxy {
            port,
            state,
            stopped,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://user:password@127.0.0.1:PORT`, both given already percent-encoded.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`: how agent-sync names it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Tunnels to `target` (`host:port`) reach `to`.
    pub fn map(&self, target: &str, to: SocketAddr) {
        lock(&self.state).map.insert(target.to_string(), to);
    }

    /// Refuses every tunnel with `status` from now on (`None`: tunnels again).
    pub fn refuse_with(&self, status: Option<u16>) {
        lock(&self.state).refuse = status;
    }

    /// Every `CONNECT` so far.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        lock(&self.state).tunnels.clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `Basic base64(user:password)`: the header a client of `user`, `password` sends.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let plain = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for chunk in plain.as_bytes().chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(bits >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// Serves one client: reads its `CONNECT`, records it, refuses or tunnels.
fn serve(mut client: TcpStream, state: &Mutex<State>) {
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let mut lines = head.lines();
    let target = match lines.next().map(|l| l.split(' ').collect::<Vec<_>>()) {
        Some(words) if words.len() == 3 && words[0] == "CONNECT" => words[1].to_string(),
        _ => {
            let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
            return;
        }
    };
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_string())
    });
    let (refuse, to) = {
        let state = lock(state);
        (state.refuse, state.map.get(&target).copied())
    };
    let upstream = match (refuse, to) {
        (Some(status), _) => Err(status),
        (None, Some(to)) => TcpStream::connect(to).map_err(|_| 502),
        (None, None) => Err(502),
    };
    let status = upstream.as_ref().err().copied().unwrap_or(200);
    let index = {
        let mut state = lock(state);
        state.tunnels.push(Tunnel {
            target,
            authorization: authorization.clone(),
            status,
            sent: Vec::new(),
        });
        state.tunnels.len() - 1
    };
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(status) => {
            let echo = authorization.unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 {status} Refused by the test proxy\r\n\
                 Proxy-Authenticate: Basic realm=\"test\"\r\nX-You-Sent: {echo}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{echo}",
                echo.len()
            );
            let _ = client.write_all(answer.as_bytes());
            return;
        }
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(mut from_client), Ok(mut to_client)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let mut to_upstream = upstream;
    thread::spawn(move || {
        let _ = io::copy(&mut to_client, &mut client);
        let _ = client.shutdown(Shutdown::Write);
    });
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = from_client.read(&mut buffer) {
        if n == 0 || to_upstream.write_all(&buffer[..n]).is_err() {
            break;
        }
        let mut state = lock(state);
        let sent = &mut state.tunnels[index].sent;
        let room = RECORDED_BYTES.saturating_sub(sent.len()).min(n);
        sent.extend_from_slice(&buffer[..room]);
    }
    let _ = to_upstream.shutdown(Shutdown::Write);
}

/// The request head, up to its blank line, read a byte at a time (nothing of the
/// tunnel behind it is consumed); `None` when the client goes away first.
fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || client.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}
