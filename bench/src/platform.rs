//! The loopback platform: an actix-web `HttpServer` on `127.0.0.1:0` with one worker,
//! answering `POST /v1/agent/sync` and counting what it got.
//!
//! It runs on a thread of its own with its own actix `System`, so the server and the
//! measured client never share an event loop. By default it answers `200 {"ok":true}`
//! at once; its [`Control`] can make it answer after a delay, answer 503 to
//! everything until a given instant (an outage), log every arrival (time, epoch,
//! `Idempotency-Key`, status, and on request the dispatch ids), and tell the harness when a chosen request
//! arrives or is answered (the kill points of [`crate::kill`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::support::BenchResult;

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

/// One request as the platform saw it arrive (logged only while recording).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When the handler started.
    pub at: Instant,
    /// The epoch set by the harness when it arrived.
    pub epoch: u32,
    /// Its `Idempotency-Key` header (empty when absent).
    pub key: String,
    /// What it was answered.
    pub status: u16,
    /// The `id` of each dispatch in its body (only while ids are parsed).
    pub ids: Vec<String>,
}

/// When a [`Trigger`] fires.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// As the request arrives; the answer is then held back for `hold`.
    Arrival {
        /// How long the answer waits after the notification.
        hold: Duration,
    },
    /// Right before the handler returns its 2xx.
    Answered,
}

/// Tell the harness about the `nth` request (1-based) of the current epoch.
#[derive(Debug)]
pub struct Trigger {
    /// Which request of the epoch.
    pub nth: u64,
    /// At which point of it.
    pub when: When,
    /// Where the notification goes.
    pub notify: mpsc::Sender<Instant>,
}

/// How the platform behaves; shared with the harness, changed at any time.
#[derive(Debug, Default)]
pub struct Control {
    /// A 2xx is answered this long after the request arrived (microseconds).
    delay_micros: AtomicU64,
    /// Everything is answered 503 before this instant.
    outage_until: Mutex<Option<Instant>>,
    /// Arrivals are logged.
    record: AtomicBool,
    /// Dispatch ids are parsed out of logged bodies.
    parse_ids: AtomicBool,
    /// Set by the harness; logged with each arrival.
    epoch: AtomicU32,
    /// Arrivals since the epoch began.
    epoch_arrivals: AtomicU64,
    /// The log.
    log: Mutex<Vec<Arrival>>,
    /// At most one pending trigger.
    trigger: Mutex<Option<Trigger>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Control {
    /// Answer every 2xx `delay` after the request arrived.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_micros.store(micros, Ordering::Relaxed);
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }

    /// Answer 503 to everything until `until`.
    pub fn set_outage_until(&self, until: Instant) {
        *lock(&self.outage_until) = Some(until);
    }

    /// Log arrivals from now on (and, with `ids`, the dispatch ids of each body).
    pub fn record(&self, ids: bool) {
        self.parse_ids.store(ids, Ordering::Relaxed);
        self.record.store(true, Ordering::Relaxed);
    }

    /// Starts epoch `epoch`: arrivals are counted from 1 again; any trigger is dropped.
    pub fn begin_epoch(&self, epoch: u32) {
        *lock(&self.trigger) = None;
        self.epoch.store(epoch, Ordering::SeqCst);
        self.epoch_arrivals.store(0, Ordering::SeqCst);
    }

    /// Arms a trigger (replacing any other).
    pub fn arm(&self, trigger: Trigger) {
        *lock(&self.trigger) = Some(trigger);
    }

    /// A copy of the log so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.log).clone()
    }
}

