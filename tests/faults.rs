//! Platform and storage faults (design.md §5, §6 R2-R4, §7.4, §12): each one ends in its
//! documented outcome, nothing that was acknowledged is lost, and nothing hangs.
//!
//! Not repeated here because other files prove them: the 5xx/408/429/501/4xx classes,
//! `Retry-After` in seconds and as a date, 401/403 then recovery, 413 splitting,
//! a delayed answer cut by the request timeout, a pull body over a small limit
//! (`push_path.rs`, `pull_and_service.rs`, `drain_window.rs`); a garbage database and
//! the lock held in-process (`cli.rs`).
//!
//! Platforms that misbehave at the TCP level are served by a small threaded HTTP/1.1
//! server written here (resets, silence, lies about lengths, endless bodies); tests of
//! the binary use it too, so they need no actix System. Only 127.0.0.1 is used.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use agent_sync_actors::messages::*;
use agent_sync_actors::model::{DeadLetter, Direction, QueueEntry};
use agent_sync_actors::platform::{HttpPlatform, Platform, PlatformConfig};
use agent_sync_actors::queue::Jitter;
use agent_sync_actors::time::{Clock, Timestamp};
use agent_sync_actors::SyncActors;
use serde_json::{json, Value};

use common::{
    start_actors_on, start_actors_with, status_outcome, wait_until, Dirs, LoopbackPlatform,
    Options, Scripted, ScriptedPlatform, TOKEN,
};

/// The token of the binary's tests: distinctive enough that finding it is a leak.
const SECRET: &str = "faults-secret-5c7e21";
/// The agent the binary runs as.
const AGENT: &str = "faults-agent";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ======================================================= a raw HTTP/1.1 platform

/// A request head as read off the socket.
#[derive(Clone, Debug, Default)]
struct Head {
    method: String,
    path: String,
    /// Lowercase names.
    headers: BTreeMap<String, String>,
    length: usize,
}

/// A request read in full.
#[derive(Clone, Debug)]
struct Req {
    head: Head,
    body: Vec<u8>,
}

impl Req {
    fn key(&self) -> String {
        self.head
            .headers
            .get("idempotency-key")
            .cloned()
            .unwrap_or_default()
    }

    fn ids(&self) -> Vec<String> {
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
enum Early {
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
enum Reply {
    /// A complete response; the connection stays open.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
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
}

impl Reply {
    fn ok() -> Self {
        Reply::json(200, json!({"ok": true}))
    }

    fn json(status: u16, value: Value) -> Self {
        Reply::Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::to_vec(&value).expect("json"),
        }
    }
}

type EarlyFn = dyn Fn(usize, &Head) -> Early + Send + Sync;
type ReplyFn = dyn Fn(usize, &Req) -> Reply + Send + Sync;

struct RawShared {
    early: Box<EarlyFn>,
    reply: Box<ReplyFn>,
    /// Every request whose head was read, in order, with the status answered (0: none).
    log: Mutex<Vec<(Req, u16)>>,
    stop: AtomicBool,
}

/// A scripted HTTP/1.1 server on 127.0.0.1 on plain threads.
struct Raw {
    shared: Arc<RawShared>,
    port: u16,
    accept: Option<thread::JoinHandle<()>>,
}

impl Raw {
    /// Answers every request with `reply`.
    fn start(reply: impl Fn(usize, &Req) -> Reply + Send + Sync + 'static) -> Raw {
        Raw::with(|_, _| Early::ReadBody, reply)
    }

    fn with(
        early: impl Fn(usize, &Head) -> Early + Send + Sync + 'static,
        reply: impl Fn(usize, &Req) -> Reply + Send + Sync + 'static,
    ) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        Raw::on(listener, early, reply)
    }

    fn on(
        listener: TcpListener,
        early: impl Fn(usize, &Head) -> Early + Send + Sync + 'static,
        reply: impl Fn(usize, &Req) -> Reply + Send + Sync + 'static,
    ) -> Raw {
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(RawShared {
            early: Box::new(early),
            reply: Box::new(reply),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = accepting.clone();
                thread::spawn(move || raw_serve(stream, &conn));
            }
        });
        Raw {
            shared,
            port,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request seen, with the status answered (0: none).
    fn log(&self) -> Vec<(Req, u16)> {
        lock(&self.shared.log).clone()
    }

    /// Pushes answered with a 2xx.
    fn delivered(&self) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|(r, s)| r.head.method == "POST" && (200..300).contains(s))
            .map(|(r, _)| r)
            .collect()
    }

