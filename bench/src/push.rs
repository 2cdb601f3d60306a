//! enqueue, post_loop, drain: the Queue and the Pusher against the loopback
//! platform, and a plain awc POST loop as the limit of one request at a time.
//!
//! `drain` runs with `max_batch` 1, so every entry is one POST and one durable
//! commit: the per-request cost of the one-in-flight design, kept as context (no
//! target; the old `drain_ratio` target rewarded re-sending after a crash and is
//! retired). The drain as configured, with coalescing, is the `coalesce` phase.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync::messages::QueueStatus;
use agent_sync_actors::queue::DEFAULT_MAX_BATCH;

use crate::figures::Figure;
use crate::fixture;
use crate::options::Options;
use crate::support::BenchResult;
use crate::support::{
    actor_options, drain_all, emit, enqueue_all, host_enqueue, key_file_options, millis,
    one_dispatch_enqueues, rate, start_actors, AGENT_ID, TOKEN,
};
use agent_sync_testkit::{LoopbackPlatform, PUSH_PATH};

/// Untimed POSTs before the POST loop (connection set up, server warm).
const POST_WARMUP: usize = 100;

/// enqueue: one `Enqueue` message per host dispatch, all in flight at once.
pub async fn enqueue(
    opts: &Options,
    work: &Path,
    url: &str,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let n = opts.entries;
    // Offline: a token would make the Pusher drain while we enqueue.
    let actors = start_actors(
        &work.join("state-enqueue"),
        &work.join("no-workspaces"),
        url,
        None,
        &actor_options(DEFAULT_MAX_BATCH),
    )?;
    let messages = one_dispatch_enqueues(n);
    let t = Instant::now();
    let receipt = enqueue_all(&actors, messages).await?;
    let elapsed = t.elapsed();
    let queued = actors.queue.send(QueueStatus).await??;
    if receipt.dispatches != n
        || queued.dispatches != n as u64
        || queued.entries != receipt.entries as u64
    {
        return Err(format!(
            "enqueue acknowledged {} dispatches in {} entries and the queue holds {} in {}; \
             expected {n} dispatches",
            receipt.dispatches, receipt.entries, queued.dispatches, queued.entries
        )
        .into());
    }
    emit(
        out,
        Figure::new(
            "enqueue",
            rate(n, elapsed),
            "/s",
            format!(
                "{n} Enqueue messages of 1 host dispatch sent at once, {:.1} ms until all were \
                 acknowledged (durable); coalesced into {} entries; offline, so no drain ran \
                 meanwhile",
                millis(elapsed),
                receipt.entries
            ),
        ),
    );
    Ok(())
}

/// post_loop, drain (context figures, no target).
///
/// The POST loop runs right before and right after the drain and the faster of the
/// two is the limit: a noisy machine then errs against the drain, not for it.
pub async fn drain(
    opts: &Options,
    work: &Path,
    server: &LoopbackPlatform,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let n = opts.entries;
    let post_before = post_loop(n, &server.url(), server).await?;

    // The token comes from a key file written only once everything is queued, so
    // the wake-ups of the enqueue find no token and the timed drain does it all.
    let key_file = work.join("drain.key");
    let actors = start_actors(
        &work.join("state-drain"),
        &work.join("no-workspaces"),
        &server.url(),
        None,
        &key_file_options(1, &key_file),
    )?;
    let dispatches = (0..n).map(fixture::dispatch).collect();
    let entries = enqueue_all(&actors, vec![host_enqueue(dispatches)])
        .await?
        .entries;
    if entries != n {
        return Err(format!("queued {entries} entries for the drain, expected {n}").into());
    }
    let before = server.received();
    let (elapsed, report) = drain_all(&actors, &key_file, n).await?;
    let got = server.received().since(before);
    if got.requests != n as u64 {
        return Err(format!(
            "the server received {} pushes during the drain, expected {n}",
            got.requests
        )
        .into());
    }
    let drain_rate = rate(n, elapsed);
    let post_after = post_loop(n, &server.url(), server).await?;
    let post = if post_after.rate > post_before.rate {
        &post_after
    } else {
        &post_before
    };
    emit(
        out,
        Figure::new(
            "post_loop",
            post.rate,
            "/s",
            format!(
                "{n} sequential awc POSTs to the same server, same headers, average body {} B, \
                 {:.1} ms, after {POST_WARMUP} untimed; faster of the loops before ({:.0}/s) \
                 and after ({:.0}/s) the drain",
                post.avg_body,
                millis(post.elapsed),
                post_before.rate,
                post_after.rate
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "drain",
            drain_rate,
            "/s",
            format!(
                "{n} queued entries of 1 dispatch (max_batch 1: one POST and one durable \
                 commit each, one request in flight) drained by one Drain to the Pusher in \
                 {:.1} ms; reply count {}, server received {}, average body {} B; {:.2} x \
                 post_loop; context, no target",
                millis(elapsed),
                report.count,
                got.requests,
                got.bytes / got.requests.max(1),
                drain_rate / post.rate.max(1e-9)
            ),
        ),
    );
    Ok(())
}

/// What the plain POST loop measured.
struct PostLoop {
    /// POSTs per second.
    rate: f64,
    /// The timed loop's length.
    elapsed: Duration,
    /// Average request body, bytes.
    avg_body: u64,
}

/// `n` sequential awc POSTs with the drain's headers and body sizes.
async fn post_loop(n: usize, url: &str, server: &LoopbackPlatform) -> BenchResult<PostLoop> {
    let bodies = (0..n)
        .map(|i| {
            serde_json::to_vec(&serde_json::json!({
                "agent_id": AGENT_ID,
                "dispatches": [fixture::dispatch(i)],
            }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Built as `HttpPlatform` builds its client.
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(Duration::from_secs(5)))
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish();
    let endpoint = format!("{url}{PUSH_PATH}");
    let post = |i: usize, body: Vec<u8>| {
        let send = client
            .post(&endpoint)
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .insert_header(("Accept", "application/json"))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Idempotency-Key", format!("bench-post-{i}")))
            .send_body(body);
        async move {
            let mut response = send
                .await
                .map_err(|e| format!("post_loop request {i}: {e}"))?;
            let status = response.status();
            response
                .body()
                .limit(64 * 1024)
                .await
                .map_err(|e| format!("post_loop response {i}: {e}"))?;
            if !status.is_success() {
                return Err(format!("post_loop request {i}: HTTP {status}"));
            }
            Ok(())
        }
    };
    for (i, body) in bodies.iter().take(POST_WARMUP).enumerate() {
        post(i, body.clone()).await?;
    }
    let before = server.received();
    let t = Instant::now();
    for (i, body) in bodies.into_iter().enumerate() {
        post(i, body).await?;
    }
    let elapsed = t.elapsed();
    let got = server.received().since(before);
    if got.requests != n as u64 {
        return Err(format!("post_loop: server received {}, expected {n}", got.requests).into());
    }
    Ok(PostLoop {
        rate: rate(n, elapsed),
        elapsed,
        avg_body: got.bytes / got.requests.max(1),
    })
}
