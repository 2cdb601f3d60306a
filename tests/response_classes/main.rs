//! Response classes (design.md §5, §6 P10): what the Queue decides for each answer of
//! the platform (delivered, transient with backoff and `Retry-After`, unauthorized,
//! too large and split, refused and dead-lettered), the idempotency key across
//! retries and restarts, and the backoff timers with their jitter.
//!
//! Wall-clock checks use windows around the call (`before`/`after`); backoff
//! schedules are checked under paused tokio time with the in-process
//! [`ScriptedPlatform`], never with real sockets (design.md §11).
//!
//! | module      | the answers its tests give                                        |
//! |-------------|-------------------------------------------------------------------|
//! | [`kept`]    | 5xx, 408, 429, `Retry-After`, timeouts, 401/403: kept, backing off |
//! | [`refused`] | 400 and other 4xx, 501: dead-lettered; listing and requeueing     |
//! | [`split`]   | 413: split in halves under derived keys                           |
//! | [`retries`] | the idempotency key across retries and restarts; backoff timers   |

mod kept;
mod refused;
mod retries;
mod split;

use agent_sync_actors::entry::{DeadLetter, QueueEntry};
use agent_sync_actors::messages::*;
use agent_sync_actors::sync_record::SyncRecord;
use agent_sync_actors::time::Timestamp;
use agent_sync_testkit::*;

/// Starts fresh actors against a fresh server answering `status` once; pushes one
/// host dispatch; returns what is left queued and dead-lettered and the requests.
async fn one_push_answered_with(
    status: u16,
) -> (
    PushReport,
    Vec<QueueEntry>,
    Vec<DeadLetter>,
    Vec<SyncRecord>,
    usize,
    (Timestamp, Timestamp),
) {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(status).body(format!("answer {status}")));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    let before = now();
    let report = push_host(&actors, vec![host("x")]).await;
    let after = now();
    let result = (
        report,
        queue(&actors).await,
        dead_letters(&actors).await,
        records(&actors, None).await,
        server.pushes().len(),
        (before, after),
    );
    server.stop().await;
    result
}
