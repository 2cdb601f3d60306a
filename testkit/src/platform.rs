//! [`LoopbackPlatform`]: a real actix-web server on `127.0.0.1:0`, one worker, that
//! records every request and answers from a script (a FIFO of one-shot [`Scripted`]
//! answers, then a default). It runs on the test's actix System, so a test that also
//! runs the binary waits for it on the blocking pool ([`crate::run_async`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

use crate::{lock, PUSH_PATH};

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
