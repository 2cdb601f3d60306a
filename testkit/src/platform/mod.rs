//! [`LoopbackPlatform`]: a real actix-web server on `127.0.0.1:0`, one worker, that
//! records every request and answers from a script (a FIFO of one-shot [`Scripted`]
//! answers, then a default). It runs on the test's actix System, so a test that also
//! runs the binary waits for it on the blocking pool ([`crate::run_async`]); or, for
//! the bench, on a thread and System of its own ([`LoopbackPlatform::start_on_thread`]),
//! so the server and the measured client never share an event loop.
//!
//! Beyond the script, a harness can switch recording off (only [`Received`] counts
//! then), number its runs ([`LoopbackPlatform::begin_epoch`], logged with each
//! request), declare an outage (503 to everything until an instant), and be told the
//! instant a chosen request arrives or is answered ([`Notify`]: the kill points of
//! the bench).

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::{lock, PUSH_PATH};

mod exchange;

pub use self::exchange::{parse_push_body, Notify, Received, Recorded, Scripted};

/// The platform's state, shared by its handler and its handle.
struct ServerState {
    /// Every request recorded so far, in arrival order.
    requests: Vec<Recorded>,
    /// One-shot answers, first in first out.
    script: VecDeque<Scripted>,
    /// The answer once the script is used up.
    default: Scripted,
    /// Requests are kept in `requests` (else only counted: a long bench run would
    /// hold every body).
    recording: bool,
    /// Logged with each request.
    epoch: u32,
    /// Everything is answered 503 before this instant.
    outage_until: Option<Instant>,
    /// Counted whether recorded or not.
    received: Received,
}

type Shared = Arc<Mutex<ServerState>>;

/// A real HTTP platform on `127.0.0.1`, one worker, recording and scripted.
pub struct LoopbackPlatform {
    state: Shared,
    port: u16,
    handle: ServerHandle,
    /// The thread of [`LoopbackPlatform::start_on_thread`], joined by
    /// [`LoopbackPlatform::stop_thread`].
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

/// The server of a fresh platform, bound but not yet running; its state and port.
fn bind() -> std::io::Result<(actix_web::dev::Server, Shared, u16)> {
    let state: Shared = Arc::new(Mutex::new(ServerState {
        requests: Vec::new(),
        script: VecDeque::new(),
        default: Scripted::ok(),
        recording: true,
        epoch: 0,
        outage_until: None,
        received: Received::default(),
    }));
    let data = web::Data::new(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
            .default_service(web::to(answer))
    })
    .workers(1)
    .backlog(1024)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(("127.0.0.1", 0))?;
    let port = server
        .addrs()
        .first()
        .map(|addr| addr.port())
        .ok_or_else(|| std::io::Error::other("the loopback platform bound no address"))?;
    Ok((server.run(), state, port))
}

impl LoopbackPlatform {
    /// Binds `127.0.0.1:0` and serves on the current actix System.
    pub async fn start() -> Self {
        let (server, state, port) = bind().expect("bind the loopback platform");
        let handle = server.handle();
        actix_rt::spawn(server);
        LoopbackPlatform {
            state,
            port,
            handle,
            thread: None,
        }
    }

