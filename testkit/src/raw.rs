//! [`Raw`]: a scripted HTTP/1.1 server on 127.0.0.1 on plain threads (one per
//! connection), for platforms that misbehave at the socket level (resets, silence,
//! lies about lengths, endless bodies) and for tests that must act at an exact point
//! of a request (hold it, kill the client while it is in flight, or right after the
//! answer: `tests/crash`). It needs no actix System, so blocking tests of the binary
//! use it too.
//!
//! Two hooks script it: `early` sees each request head before the body is read
//! ([`Early`]), `reply` sees the request read in full ([`Reply`]). Both get the
//! request's index among all the server has seen.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use serde_json::{json, Value};

use crate::{lock, millis, secs};

/// A request head as read off the socket.
#[derive(Clone, Debug, Default)]
pub struct Head {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// By lowercase name.
    pub headers: BTreeMap<String, String>,
    /// `content-length` (0 when absent).
    pub length: usize,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Req {
    /// Its head.
    pub head: Head,
    /// Its body (empty until read in full).
    pub body: Vec<u8>,
    /// The body was read in full (else the server stopped after the head).
    pub complete: bool,
    /// When its head arrived.
    pub at: Instant,
}

impl Req {
    /// The `Idempotency-Key` header (empty when absent).
    pub fn key(&self) -> String {
        self.header("idempotency-key")
    }

    /// The `Authorization` header as sent (empty when absent): what a platform that
    /// echoes the request back shows of the token.
    pub fn authorization(&self) -> String {
        self.header("authorization")
    }

    /// The header `name` (lowercase), empty when absent.
    fn header(&self, name: &str) -> String {
        self.head.headers.get(name).cloned().unwrap_or_default()
    }

