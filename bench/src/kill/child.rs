//! The drain child of the kill points ([`super`]): this binary re-run with the hidden
//! `--phase drain-child`, a real `SyncService` draining one state dir against the
//! parent's loopback platform; and how the parent seeds that state dir, starts a
//! child, signals it and waits for its exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agent_sync::messages::SyncPush;
use agent_sync::{SyncConfig, SyncService};
use agent_sync_actors::platform::{Token, TokenSource};
use serde_json::Value;

use super::Signal;
use crate::fixture;
use crate::options::Options;
use crate::support::{BenchResult, AGENT_ID, TOKEN};

/// Queues `n` host dispatches on `state` with an offline `SyncService`, one per entry.
pub async fn seed(state: &Path, ws: &Path, url: &str, n: usize) -> BenchResult<()> {
    let mut config = service_config(state, ws, url);
    config.tokens = TokenSource::Fixed(None);
    config.drain_on_start = false;
    let service = SyncService::start(config)?;
    let dispatches = (0..n)
        .map(|i| Value::Object(fixture::dispatch_object(i)))
        .collect();
    service
        .push(SyncPush {
            dispatches: Some(dispatches),
            ..Default::default()
        })
        .await?;
    let status = service.status().await?;
    service.stop().await;
    if status.queued_entries != n as u64 {
        return Err(format!(
            "resent_after_kill: seeded {} entries, expected {n}",
            status.queued_entries
        )
        .into());
    }
    Ok(())
}

/// The configuration the parent's seeding and every child use.
fn service_config(state: &Path, ws: &Path, url: &str) -> SyncConfig {
    let mut config = SyncConfig::new(ws, state);
    config.agent_id = AGENT_ID.into();
    config.tokens = TokenSource::Fixed(Token::new(TOKEN));
    config.platform.base_url = url.into();
    // One dispatch per entry, so every request is one entry.
    config.max_batch = 1;
    config.flush_interval = None;
    config.drain_on_start = true;
    config
}

/// Starts a drain child on `state` against `url` (which exits by itself once the
/// queue is empty when `exit_when_empty`).
pub fn spawn(exe: &Path, state: &Path, url: &str, exit_when_empty: bool) -> BenchResult<Child> {
    let mut command = Command::new(exe);
    command
        .args(["--phase", "drain-child", "--platform-url", url])
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if exit_when_empty {
        command.arg("--exit-when-empty");
    }
    Ok(command.spawn()?)
}

/// Sends `signal` to `child`.
pub fn send_signal(child: &mut Child, signal: Signal) -> BenchResult<()> {
    match signal {
        Signal::Kill => Ok(child.kill()?),
        Signal::Term => {
            // std has no SIGTERM; kill(1) is on every Linux.
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("kill -TERM {} failed ({status})", child.id()).into())
            }
        }
    }
}

/// Waits for `child` to exit; an error (and SIGKILL) after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> BenchResult<ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("a drain child did not exit within {} s", limit.as_secs()).into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// In the child (`--phase drain-child`): a `SyncService` draining the state dir
/// until SIGTERM (graceful stop, exit 0), SIGKILL, or, with `--exit-when-empty`, an
/// empty queue.
pub fn child(opts: &Options) -> BenchResult<()> {
    let url = opts
        .platform_url
        .clone()
        .ok_or("--phase drain-child needs --platform-url")?;
    let state: PathBuf = opts
        .state_dir
        .clone()
        .ok_or("--phase drain-child needs --state-dir")?;
    let exit_when_empty = opts.exit_when_empty;
    actix::System::new().block_on(async move {
        use actix_rt::signal::unix::{signal, SignalKind};
        use futures_util::future::{select, Either};
        // Before the service starts: a SIGTERM must never find the default action.
        let mut term = signal(SignalKind::terminate())?;
        let ws = state.with_file_name("no-workspaces");
        let service = SyncService::start(service_config(&state, &ws, &url))?;
        let why = {
            let terminated = std::pin::pin!(term.recv());
            let empty = std::pin::pin!(async {
                if !exit_when_empty {
                    std::future::pending::<()>().await;
                }
                loop {
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                    match service.status().await {
                        Ok(status) if status.queued_entries == 0 => return,
                        Ok(_) => {}
                        Err(e) => log::warn!("drain child: status failed: {e}"),
                    }
                }
            });
            match select(terminated, empty).await {
                Either::Left(_) => "SIGTERM",
                Either::Right(_) => "queue empty",
            }
        };
        log::info!("drain child: {why}; stopping");
        service.stop().await;
        Ok(())
    })
}