    fn pushes(&self) -> Vec<Req> {
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

/// Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
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
    drop(stream);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn raw_serve(stream: TcpStream, shared: &RawShared) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    loop {
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        let index = {
            let mut log = lock(&shared.log);
            log.push((
                Req {
                    head: head.clone(),
                    body: Vec::new(),
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
                reset(writer);
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
                // Unread bytes in the socket make this close a reset, as with nginx.
                drop(writer);
                return;
            }
        }
        let mut body = vec![0; head.length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Req { head, body };
        lock(&shared.log)[index].0 = req.clone();
        match (shared.reply)(index, &req) {
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
                if writer.write_all(&bytes).is_err() {
                    return;
                }
                lock(&shared.log)[index].1 = status;
            }
            Reply::Silence => {
                while !shared.stop.load(Ordering::SeqCst) {
                    thread::sleep(millis(20));
                }
                return;
            }
            Reply::ThenReset(bytes) => {
                let _ = writer.write_all(&bytes);
                lock(&shared.log)[index].1 = status_of(&bytes);
                thread::sleep(millis(300));
                reset(writer);
                return;
            }
            Reply::ThenClose(bytes) => {
                let _ = writer.write_all(&bytes);
                lock(&shared.log)[index].1 = status_of(&bytes);
                return;
            }
            Reply::Stall(bytes) => {
                let _ = writer.write_all(&bytes);
                lock(&shared.log)[index].1 = status_of(&bytes);
                while !shared.stop.load(Ordering::SeqCst) {
                    thread::sleep(millis(20));
                }
                return;
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
                return;
            }
        }
    }
}

fn status_of(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ======================================================= actor-level helpers

fn host(id: &str) -> Value {
    json!({"id": id, "status": "completed"})
}

async fn push_host(actors: &SyncActors, ids: &[&str]) -> PushReport {
    actors
        .pusher
        .send(SyncPush {
            dispatches: Some(ids.iter().map(|id| host(id)).collect()),
            ..SyncPush::default()
        })
        .await
        .expect("pusher")
        .expect("push")
}

async fn queue(actors: &SyncActors) -> Vec<QueueEntry> {
    actors
        .queue
        .send(ListQueue::default())
        .await
        .expect("queue")
        .expect("list")
}

async fn dead(actors: &SyncActors) -> Vec<DeadLetter> {
    actors
        .queue
        .send(ListDeadLetters)
        .await
        .expect("queue")
        .expect("dead letters")
}

async fn pull(actors: &SyncActors) -> PullReport {
    actors
        .puller
        .send(SyncPull::default())
        .await
        .expect("puller")
        .expect("pull")
}

/// Waits until the queue is empty (a timer drain records its window just after the 2xx).
async fn eventually_empty(actors: &SyncActors) {
    for _ in 0..500 {
        if queue(actors).await.is_empty() {
            return;
        }
        actix_rt::time::sleep(millis(10)).await;
    }
    panic!("the queue did not empty: {:?}", queue(actors).await);
}

fn with_timeout(timeout: Duration) -> Options {
    Options {
        request_timeout: timeout,
        ..Options::default()
    }
}

fn now() -> Timestamp {
    Clock::system().now()
}

// ======================================================= platform faults

#[actix::test]
async fn a_reset_mid_request_body_is_transient_then_the_same_entry_is_delivered() {
    let server = Raw::with(
        |index, _| {
            if index == 0 {
                Early::ResetMidBody
            } else {
                Early::ReadBody
            }
        },
        |_, _| Reply::ok(),
    );
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::default(),
    );
    let report = push_host(&actors, &["a", "b"]).await;
    assert_eq!((report.count, report.queued), (0, 2));
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert!(entry.last_error.is_some(), "{entry:?}");
    assert!(dead(&actors).await.is_empty(), "a reset is never a refusal");

    wait_until("the retry on the backoff timer", secs(10), || {
        server.delivered().len() == 1
    })
    .await;
    let log = server.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].0.key(), entry.idempotency_key, "the same key");
    assert_eq!(log[1].0.key(), entry.idempotency_key, "the same key");
    assert_eq!(log[1].0.ids(), ["a", "b"]);
    eventually_empty(&actors).await;
}

#[actix::test]
async fn a_reset_mid_response_body_keeps_the_status_2xx_delivered_5xx_retried() {
    let server = Raw::start(|index, _| match index {
        // The head says 200; the body breaks off: the platform did accept it.
        0 => Reply::ThenReset(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"ok\":".to_vec()),
        1 => Reply::ThenReset(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000\r\n\r\n<html>".to_vec(),
        ),
        _ => Reply::ok(),
    });
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::max_batch(1),
    );
    let report = push_host(&actors, &["a", "b"]).await;
    assert_eq!((report.count, report.queued), (1, 1), "a delivered, b kept");
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.dispatches[0]["id"], "b");
    assert_eq!(entry.attempts, 1);
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{entry:?}"
    );
    wait_until("b on the retry", secs(10), || {
        server.delivered().iter().any(|r| r.ids() == ["b"])
    })
    .await;
    assert_eq!(server.log().len(), 3);
    eventually_empty(&actors).await;
    assert!(dead(&actors).await.is_empty());
}