/// A running loopback platform; stopped by [`Loopback::stop`].
pub struct Loopback {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    counters: Arc<Counters>,
    control: Arc<Control>,
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

/// The server's state: counters and control.
struct Shared {
    counters: Arc<Counters>,
    control: Arc<Control>,
}

/// The `id` of each dispatch in a push body.
fn dispatch_ids(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    value["dispatches"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|d| d["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn push(shared: web::Data<Shared>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let at = Instant::now();
    let control = &shared.control;
    let counters = &shared.counters;
    let down = lock(&control.outage_until).is_some_and(|until| at < until);
    let status: u16 = if down { 503 } else { 200 };
    let nth = control.epoch_arrivals.fetch_add(1, Ordering::SeqCst) + 1;
    if control.record.load(Ordering::Relaxed) {
        let key = request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let ids = if control.parse_ids.load(Ordering::Relaxed) {
            dispatch_ids(&body)
        } else {
            Vec::new()
        };
        lock(&control.log).push(Arrival {
            at,
            epoch: control.epoch.load(Ordering::SeqCst),
            key,
            status,
            ids,
        });
    }
    let fired = {
        let mut trigger = lock(&control.trigger);
        if trigger.as_ref().is_some_and(|t| t.nth == nth) {
            trigger.take()
        } else {
            None
        }
    };
    if let Some(Trigger {
        when: When::Arrival { hold },
        notify,
        ..
    }) = &fired
    {
        let _ = notify.send(Instant::now());
        if !hold.is_zero() {
            actix_rt::time::sleep(*hold).await;
        }
    }
    counters
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    counters.requests.fetch_add(1, Ordering::Relaxed);
    if down {
        return HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(r#"{"error":"unavailable"}"#);
    }
    let delay = control.delay();
    if !delay.is_zero() {
        actix_rt::time::sleep_until((at + delay).into()).await;
    }
    if let Some(Trigger {
        when: When::Answered,
        notify,
        ..
    }) = &fired
    {
        let _ = notify.send(Instant::now());
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"ok":true}"#)
}

impl Loopback {
    /// Runs `measure` against a loopback platform of its own and stops it whatever
    /// `measure` answered (its error first, then the server's).
    pub fn serve<T>(measure: impl FnOnce(&Loopback) -> BenchResult<T>) -> BenchResult<T> {
        let server = Loopback::start()?;
        let result = measure(&server);
        let stopped = server.stop();
        let value = result?;
        stopped?;
        Ok(value)
    }

    /// Binds and starts the server on its own thread; returns once it listens.
    pub fn start() -> BenchResult<Loopback> {
        let counters = Arc::new(Counters::default());
        let control = Arc::new(Control::default());
        let shared = Arc::new(Shared {
            counters: counters.clone(),
            control: control.clone(),
        });
        let (ready, started) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("loopback-platform".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let data = web::Data::from(shared);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                            .route(PUSH_PATH, web::post().to(push))
                    })
                    .workers(1)
                    .backlog(1024)
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
            control,
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

    /// How the server behaves.
    pub fn control(&self) -> &Control {
        &self.control
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

/// A platform that accepts connections and reads requests but never answers: a drain
/// against it hangs until its request timeout. Stopped by [`Hung::stop`], which
/// closes every connection.
pub struct Hung {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    /// Request bytes read so far.
    read: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<std::net::TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Hung {
    /// Binds `127.0.0.1:0` and accepts on a thread of its own.
    pub fn start() -> BenchResult<Hung> {
        use std::io::Read;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let accepted = Arc::new(AtomicU64::new(0));
        let read = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let thread = {
            let (accepted, read, stop, streams) = (
                accepted.clone(),
                read.clone(),
                stop.clone(),
                streams.clone(),
            );
            std::thread::Builder::new()
                .name("hung-platform".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                let _ = stream.set_nonblocking(false);
                                if let Ok(copy) = stream.try_clone() {
                                    lock(&streams).push(copy);
                                }
                                let read = read.clone();
                                // Reads (and drops) whatever comes until the stream closes.
                                std::thread::spawn(move || {
                                    let mut stream = stream;
                                    let mut buf = [0u8; 16 * 1024];
                                    while let Ok(n) = stream.read(&mut buf) {
                                        if n == 0 {
                                            break;
                                        }
                                        read.fetch_add(n as u64, Ordering::SeqCst);
                                    }
                                });
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                })?
        };
        Ok(Hung {
            url,
            accepted,
            read,
            stop,
            streams,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Request bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every connection (the client sees a reset or EOF).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in lock(&self.streams).drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
