//! The control API served by a running [`SyncService`](crate::SyncService): actix-web
//! on the control socket (every route of [`wire`](super::wire)) and, when asked, on a
//! TCP address (`/metrics` and `/health` only).
//!
//! The servers are started from the service arbiter, which owns their futures and
//! handles; actix-server runs each one's accept loop and its single worker on threads
//! of their own. Handlers only send messages to the actors (their addresses are
//! `Send`), so the actors' state stays theirs alone.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use agent_sync_actors::messages::{
    ListDeadLetters, ListQueue, QueueStatus, ReadSyncState, RecentRecords, Requeue, SyncPull,
    SyncPush,
};
use agent_sync_actors::{SyncActors, SyncError};
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::health::{self, Findings, HealthWriter, WriteHealthMarker};
use super::wire::{
    ErrorBody, HistoryQuery, ListQuery, ProcessInfo, PullCall, PushCall, RequeueCall,
};
use crate::paging::LIST_PAGE;
use crate::status::status_of;

/// Largest request body the socket takes (a `push --dispatches` of a big file).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// How long a graceful stop lets calls in progress finish.
const SHUTDOWN_SECONDS: u64 = 2;

/// The content type of the OpenMetrics text `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every handler needs; shared by the workers (`Send + Sync`).
pub(crate) struct ControlState {
    /// The actors' addresses.
    pub(crate) actors: SyncActors,
    /// The service's default agent id (status shows it).
    pub(crate) agent_id: String,
    /// The service's registry, holding every agent-sync series.
    pub(crate) registry: Arc<Registry>,
    /// Writes the marker by which `/health` knows the store takes writes.
    pub(crate) health_writer: Addr<HealthWriter>,
    /// Set once a stop began: `/health` says so.
    pub(crate) stopping: Arc<AtomicBool>,
    /// This process's pid: `/health` and the `process` of `/v1/status` name it.
    pub(crate) pid: u32,
}

/// When the servers started: the uptime in `/v1/status` (`process`).
struct Started {
    /// By the wall clock, as shown.
    at: agent_sync_actors::time::Timestamp,
    /// By the monotonic clock, for the uptime.
    instant: Instant,
}

/// Where to serve.
pub(crate) struct Listeners {
    /// The bound control socket, when on.
    pub(crate) socket: Option<UnixListener>,
    /// The TCP listener of `--metrics-addr`, when given.
    pub(crate) tcp: Option<TcpListener>,
}

/// Starts the servers; call on the service arbiter. Answers their handles.
pub(crate) fn start(
    state: ControlState,
    listeners: Listeners,
) -> std::io::Result<Vec<ServerHandle>> {
    let data = web::Data::new(state);
    let started = web::Data::new(Started {
        at: agent_sync_actors::time::Clock::system().now(),
        instant: Instant::now(),
    });
    let mut handles = Vec::new();
    if let Some(listener) = listeners.socket {
        let data = data.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(started.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .configure(control_routes)
                .configure(telemetry_routes)
                .default_service(web::to(not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_SECONDS)
        .listen_uds(listener)?
        .run();
        handles.push(server.handle());
        actix_rt::spawn(server);
    }
    if let Some(listener) = listeners.tcp {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(telemetry_routes)
                .default_service(web::to(not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_SECONDS)
        .listen(listener)?
        .run();
        handles.push(server.handle());
        actix_rt::spawn(server);
    }
    Ok(handles)
}

/// The servers of one service, stopped before its actors.
pub(crate) struct ControlServers {
    /// One per listener.
    pub(crate) handles: Vec<ServerHandle>,
    /// The socket file to remove once the socket server is down.
    pub(crate) socket: Option<super::socket::SocketFile>,
}

impl ControlServers {
    /// Stops every server (letting calls in progress finish when `graceful`), then
    /// removes the socket file.
    pub(crate) async fn stop(self, graceful: bool) {
        for handle in &self.handles {
            let stopped = handle.stop(graceful);
            let limit = Duration::from_secs(SHUTDOWN_SECONDS + 3);
            if actix_rt::time::timeout(limit, stopped).await.is_err() {
                log::warn!("the control server did not stop in time");
            }
        }
        if let Some(socket) = &self.socket {
            socket.remove();
        }
    }

    /// [`stop`](Self::stop) from synchronous code: the stop runs on `arbiter` (where
    /// the servers live) and this thread waits for it, a few seconds at most.
    pub(crate) fn stop_blocking(self, arbiter: &actix_rt::ArbiterHandle) {
        let (done, wait) = std::sync::mpsc::channel();
        let socket = self.socket.clone();
        let spawned = arbiter.spawn(async move {
            self.stop(false).await;
            let _ = done.send(());
        });
        if !spawned
            || wait
                .recv_timeout(Duration::from_secs(SHUTDOWN_SECONDS + 5))
                .is_err()
        {
            log::warn!("the control server did not stop in time");
        }
        // Whatever happened above, the file must not outlive the service.
        if let Some(socket) = socket {
            socket.remove();
        }
    }
}

fn control_routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/status", web::get().to(status))
        .route("/v1/queue", web::get().to(queue))
        .route("/v1/dead-letters", web::get().to(dead_letters))
        .route("/v1/requeue", web::post().to(requeue))
        .route("/v1/history", web::get().to(history))
        .route("/v1/push", web::post().to(push))
        .route("/v1/pull", web::post().to(pull));
}

fn telemetry_routes(config: &mut web::ServiceConfig) {
    config
        .route("/metrics", web::get().to(metrics))
        .route("/health", web::get().to(health));
}

type State = web::Data<ControlState>;

fn answer<T: Serialize>(result: Result<T, SyncError>) -> HttpResponse {
    match result {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(e) => failure(&e),
    }
}

fn failure(e: &SyncError) -> HttpResponse {
    let (status, kind) = match e {
        SyncError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        SyncError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        SyncError::Encode(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encode"),
        SyncError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
    };
    error(status, kind, e.to_string())
}

fn error(status: StatusCode, kind: &str, message: String) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: message,
        kind: kind.to_string(),
    })
}