#[actix::test]
async fn a_platform_that_never_answers_times_out_and_nothing_hangs() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    // The bound: the timeout, plus slack for a loaded machine; never the 30 s default.
    const BOUND: Duration = Duration::from_secs(6);

    // Accepts and reads the request, then says nothing.
    let silent = Raw::start(|_, _| Reply::Silence);
    // Never even accepts: the kernel completes the handshake into the backlog.
    let backlog = TcpListener::bind("127.0.0.1:0").expect("bind");
    let backlog_url = format!("http://{}", backlog.local_addr().unwrap());
    for (what, url) in [("silent", silent.url()), ("backlog", backlog_url)] {
        let dirs = Dirs::new();
        let (actors, _store) = start_actors_with(
            dirs.root(),
            dirs.state(),
            &url,
            Some(TOKEN),
            &with_timeout(TIMEOUT),
        );
        let started = Instant::now();
        let report = push_host(&actors, &["a"]).await;
        let took = started.elapsed();
        assert!(took < BOUND, "{what}: the push took {took:?}");
        assert!(took >= TIMEOUT - millis(100), "{what}: {took:?}");
        assert_eq!((report.count, report.queued), (0, 1), "{what}");
        let entry = queue(&actors).await.remove(0);
        assert_eq!(entry.attempts, 1, "{what}");
        assert!(entry.last_error.is_some(), "{what}");
        assert!(dead(&actors).await.is_empty(), "{what}");

        // A pull from the same platform: the cache, as quickly.
        let started = Instant::now();
        let report = pull(&actors).await;
        assert!(started.elapsed() < BOUND, "{what}: the pull hung");
        assert!(report.from_cache, "{what}");
    }

    // The head of a 2xx arrives, then the body stalls: the body read has a timeout too.
    // A push is delivered (the status is the platform's acceptance); a pull keeps the
    // cache.
    let stalling = Raw::start(|index, req| {
        if index == 0 && req.head.method == "GET" {
            return Reply::json(200, json!({"context": [{"id": "kept"}]}));
        }
        // A head promising 100 bytes, 5 of them, then silence.
        Reply::Stall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"ok\"".to_vec())
    });
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &stalling.url(),
        Some(TOKEN),
        &with_timeout(TIMEOUT),
    );
    assert_eq!(pull(&actors).await.count, 1, "the cache is seeded");
    let started = Instant::now();
    let report = pull(&actors).await;
    assert!(started.elapsed() < BOUND, "the pull hung on a stalled body");
    assert!(report.from_cache);
    assert_eq!(report.context, [json!({"id": "kept"})]);
    let started = Instant::now();
    let report = push_host(&actors, &["s"]).await;
    assert!(started.elapsed() < BOUND, "the push hung on a stalled body");
    assert_eq!(
        (report.count, report.queued),
        (1, 0),
        "a 2xx head is delivery"
    );
}

#[actix::test]
async fn a_5xx_storm_then_recovery_delivers_everything_in_order_with_stable_keys() {
    use agent_sync_actors::backoff::backoff;
    tokio::time::pause();
    let platform = ScriptedPlatform::new(DeliveryOutcome::Delivered { payload_size: 0 });
    let network = || DeliveryOutcome::Network {
        detail: "connection reset by peer".into(),
    };
    let storm: Vec<DeliveryOutcome> = [500, 502, 503, 504, 599, 408, 429, 0, 500, 503, 502, 0]
        .into_iter()
        .map(|s| if s == 0 { network() } else { status_outcome(s) })
        .collect();
    for outcome in &storm {
        platform.respond(outcome.clone());
    }
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_on(
        dirs.root(),
        dirs.state(),
        platform.as_platform(),
        Some(TOKEN),
        // Exact steps: this is about the storm, not the jitter.
        &Options {
            jitter: Jitter::Off,
            ..Options::max_batch(1)
        },
        Clock::tokio(),
    );
    assert_eq!(push_host(&actors, &["a", "b", "c"]).await.count, 0);
    // Only the head is tried while the platform is down; each try at its backoff.
    for attempt in 1..storm.len() {
        let head = queue(&actors).await.remove(0);
        assert_eq!(head.attempts as usize, attempt);
        assert_eq!(head.dispatches[0]["id"], "a");
        tokio::time::sleep(backoff(attempt as u32) + millis(500)).await;
        assert_eq!(
            platform.push_times().len(),
            attempt + 1,
            "one try per backoff"
        );
        if attempt == 6 {
            // New work during the storm queues behind the head and sends nothing (P5).
            let report = push_host(&actors, &["d"]).await;
            assert_eq!((report.count, report.queued), (0, 4));
            assert_eq!(platform.push_times().len(), attempt + 1);
        }
    }
    let storm_keys: Vec<String> = platform
        .push_requests()
        .iter()
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert!(storm_keys.iter().all(|k| *k == storm_keys[0]), "one key");
    assert_eq!(queue(&actors).await[0].attempts as usize, storm.len());

    // Recovery: at the next try everything goes, in order.
    tokio::time::sleep(backoff(storm.len() as u32) + millis(500)).await;
    let requests = platform.push_requests();
    assert_eq!(requests.len(), storm.len() + 4);
    let order: Vec<String> = requests[storm.len()..]
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["dispatches"][0]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
    assert_eq!(requests[storm.len()].idempotency_key, storm_keys[0]);
    assert!(queue(&actors).await.is_empty());
    assert!(
        dead(&actors).await.is_empty(),
        "transient failures never dead-letter"
    );
    let history = actors
        .history
        .send(RecentRecords::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|r| r.direction == Direction::Push));
    let state = actors.history.send(ReadSyncState).await.unwrap().unwrap();
    assert!(!state.auth_failed);
}

