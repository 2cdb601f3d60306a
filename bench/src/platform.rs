//! The loopback platform: an actix-web `HttpServer` on `127.0.0.1:0` with one worker,
//! answering `200 {"ok":true}` to `POST /v1/agent/sync` and counting what it got.
//!
//! It runs on a thread of its own with its own actix `System`, so the server and the
//! measured client never share an event loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::BenchResult;

/// The push endpoint.
pub const PUSH_PATH: &str = "/v1/agent/sync";

/// What the server received.
#[derive(Debug, Default)]
struct Counters {
    /// `POST /v1/agent/sync` requests answered.
    requests: AtomicU64,
    /// Their body bytes.
    bytes: AtomicU64,
}

/// A running loopback platform; stopped by [`Loopback::stop`].
pub struct Loopback {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    counters: Arc<Counters>,
    handle: ServerHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Requests answered so far.
    pub requests: u64,
    /// Body bytes received so far.
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

async fn push(counters: web::Data<Counters>, body: web::Bytes) -> HttpResponse {
    counters
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    counters.requests.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"ok":true}"#)
}

impl Loopback {
    /// Binds and starts the server on its own thread; returns once it listens.
    pub fn start() -> BenchResult<Loopback> {
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let (ready, started) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("loopback-platform".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let data = web::Data::from(shared);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .route(PUSH_PATH, web::post().to(push))
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .bind(("127.0.0.1", 0));
                    let server = match server {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            return Ok(());
                        }
                    };
                    let addr = server.addrs().first().copied();
                    let server = server.run();
                    let _ = ready.send(Ok((addr, server.handle())));
                    server.await
                })
            })?;
        let (addr, handle) = match started.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => return Err(format!("loopback platform: cannot bind: {e}").into()),
            Err(_) => return Err("loopback platform did not start within 30 s".into()),
        };
        let addr = addr.ok_or("loopback platform bound no address")?;
        Ok(Loopback {
            url: format!("http://{addr}"),
            counters,
            handle,
            thread: Some(thread),
        })
    }

    /// What the server has received so far.
    pub fn received(&self) -> Received {
        Received {
            requests: self.counters.requests.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) -> BenchResult<()> {
        // The stop command is sent when `stop` is called; the returned future only
        // waits for completion, which joining the thread does too.
        drop(self.handle.stop(true));
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => Ok(result?),
            Some(Err(_)) => Err("the loopback platform thread panicked".into()),
            None => Ok(()),
        }
    }
}