    /// Binds `127.0.0.1:0` and serves on a thread with an actix System of its own;
    /// returns once it listens. Stopped by [`LoopbackPlatform::stop_thread`].
    pub fn start_on_thread() -> std::io::Result<Self> {
        let (ready, started) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("loopback-platform".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    match bind() {
                        Ok((server, state, port)) => {
                            let _ = ready.send(Ok((state, port, server.handle())));
                            server.await
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            Ok(())
                        }
                    }
                })
            })?;
        let (state, port, handle) = started
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| std::io::Error::other("the loopback platform did not start in 30 s"))??;
        Ok(LoopbackPlatform {
            state,
            port,
            handle,
            thread: Some(thread),
        })
    }

    /// Stops a platform of [`LoopbackPlatform::start_on_thread`] and waits for its
    /// thread.
    pub fn stop_thread(mut self) -> std::io::Result<()> {
        // The stop command is sent when `stop` is called; the returned future only
        // waits for completion, which joining the thread does too.
        drop(self.handle.stop(true));
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the loopback platform panicked")),
            None => Ok(()),
        }
    }

    /// Keep requests from now on (`true`, the default) or only count them.
    pub fn set_recording(&self, recording: bool) {
        lock(&self.state).recording = recording;
    }

    /// Starts the harness's run `epoch`: every request from now on is logged with it.
    pub fn begin_epoch(&self, epoch: u32) {
        lock(&self.state).epoch = epoch;
    }

    /// Answer 503 to everything until `until`, whatever the script says.
    pub fn set_outage_until(&self, until: Instant) {
        lock(&self.state).outage_until = Some(until);
    }

    /// What the platform has received so far, recorded or not.
    pub fn received(&self) -> Received {
        lock(&self.state).received
    }

    /// Requests recorded in `epoch`, in arrival order.
    pub fn requests_in(&self, epoch: u32) -> Vec<Recorded> {
        let state = lock(&self.state);
        state
            .requests
            .iter()
            .filter(|r| r.epoch == epoch)
            .cloned()
            .collect()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Queues a one-shot answer (FIFO).
    pub fn respond(&self, r: Scripted) {
        lock(&self.state).script.push_back(r);
    }

    /// The answer once the script is used up (initially `200 {"ok":true}`).
    pub fn set_default(&self, r: Scripted) {
        lock(&self.state).default = r;
    }

    /// One-shot answers not used yet.
    pub fn pending_script(&self) -> usize {
        lock(&self.state).script.len()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// `POST /v1/agent/sync` requests only.
    pub fn pushes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == PUSH_PATH)
            .collect()
    }

    /// Pushes the server answered with a 2xx.
    pub fn delivered(&self) -> Vec<Recorded> {
        self.pushes()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Whether a push answered with a 2xx carried the dispatch `id` and nothing else:
    /// how a test sees one new workspace picked up and delivered on its own, whatever
    /// was pushed before it.
    pub fn delivered_alone(&self, id: &str) -> bool {
        self.delivered().iter().any(|r| r.dispatch_ids() == [id])
    }

    /// Stops the server, letting requests in flight finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// The headers of `req` by lowercase name, repeated ones joined with `, `.
fn headers(req: &HttpRequest) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    headers
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<Shared>) -> HttpResponse {
    let received_at = Instant::now();
    let scripted = {
        let mut state = lock(&state);
        let scripted = if state.outage_until.is_some_and(|until| received_at < until) {
            Scripted::status(503).json(serde_json::json!({"error": "unavailable"}))
        } else {
            match state.script.pop_front() {
                Some(s) => s,
                None => state.default.clone(),
            }
        };
        state.received.requests += 1;
        state.received.bytes += body.len() as u64;
        if state.recording {
            let epoch = state.epoch;
            state.requests.push(Recorded {
                method: req.method().as_str().to_string(),
                path: req.path().to_string(),
                query: req.query_string().to_string(),
                headers: headers(&req),
                body: body.to_vec(),
                status: scripted.status,
                received_at,
                epoch,
            });
        }
        scripted
    };
    if let Some(Notify::Arrival(notify)) = &scripted.notify {
        let _ = notify.send(Instant::now());
    }
    if let Some(delay) = scripted.delay.filter(|d| !d.is_zero()) {
        actix_rt::time::sleep_until((received_at + delay).into()).await;
    }
    if let Some(Notify::Answered(notify)) = &scripted.notify {
        let _ = notify.send(Instant::now());
    }
    let status = StatusCode::from_u16(scripted.status).expect("a valid scripted status");
    let mut response = HttpResponse::build(status);
    for (name, value) in &scripted.headers {
        response.insert_header((name.as_str(), value.as_str()));
    }
    response.body(scripted.body)
}

/// A port of 127.0.0.1 where nothing listens (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a throwaway port");
    listener.local_addr().expect("its address").port()
}

/// `127.0.0.1:PORT` of a [`free_port`], e.g. for `run --metrics-addr`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A URL where nothing listens (connection refused: the platform is down).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}