#[actix::test]
async fn hostile_or_malformed_retry_after_is_capped_or_ignored() {
    let day = secs(24 * 3600);
    let cases: [(&str, Duration); 8] = [
        ("99999999999", day),
        ("18446744073709551615", day),
        ("Fri, 31 Dec 9999 23:59:59 GMT", day),
        ("soon", secs(1)),
        ("-5", secs(1)),
        ("1.5", secs(1)),
        ("0", secs(1)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", secs(1)),
    ];
    let server = LoopbackPlatform::start().await;
    for (value, expected) in cases {
        server.respond(Scripted::status(503).header("Retry-After", value));
        let dirs = Dirs::new();
        let (actors, _store) = start_actors_with(
            dirs.root(),
            dirs.state(),
            &server.url(),
            Some(TOKEN),
            &Options::default(),
        );
        let before = now();
        assert_eq!(push_host(&actors, &["a"]).await.queued, 1, "{value}");
        let after = now();
        let entry = queue(&actors).await.remove(0);
        let next = entry.next_attempt.expect("next_attempt");
        let low = before.saturating_add(expected).unix_millis() - 1000;
        let high = after.saturating_add(expected).unix_millis() + 1000;
        assert!(
            (low..=high).contains(&next.unix_millis()),
            "Retry-After {value:?}: next attempt {next}, expected about now + {expected:?}"
        );
        assert_eq!(entry.attempts, 1);
    }
    server.stop().await;
}

/// A proxy with a 64 KiB limit that answers 413 before reading the body; `polite`
/// reads and discards the body before closing (nginx's lingering close), else the close
/// with unread bytes resets the connection, which may reach the client first.
async fn push_through_a_413_proxy(polite: bool) -> (SyncActors, Raw, Dirs, PushReport) {
    const LIMIT: usize = 64 * 1024;
    let server = Raw::with(
        move |_, head| match head.length > LIMIT {
            true if polite => Early::RefuseThenDrain(413),
            true => Early::RefuseUnread(413),
            false => Early::ReadBody,
        },
        |_, _| Reply::ok(),
    );
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::default(),
    );
    // One entry of 8 dispatches, 240 KiB: split to halves of 4, then 2, to get through.
    let dispatches: Vec<Value> = (0..8)
        .map(|i| json!({"id": format!("big-{i}"), "blob": "b".repeat(30 * 1024)}))
        .collect();
    let report = actors
        .pusher
        .send(SyncPush {
            dispatches: Some(dispatches),
            ..SyncPush::default()
        })
        .await
        .unwrap()
        .unwrap();
    (actors, server, dirs, report)
}

fn all_big() -> Vec<String> {
    (0..8).map(|i| format!("big-{i}")).collect()
}

#[actix::test]
async fn a_413_answered_before_the_body_is_read_splits_and_delivers() {
    let (actors, server, _dirs, report) = push_through_a_413_proxy(true).await;
    assert_eq!((report.count, report.queued), (8, 0));
    let mut delivered: Vec<String> = server.delivered().iter().flat_map(Req::ids).collect();
    delivered.sort();
    assert_eq!(delivered, all_big(), "each dispatch delivered once");
    let sizes: Vec<(usize, u16)> = server
        .log()
        .iter()
        .map(|(r, s)| (r.head.length / 1024, *s))
        .collect();
    assert_eq!(
        sizes.iter().filter(|(_, s)| *s == 413).count(),
        3,
        "{sizes:?}"
    );
    assert!(dead(&actors).await.is_empty());
}

#[actix::test]
async fn a_413_with_a_reset_connection_is_retried_then_split_and_nothing_is_lost() {
    let (actors, server, _dirs, report) = push_through_a_413_proxy(false).await;
    // awc may see the reset before the 413 on a reused connection: then the part is a
    // transient failure (kept, backing off) rather than split at once.
    let queued: Vec<String> = queue(&actors)
        .await
        .iter()
        .flat_map(|e| {
            e.dispatches
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string())
        })
        .collect();
    let delivered: Vec<String> = server.delivered().iter().flat_map(Req::ids).collect();
    let mut all: Vec<String> = delivered.iter().chain(&queued).cloned().collect();
    all.sort();
    assert_eq!(all, all_big(), "nothing lost, nothing doubled");
    assert_eq!(report.count, delivered.len());
    assert!(dead(&actors).await.is_empty(), "never a refusal");
    wait_until("the rest on the backoff timer", secs(20), || {
        server.delivered().iter().flat_map(Req::ids).count() == 8
    })
    .await;
    let mut delivered: Vec<String> = server.delivered().iter().flat_map(Req::ids).collect();
    delivered.sort();
    assert_eq!(delivered, all_big(), "each dispatch delivered once");
    eventually_empty(&actors).await;
}

#[actix::test]
async fn a_2xx_with_a_garbage_or_lying_body_is_delivered() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(200).body("<html>oops</html>"));
    server.respond(Scripted::status(202).body(vec![0xff, 0x00, 0xfe, 0x80]));
    server.respond(Scripted::status(204));
    // Over the 64 KiB the pusher reads of an answer.
    server.respond(
        Scripted::status(200)
            .header("content-type", "application/json")
            .body(vec![b'['; 200 * 1024]),
    );
    server.respond(Scripted::status(201).json(json!({"data": null, "error": "none"})));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &server.url(),
        Some(TOKEN),
        &Options::max_batch(1),
    );
    let report = push_host(&actors, &["a", "b", "c", "d", "e"]).await;
    assert_eq!((report.count, report.queued), (5, 0));
    assert!(dead(&actors).await.is_empty());
    let history = actors
        .history
        .send(RecentRecords::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.len(), 5);
    server.stop().await;

    // A head promising 1000 bytes, 5 sent, then a normal close.
    let liar = Raw::start(|_, _| {
        Reply::ThenClose(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nshort".to_vec())
    });
    let dirs = Dirs::new();
    let (actors, _store) = start_actors_with(
        dirs.root(),
        dirs.state(),
        &liar.url(),
        Some(TOKEN),
        &Options::default(),
    );
    let report = push_host(&actors, &["f"]).await;
    assert_eq!((report.count, report.queued), (1, 0));
}

