//! `agent-sync run`: the daemon loop (design.md §8 and §12.6).
//!
//! At start: watch the tree (`--watch`, see [`agent_sync::watching`]), reap ghosts
//! (unless `--no-reap`: the whole tree, once), scan and push (a queue-only drain when
//! `--scan-interval 0`), pull (when `--pull-interval` is set). Then what changes is
//! scanned at once by the watcher's events; on every scan interval (the fallback
//! rescan: 10 minutes while watching, 60 s without a watcher) the workspaces known
//! running are reaped (pid liveness first, no file read unless a pid is gone), the tree
//! is scanned and pushed, and the watches are planned again when the plan is partial
//! or an hour old (a plan walks the whole tree; events keep it meanwhile); on every
//! pull interval,
//! pull. Between cycles the Queue's own timers drain entries whose backoff ends, so
//! the loop never polls the queue, and an idle daemon does nothing at all.
//!
//! SIGINT or SIGTERM ends the loop wherever it is; then the service stops gracefully
//! (R3): a ghost reap or scan in progress ends at its next workspace or batch (what it
//! queued stays), no new request starts, the one in flight runs until
//! `--shutdown-timeout`, its outcome is committed, and the process exits 0 with nothing
//! to send twice. A second signal meanwhile stops at once: the request is abandoned
//! and its entry stays queued.
//!
//! Without a token every cycle still runs (a scan finds nothing to queue and nothing
//! is sent); the Pusher and Puller read the token source again each time, so a key
//! provisioned later is used without a restart.
//!
//! systemd (`Type=notify`, through `sd-notify`; a no-op without `NOTIFY_SOCKET`):
//! `READY=1` once the store is open and the control socket serves (the service has
//! started), `STOPPING=1` at the first stop signal, and `WATCHDOG=1` every half
//! `WatchdogSec` while the actors answer (a hung service stops pinging and systemd
//! restarts it).

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use actix_rt::signal::unix::{signal, Signal, SignalKind};
use actix_rt::time::{sleep_until, Instant};
use agent_sync::actors::platform::TokenSource;
use agent_sync::actors::watch::{WatchConfig, WatchMode};
use agent_sync::actors::SyncError;
use agent_sync::messages::{ReadSyncState, SyncPull, SyncPush};
use agent_sync::watching::WatchOptions;
use agent_sync::{SyncConfig, SyncService};
use sd_notify::NotifyState;

use super::error::CliError;
use super::RunArgs;

/// How the service is closed once a command is done: gracefully, unless `run` got a
/// second stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Let the request in flight finish and commit (R3).
    Gracefully,
    /// A second stop signal: abandon it, its entry stays queued.
    AtOnce,
}

/// SIGTERM and SIGINT, registered before the service starts so none is missed.
pub struct StopSignals {
    /// `kill`, systemd, container runtimes.
    term: Signal,
    /// Ctrl-C.
    int: Signal,
}

