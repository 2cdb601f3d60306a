//! The client side of the control socket: how the CLI (or any tool) asks a running
//! agent-sync to do something.
//!
//! Why awc: it is the HTTP client agent-sync already builds for the platform, and
//! its `Connector` takes any connect service, so a Unix stream slots in without a
//! second HTTP stack (hyper + hyperlocal would add one). Like every awc client it is
//! `!Send`: use it inside an actix `System`.

use std::fmt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_service::fn_service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use agent_sync_actors::entry::{DeadLetter, QueueEntry};
use agent_sync_actors::messages::{PullReport, PushReport, RequeueReport};
use agent_sync_actors::platform::{excerpt, EXCERPT_BYTES};
use agent_sync_actors::sync_record::SyncRecord;
use awc::http::{StatusCode, Uri};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::socket::{peer_pid, socket_path};
use super::wire::{ErrorBody, ProcessInfo, PullCall, PushCall, RequeueCall};
use crate::paging::collect_pages;
use crate::status::SyncStatus;

/// Largest answer read (a `queue --json` of a big backlog).
const MAX_ANSWER: usize = 1024 * 1024 * 1024;

/// How long a local query (status, queue, ...) may take before the running process
/// counts as hung. Pushes and pulls have no limit here: they take as long as the
/// platform does, exactly as they would without a running process.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A call to the running process failed.
#[derive(Debug, Clone)]
pub enum ClientError {
    /// The process did not answer (it stopped, or the connection broke).
    Unreachable {
        /// Its socket.
        path: PathBuf,
        /// Its pid, when known.
        pid: Option<u32>,
        /// What failed.
        detail: String,
    },
    /// It answered with a failure; `message` is what it would have printed.
    Remote {
        /// The HTTP status.
        status: u16,
        /// The error, as the CLI prints it after `error: `.
        message: String,
    },
    /// It answered something this client does not understand.
    Unexpected {
        /// What was wrong.
        detail: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { path, pid, detail } => {
                write!(f, "the agent-sync process serving {}", path.display())?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(
                    f,
                    " did not answer: {detail}; check that it is still running"
                )
            }
            ClientError::Remote { message, .. } => f.write_str(message),
            ClientError::Unexpected { detail } => {
                write!(f, "unexpected answer from the running agent-sync: {detail}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to the agent-sync process that holds a state.
pub struct ControlClient {
    /// awc over the socket (every request goes to it, whatever the URL's host).
    client: awc::Client,
    /// The socket.
    path: PathBuf,
    /// The serving process, when the kernel told.
    pid: Option<u32>,
}

impl fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlClient")
            .field("path", &self.path)
            .field("pid", &self.pid)
            .finish()
    }
}

impl ControlClient {
    /// The process serving the state in `state_dir`, if one answers on its control
    /// socket; `None` when no socket is there, nobody listens (a stale file), or it
    /// cannot be reached (then opening the state directly reports who holds it).
    pub fn connect(state_dir: &Path) -> Option<ControlClient> {
        let path = socket_path(state_dir);
        let stream = UnixStream::connect(&path).ok()?;
        let pid = peer_pid(&stream);
        drop(stream);
        Some(Self::at(path, pid))
    }

    /// A client of the socket at `path` (no connection is made yet).
    pub fn at(path: PathBuf, pid: Option<u32>) -> ControlClient {
        let socket = path.clone();
        let connect = fn_service(move |info: ConnectInfo<Uri>| {
            let socket = socket.clone();
            async move {
                let stream = actix_rt::net::UnixStream::connect(&socket)
                    .await
                    .map_err(ConnectError::Io)?;
                Ok::<_, ConnectError>(Connection::new(info.request().clone(), stream))
            }
        });
        let client = awc::Client::builder()
            .connector(awc::Connector::new().connector(connect))
            .disable_timeout()
            .finish();
        ControlClient { client, path, pid }
    }

    /// The pid of the serving process, when known.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `status`.
    pub async fn status(&self) -> Result<SyncStatus, ClientError> {
        self.get("/v1/status").await
    }

    /// The `process` part of `/v1/status`: pid, version, uptime; `None` from an
    /// agent-sync too old to send it.
    pub async fn process(&self) -> Result<Option<ProcessInfo>, ClientError> {
        let status: Value = self.get("/v1/status").await?;
        Ok(status
            .get("process")
            .and_then(|p| serde_json::from_value(p.clone()).ok()))
    }

    /// Every queued entry, oldest first, a page
    /// ([`LIST_PAGE`](crate::paging::LIST_PAGE)) per request.
    pub async fn queue(&self) -> Result<Vec<QueueEntry>, ClientError> {
        collect_pages(None, |after, want| self.queue_page(after, want)).await
    }

    /// One page of `queue`: entries after seq `after`, at most `limit` (up to
    /// [`LIST_PAGE`](crate::paging::LIST_PAGE)). The next page is after the last seq
    /// of this one; an empty page is the end.
    pub async fn queue_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<QueueEntry>, ClientError> {
        self.get(&list_path("/v1/queue", after, limit)).await
    }

    /// Every dead letter, oldest first, a page
    /// ([`LIST_PAGE`](crate::paging::LIST_PAGE)) per request.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, ClientError> {
        collect_pages(None, |after, want| self.dead_letters_page(after, want)).await
    }

    /// One page of `dead-letters`, paged like [`queue_page`](Self::queue_page).
    pub async fn dead_letters_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, ClientError> {
        self.get(&list_path("/v1/dead-letters", after, limit)).await
    }

    /// `history [--limit N]`.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<SyncRecord>, ClientError> {
        match limit {
            Some(n) => self.get(&format!("/v1/history?limit={n}")).await,
            None => self.get("/v1/history").await,
        }
    }