#[actix::test]
async fn a_pull_body_over_the_default_16_mib_limit_keeps_the_cache() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    // Default platform settings but the URL: the 16 MiB limit of design.md §6 L2.
    let config = PlatformConfig {
        base_url: server.url(),
        ..PlatformConfig::default()
    };
    assert_eq!(config.max_context_bytes, 16 * 1024 * 1024);
    let platform: std::rc::Rc<dyn Platform> = std::rc::Rc::new(HttpPlatform::new(config));
    let (actors, _store) = start_actors_on(
        dirs.root(),
        dirs.state(),
        platform,
        Some(TOKEN),
        &Options::default(),
        Clock::system(),
    );
    let kept = vec![json!({"id": "kept"})];
    server.respond(Scripted::ok().json(json!({"context": kept.clone()})));
    assert_eq!(pull(&actors).await.context, kept);
    // A valid envelope, 17 MiB.
    let blob = "y".repeat(17 * 1024 * 1024);
    server.respond(Scripted::ok().json(json!({"context": [{"id": "huge", "blob": blob}]})));
    let report = pull(&actors).await;
    assert!(report.from_cache);
    assert_eq!(report.context, kept);
    assert_eq!(
        actors.puller.send(CachedContext).await.unwrap().unwrap(),
        kept
    );
    let records = actors
        .history
        .send(RecentRecords::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(records.len(), 1, "no history for the refused body");
    server.stop().await;

    // A body that never ends (chunked, no length): cut at the limit, quickly.
    let endless = Raw::start(|_, _| Reply::Endless);
    let config = PlatformConfig {
        base_url: endless.url(),
        ..PlatformConfig::default()
    };
    let platform: std::rc::Rc<dyn Platform> = std::rc::Rc::new(HttpPlatform::new(config));
    let dirs2 = Dirs::new();
    let (actors, _store) = start_actors_on(
        dirs2.root(),
        dirs2.state(),
        platform,
        Some(TOKEN),
        &Options::default(),
        Clock::system(),
    );
    let started = Instant::now();
    let report = pull(&actors).await;
    assert!(report.from_cache);
    assert!(started.elapsed() < secs(20), "took {:?}", started.elapsed());
}

// ======================================================= the binary

