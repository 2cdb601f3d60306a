//! `/health`: can this agent-sync do its job?
//!
//! 200 `{"status":"ok",...}` unless one of these holds, then 503
//! `{"status":"unavailable","reason":...}` naming each:
//!
//! - the store cannot be written: a durable write of a small marker (`meta`
//!   `health_probe`, the store's own cheap write path) fails, or reading the sync
//!   state fails;
//! - `auth_failed`: the platform answered 401/403 since the last success;
//! - the service is stopping.

use actix::prelude::*;
use agent_sync_actors::error::StoreError;
use agent_sync_actors::messages::{QueueSummary, SyncState};
use agent_sync_actors::time::Clock;
use agent_sync_actors::Store;
use serde_json::{json, Value};

/// The `meta` marker `/health` rewrites (the name is on disk: kept as it is).
const HEALTH_MARKER: &str = "health_probe";

/// Writes the health marker: holds a store handle for it; runs on the service
/// arbiter with the other actors, so it goes away (and releases the database) with
/// them.
pub(crate) struct HealthWriter {
    /// The state's database.
    store: Store,
}

impl HealthWriter {
    /// A writer of the health marker into `store`.
    pub(crate) fn new(store: Store) -> Self {
        HealthWriter { store }
    }
}

impl Actor for HealthWriter {
    type Context = Context<Self>;
}

/// Write the health marker durably: `Ok` when the store takes writes.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct WriteHealthMarker;

impl Handler<WriteHealthMarker> for HealthWriter {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: WriteHealthMarker, _: &mut Self::Context) -> Self::Result {
        let now = Clock::system().now().to_rfc3339();
        self.store.set_marker(HEALTH_MARKER, now.as_bytes())
    }
}

/// What a health check found.
#[derive(Debug, Clone)]
pub(crate) struct Findings {
    /// Whether the health marker was written (an error message when it failed).
    pub(crate) write: Result<(), String>,
    /// The sync state, or why it could not be read.
    pub(crate) state: Result<SyncState, String>,
    /// The queue counts, when they could be read.
    pub(crate) queue: Option<QueueSummary>,
    /// The service was asked to stop.
    pub(crate) stopping: bool,
    /// This process.
    pub(crate) pid: u32,
}

/// The HTTP status and body `/health` answers with for `findings`.
pub(crate) fn verdict(findings: &Findings) -> (u16, Value) {
    let mut reasons = Vec::new();
    if findings.stopping {
        reasons.push("stopping: the service is shutting down".to_string());
    }
    if let Err(e) = &findings.write {
        reasons.push(format!("store: the state cannot be written: {e}"));
    }
    match &findings.state {
        Err(e) => reasons.push(format!("store: the sync state cannot be read: {e}")),
        Ok(state) if state.auth_failed => reasons.push(
            "auth_failed: the platform refused the token (HTTP 401/403); check it".to_string(),
        ),
        Ok(_) => {}
    }
    let mut body = json!({
        "status": if reasons.is_empty() { "ok" } else { "unavailable" },
        "pid": findings.pid,
    });
    if let Ok(state) = &findings.state {
        body["auth_failed"] = json!(state.auth_failed);
        body["last_push_at"] = json!(state.last_push_at);
        body["last_pull_at"] = json!(state.last_pull_at);
    }
    if let Some(queue) = &findings.queue {
        body["queued_entries"] = json!(queue.entries);
        body["dead_letters"] = json!(queue.dead_letters);
    }
    if reasons.is_empty() {
        (200, body)
    } else {
        body["reason"] = json!(reasons.join("; "));
        (503, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings() -> Findings {
        Findings {
            write: Ok(()),
            state: Ok(SyncState::default()),
            queue: Some(QueueSummary::default()),
            stopping: false,
            pid: 7,
        }
    }

    #[test]
    fn healthy_is_200_ok() {
        let (status, body) = verdict(&findings());
        assert_eq!(status, 200);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["pid"], 7);
        assert!(body.get("reason").is_none());
    }

    #[test]
    fn a_store_that_cannot_be_written_or_read_is_503_with_the_reason() {
        let mut f = findings();
        f.write = Err("disk full".into());
        let (status, body) = verdict(&f);
        assert_eq!(status, 503);
        assert_eq!(body["status"], "unavailable");
        assert!(body["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be written: disk full"));

        let mut f = findings();
        f.state = Err("gone".into());
        let (status, body) = verdict(&f);
        assert_eq!(status, 503);
        assert!(body["reason"].as_str().unwrap().contains("cannot be read"));
    }

    #[test]
    fn auth_failed_and_stopping_are_503_naming_each() {
        let mut f = findings();
        f.state = Ok(SyncState {
            auth_failed: true,
            ..SyncState::default()
        });
        f.stopping = true;
        let (status, body) = verdict(&f);
        assert_eq!(status, 503);
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.contains("auth_failed") && reason.contains("stopping"),
            "{reason}"
        );
        assert_eq!(body["auth_failed"], true);
    }
}