    /// The `id` of every dispatch of a push body (none when the body is no push).
    pub fn ids(&self) -> Vec<String> {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        body["dispatches"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What to do once a head has been read (before the body is).
pub enum Early {
    /// Read the body and ask the responder.
    ReadBody,
    /// Read half the body, then reset the connection.
    ResetMidBody,
    /// Answer this status with `Connection: close` without reading the body, and close.
    RefuseUnread(u16),
    /// The same, but read and discard the body before closing.
    RefuseThenDrain(u16),
}

/// How to answer a request read in full.
pub enum Reply {
    /// A complete response; the connection stays open.
    Answer {
        /// Its status.
        status: u16,
        /// Its headers besides `content-length`.
        headers: Vec<(&'static str, String)>,
        /// Its body.
        body: Vec<u8>,
    },
    /// Never answer (until the server stops).
    Silence,
    /// Write these bytes, wait a moment, then reset the connection.
    ThenReset(Vec<u8>),
    /// Write these bytes and close normally.
    ThenClose(Vec<u8>),
    /// Write these bytes, then say nothing more (until the server stops).
    Stall(Vec<u8>),
    /// A 200 with a chunked body that never ends (until the client gives up).
    Endless,
    /// The reply, then (once an answer of it was written in full) the hook.
    After(Box<Reply>, Box<dyn FnOnce() + Send>),
}

impl Reply {
    /// `200 {"ok":true}`.
    pub fn ok() -> Self {
        Reply::json(200, json!({"ok": true}))
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, value: Value) -> Self {
        Reply::Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::to_vec(&value).expect("json"),
        }
    }

    /// `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Runs `hook` right after this answer was written (not when writing failed).
    pub fn then(self, hook: impl FnOnce() + Send + 'static) -> Self {
        Reply::After(Box::new(self), Box::new(hook))
    }
}

type EarlyFn = dyn Fn(usize, &Head) -> Early + Send + Sync;
type ReplyFn = dyn Fn(usize, &Req) -> Reply + Send + Sync;

struct Shared {
    early: Box<EarlyFn>,
    reply: Box<ReplyFn>,
    /// Every request whose head was read, in order, with the status answered (0: none).
    log: Mutex<Vec<(Req, u16)>>,
    /// Connections accepted.
    connections: AtomicUsize,
    stop: AtomicBool,
}

/// A scripted HTTP/1.1 server on 127.0.0.1; stopped when dropped.
pub struct Raw {
    shared: Arc<Shared>,
    port: u16,
    accept: Option<thread::JoinHandle<()>>,
}

impl Raw {
    /// Answers every request with `reply`.
    pub fn start(reply: impl Fn(usize, &Req) -> Reply + Send + Sync + 'static) -> Raw {
        Raw::with(|_, _| Early::ReadBody, reply)
    }

    /// Sees each head with `early`, then answers with `reply`.
    pub fn with(
        early: impl Fn(usize, &Head) -> Early + Send + Sync + 'static,
        reply: impl Fn(usize, &Req) -> Reply + Send + Sync + 'static,
    ) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        Raw::on(listener, early, reply)
    }

    /// [`Raw::with`] on a listener the test bound (e.g. a port that refused before).
    pub fn on(
        listener: TcpListener,
        early: impl Fn(usize, &Head) -> Early + Send + Sync + 'static,
        reply: impl Fn(usize, &Req) -> Reply + Send + Sync + 'static,
    ) -> Raw {
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared {
            early: Box::new(early),
            reply: Box::new(reply),
            log: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accepting.connections.fetch_add(1, Ordering::SeqCst);
                let conn = accepting.clone();
                thread::spawn(move || serve(stream, &conn));
            }
        });
        Raw {
            shared,
            port,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request seen, with the status answered (0: none).
    pub fn log(&self) -> Vec<(Req, u16)> {
        lock(&self.shared.log).clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Pushes answered with a 2xx.
    pub fn delivered(&self) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|(r, s)| r.head.method == "POST" && (200..300).contains(s))
            .map(|(r, _)| r)
            .collect()
    }

    /// Every `POST`.
    pub fn pushes(&self) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|(r, _)| r.head.method == "POST")
            .map(|(r, _)| r)
            .collect()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A request line and headers; `None` at EOF or on garbage.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let mut head = Head {
        method: parts.next()?.to_string(),
        path: parts.next()?.to_string(),
        ..Head::default()
    };
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            head.headers
                .insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    head.length = head
        .headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(head)
}

/// Makes the coming close a TCP reset (SO_LINGER 0) instead of a FIN.
fn linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn status_of(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    // Returning closes both halves: a reset where `linger_zero` was set, or where
    // unread bytes are left in the socket (as with nginx).
    while let Some(head) = read_head(&mut reader) {
        let index = {
            let mut log = lock(&shared.log);
            log.push((
                Req {
                    head: head.clone(),
                    body: Vec::new(),
                    complete: false,
                    at: Instant::now(),
                },
                0,
            ));
            log.len() - 1
        };
        let early = (shared.early)(index, &head);
        match early {
            Early::ReadBody => {}
            Early::ResetMidBody => {
                let mut half = vec![0; head.length / 2];
                let _ = reader.read_exact(&mut half);
                linger_zero(&writer);
                return;
            }
            Early::RefuseUnread(status) | Early::RefuseThenDrain(status) => {
                let _ = write!(
                    writer,
                    "HTTP/1.1 {status} {}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                    reason(status)
                );
                lock(&shared.log)[index].1 = status;
                if matches!(early, Early::RefuseThenDrain(_)) {
                    let mut rest = vec![0; head.length];
                    let _ = reader.read_exact(&mut rest);
                }
                return;
            }
        }
        let mut body = vec![0; head.length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = {
            let mut log = lock(&shared.log);
            let req = &mut log[index].0;
            req.body = body;
            req.complete = true;
            req.clone()
        };
        let reply = (shared.reply)(index, &req);
        if !answer(&mut writer, shared, index, reply) {
            return;
        }
    }
}

/// Writes `reply` to request `index`; `false` when the connection is done.
fn answer(writer: &mut TcpStream, shared: &Shared, index: usize, reply: Reply) -> bool {
    match reply {
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
                reason(status),
                body.len()
            );
            for (name, value) in headers {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            bytes.extend(body);
            if writer
                .write_all(&bytes)
                .and_then(|()| writer.flush())
                .is_err()
            {
                return false;
            }
            lock(&shared.log)[index].1 = status;
            true
        }
        Reply::After(reply, hook) => {
            let open = matches!(*reply, Reply::Answer { .. });
            let answered = answer(writer, shared, index, *reply) && open;
            if answered {
                hook();
            }
            answered
        }
        Reply::Silence => {
            while !shared.stop.load(Ordering::SeqCst) {
                thread::sleep(millis(20));
            }
            false
        }
        Reply::ThenReset(bytes) => {
            let _ = writer.write_all(&bytes);
            lock(&shared.log)[index].1 = status_of(&bytes);
            thread::sleep(millis(300));
            linger_zero(writer);
            false
        }
        Reply::ThenClose(bytes) => {
            let _ = writer.write_all(&bytes);
            lock(&shared.log)[index].1 = status_of(&bytes);
            false
        }
        Reply::Stall(bytes) => {
            let _ = writer.write_all(&bytes);
            lock(&shared.log)[index].1 = status_of(&bytes);
            while !shared.stop.load(Ordering::SeqCst) {
                thread::sleep(millis(20));
            }
            false
        }
        Reply::Endless => {
            lock(&shared.log)[index].1 = 200;
            let _ = writer.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            let chunk = vec![b' '; 64 * 1024];
            let started = Instant::now();
            // Bounded: 256 MiB or 30 s, whichever first; the client gives up long before.
            for _ in 0..4096 {
                if shared.stop.load(Ordering::SeqCst) || started.elapsed() > secs(30) {
                    break;
                }
                let framed =
                    [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if writer.write_all(&framed).is_err() {
                    break;
                }
            }
            false
        }
    }
}