/// One isolated installation (the approach of `tests/cli.rs`).
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("home")).expect("home");
        fs::create_dir_all(dir.path().join("workspace")).expect("workspace root");
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("sync")
    }

    fn db(&self) -> PathBuf {
        self.state().join("sync.redb")
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("CORE_WORKSPACE", self.dir.path())
            .env("AGENT_NAME", AGENT)
            .stdin(Stdio::null());
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-sync"));
        self.env(&mut cmd);
        cmd.args(args);
        cmd
    }

    fn online(&self, url: &str, args: &[&str]) -> Command {
        let mut cmd = self.cmd(args);
        cmd.env("CORE_AGENT_API_KEY", SECRET)
            .env("CORE_API_URL", url);
        cmd
    }

    /// A file of `count` host dispatches `<prefix>-N`, `pad` bytes of padding each.
    fn dispatches(&self, prefix: &str, count: usize, pad: usize) -> (PathBuf, Vec<String>) {
        let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "status": "completed", "pad": "p".repeat(pad)}))
            .collect();
        let path = self.path().join(format!("{prefix}.json"));
        fs::write(&path, serde_json::to_vec(&items).unwrap()).unwrap();
        (path, ids)
    }

    fn queued_ids(&self) -> Vec<String> {
        let out = run(self.cmd(&["--json", "queue"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let listing: Value = serde_json::from_str(&out.stdout).expect("queue JSON");
        listing
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["dispatches"].as_array().unwrap().clone())
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn status(&self) -> Value {
        let out = run(self.cmd(&["--json", "status"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).expect("status JSON")
    }
}

struct Out {
    code: i32,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

fn finish(output: Output) -> Out {
    Out {
        code: output.status.code().unwrap_or(-1),
        signal: output.status.signal(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run(mut cmd: Command) -> Out {
    finish(cmd.output().expect("run agent-sync"))
}

/// Asserts a local failure: exit 1, one `error:` line, no panic.
#[track_caller]
fn assert_error(out: &Out, what: &str) {
    assert_eq!(
        (out.code, out.signal),
        (1, None),
        "{what}: stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    // design.md §8: the message on stderr starts with `error:`.
    assert!(out.stderr.starts_with("error: "), "{what}: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
}

/// Dispatches the daemon has recorded as delivered: its `pushed entry N: K dispatch(es)`
/// info lines, written after the durable commit. The server answering is not enough:
/// a daemon stopped between the answer and the commit correctly keeps the entry.
fn recorded_dispatches(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.split("pushed entry ").nth(1))
        .filter_map(|rest| {
            rest.split(": ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

/// An `agent-sync run`, killed if the test fails first.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(sandbox: &Sandbox, mut cmd: Command, level: &str) -> Daemon {
        let log = sandbox.path().join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        cmd.env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log).expect("log")));
        let child = cmd.spawn().expect("spawn the daemon");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("a pid")
    }

    #[track_caller]
    fn wait_for(&mut self, what: &str, mut condition: impl FnMut(&str) -> bool) {
        let started = Instant::now();
        loop {
            if condition(&self.log()) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "daemon exited ({status}) before {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < secs(30),
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            thread::sleep(millis(20));
        }
    }

    /// SIGTERM, then the exit status (within 10 s, design.md §6 R3).
    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < secs(10),
                "no exit after SIGTERM; log:\n{}",
                self.log()
            );
            thread::sleep(millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(millis(20));
    }
}

fn write_done(root: &Path, name: &str, report_bytes: usize) {
    let dir = root.join(name);
    fs::create_dir_all(dir.join(".meta")).unwrap();
    let status = json!({"status": "completed", "updated_at": "2026-04-14T12:00:00Z", "runs": 1});
    fs::write(dir.join("status.json"), status.to_string()).unwrap();
    if report_bytes > 0 {
        let report = json!({"summary": "r".repeat(report_bytes)});
        fs::write(dir.join(".meta/report.json"), report.to_string()).unwrap();
    }
}

#[test]
fn the_daemon_outlasts_a_refused_connection_and_delivers_once_the_platform_is_up() {
    let sandbox = Sandbox::new();
    let (file, ids) = sandbox.dispatches("offline", 3, 10);
    let out = run(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A port where nothing listens yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut daemon = Daemon::spawn(
        &sandbox,
        sandbox.online(&url, &["run", "--scan-interval", "0"]),
        "info",
    );
    daemon.wait_for("the refused attempt", |log| {
        log.contains("push of entry 1 failed")
    });
    // The platform comes up on that port; the backoff timer (1 s) finds it.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    let server = Raw::on(listener, |_, _| Early::ReadBody, |_, _| Reply::ok());
    wait_for("delivery after the refusal", secs(15), || {
        server.delivered().len() == 1
    });
    assert_eq!(server.delivered()[0].ids(), ids);
    daemon.wait_for("the delivery to be recorded", |log| {
        log.contains("pushed entry 1: 3 dispatch(es)")
    });
    assert_eq!(daemon.terminate().code(), Some(0));
    assert_eq!(sandbox.status()["queued_entries"], 0);
}

#[test]
fn the_token_never_appears_in_the_daemon_log_at_trace_level() {
    let sandbox = Sandbox::new();
    let pushes = Arc::new(AtomicUsize::new(0));
    let counter = pushes.clone();
    let server = Raw::start(move |_, req| {
        if req.head.method == "GET" {
            return Reply::json(200, json!({"data": {"context": [{"id": "m1"}]}}));
        }
        // The first push is refused with the credentials echoed back, the worst case.
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            let echoed = req
                .head
                .headers
                .get("authorization")
                .cloned()
                .unwrap_or_default();
            return Reply::Answer {
                status: 401,
                headers: vec![("www-authenticate", format!("Bearer error=\"{echoed}\""))],
                body: format!("rejected credentials: {echoed}").into_bytes(),
            };
        }
        Reply::ok()
    });
    write_done(&sandbox.root(), "core/go-io/one", 100);
    let mut daemon = Daemon::spawn(
        &sandbox,
        sandbox.online(
            &server.url(),
            &["run", "--scan-interval", "1s", "--pull-interval", "1s"],
        ),
        "trace",
    );
    wait_for("the 401 and its retry", secs(20), || {
        server.delivered().len() == 1
    });
    write_done(&sandbox.root(), "core/go-io/two", 100);
    wait_for("a second workspace and two pulls", secs(20), || {
        server.delivered().len() == 2
            && server
                .log()
                .iter()
                .filter(|(r, _)| {
                    r.head.method == "GET" && r.head.path.starts_with("/v1/agent/context?")
                })
                .count()
                >= 2
    });
    wait_for("the daemon to record both deliveries", secs(20), || {
        recorded_dispatches(&daemon.log()) == 2
    });
    let status = daemon.terminate();
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "{}", log.replace(SECRET, "<TOKEN>"));
    assert!(log.contains("TRACE"), "trace logging was on");
    assert!(log.contains("401"), "the refusal is logged");
    assert!(
        !log.contains(SECRET),
        "the token leaked into the daemon's log:\n{}",
        log.lines()
            .filter(|l| l.contains(SECRET))
            .take(5)
            .map(|l| l.replace(SECRET, "<TOKEN>"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = run(sandbox.cmd(&["--json", "queue"]));
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
    let status = sandbox.status();
    assert_eq!(status["auth_failed"], false, "{status}");
    assert_eq!(status["ledger_entries"], 2, "{status}");
    assert!(pushes.load(Ordering::SeqCst) >= 3);
}

// ======================================================= storage faults

/// Prints a finding to the test's stderr even when output is captured.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[test]
fn a_truncated_database_is_refused_and_left_in_place_or_repaired_never_a_panic() {
    // A real state: 40 queued dispatches in entries of up to 100.
    let source = Sandbox::new();
    let (file, _) = source.dispatches("t", 40, 200);
    assert_eq!(
        run(source.cmd(&["push", "--dispatches", file.to_str().unwrap()])).code,
        0
    );
    let bytes = fs::read(source.db()).expect("the database");
    let len = bytes.len();
    let mut cuts = vec![0, 1, 64, 512, 4096, len / 4, len / 2, len - 4096, len - 1];
    cuts.retain(|c| *c < len);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let sandbox = Sandbox::new();
        fs::create_dir_all(sandbox.state()).unwrap();
        fs::write(sandbox.db(), &bytes[..cut]).unwrap();
        let (more, _) = sandbox.dispatches("more", 2, 10);
        let mut seen = Vec::new();
        for args in [
            &["--json", "status"][..],
            &["--json", "queue"],
            &["push", "--dispatches", more.to_str().unwrap()],
        ] {
            let before = fs::read(sandbox.db()).unwrap();
            let out = run(sandbox.cmd(args));
            assert!(
                out.signal.is_none() && (out.code == 0 || out.code == 1),
                "cut {cut}: {args:?}: {} {}",
                out.code,
                out.stderr
            );
            assert!(
                !out.stderr.contains("panicked"),
                "cut {cut}: {}",
                out.stderr
            );
            if out.code == 1 {
                assert_error(&out, &format!("cut {cut}: {args:?}"));
                assert!(
                    out.stderr.contains("cannot be opened")
                        && out.stderr.contains("left untouched"),
                    "cut {cut}: reported as corrupt, not as an I/O problem: {}",
                    out.stderr
                );
                assert_eq!(
                    fs::read(sandbox.db()).unwrap(),
                    before,
                    "cut {cut}: a refused database must be left byte for byte (design.md §8)"
                );
                seen.push(format!(
                    "exit 1 ({})",
                    out.stderr
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(90)
                        .collect::<String>()
                ));
            } else {
                seen.push("exit 0".to_string());
            }
        }
        let queued = if seen.iter().all(|s| s == "exit 0") {
            format!(", {} dispatches queued after", sandbox.queued_ids().len())
        } else {
            String::new()
        };
        note(&format!(
            "truncated sync.redb to {cut} of {len} bytes: status/queue/push: {}{queued}",
            seen.join("; ")
        ));
    }
}

/// `RLIMIT_FSIZE` on the child: any write past `limit` bytes fails with EFBIG (and
/// SIGXFSZ, which would kill it, is ignored), as on a full disk.
fn limit_file_size(cmd: &mut Command, limit: u64) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

#[test]
fn a_full_disk_refuses_the_enqueue_and_keeps_exactly_what_was_acknowledged() {
    let sandbox = Sandbox::new();
    assert_eq!(run(sandbox.cmd(&["status"])).code, 0);
    let size = fs::metadata(sandbox.db()).unwrap().len();
    let limit = size + 512 * 1024;
    let mut acked: Vec<String> = Vec::new();
    let mut failures = 0;
    for round in 0..40 {
        // 100 KiB per push: the limit is reached within a few.
        let (file, ids) = sandbox.dispatches(&format!("full{round}"), 25, 4000);
        let mut cmd = sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()]);
        limit_file_size(&mut cmd, limit);
        let out = run(cmd);
        if out.code == 0 {
            // A later push may fit again (redb reuses what a failed commit left), so
            // a success after a failure is fine: what counts is that every
            // acknowledged push, and only those, is queued (checked below).
            acked.extend(ids);
        } else {
            assert_error(&out, "a push on a full disk");
            assert!(
                out.stderr.contains("enqueue") || out.stderr.contains("cannot open"),
                "{}",
                out.stderr
            );
            failures += 1;
            if failures == 3 {
                note(&format!(
                    "disk full (RLIMIT_FSIZE {limit}): {} dispatches acknowledged, then: {}",
                    acked.len(),
                    out.stderr.trim()
                ));
                break;
            }
        }
    }
    assert_eq!(failures, 3, "the limit was never reached");
    assert!(!acked.is_empty(), "some pushes fit under the limit");
    // Status still reads under the limit.
    let mut cmd = sandbox.cmd(&["--json", "status"]);
    limit_file_size(&mut cmd, limit);
    let out = run(cmd);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    // Without the limit: the state opens and holds exactly what was acknowledged.
    assert_eq!(sandbox.queued_ids(), acked);
    let (file, ids) = sandbox.dispatches("after", 3, 10);
    assert_eq!(
        run(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()])).code,
        0
    );
    acked.extend(ids);
    assert_eq!(sandbox.queued_ids(), acked);
}

#[test]
fn the_daemon_recovers_once_a_full_disk_has_room_again() {
    let sandbox = Sandbox::new();
    assert_eq!(run(sandbox.cmd(&["status"])).code, 0);
    let size = fs::metadata(sandbox.db()).unwrap().len();
    let server = Raw::start(|_, _| Reply::ok());
    let mut cmd = sandbox.online(&server.url(), &["run", "--scan-interval", "1s"]);
    // Room for the log file but not for the database to grow.
    limit_file_size(&mut cmd, size.max(4 * 1024 * 1024));
    let mut daemon = Daemon::spawn(&sandbox, cmd, "info");
    daemon.wait_for("the daemon to start", |log| {
        log.contains("agent-sync running")
    });
    // Work whose enqueue needs the database to grow past the limit.
    for i in 0..12 {
        write_done(&sandbox.root(), &format!("core/full/task-{i}"), 600 * 1024);
    }
    daemon.wait_for("the enqueue to fail", |log| log.contains("could not"));
    let failed_at = daemon.log().len();
    // Room again: lift the limit of the running daemon.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pid of our own child and a valid limit.
    let rc = unsafe {
        libc::prlimit(
            daemon.pid(),
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let started = Instant::now();
    while server.delivered().iter().flat_map(Req::ids).count() < 12 && started.elapsed() < secs(15)
    {
        thread::sleep(millis(50));
    }
    while recorded_dispatches(&daemon.log()) < 12 && started.elapsed() < secs(15) {
        thread::sleep(millis(50));
    }
    let delivered = server.delivered().iter().flat_map(Req::ids).count();
    let posts = server.pushes().len();
    let after = daemon.log()[failed_at..].to_string();
    let status = daemon.terminate();
    assert_eq!(
        delivered,
        12,
        "the daemon never recovered from the full disk ({posts} POSTs); log after the failure:\n{}",
        after.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(status.code(), Some(0));
    let state = sandbox.status();
    assert_eq!(state["queued_entries"], 0, "{state}");
    assert_eq!(state["ledger_entries"], 12, "{state}");
}

/// How to run the binary as `nobody` (root reads and writes through any mode bits).
fn as_nobody(sandbox: &Sandbox, args: &[&str]) -> Option<Command> {
    let works = |tool: &str| {
        Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let bin = env!("CARGO_BIN_EXE_agent-sync");
    let mut cmd = if works("setpriv") {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            bin,
        ]);
        cmd
    } else if works("runuser") {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "nobody", "--", bin]);
        cmd
    } else {
        return None;
    };
    sandbox.env(&mut cmd);
    cmd.args(args);
    Some(cmd)
}

#[test]
fn a_read_only_state_dir_is_refused_with_a_clear_error_and_left_alone() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        note("read-only state dir: not root, so mode bits apply; covered by the chmod below");
    }
    let sandbox = Sandbox::new();
    let (file, ids) = sandbox.dispatches("kept", 2, 10);
    assert_eq!(
        run(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()])).code,
        0
    );
    for dir in [
        sandbox.path().to_path_buf(),
        sandbox.root(),
        sandbox.path().join("home"),
    ] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    // The state dir and database stay root's, 0755 and 0644: read-only to anyone else.
    let before = fs::read(sandbox.db()).unwrap();
    let (new_file, _) = sandbox.dispatches("refused", 1, 10);
    fs::set_permissions(&new_file, fs::Permissions::from_mode(0o644)).unwrap();
    let unborn = sandbox.state().join("nested").join("state");
    let cases: [(&str, Vec<&str>); 3] = [
        ("status", vec!["status"]),
        (
            "push",
            vec!["push", "--dispatches", new_file.to_str().unwrap()],
        ),
        (
            "a state dir that cannot be created",
            vec!["--state-dir", unborn.to_str().unwrap(), "status"],
        ),
    ];
    let mut ran = false;
    for (what, args) in &cases {
        let cmd = if unsafe { libc::geteuid() } == 0 {
            match as_nobody(&sandbox, args) {
                Some(cmd) => cmd,
                None => {
                    note("read-only state dir: skipped, neither setpriv nor runuser exists");
                    return;
                }
            }
        } else {
            fs::set_permissions(sandbox.db(), fs::Permissions::from_mode(0o444)).unwrap();
            fs::set_permissions(sandbox.state(), fs::Permissions::from_mode(0o555)).unwrap();
            sandbox.cmd(args)
        };
        let out = run(cmd);
        assert_error(&out, what);
        assert!(
            out.stderr.contains("cannot open") && out.stderr.contains("writable"),
            "{what}: the error should say what to check: {}",
            out.stderr
        );
        note(&format!(
            "read-only state dir, {what}: {}",
            out.stderr.trim()
        ));
        ran = true;
    }
    assert!(ran);
    fs::set_permissions(sandbox.state(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(sandbox.db(), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        fs::read(sandbox.db()).unwrap(),
        before,
        "left byte for byte"
    );
    assert!(!unborn.exists());
    assert_eq!(sandbox.queued_ids(), ids, "nothing refused was queued");
}

#[test]
fn a_second_process_beside_a_running_daemon_fails_fast_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let server = Raw::start(|_, req| {
        if req.head.method == "GET" {
            return Reply::json(200, json!({"context": [{"id": "m"}]}));
        }
        Reply::ok()
    });
    write_done(&sandbox.root(), "core/two/first", 0);
    let mut daemon = Daemon::spawn(
        &sandbox,
        sandbox.online(&server.url(), &["run", "--scan-interval", "1s"]),
        "info",
    );
    wait_for("the first delivery", secs(20), || {
        server.delivered().len() == 1
    });
    // Beside a running daemon, status, queue, push, pull and requeue are carried out
    // by it through its control socket (tests/control.rs); the two commands that need
    // the state to themselves are refused, naming the daemon's pid.
    let in_use = format!(
        "state in {} is in use by another agent-sync process (pid {})",
        sandbox.state().display(),
        daemon.pid()
    );
    let url = server.url();
    let cases: Vec<(&str, Command)> = vec![
        ("import-legacy", sandbox.cmd(&["import-legacy"])),
        ("a second daemon", sandbox.online(&url, &["run"])),
    ];
    for (what, cmd) in cases {
        let started = Instant::now();
        let out = run(cmd);
        assert!(
            started.elapsed() < secs(5),
            "{what} hung: {:?}",
            started.elapsed()
        );
        assert_error(&out, what);
        assert!(out.stderr.contains(&in_use), "{what}: {}", out.stderr);
    }
    let requests = server.log().len();
    // The daemon is unaffected: new work still goes out.
    write_done(&sandbox.root(), "core/two/second", 0);
    wait_for("the daemon's next delivery", secs(20), || {
        server.delivered().len() == 2
    });
    wait_for("the daemon to record the delivery", secs(20), || {
        recorded_dispatches(&daemon.log()) == 2
    });
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.log());
    assert!(
        server.log()[..requests]
            .iter()
            .all(|(r, _)| r.head.method == "POST" && r.ids() == ["core/two/first"]),
        "the refused processes sent nothing"
    );
    let status = sandbox.status();
    assert_eq!(status["ledger_entries"], 2, "{status}");
    assert_eq!(status["queued_entries"], 0, "{status}");
}
