//! Shared support for the integration tests.
//!
//! - [`LoopbackPlatform`]: a real actix-web server on `127.0.0.1:0` that records every
//!   request and answers from a script (FIFO of one-shot responses, then a default).
//! - [`ScriptedPlatform`]: an in-process `Platform` stand-in for tests under paused
//!   tokio time, where real sockets give spurious timeouts (design.md §11).
//! - Workspace fixtures, temp dirs, and helpers that start the actors.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

use agent_sync_actors::messages::DeliveryOutcome;
use agent_sync_actors::platform::{
    HttpPlatform, LocalFuture, Platform, PlatformConfig, PullOutcome, PushRequest, Token,
    TokenSource,
};
use agent_sync_actors::queue::{Jitter, QueueConfig, DEFAULT_MAX_BATCH};
use agent_sync_actors::time::Clock;
use agent_sync_actors::{ActorsConfig, Store, SyncActors};

/// The token every test uses; it must never show up in `Debug` output.
pub const TOKEN: &str = "test-token";
/// The default agent id of [`Options`].
pub const AGENT_ID: &str = "test-agent";
/// The push endpoint.
pub const PUSH_PATH: &str = "/v1/agent/sync";
/// The pull endpoint.
pub const PULL_PATH: &str = "/v1/agent/context";
/// Seed of the retry jitter in tests.
pub const TEST_SEED: u64 = 0x5eed;

// ------------------------------------------------------------------ loopback server

/// One scripted answer of the [`LoopbackPlatform`].
#[derive(Clone, Debug)]
pub struct Scripted {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl Scripted {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Self {
        Scripted {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        }
    }

    /// `200 {"ok":true}`.
    pub fn ok() -> Self {
        Scripted::status(200).json(serde_json::json!({"ok": true}))
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A JSON body (and its content type).
    pub fn json(mut self, value: Value) -> Self {
        self.body = serde_json::to_vec(&value).expect("serialise a JSON body");
        self.header("content-type", "application/json")
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Answer only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// One request the [`LoopbackPlatform`] received.
#[derive(Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// Headers by lowercase name; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Vec<u8>,
    /// Status the server answered with.
    pub status: u16,
    /// When the request arrived (wall clock of the test process).
    pub received_at: Instant,
}

impl Recorded {
    /// A header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `Idempotency-Key` header (panics when absent).
    pub fn idempotency_key(&self) -> String {
        self.header("idempotency-key")
            .unwrap_or_else(|| panic!("request without an Idempotency-Key: {self:?}"))
            .to_string()
    }

    /// The body parsed as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        parse_push_body(&self.body)
    }

    /// The `dispatches` of a push body.
    pub fn dispatches(&self) -> Vec<Value> {
        match self.json().get("dispatches") {
            Some(Value::Array(items)) => items.clone(),
            other => panic!("push body without a dispatches array: {other:?}"),
        }
    }

    /// The `id` of every dispatch of a push body, in order.
    pub fn dispatch_ids(&self) -> Vec<String> {
        self.dispatches()
            .iter()
            .map(|d| {
                d.get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("dispatch without a string id: {d}"))
                    .to_string()
            })
            .collect()
    }
}

/// Redacts `authorization` so a failing assertion never prints the token.
impl fmt::Debug for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if k == "authorization" {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("Recorded")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("status", &self.status)
            .finish()
    }
}

/// Parses a push body into JSON.
pub fn parse_push_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )
    })
}

struct ServerState {
    requests: Vec<Recorded>,
    script: VecDeque<Scripted>,
    default: Scripted,
}

type Shared = Arc<Mutex<ServerState>>;

fn lock(state: &Shared) -> MutexGuard<'_, ServerState> {
    // A panicking test thread must not hide what was recorded.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A real HTTP platform on `127.0.0.1`, one worker, recording and scripted.
pub struct LoopbackPlatform {
    state: Shared,
    port: u16,
    handle: ServerHandle,
}

impl LoopbackPlatform {
    /// Binds `127.0.0.1:0` and serves on the current actix System.
    pub async fn start() -> Self {
        let state: Shared = Arc::new(Mutex::new(ServerState {
            requests: Vec::new(),
            script: VecDeque::new(),
            default: Scripted::ok(),
        }));
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))
        .expect("bind the loopback platform");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        LoopbackPlatform {
            state,
            port,
            handle,
        }
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

    /// Stops the server, letting requests in flight finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<Shared>) -> HttpResponse {
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
    let scripted = {
        let mut state = lock(&state);
        let scripted = match state.script.pop_front() {
            Some(s) => s,
            None => state.default.clone(),
        };
        state.requests.push(Recorded {
            method: req.method().as_str().to_string(),
            path: req.path().to_string(),
            query: req.query_string().to_string(),
            headers,
            body: body.to_vec(),
            status: scripted.status,
            received_at: Instant::now(),
        });
        scripted
    };
    if let Some(delay) = scripted.delay {
        actix_rt::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(scripted.status).expect("a valid scripted status");
    let mut response = HttpResponse::build(status);
    for (name, value) in &scripted.headers {
        response.insert_header((name.as_str(), value.as_str()));
    }
    response.body(scripted.body)
}

