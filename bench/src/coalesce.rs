//! drain_coalesced, drain_coalesced_20ms: many small host pushes, end to end.
//!
//! `--entries` host dispatches (10,000 by default), each in an `Enqueue` message of
//! its own, all sent at once to a Queue with the default caps (100 dispatches,
//! 512 KiB per entry) and an online Pusher, so drains start while the enqueues still
//! arrive and coalescing decides how many POSTs there are. The clock starts before
//! the first `Enqueue` is sent and stops when a `Drain` sent after the last
//! acknowledgement replies with the queue empty: from the first enqueue to the last
//! delivery (its outcome durably committed). The time until the last enqueue was
//! acknowledged is in the detail.
//!
//! Run twice, each time against a loopback platform of its own: answering at once
//! (`drain_coalesced`, dispatches/s) and answering every request 20 ms after it
//! arrived (`drain_coalesced_20ms`, seconds; one request per entry would need
//! 10,000 x 20 ms = 200 s). As context, the detail of `drain_coalesced` also gives a
//! drain alone: the same messages queued offline first, then one timed `Drain`.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync::messages::{Drain, QueueStatus};
use agent_sync_actors::queue::{DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES};

use crate::figures::Figure;
use crate::options::Options;
use crate::support::BenchResult;
use crate::support::{
    actor_options, emit, key_file_options, millis, platform, rate, start_actors, TOKEN,
};
use crate::support::{drain_all, enqueue_all, one_dispatch_enqueues};
use agent_sync_testkit::{LoopbackPlatform, Scripted};

/// What one run measured.
struct Run {
    /// First `Enqueue` sent to last delivery.
    total: Duration,
    /// First `Enqueue` sent to last `Enqueue` acknowledged.
    acked: Duration,
    /// Entries the receipts say were started.
    entries: usize,
    /// POSTs the platform received.
    posts: u64,
    /// Their average body.
    avg_body: u64,
}

async fn run(n: usize, state: &Path, ws: &Path, delay: Duration) -> BenchResult<Run> {
    let server = platform()?;
    server.set_default(Scripted::ok().delay(delay));
    let result = run_against(n, state, ws, &server).await;
    let stopped = server.stop_thread();
    let run = result?;
    stopped?;
    Ok(run)
}

async fn run_against(
    n: usize,
    state: &Path,
    ws: &Path,
    server: &LoopbackPlatform,
) -> BenchResult<Run> {
    let actors = start_actors(
        state,
        ws,
        &server.url(),
        Some(TOKEN),
        &actor_options(DEFAULT_MAX_BATCH),
    )?;
    let messages = one_dispatch_enqueues(n);
    let t = Instant::now();
    let receipt = enqueue_all(&actors, messages).await?;
    let entries = receipt.entries;
    let acked = t.elapsed();
    actors.pusher.send(Drain).await??;
    let total = t.elapsed();
    if receipt.dispatches != n {
        return Err(format!(
            "drain_coalesced: {} of {n} dispatches acknowledged",
            receipt.dispatches
        )
        .into());
    }
    let status = actors.queue.send(QueueStatus).await??;
    if status.entries != 0 || status.dispatches != 0 || status.dead_letters != 0 {
        return Err(format!(
            "drain_coalesced: after the drain {} entries ({} dispatches) are queued and {} \
             dead-lettered; expected none",
            status.entries, status.dispatches, status.dead_letters
        )
        .into());
    }
    let got = server.received();
    if got.requests != entries as u64 {
        return Err(format!(
            "drain_coalesced: {entries} entries were started but the platform received {} POSTs",
            got.requests
        )
        .into());
    }
    Ok(Run {
        total,
        acked,
        entries,
        posts: got.requests,
        avg_body: got.bytes / got.requests.max(1),
    })
}

/// Context: the same dispatches queued offline first, then drained alone (the clock
/// covers only the `Drain`). Returns the drain's time and the POSTs.
async fn drain_only(n: usize, work: &Path, ws: &Path) -> BenchResult<(Duration, u64)> {
    let server = platform()?;
    let key_file = work.join("coalesced-queued.key");
    let result = async {
        let actors = start_actors(
            &work.join("state-coalesced-queued"),
            ws,
            &server.url(),
            None,
            &key_file_options(DEFAULT_MAX_BATCH, &key_file),
        )?;
        enqueue_all(&actors, one_dispatch_enqueues(n)).await?;
        let (elapsed, _) = drain_all(&actors, &key_file, n).await?;
        Ok::<_, Box<dyn std::error::Error>>(elapsed)
    }
    .await;
    let posts = server.received().requests;
    let stopped = server.stop_thread();
    let elapsed = result?;
    stopped?;
    Ok((elapsed, posts))
}

/// drain_coalesced and drain_coalesced_20ms.
pub async fn coalesced(opts: &Options, work: &Path, out: &mut Vec<Figure>) -> BenchResult<()> {
    let n = opts.entries;
    let ws = work.join("no-workspaces");
    let fast = run(n, &work.join("state-coalesced"), &ws, Duration::ZERO).await?;
    let (queued, queued_posts) = drain_only(n, work, &ws).await?;
    let slow_delay = Duration::from_millis(20);
    let slow = run(n, &work.join("state-coalesced-20ms"), &ws, slow_delay).await?;
    let detail = |r: &Run, platform: &str| {
        format!(
            "{n} host dispatches, one Enqueue message each, all sent at once to an online \
             Pusher, default caps ({DEFAULT_MAX_BATCH} dispatches / {} KiB per entry); \
             timed from the first Enqueue to the last delivery, enqueue included: {:.1} ms; \
             last Enqueue acknowledged after {:.1} ms; {} entries = {} POSTs, average body \
             {} B; platform {platform}",
            DEFAULT_MAX_REQUEST_BYTES / 1024,
            millis(r.total),
            millis(r.acked),
            r.entries,
            r.posts,
            r.avg_body
        )
    };
    emit(
        out,
        Figure::new(
            "drain_coalesced",
            rate(n, fast.total),
            "/s",
            format!(
                "{}; context: the same {n} queued first (offline), then a Drain alone: {:.1} ms \
                 for {queued_posts} POSTs, {:.0}/s, enqueue not included",
                detail(&fast, "answering at once"),
                millis(queued),
                rate(n, queued)
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "drain_coalesced_20ms",
            slow.total.as_secs_f64(),
            "s",
            format!(
                "{}; one request per entry would need {n} x 20 ms = {:.0} s",
                detail(&slow, "answering each request 20 ms after it arrived"),
                n as f64 * 0.02
            ),
        ),
    );
    Ok(())
}
