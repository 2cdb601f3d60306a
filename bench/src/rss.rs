//! peak_rss: the sync subsystem's peak resident set while draining a large queue.
//!
//! Measured in a child process (this binary re-run with the hidden `--phase rss`),
//! so the figure holds the actors, redb and the awc client only: not the fixture,
//! the earlier phases or the loopback server, which stays in the parent.
//!
//! The child enqueues, reads `VmHWM` (the peak so far: the enqueue's), resets the peak
//! by writing `5` to `/proc/self/clear_refs` (Linux >= 4.0), drains, and reads
//! `VmHWM` again: the peak while draining. Where the reset is refused, the figure is
//! the peak over the child's whole life, and the detail says so.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::figures::{mib, proc_status_kib, Figure};
use crate::options::Options;
use crate::support::BenchResult;
use crate::support::{drain_all, enqueue_in_rounds, key_file_options, start_actors};
use agent_sync_testkit::LoopbackPlatform;

/// Dispatches per `Enqueue` message of the child.
const DISPATCHES_PER_MESSAGE: usize = 10;
/// `Enqueue` messages in flight at once.
const MESSAGES_PER_ROUND: usize = 100;
/// Prefix of the child's one result line.
const RESULT_PREFIX: &str = "rss-child";

/// In the parent: runs the child against `server` and builds the figure.
pub fn measure(opts: &Options, server: &LoopbackPlatform) -> BenchResult<Figure> {
    let n = opts.rss_entries;
    let exe = std::env::current_exe()?;
    let before = server.received();
    let output = Command::new(exe)
        .args(["--phase", "rss", "--rss-entries", &n.to_string()])
        .args(["--platform-url", &server.url()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("the peak_rss child process failed ({})", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .ok_or("the peak_rss child printed no result line")?;
    let field = |name: &str| -> BenchResult<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("the peak_rss child did not report {name}").into())
    };
    let got = server.received().since(before);
    if got.requests != n as u64 || field("drained")? != n as u64 {
        return Err(format!(
            "peak_rss: the child drained {} and the server received {}, expected {n}",
            field("drained")?,
            got.requests
        )
        .into());
    }
    let drain_ms = field("drain_ms")?.max(1);
    let peak = if field("reset")? == 1 {
        format!(
            "peak reset via /proc/self/clear_refs once queued ({:.1} MiB right after)",
            mib(field("hwm_reset_kib")?)
        )
    } else {
        "peak reset refused by the kernel: this is the peak over the whole child".into()
    };
    Ok(Figure::new(
        "peak_rss",
        mib(field("hwm_drained_kib")?),
        "MiB",
        format!(
            "VmHWM of a child process while draining {n} queued entries of 1 dispatch; VmHWM \
             {:.1} MiB at start, {:.1} MiB before the drain (after queueing them as {} Enqueue \
             messages of {DISPATCHES_PER_MESSAGE}, {MESSAGES_PER_ROUND} in flight), {:.1} MiB \
             after; {peak}; VmRSS {:.1} MiB at the end; drained at {}/s",
            mib(field("hwm_start_kib")?),
            mib(field("hwm_queued_kib")?),
            n.div_ceil(DISPATCHES_PER_MESSAGE),
            mib(field("hwm_drained_kib")?),
            mib(field("rss_end_kib")?),
            n as u64 * 1000 / drain_ms,
        ),
    ))
}

/// In the child: its own System, enqueue, drain, one result line on stdout.
pub fn child(opts: &Options) -> BenchResult<()> {
    let url = opts
        .platform_url
        .clone()
        .ok_or("--phase rss needs --platform-url")?;
    actix::System::new().block_on(child_phase(opts.rss_entries, &url))
}

async fn child_phase(n: usize, url: &str) -> BenchResult<()> {
    let work = tempfile::Builder::new()
        .prefix("agent-sync-bench-rss-")
        .tempdir()?;
    let hwm_start = proc_status_kib("VmHWM")?;
    let key_file = work.path().join("drain.key");
    let actors = start_actors(
        &work.path().join("state"),
        &work.path().join("no-workspaces"),
        url,
        None,
        &key_file_options(1, &key_file),
    )?;
    let entries = enqueue_in_rounds(&actors, n, DISPATCHES_PER_MESSAGE, MESSAGES_PER_ROUND)
        .await?
        .entries;
    if entries != n {
        return Err(format!("queued {entries} entries, expected {n}").into());
    }
    let hwm_queued = proc_status_kib("VmHWM")?;
    let reset = u8::from(std::fs::write("/proc/self/clear_refs", "5").is_ok());
    let hwm_reset = proc_status_kib("VmHWM")?;
    let (elapsed, report) = drain_all(&actors, &key_file, n).await?;
    let hwm_drained = proc_status_kib("VmHWM")?;
    let rss_end = proc_status_kib("VmRSS")?;
    println!(
        "{RESULT_PREFIX} drained={} drain_ms={} hwm_start_kib={hwm_start} \
         hwm_queued_kib={hwm_queued} reset={reset} hwm_reset_kib={hwm_reset} \
         hwm_drained_kib={hwm_drained} rss_end_kib={rss_end}",
        report.count,
        elapsed.max(Duration::from_millis(1)).as_millis()
    );
    Ok(())
}