/// A URL where nothing listens (connection refused: the platform is down).
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a throwaway port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

// ------------------------------------------------------------ in-process stand-in

/// A `Platform` that answers pushes from a script without any socket, and records the
/// virtual (tokio) time of each push: for schedules under `tokio::time::pause`.
#[derive(Clone)]
pub struct ScriptedPlatform {
    inner: Rc<RefCell<ScriptedInner>>,
}

struct ScriptedInner {
    script: VecDeque<DeliveryOutcome>,
    default: DeliveryOutcome,
    pushes: Vec<(actix_rt::time::Instant, PushRequest)>,
}

impl ScriptedPlatform {
    /// Answers every push with `default` once the script is used up.
    /// A scripted `Delivered` gets the real body size.
    pub fn new(default: DeliveryOutcome) -> Self {
        ScriptedPlatform {
            inner: Rc::new(RefCell::new(ScriptedInner {
                script: VecDeque::new(),
                default,
                pushes: Vec::new(),
            })),
        }
    }

    /// Queues a one-shot outcome.
    pub fn respond(&self, outcome: DeliveryOutcome) {
        self.inner.borrow_mut().script.push_back(outcome);
    }

    /// Changes the default outcome.
    pub fn set_default(&self, outcome: DeliveryOutcome) {
        self.inner.borrow_mut().default = outcome;
    }

    /// Virtual time of every push so far.
    pub fn push_times(&self) -> Vec<actix_rt::time::Instant> {
        self.inner.borrow().pushes.iter().map(|(t, _)| *t).collect()
    }

    /// Every push request so far.
    pub fn push_requests(&self) -> Vec<PushRequest> {
        self.inner
            .borrow()
            .pushes
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The platform as the actors take it.
    pub fn as_platform(&self) -> Rc<dyn Platform> {
        Rc::new(self.clone())
    }
}

/// A `503` outcome as `HttpPlatform` would report it.
pub fn status_outcome(status: u16) -> DeliveryOutcome {
    DeliveryOutcome::Status {
        status,
        retry_after: None,
        detail: format!("HTTP {status}"),
    }
}

impl Platform for ScriptedPlatform {
    fn push(&self, token: &Token, request: PushRequest) -> LocalFuture<DeliveryOutcome> {
        assert_eq!(token.expose(), TOKEN, "the pusher used another token");
        let mut inner = self.inner.borrow_mut();
        let outcome = match inner.script.pop_front() {
            Some(o) => o,
            None => inner.default.clone(),
        };
        let outcome = match outcome {
            DeliveryOutcome::Delivered { .. } => DeliveryOutcome::Delivered {
                payload_size: request.body.len() as u64,
            },
            other => other,
        };
        inner.pushes.push((actix_rt::time::Instant::now(), request));
        Box::pin(async move { outcome })
    }