    /// `requeue [SEQ...|--all]` (`None`: all).
    pub async fn requeue(&self, seqs: Option<Vec<u64>>) -> Result<RequeueReport, ClientError> {
        self.post("/v1/requeue", &RequeueCall { seqs }, Some(QUERY_TIMEOUT))
            .await
    }

    /// `push`: carried out by the running process, with its token.
    pub async fn push(&self, body: &PushCall) -> Result<PushReport, ClientError> {
        self.post("/v1/push", body, None).await
    }

    /// `pull`: carried out by the running process, with its token.
    pub async fn pull(&self, body: &PullCall) -> Result<PullReport, ClientError> {
        self.post("/v1/pull", body, None).await
    }

    /// `GET /health`: the status code and the body.
    pub async fn health(&self) -> Result<(u16, Value), ClientError> {
        let (status, bytes) = self.call(self.request("GET", "/health"), None).await?;
        let body = serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            detail: format!("/health is not JSON: {e}"),
        })?;
        Ok((status.as_u16(), body))
    }

    /// `GET /metrics`: the exposition text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (status, bytes) = self.call(self.request("GET", "/metrics"), None).await?;
        if !status.is_success() {
            return Err(remote_error(status, &bytes));
        }
        String::from_utf8(bytes).map_err(|e| ClientError::Unexpected {
            detail: format!("/metrics is not UTF-8: {e}"),
        })
    }

    fn request(&self, method: &str, path: &str) -> awc::ClientRequest {
        let url = format!("http://localhost{path}");
        match method {
            "POST" => self.client.post(url),
            _ => self.client.get(url),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (status, bytes) = self
            .call(self.request("GET", path), Some(QUERY_TIMEOUT))
            .await?;
        decode(status, &bytes)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Unexpected {
            detail: format!("encoding the request: {e}"),
        })?;
        let request = self
            .request("POST", path)
            .insert_header(("content-type", "application/json"));
        let (status, answer) = self.call_with_body(request, bytes, timeout).await?;
        decode(status, &answer)
    }

    async fn call(
        &self,
        request: awc::ClientRequest,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.call_with_body(request, Vec::new(), timeout).await
    }

    async fn call_with_body(
        &self,
        request: awc::ClientRequest,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let request = match timeout {
            Some(t) => request.timeout(t),
            None => request,
        };
        let unreachable = |detail: String| ClientError::Unreachable {
            path: self.path.clone(),
            pid: self.pid,
            detail,
        };
        let response = request
            .send_body(body)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // Body reads have no timeout of their own.
        let mut response = match timeout {
            Some(t) => response.timeout(t),
            None => response,
        };
        let status = response.status();
        let bytes = response
            .body()
            .limit(MAX_ANSWER)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok((status, bytes.to_vec()))
    }
}

/// `route?limit=N[&after=SEQ]`.
fn list_path(route: &str, after: Option<u64>, limit: usize) -> String {
    match after {
        Some(after) => format!("{route}?after={after}&limit={limit}"),
        None => format!("{route}?limit={limit}"),
    }
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
    if !status.is_success() {
        return Err(remote_error(status, bytes));
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Unexpected {
        detail: format!("{e}"),
    })
}

fn remote_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Remote {
            status: status.as_u16(),
            message: body.error,
        },
        Err(_) => ClientError::Unexpected {
            // No token crosses the socket, but the one excerpt rule holds everywhere.
            detail: format!("HTTP {status}: {}", excerpt(bytes, None, EXCERPT_BYTES)),
        },
    }
}
