//! What goes in and out of the [`LoopbackPlatform`]: the answers a test scripts
//! ([`Scripted`], with an optional [`Notify`] point), the requests it records
//! ([`Recorded`]), and what it counts whether recording or not ([`Received`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[cfg(doc)]
use super::LoopbackPlatform;

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
    /// Tell the harness when this answer's request arrives, or when it is answered.
    pub notify: Option<Notify>,
}

/// When a [`Scripted`] answer tells the harness (the instant is sent on the channel).
#[derive(Clone, Debug)]
pub enum Notify {
    /// As its request arrives, before any delay: a client killed now dies mid-request.
    Arrival(mpsc::Sender<Instant>),
    /// Right before the handler returns the answer, after any delay.
    Answered(mpsc::Sender<Instant>),
}

impl Scripted {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Self {
        Scripted {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
            notify: None,
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

    /// Tell the harness at `notify`'s point of this request.
    pub fn notify(mut self, notify: Notify) -> Self {
        self.notify = Some(notify);
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
    /// The harness's run it arrived in ([`LoopbackPlatform::begin_epoch`]; 0 before).
    pub epoch: u32,
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

/// What the platform received, recorded or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Requests answered so far.
    pub requests: u64,
    /// Their body bytes.
    pub bytes: u64,
}

impl Received {
    /// What arrived between `earlier` and `self`.
    pub fn since(self, earlier: Received) -> Received {
        Received {
            requests: self.requests - earlier.requests,
            bytes: self.bytes - earlier.bytes,
        }
    }
}
