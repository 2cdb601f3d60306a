//! One fact, one commit (design.md §4.5): whether a scanned (id, fingerprint) is
//! queued, dead-lettered or delivered is read and changed by the Queue in the commit
//! that inserts or records it, so no overlap of a scan, a host push and a delivery
//! can queue a delivered dispatch again, lose a version, or move the Ledger back.
//!
//! - a scan whose questions (`NotQueued`, `Unsynced`) were answered before another
//!   path queued and delivered (or refused) the same dispatch queues nothing;
//! - two versions of one id in one entry are both queued at their positions, and
//!   their delivery leaves the newer one in the Ledger and no key behind;
//! - a split part marks exactly the scanned keys it carried, by position, never by id;
//! - delivering a requeued older dead letter never moves the Ledger back;
//! - a stop that arrives while the lease is being taken sends nothing and gives the
//!   lease back;
//! - after a restart a never-leased tail that is not the head is reopened; the head
//!   and an attempted tail are not.
//!
//! The tests play the Scanner (they ask the Queue and the Ledger, then enqueue) and,
//! where a test looks between two outcomes, the Pusher (`LeaseNext`, then `Report`):
//! the Queue's decisions are the subject. A fingerprint is `updated_at#runs`; the
//! three versions used are ordered by time, then by runs as numbers (`#9` < `#10`,
//! which text order would get wrong).
//!
//! The first point is proved in [`overlaps`], the next three in [`marks`], the last two
//! in [`leases`]; the helpers below are shared by them.

mod leases;
mod marks;
mod overlaps;

use std::sync::Arc;

use agent_sync_actors::dispatch::{DispatchKey, ScannedDispatch};
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::messages::*;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;

/// The oldest version of a dispatch.
const F1: &str = "2026-04-14T12:00:00Z#9";
/// Newer than [`F1`]: the same time, more runs.
const F2: &str = "2026-04-14T12:00:00Z#10";
/// Newer than [`F2`]: a later time, fewer runs.
const F3: &str = "2026-04-15T08:00:00Z#1";

/// The scanned dispatch `id` at `fingerprint`.
fn scanned(id: &str, fingerprint: &str) -> ScannedDispatch {
    ScannedDispatch {
        id: id.to_string(),
        fingerprint: fingerprint.to_string(),
        record: dispatch(id),
    }
}

/// `(id, fingerprint)` pairs as scanned dispatches.
fn candidates(keys: &[(&str, &str)]) -> Vec<ScannedDispatch> {
    keys.iter().map(|(id, f)| scanned(id, f)).collect()
}

/// `(id, fingerprint)` pairs as the keys a scan asks about.
fn keys_of(keys: &[(&str, &str)]) -> Vec<DispatchKey> {
    keys.iter()
        .map(|(id, f)| DispatchKey {
            id: id.to_string(),
            fingerprint: f.to_string(),
        })
        .collect()
}

/// `(id, fingerprint)` of each key.
fn pairs(keys: &[DispatchKey]) -> Vec<(String, String)> {
    keys.iter()
        .map(|d| (d.id.clone(), d.fingerprint.clone()))
        .collect()
}

/// `keys` as owned pairs, for comparing with [`pairs`].
fn owned(keys: &[(&str, &str)]) -> Vec<(String, String)> {
    keys.iter()
        .map(|(id, f)| (id.to_string(), f.to_string()))
        .collect()
}

/// A scan's enqueue of these (id, fingerprint) pairs, in one message.
async fn enqueue_scanned(actors: &SyncActors, keys: &[(&str, &str)]) -> EnqueueReceipt {
    actors
        .queue
        .send(Enqueue {
            agent_id: AGENT_ID.into(),
            fleet_node_id: None,
            batch: EnqueueBatch::Scanned(candidates(keys)),
        })
        .await
        .expect("the queue is running")
        .expect("enqueue")
}

/// The scan's question to the Queue: which of `keys` no entry or dead letter holds.
async fn not_queued(actors: &SyncActors, keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let fresh = actors
        .queue
        .send(NotQueued {
            candidates: keys_of(keys),
        })
        .await
        .expect("the queue is running")
        .expect("NotQueued");
    pairs(&fresh)
}

/// The scan's question to the Ledger: which of `keys` it does not cover.
async fn unsynced(actors: &SyncActors, keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let fresh = actors
        .ledger
        .send(Unsynced {
            candidates: keys_of(keys),
        })
        .await
        .expect("the ledger is running")
        .expect("Unsynced");
    pairs(&fresh)
}

/// Which of the versions [`F1`], [`F2`], [`F3`] of `id` the Ledger covers: `[]` when
/// it has none, `[F1, F2]` when it holds `F2`.
async fn ledger_covers(actors: &SyncActors, id: &str) -> Vec<&'static str> {
    let fresh = unsynced(actors, &[(id, F1), (id, F2), (id, F3)]).await;
    [F1, F2, F3]
        .into_iter()
        .filter(|f| !fresh.iter().any(|(_, g)| g == f))
        .collect()
}

/// `LeaseNext`, which must hand out the head.
async fn lease(actors: &SyncActors) -> Arc<QueueEntry> {
    match actors
        .queue
        .send(LeaseNext)
        .await
        .expect("the queue is running")
        .expect("lease")
    {
        Lease::Ready(entry) => entry,
        other => panic!("expected the head to be leased, got {other:?}"),
    }
}

/// `Report`s `outcome` for the leased entry `seq`: the Queue's decision.
async fn report(actors: &SyncActors, seq: u64, outcome: DeliveryOutcome) -> Decision {
    actors
        .queue
        .send(Report {
            seq,
            outcome,
            payload_size: 0,
        })
        .await
        .expect("the queue is running")
        .expect("the outcome is recorded")
}

/// A 2xx.
fn ok() -> DeliveryOutcome {
    DeliveryOutcome::Delivered { payload_size: 0 }
}

/// Leases the head and reports a 2xx: what a delivery of it does.
async fn deliver_head(actors: &SyncActors) -> Decision {
    let entry = lease(actors).await;
    report(actors, entry.seq, ok()).await
}

/// Offline actors (token from `<state>/key`, absent until [`go_online`]), so a test
/// decides when anything is sent.
fn start_keyed(dirs: &Dirs, url: &str) -> SyncActors {
    let opts = Options {
        key_file: Some(dirs.state().join("key")),
        ..Options::no_drain()
    };
    start_actors_with(dirs.root(), dirs.state(), url, None, &opts).0
}

/// Writes the key file: the actors of [`start_keyed`] send from their next attempt.
fn go_online(dirs: &Dirs) {
    std::fs::write(dirs.state().join("key"), TOKEN).expect("write the key");
}
