//! Starting a [`SyncService`]: the state opened (or why not), the control socket and
//! the metrics address bound, the actors and the control servers started on a new
//! arbiter.

use std::net::TcpListener;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agent_sync_actors::metrics::Metrics;
use agent_sync_actors::platform::{HttpPlatform, Platform, PlatformConfig, TokenSource};
use agent_sync_actors::time::Clock;
use agent_sync_actors::{OpenError, PlatformConfigError, Store, SyncActors};
use prometheus_client::registry::Registry;

use super::{SyncService, WatchSetup};
use crate::config::SyncConfig;
use crate::control::{self, BindError, ControlServers, ControlState, HealthWriter, Listeners};

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The API URL is unusable or insecure.
    Platform(PlatformConfigError),
    /// The state could not be opened (corrupt, unreadable).
    Open(OpenError),
    /// Another process holds the state (R2).
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// The holder, when its control socket or the lock table tells.
        pid: Option<u32>,
    },
    /// The control socket or the metrics address could not be served.
    Control(String),
    /// The service arbiter did not come up.
    Arbiter,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Platform(e) => e.fmt(f),
            StartError::Open(e) => e.fmt(f),
            StartError::InUse { dir, pid } => {
                write!(
                    f,
                    "state in {} is in use by another agent-sync process",
                    dir.display()
                )?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                Ok(())
            }
            StartError::Control(message) => f.write_str(message),
            StartError::Arbiter => f.write_str("the sync arbiter thread did not start; retry"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::InUse { dir } => {
                let pid = control::holder_pid(&dir);
                StartError::InUse { dir, pid }
            }
            other => StartError::Open(other),
        }
    }
}

impl From<PlatformConfigError> for StartError {
    fn from(e: PlatformConfigError) -> Self {
        StartError::Platform(e)
    }
}

impl SyncService {
    /// Validates the config, opens the state (failing fast if another process holds
    /// it, R2, naming its pid), binds the control socket (replacing a stale one, never
    /// a live one) and the metrics address if set, and starts the actors and the
    /// control servers from a new arbiter. Must run inside a `System`.
    pub fn start(config: SyncConfig) -> Result<SyncService, StartError> {
        Self::start_with(config, |platform| Rc::new(HttpPlatform::new(platform)))
    }

    /// [`start`](Self::start) with another platform client (built on the service
    /// arbiter, since clients are `!Send`).
    pub fn start_with(
        config: SyncConfig,
        platform: impl FnOnce(PlatformConfig) -> Rc<dyn Platform> + Send + 'static,
    ) -> Result<SyncService, StartError> {
        config.platform.validate()?;
        let store = Store::open(&config.state_dir)?;
        let watch_setup = WatchSetup {
            root: config.workspace_root.clone(),
            store: store.clone(),
            tokens: config.tokens.clone(),
            fleet_node_id: config.fleet_node_id,
        };
        let bound = if config.control_socket {
            match control::socket::bind(&config.state_dir) {
                Ok(bound) => Some(bound),
                // A live holder is a real conflict: never replaced.
                Err(BindError::Held { pid, .. }) => {
                    return Err(StartError::InUse {
                        dir: config.state_dir.clone(),
                        pid,
                    })
                }
                // Anything else only costs the socket, not the syncing.
                Err(e) => {
                    log::warn!("running without a control socket: {e}");
                    None
                }
            }
        } else {
            None
        };
        let (socket_listener, socket_file) = match bound {
            Some(bound) => (Some(bound.listener), Some(bound.file)),
            None => (None, None),
        };
        let tcp = match config.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
                if let Some(file) = &socket_file {
                    file.remove();
                }
                StartError::Control(format!("cannot serve metrics on {addr}: {e}"))
            })?),
            None => None,
        };
        let metrics_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(addr) = metrics_addr.filter(|a| !a.ip().is_loopback()) {
            log::warn!(
                "serving /metrics and /health on {addr}, which is not a loopback address: \
                 anyone who can reach it can read them"
            );
        }
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let registry = Arc::new(registry);
        let stopping = Arc::new(AtomicBool::new(false));

        let arbiter = Arbiter::new();
        let (sender, receiver) = std::sync::mpsc::channel();
        let actors_config = config.actors();
        let platform_config = config.platform.clone();
        let agent_id = config.agent_id.clone();
        let (server_registry, server_stopping) = (registry.clone(), stopping.clone());
        arbiter.spawn_fn(move || {
            let platform = platform(platform_config);
            let health_writer = HealthWriter::new(store.clone()).start();
            let actors = SyncActors::start_with_metrics(
                store,
                actors_config,
                platform,
                Clock::system(),
                metrics,
            );
            let servers = if socket_listener.is_some() || tcp.is_some() {
                let state = ControlState {
                    actors: actors.clone(),
                    agent_id,
                    registry: server_registry,
                    health_writer,
                    stopping: server_stopping,
                    pid: std::process::id(),
                };
                let listeners = Listeners {
                    socket: socket_listener,
                    tcp,
                };
                control::start_servers(state, listeners)
            } else {
                Ok(Vec::new())
            };
            let _ = sender.send((actors, servers));
        });
        let fail = |arbiter: Arbiter, error: StartError| {
            arbiter.stop();
            let _ = arbiter.join();
            if let Some(file) = &socket_file {
                file.remove();
            }
            Err(error)
        };
        let (actors, servers) = match receiver.recv_timeout(Duration::from_secs(10)) {
            Ok(started) => started,
            Err(_) => return fail(arbiter, StartError::Arbiter),
        };
        let handles = match servers {
            Ok(handles) => handles,
            Err(e) => {
                let message = format!("cannot serve the control API: {e}");
                return fail(arbiter, StartError::Control(message));
            }
        };
        let socket = socket_file.as_ref().map(|f| f.path.clone());
        if let Some(path) = &socket {
            log::debug!("control API on {}", path.display());
        }
        let control = (!handles.is_empty()).then(|| ControlServers {
            handles,
            socket: socket_file,
        });
        // Said once, by a service meant to keep syncing on its own (a one-shot CLI
        // command, which neither drains at start nor flushes, states no token itself).
        let keeps_syncing = config.drain_on_start || config.flush_interval.is_some();
        if keeps_syncing && matches!(config.tokens, TokenSource::Fixed(None)) {
            log::warn!(
                "no token configured: agent-sync is offline (host dispatches are queued, \
                 scanned workspaces stay on disk, nothing is pushed or pulled)"
            );
        }
        Ok(SyncService {
            actors,
            arbiter: Some(arbiter),
            agent_id: config.agent_id,
            state_dir: config.state_dir,
            shutdown_timeout: config.shutdown_timeout,
            control,
            socket,
            metrics_addr,
            registry,
            stopping,
            watch_setup,
            watcher: std::sync::Mutex::new(None),
        })
    }
}