    fn pull(
        &self,
        _token: &Token,
        _agent_id: &str,
        _since: Option<&str>,
    ) -> LocalFuture<PullOutcome> {
        Box::pin(async { PullOutcome::Failed("the scripted platform does not pull".into()) })
    }
}

// ------------------------------------------------------------------ fixtures

/// A workspace root and a state dir, removed on drop.
pub struct Dirs {
    root: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Dirs {
    /// Two fresh temp dirs.
    pub fn new() -> Self {
        Dirs {
            root: tempfile::tempdir().expect("temp workspace root"),
            state: tempfile::tempdir().expect("temp state dir"),
        }
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The state dir.
    pub fn state(&self) -> &Path {
        self.state.path()
    }
}

/// Writes `<root>/<name>/status.json`; returns the workspace dir.
pub fn write_workspace(root: &Path, name: &str, status_json: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("create the workspace dir");
    std::fs::write(dir.join("status.json"), status_json).expect("write status.json");
    dir
}

/// Writes `<root>/<name>/.meta/report.json`.
pub fn write_report(root: &Path, name: &str, report_json: &str) {
    let meta = root.join(name).join(".meta");
    std::fs::create_dir_all(&meta).expect("create .meta");
    std::fs::write(meta.join("report.json"), report_json).expect("write report.json");
}

/// A minimal `status.json` body.
pub fn status_json(status: &str, updated_at: &str, runs: i64) -> String {
    serde_json::json!({
        "status": status,
        "agent": "codex",
        "updated_at": updated_at,
        "runs": runs,
    })
    .to_string()
}

/// Writes a `completed` workspace updated at `2026-04-14T12:00:00Z`, run once.
pub fn write_done(root: &Path, name: &str) -> PathBuf {
    write_workspace(
        root,
        name,
        &status_json("completed", "2026-04-14T12:00:00Z", 1),
    )
}

// ------------------------------------------------------------------ actors

/// What varies between tests when starting the actors.
#[derive(Clone, Debug)]
pub struct Options {
    /// Default agent id.
    pub agent_id: String,
    /// Default fleet node id.
    pub fleet_node_id: Option<i64>,
    /// Dispatches per entry.
    pub max_batch: usize,
    /// History records kept.
    pub history_limit: usize,
    /// Whole-request timeout of the HTTP client.
    pub request_timeout: Duration,
    /// Retry jitter: seeded, so schedules are the same on every run.
    pub jitter: Jitter,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agent_id: AGENT_ID.to_string(),
            fleet_node_id: None,
            max_batch: DEFAULT_MAX_BATCH,
            history_limit: 100,
            request_timeout: Duration::from_secs(5),
            jitter: Jitter::Seeded(TEST_SEED),
        }
    }
}

impl Options {
    /// Defaults with `max_batch`.
    pub fn max_batch(max_batch: usize) -> Self {
        Options {
            max_batch,
            ..Options::default()
        }
    }
}

/// The token source of a test: `Fixed(Token::new(token))`.
pub fn token_source(token: Option<&str>) -> TokenSource {
    TokenSource::Fixed(token.map(|t| Token::new(t).expect("a non-blank token")))
}

/// The actors' configuration for a test (no flush interval: timers only).
pub fn actors_config(root: &Path, token: Option<&str>, opts: &Options) -> ActorsConfig {
    ActorsConfig {
        workspace_root: root.to_path_buf(),
        agent_id: opts.agent_id.clone(),
        fleet_node_id: opts.fleet_node_id,
        tokens: token_source(token),
        queue: QueueConfig {
            max_batch: opts.max_batch,
            jitter: opts.jitter,
            ..QueueConfig::default()
        },
        history_limit: opts.history_limit,
        flush_interval: None,
        drain_on_start: true,
    }
}

/// Opens the state and starts the actors against the HTTP platform at `url`, with
/// default options.
pub fn start_actors(
    root: &Path,
    state_dir: &Path,
    url: &str,
    token: Option<&str>,
) -> (SyncActors, Store) {
    start_actors_with(root, state_dir, url, token, &Options::default())
}

/// Like [`start_actors`] with `opts`.
pub fn start_actors_with(
    root: &Path,
    state_dir: &Path,
    url: &str,
    token: Option<&str>,
    opts: &Options,
) -> (SyncActors, Store) {
    let config = PlatformConfig {
        base_url: url.to_string(),
        request_timeout: opts.request_timeout,
        ..PlatformConfig::default()
    };
    config.validate().expect("a loopback URL is accepted");
    let platform: Rc<dyn Platform> = Rc::new(HttpPlatform::new(config));
    start_actors_on(root, state_dir, platform, token, opts, Clock::system())
}

/// Opens the state and starts the actors on any platform and clock.
pub fn start_actors_on(
    root: &Path,
    state_dir: &Path,
    platform: Rc<dyn Platform>,
    token: Option<&str>,
    opts: &Options,
    clock: Clock,
) -> (SyncActors, Store) {
    let store = Store::open(state_dir).expect("open the state");
    let config = actors_config(root, token, opts);
    let actors = SyncActors::start(store.clone(), config, platform, clock);
    (actors, store)
}

/// Runs `f` in an actix System of its own on a fresh thread and waits for it without
/// blocking the caller's System (which may be serving a [`LoopbackPlatform`]). When it
/// returns, that System is gone: every actor started in it is dropped, and with them
/// their `Store` clones, so the database can be opened again. A panic in `f` is
/// re-raised here.
pub async fn in_own_system<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let thread = std::thread::spawn(move || actix::System::new().block_on(f()));
    while !thread.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Polls `condition` every 10 ms until it holds; panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Panics when `text` (some `Debug` output) contains the token.
pub fn assert_no_token(text: &str) {
    assert!(
        !text.contains(TOKEN),
        "the token leaked into Debug output: {}",
        text.replace(TOKEN, "<TOKEN>")
    );
}

// ------------------------------------------------------- control API (design.md §13)

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

/// One sample of a Prometheus / OpenMetrics text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name (`agent_sync_requests_total`, `..._bucket`, ...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses a text exposition: `# HELP/TYPE/UNIT` lines are checked for shape, the
/// `# EOF` marker must end it, every other line is `name[{k="v",...}] value`.
/// Panics (with the line) on anything else: a scrape that does not parse fails.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split_whitespace().next().unwrap_or("");
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "unknown comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = BTreeMap::new();
                for pair in inner.split(',').filter(|p| !p.is_empty()) {
                    let (key, quoted) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?} in {line}"));
                    let value = quoted
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label {pair:?} in {line}"));
                    labels.insert(key.to_string(), value.to_string());
                }
                (name.to_string(), labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the one sample `name{labels}` (labels given must match exactly;
/// panics when it is missing or ambiguous).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == wanted)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name}{wanted:?}: {} samples among {samples:#?}",
        found.len()
    );
    found[0].value
}
