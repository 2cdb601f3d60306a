//! `agent-sync run`: the daemon loop (DESIGN 8 and 12.8).
//!
//! At start: reap ghosts (unless `--no-reap`), scan and push (a queue-only drain when
//! `--scan-interval 0`), pull (when `--pull-interval` is set). Then, on every scan
//! interval, reap and scan and push again; on every pull interval, pull. Between
//! cycles the Queue's own timers drain entries whose backoff ends, so the loop never
//! polls the queue.
//!
//! SIGINT or SIGTERM ends the loop wherever it is, even mid-request: the caller then
//! stops the service, which abandons an in-flight POST (its entry stays queued, R3)
//! and closes the database.
//!
//! Without a token every cycle still runs (a scan finds nothing to queue and nothing
//! is sent); the Pusher and Puller read the token source again each time, so a key
//! provisioned later is used without a restart.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use actix_rt::signal::unix::{signal, Signal, SignalKind};
use actix_rt::time::{sleep_until, Instant};
use agent_sync::actors::platform::TokenSource;
use agent_sync::actors::SyncError;
use agent_sync::messages::{SyncPull, SyncPush};
use agent_sync::SyncService;

use super::commands::CliError;
use super::RunArgs;

/// SIGTERM and SIGINT, registered before the first cycle so none is missed.
struct StopSignals {
    /// `kill`, systemd, container runtimes.
    term: Signal,
    /// Ctrl-C.
    int: Signal,
}

impl StopSignals {
    fn register() -> Result<Self, CliError> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| CliError::new(format!("cannot listen for {name}: {e}")))
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

/// Runs the daemon on `service` until a stop signal (`Ok`) or a fatal error.
pub async fn run(
    service: &SyncService,
    args: &RunArgs,
    tokens: TokenSource,
) -> Result<(), CliError> {
    let mut signals = StopSignals::register()?;
    log::info!(
        "agent-sync running: scan every {}, pull every {}, ghost reap {}",
        describe(args.scan_interval),
        describe(args.pull_interval),
        if args.no_reap { "off" } else { "on" }
    );
    let mut stop = pin!(signals.recv());
    let mut work = pin!(cycles(service, args, tokens));
    // Whichever comes first; dropping `work` abandons the cycle in progress.
    std::future::poll_fn(|cx| {
        if let Poll::Ready(name) = stop.as_mut().poll(cx) {
            log::info!("{name} received; stopping");
            return Poll::Ready(Ok(()));
        }
        work.as_mut().poll(cx)
    })
    .await
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
    tokens: TokenSource,
) -> Result<(), CliError> {
    let scan_every = Some(args.scan_interval).filter(|d| !d.is_zero());
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
    scan_cycle(service, args, scan_every.is_none()).await?;
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
                scan_cycle(service, args, false).await?;
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

/// Reap (unless disabled), then scan and push (or only drain when `queue_only`).
async fn scan_cycle(
    service: &SyncService,
    args: &RunArgs,
    queue_only: bool,
) -> Result<(), CliError> {
    if !args.no_reap {
        match service.reap_ghosts().await {
            Ok(report) if !report.reaped.is_empty() => log::info!(
                "reaped {} ghost workspace(s): {}",
                report.reaped.len(),
                report.reaped.join(", ")
            ),
            Ok(_) => {}
            Err(e) => return survivable(e),
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
    Ok(())
}

async fn pull_cycle(service: &SyncService) -> Result<(), CliError> {
    match service.pull(SyncPull::default()).await {
        Ok(report) if report.from_cache => log::info!(
            "pull: platform not reached, {} cached context item(s) kept",
            report.count
        ),
        Ok(report) => log::info!("pull: {} context item(s) received", report.count),
        Err(e) => return survivable(e),
    }
    Ok(())
}

/// A store error is logged and retried next cycle (disk full may clear); a stopped
/// service ends the daemon.
fn survivable(e: SyncError) -> Result<(), CliError> {
    match e {
        SyncError::Stopped => Err(CliError::new(e.to_string())),
        other => {
            log::error!("{other}");
            Ok(())
        }
    }
}
