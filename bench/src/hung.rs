//! durable_while_hung: a host push is durable at once, even while a drain hangs.
//!
//! The platform is testkit's [`Raw`] server on 127.0.0.1, which accepts, reads and
//! never answers ([`Reply::Silence`]); the actors' request timeout is 10 minutes, so
//! the drain that
//! one queued dispatch starts really hangs. Once the listener has read that request,
//! each round sends a host `SyncPush` with `dispatches` to the Pusher (its reply waits
//! for the drain that follows, so it is not awaited) and polls `QueueStatus` every
//! millisecond until the queue counts the round's dispatches. `QueueStatus` commits
//! whatever enqueue is pending before it counts, so a counted dispatch is on disk.
//! The figure is the slowest round; the drain is checked to be still hung (one
//! connection, no answer) after the last round.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync::messages::{QueueStatus, SyncPush};
use agent_sync_actors::queue::DEFAULT_MAX_BATCH;
use agent_sync_testkit::{self as testkit, Raw, Reply};
use serde_json::Value;

use crate::figures::Figure;
use crate::fixture;
use crate::support::BenchResult;
use crate::support::{actor_options, emit, millis, start_actors, TOKEN};
use crate::support::{enqueue_all, host_enqueue};

/// Timed pushes.
const ROUNDS: usize = 20;
/// Dispatches per push.
const DISPATCHES_PER_PUSH: usize = 10;
/// A round that takes longer is an error, not a figure.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

/// durable_while_hung.
pub async fn durable_while_hung(work: &Path, out: &mut Vec<Figure>) -> BenchResult<()> {
    let hung = Raw::start(|_, _| Reply::Silence);
    let result = measure(work, &hung).await;
    // Stops it: every connection is closed (the client sees EOF).
    drop(hung);
    emit(out, result?);
    Ok(())
}

async fn measure(work: &Path, hung: &Raw) -> BenchResult<Figure> {
    let opts = testkit::Options {
        request_timeout: Duration::from_secs(600),
        // A lease outlives its request, as `SyncConfig` sets it.
        lease_timeout: Duration::from_secs(1_300),
        ..actor_options(DEFAULT_MAX_BATCH)
    };
    let actors = start_actors(
        &work.join("state-hung"),
        &work.join("no-workspaces"),
        &hung.url(),
        Some(TOKEN),
        &opts,
    )?;
    // One queued dispatch: its enqueue wakes the online Pusher, whose drain hangs.
    enqueue_all(&actors, vec![host_enqueue(vec![fixture::dispatch(0)])]).await?;
    let waited = Instant::now();
    while hung.log().is_empty() {
        if waited.elapsed() > ROUND_LIMIT {
            return Err("durable_while_hung: the drain never sent its request".into());
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the request settle into its wait.
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    let hung_since = Instant::now();
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut expected = actors.queue.send(QueueStatus).await??.dispatches;
    for round in 0..ROUNDS {
        let dispatches: Vec<Value> = (0..DISPATCHES_PER_PUSH)
            .map(|i| {
                Value::Object(fixture::dispatch_object(
                    1 + round * DISPATCHES_PER_PUSH + i,
                ))
            })
            .collect();
        expected += DISPATCHES_PER_PUSH as u64;
        let t = Instant::now();
        // Queued in the mailbox now; the reply waits for a drain, so it is awaited
        // elsewhere (dropping it would cancel the push).
        let reply = actors.pusher.send(SyncPush {
            dispatches: Some(dispatches),
            ..Default::default()
        });
        actix_rt::spawn(async move {
            let _ = reply.await;
        });
        loop {
            let status = actors.queue.send(QueueStatus).await??;
            if status.dispatches >= expected {
                break;
            }
            if t.elapsed() > ROUND_LIMIT {
                return Err(format!(
                    "durable_while_hung: round {round}: {} of {expected} dispatches durable \
                     after {} s",
                    status.dispatches,
                    ROUND_LIMIT.as_secs()
                )
                .into());
            }
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        rounds.push(t.elapsed());
    }
    if hung.connections() != 1 {
        return Err(format!(
            "durable_while_hung: the platform accepted {} connections, expected the one hung \
             request",
            hung.connections()
        )
        .into());
    }
    let mut sorted = rounds.clone();
    sorted.sort();
    let worst = sorted.last().copied().unwrap_or_default();
    Ok(Figure::new(
        "durable_while_hung",
        millis(worst),
        "ms",
        format!(
            "slowest of {ROUNDS} host SyncPush of {DISPATCHES_PER_PUSH} dispatches each, from \
             the send to QueueStatus counting them (counted = committed durably), polled \
             every 1 ms, while a drain's POST hung on a listener that never answers \
             (request timeout 600 s; still hung after {:.1} s, 1 connection); median {:.1} ms, \
             fastest {:.1} ms",
            hung_since.elapsed().as_secs_f64(),
            millis(sorted[sorted.len() / 2]),
            millis(sorted[0])
        ),
    ))
}