impl StopSignals {
    /// Starts listening for both.
    pub fn register() -> Result<Self, CliError> {
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|error| CliError::Signal { name, error })
        };
        Ok(StopSignals {
            term: listen(SignalKind::terminate(), "SIGTERM")?,
            int: listen(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves with the name of the first stop signal received.
    async fn recv(&mut self) -> &'static str {
        std::future::poll_fn(|cx| {
            if self.term.poll_recv(cx).is_ready() {
                Poll::Ready("SIGTERM")
            } else if self.int.poll_recv(cx).is_ready() {
                Poll::Ready("SIGINT")
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// What the start line reports about the configuration (never the token itself).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where workspaces are scanned.
    pub workspace_root: PathBuf,
    /// The platform.
    pub api_url: String,
    /// Pushed and pulled as.
    pub agent_id: String,
    /// Where the token comes from.
    pub token: String,
    /// How the platform is reached: directly or through which proxy (never its
    /// credentials).
    pub proxy: String,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &SyncConfig) -> Self {
        let token = match &config.tokens {
            TokenSource::Fixed(Some(_)) => "from the environment".to_string(),
            TokenSource::Fixed(None) => "none".to_string(),
            TokenSource::KeyFile(path) => format!("key file {}", path.display()),
        };
        Settings {
            workspace_root: config.workspace_root.clone(),
            api_url: config.platform.base_url.clone(),
            agent_id: config.agent_id.clone(),
            token,
            proxy: config.platform.route().to_string(),
        }
    }
}

/// Tells systemd `states` (nothing without `NOTIFY_SOCKET`).
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("could not notify systemd: {e}");
    }
}

/// Pings the systemd watchdog every half `period` while the actors answer.
fn start_watchdog(service: &SyncService) -> Option<actix_rt::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let history = service.actors().history.clone();
    let every = (period / 2).max(Duration::from_millis(100));
    log::info!("systemd watchdog: pinging every {every:?}");
    Some(actix_rt::spawn(async move {
        loop {
            actix_rt::time::sleep(every).await;
            match actix_rt::time::timeout(every, history.send(ReadSyncState)).await {
                Ok(Ok(Ok(_))) => notify(&[NotifyState::Watchdog]),
                Ok(Ok(Err(e))) => {
                    log::warn!("watchdog: the state cannot be read ({e}); not pinging")
                }
                _ => log::warn!("watchdog: the actors did not answer; not pinging"),
            }
        }
    }))
}

/// Runs the daemon on `service` until a stop signal or a fatal error; after the first
/// signal, waits for the request in flight unless a second one comes.
pub async fn run(
    service: &SyncService,
    args: &RunArgs,
    tokens: TokenSource,
    settings: &Settings,
    mut signals: StopSignals,
) -> Result<Close, CliError> {
    let watch = start_watching(service, args);
    let scan_every = scan_interval(args, watch.is_some());
    log::info!(
        "agent-sync running: pid {}, state dir {}, workspace root {}, platform {} ({}), agent id {}, \
         token {}, watch {}, scan every {}, pull every {}, ghost reap {}, shutdown deadline {:?}, \
         control socket {}, metrics {}",
        std::process::id(),
        service.state_dir().display(),
        settings.workspace_root.display(),
        settings.api_url,
        settings.proxy,
        settings.agent_id,
        settings.token,
        watch.map_or_else(
            || "off".to_string(),
            |budget| format!("on (budget {budget} watches)")
        ),
        describe(scan_every),
        describe(args.pull_interval),
        if args.no_reap { "off" } else { "on" },
        args.shutdown_timeout,
        service
            .control_socket()
            .map_or_else(|| "off".to_string(), |p| p.display().to_string()),
        service.metrics_addr().map_or_else(
            || "socket only".to_string(),
            |a| format!("http://{a}/metrics")
        ),
    );
    notify(&[NotifyState::Ready, NotifyState::Status("syncing")]);
    let watchdog = start_watchdog(service);
    let close = stop_on_signal(service, args, scan_every, tokens, &mut signals).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    close
}

/// The loop until a signal, then the graceful (or, on a second signal, immediate)
/// stop.
async fn stop_on_signal(
    service: &SyncService,
    args: &RunArgs,
    scan_every: Duration,
    tokens: TokenSource,
    signals: &mut StopSignals,
) -> Result<Close, CliError> {
    let name = {
        let mut stop = pin!(signals.recv());
        let mut work = pin!(cycles(service, args, scan_every, tokens));
        // Whichever comes first; dropping `work` ends the cycle in progress (a drain
        // runs on in the Pusher until the graceful stop below).
        std::future::poll_fn(|cx| {
            if let Poll::Ready(name) = stop.as_mut().poll(cx) {
                return Poll::Ready(Ok(name));
            }
            work.as_mut().poll(cx).map(|r| r.map(|()| ""))
        })
        .await?
    };
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    log::info!(
        "{name} received; stopping after the request in flight (at most {:?}; a second signal stops at once)",
        args.shutdown_timeout
    );
    let mut again = pin!(signals.recv());
    let mut finish = pin!(service.finish_in_flight());
    let close = std::future::poll_fn(|cx| {
        if let Poll::Ready(second) = again.as_mut().poll(cx) {
            log::warn!("second {second}: stopping at once; the entry in flight stays queued");
            return Poll::Ready(Close::AtOnce);
        }
        finish.as_mut().poll(cx).map(|()| Close::Gracefully)
    })
    .await;
    if close == Close::Gracefully {
        log::info!("stopped");
    }
    Ok(close)
}

/// The fallback rescan when watching, unless `--scan-interval` says otherwise.
const WATCHED_SCAN_INTERVAL: Duration = Duration::from_secs(600);

/// The scan interval without a watcher, unless `--scan-interval` says otherwise.
const UNWATCHED_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// `--scan-interval`, else the default for whether a watcher runs.
fn scan_interval(args: &RunArgs, watching: bool) -> Duration {
    args.scan_interval.unwrap_or(if watching {
        WATCHED_SCAN_INTERVAL
    } else {
        UNWATCHED_SCAN_INTERVAL
    })
}

/// Starts the watcher `--watch` asks for; its budget while one runs. A watcher that
/// cannot start leaves the scan interval to pick work up (a warning when `on` asked
/// for it). `auto` does not watch a daemon that only drains (`--scan-interval 0`):
/// that one never scans on its own.
fn start_watching(service: &SyncService, args: &RunArgs) -> Option<usize> {
    let drain_only = args.scan_interval.is_some_and(|every| every.is_zero());
    let mode = match args.watch {
        WatchMode::Auto if drain_only => WatchMode::Off,
        mode => mode,
    };
    let options = WatchOptions {
        mode,
        config: WatchConfig::default(),
        reap: !args.no_reap,
    };
    match service.watch(options) {
        Ok(true) => Some(options.config.budget),
        Ok(false) => None,
        Err(e) if args.watch == WatchMode::On => {
            log::warn!(
                "cannot watch the workspace tree ({e}); only the scan interval picks work up"
            );
            None
        }
        Err(e) => {
            log::info!("not watching the workspace tree ({e}); the scan interval picks work up");
            None
        }
    }
}

fn describe(interval: Duration) -> String {
    if interval.is_zero() {
        "never".into()
    } else {
        format!("{interval:?}")
    }
}

/// The loop; returns only on a fatal error (the service stopped under us).
async fn cycles(
    service: &SyncService,
    args: &RunArgs,
    scan_every: Duration,
    tokens: TokenSource,
) -> Result<(), CliError> {
    let scan_every = Some(scan_every).filter(|d| !d.is_zero());
    let pull_every = Some(args.pull_interval).filter(|d| !d.is_zero());
    let mut online = None;
    let mut check_token = || {
        let now_online = tokens.read().is_some();
        if online != Some(now_online) {
            if now_online {
                log::info!("token found: syncing with the platform");
            } else {
                log::warn!("no token: running offline, nothing is sent until one is configured");
            }
            online = Some(now_online);
        }
    };

    check_token();
    scan_cycle(service, args, scan_every.is_none(), ReapScope::Tree).await?;
    if pull_every.is_some() {
        pull_cycle(service).await?;
    }
    let mut next_scan = scan_every.map(|every| Instant::now() + every);
    let mut next_pull = pull_every.map(|every| Instant::now() + every);
    loop {
        let Some(next) = next_scan.into_iter().chain(next_pull).min() else {
            // Scanning and pulling are off: the Queue's timers do all the work.
            return std::future::pending().await;
        };
        sleep_until(next).await;
        let now = Instant::now();
        check_token();
        if let (Some(at), Some(every)) = (next_scan, scan_every) {
            if at <= now {
                scan_cycle(service, args, false, ReapScope::Running).await?;
                next_scan = Some(Instant::now() + every);
            }
        }
        if let (Some(at), Some(every)) = (next_pull, pull_every) {
            if at <= now {
                pull_cycle(service).await?;
                next_pull = Some(Instant::now() + every);
            }
        }
    }
}

/// Which reap a cycle runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReapScope {
    /// Every workspace of the tree (at start: the host may have restarted).
    Tree,
    /// The workspaces the rescan cache knows to be running, pid liveness first.
    Running,
}