fn bad_request(what: &str, e: impl std::fmt::Display) -> HttpResponse {
    error(
        StatusCode::BAD_REQUEST,
        "request",
        format!("malformed {what} request: {e}"),
    )
}

async fn not_found() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "request",
        "no such control endpoint".to_string(),
    )
}

/// `status --json`, plus `process`: who answers, its version and uptime.
async fn status(state: State, started: web::Data<Started>) -> HttpResponse {
    let process = ProcessInfo {
        pid: state.pid,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: started.at,
        uptime_seconds: started.instant.elapsed().as_secs(),
    };
    answer(
        status_of(&state.actors, &state.agent_id)
            .await
            .map(|status| {
                let mut value = serde_json::to_value(status).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert("process".into(), serde_json::json!(process));
                }
                value
            }),
    )
}

/// The page a listing asks for, `(after, limit)`, or why the query is malformed: at
/// most [`LIST_PAGE`] items (the default), so one request never decodes more than a
/// page.
fn page_of(query: &str) -> Result<(Option<u64>, usize), String> {
    let query = web::Query::<ListQuery>::from_query(query).map_err(|e| e.to_string())?;
    match query.limit.unwrap_or(LIST_PAGE) {
        limit if limit > LIST_PAGE => Err(format!(
            "limit {limit} is over the page size {LIST_PAGE}; \
             ask for the next page with after=<the last seq>"
        )),
        limit => Ok((query.after, limit)),
    }
}

async fn queue(state: State, request: HttpRequest) -> HttpResponse {
    let (after, limit) = match page_of(request.query_string()) {
        Ok(page) => page,
        Err(e) => return bad_request("queue", e),
    };
    let limit = Some(limit);
    answer(flatten(
        state.actors.queue.send(ListQueue { after, limit }).await,
    ))
}

async fn dead_letters(state: State, request: HttpRequest) -> HttpResponse {
    let (after, limit) = match page_of(request.query_string()) {
        Ok(page) => page,
        Err(e) => return bad_request("dead-letters", e),
    };
    let limit = Some(limit);
    let list = ListDeadLetters { after, limit };
    answer(flatten(state.actors.queue.send(list).await))
}

async fn history(state: State, query: web::Query<HistoryQuery>) -> HttpResponse {
    let limit = query.limit;
    answer(flatten(
        state.actors.history.send(RecentRecords { limit }).await,
    ))
}

async fn requeue(state: State, body: web::Bytes) -> HttpResponse {
    let body: RequeueCall = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return bad_request("requeue", e),
    };
    let result = flatten(state.actors.queue.send(Requeue { seqs: body.seqs }).await);
    answer(result)
}

async fn push(state: State, body: web::Bytes) -> HttpResponse {
    let body: PushCall = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return bad_request("push", e),
    };
    let push = SyncPush {
        agent_id: body.agent_id,
        fleet_node_id: body.fleet_node_id,
        dispatches: body.dispatches,
        queue_only: body.queue_only,
    };
    let result = match state.actors.pusher.send(push).await {
        Ok(result) => result,
        Err(e) => Err(e.into()),
    };
    answer(result)
}

async fn pull(state: State, body: web::Bytes) -> HttpResponse {
    let body: PullCall = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return bad_request("pull", e),
    };
    let pull = SyncPull {
        agent_id: body.agent_id,
        since: body.since,
    };
    let result = match state.actors.puller.send(pull).await {
        Ok(result) => result,
        Err(e) => Err(e.into()),
    };
    answer(result)
}

async fn metrics(state: State) -> HttpResponse {
    // The gauges are computed from the store as the registry is encoded.
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => HttpResponse::Ok()
            .content_type(METRICS_CONTENT_TYPE)
            .body(text),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics",
            format!("encoding the metrics failed: {e}"),
        ),
    }
}

async fn health(state: State) -> HttpResponse {
    let write = match state.health_writer.send(WriteHealthMarker).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(SyncError::from(e).to_string()),
    };
    let sync_state = flatten(state.actors.history.send(ReadSyncState).await);
    let queue = flatten(state.actors.queue.send(QueueStatus).await).ok();
    let findings = Findings {
        write,
        state: sync_state.map_err(|e| e.to_string()),
        queue,
        stopping: state.stopping.load(Ordering::SeqCst),
        pid: state.pid,
    };
    let (code, body) = health::verdict(&findings);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    HttpResponse::build(status).json(body)
}

/// A message's answer with the mailbox error folded in.
fn flatten<T, E: Into<SyncError>>(
    result: Result<Result<T, E>, actix::MailboxError>,
) -> Result<T, SyncError> {
    match result {
        Ok(inner) => inner.map_err(Into::into),
        Err(e) => Err(e.into()),
    }
}