/// Reap (unless disabled), then scan and push (or only drain when `queue_only`), then
/// plan the watches again: at start always (the scan taught the cache what is not
/// terminal), later only when the plan is partial or an hour old.
async fn scan_cycle(
    service: &SyncService,
    args: &RunArgs,
    queue_only: bool,
    reap: ReapScope,
) -> Result<(), CliError> {
    if !args.no_reap {
        // The Scanner logs the reap: one summary line, each workspace at debug (a
        // host with 20,000 ghosts gets one line, not 20,000 names).
        let reaped = match reap {
            ReapScope::Tree => service.reap_ghosts().await,
            ReapScope::Running => service.reap_running().await,
        };
        if let Err(e) = reaped {
            return survivable(e);
        }
    }
    let push = SyncPush {
        queue_only,
        ..SyncPush::default()
    };
    match service.push(push).await {
        Ok(report) => log::debug!(
            "push cycle: {} delivered, {} queued",
            report.count,
            report.queued
        ),
        Err(e) => return survivable(e),
    }
    match (queue_only, reap) {
        (true, _) => {}
        // The first full scan taught the cache what is not terminal: plan on it.
        (false, ReapScope::Tree) => service.replan_watches(),
        // Events have kept the plan since; a new one walks the whole tree.
        (false, ReapScope::Running) => service.refresh_watches(),
    }
    Ok(())
}

async fn pull_cycle(service: &SyncService) -> Result<(), CliError> {
    match service.pull(SyncPull::default()).await {
        // The Puller logs each pull (received at info, the cache kept at warn).
        Ok(report) if report.from_cache => log::debug!(
            "pull cycle: platform not reached, {} cached context item(s) kept",
            report.count
        ),
        Ok(report) => log::debug!("pull cycle: {} context item(s) received", report.count),
        Err(e) => return survivable(e),
    }
    Ok(())
}

/// A store error is logged and retried next cycle (disk full may clear); a stopped
/// service ends the daemon.
fn survivable(e: SyncError) -> Result<(), CliError> {
    match e {
        SyncError::Stopped => Err(CliError::Sync(e)),
        other => {
            log::error!("{other}");
            Ok(())
        }
    }
}
