//! Coalescing at enqueue (P11): small pushes join the queue's tail entry while it has
//! the same agent and fleet node, was never sent, and has room under both caps; the
//! `queue` listing is exactly what will be sent.

use agent_sync_actors::dispatch::{Dispatch, ScannedDispatch};
use agent_sync_actors::entry::QueueEntry;
use agent_sync_actors::messages::*;
use agent_sync_actors::queue::PushBody;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;
use serde_json::json;

/// Actors whose token comes from `<state>/key` (absent: offline), so a test fills the
/// queue first and only then lets the Pusher send.
fn start(dirs: &Dirs, url: &str, tune: impl FnOnce(&mut Options)) -> SyncActors {
    let mut opts = Options {
        key_file: Some(dirs.state().join("key")),
        ..Options::no_drain()
    };
    tune(&mut opts);
    start_actors_with(dirs.root(), dirs.state(), url, None, &opts).0
}

fn go_online(dirs: &Dirs) {
    std::fs::write(dirs.state().join("key"), TOKEN).unwrap();
}

async fn enqueue_scanned(actors: &SyncActors, ids: &[&str]) -> EnqueueReceipt {
    let scanned = ids
        .iter()
        .map(|id| ScannedDispatch {
            id: id.to_string(),
            fingerprint: "2026-04-14T12:00:00Z#1".into(),
            record: dispatch(id),
        })
        .collect();
    actors
        .queue
        .send(Enqueue {
            agent_id: AGENT_ID.into(),
            fleet_node_id: None,
            batch: EnqueueBatch::Scanned(scanned),
        })
        .await
        .unwrap()
        .unwrap()
}

fn ids_of(entries: &[QueueEntry]) -> Vec<Vec<String>> {
    entries.iter().map(entry_ids).collect()
}

#[actix::test]
async fn separate_small_pushes_share_one_entry_and_one_request() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), |_| {});
    // 150 separate messages, awaited one by one: each its own group commit.
    let mut started = 0;
    for i in 0..150 {
        started += enqueue(&actors, &[&format!("d{i}")]).await.entries;
    }
    assert_eq!(started, 2, "a new entry only when the tail is full");
    let queued = queue(&actors).await;
    assert_eq!(
        queued
            .iter()
            .map(|e| e.dispatches.len())
            .collect::<Vec<_>>(),
        [100, 50],
        "max_batch is 100 by default"
    );
    let keys: Vec<String> = queued.iter().map(|e| e.idempotency_key.clone()).collect();

    go_online(&dirs);
    assert_eq!(
        drain(&actors).await,
        PushReport {
            count: 150,
            queued: 0
        }
    );
    let pushes = platform.pushes();
    assert_eq!(pushes.len(), 2, "two requests for 150 dispatches");
    // The listing was exactly what was sent, under the keys minted with the entries.
    let sent: Vec<(Vec<String>, String)> = pushes
        .iter()
        .map(|p| (p.dispatch_ids(), p.idempotency_key()))
        .collect();
    let listed: Vec<(Vec<String>, String)> = ids_of(&queued).into_iter().zip(keys).collect();
    assert_eq!(sent, listed);
    platform.stop().await;
}

#[actix::test]
async fn another_agent_id_or_fleet_node_id_starts_a_new_entry() {
    let dirs = Dirs::new();
    let actors = start(&dirs, &dead_url(), |_| {});
    enqueue_as(&actors, "agent-a", None, &["a1"]).await;
    enqueue_as(&actors, "agent-a", None, &["a2"]).await;
    enqueue_as(&actors, "agent-b", None, &["b1"]).await;
    enqueue_as(&actors, "agent-b", Some(7), &["b2"]).await;
    enqueue_as(&actors, "agent-b", Some(7), &["b3"]).await;
    enqueue_as(&actors, "agent-b", Some(8), &["b4"]).await;
    enqueue_as(&actors, "agent-a", None, &["a3"]).await;
    let queued = queue(&actors).await;
    let identity: Vec<(String, Option<i64>, Vec<String>)> = queued
        .iter()
        .zip(ids_of(&queued))
        .map(|(e, ids)| (e.agent_id.clone(), e.fleet_node_id, ids))
        .collect();
    let row = |agent: &str, fleet, ids: &[&str]| {
        (
            agent.to_string(),
            fleet,
            ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        identity,
        [
            row("agent-a", None, &["a1", "a2"]),
            row("agent-b", None, &["b1"]),
            row("agent-b", Some(7), &["b2", "b3"]),
            row("agent-b", Some(8), &["b4"]),
            row("agent-a", None, &["a3"]),
        ],
        "only the tail is ever joined, so FIFO order holds"
    );
}

#[actix::test]
async fn an_attempted_tail_takes_no_new_dispatches() {
    let platform = LoopbackPlatform::start().await;
    platform.respond(Scripted::status(503));
    let dirs = Dirs::new();
    go_online(&dirs);
    let actors = start(&dirs, &platform.url(), |_| {});
    enqueue(&actors, &["a"]).await;
    // The enqueue woke the Pusher: one 503, the entry backs off with attempts 1.
    wait_until("the first attempt", secs(5), || {
        platform.pushes().len() == 1
    })
    .await;
    wait_until_attempted(&actors).await;
    enqueue(&actors, &["b"]).await;
    enqueue(&actors, &["c"]).await;
    let queued = queue(&actors).await;
    assert_eq!(ids_of(&queued), [vec!["a"], vec!["b", "c"]]);
    assert_eq!((queued[0].attempts, queued[1].attempts), (1, 0));
    platform.stop().await;
}

async fn wait_until_attempted(actors: &SyncActors) {
    for _ in 0..500 {
        if queue(actors).await.first().is_some_and(|e| e.attempts == 1) {
            return;
        }
        actix_rt::time::sleep(millis(10)).await;
    }
    panic!("the head was never recorded as attempted");
}

#[actix::test]
async fn an_entry_is_sealed_once_leased_even_before_its_outcome() {
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(millis(600)));
    let dirs = Dirs::new();
    go_online(&dirs);
    let actors = start(&dirs, &platform.url(), |_| {});
    enqueue(&actors, &["a"]).await;
    wait_until("the POST of a to be in flight", secs(5), || {
        !platform.requests().is_empty()
    })
    .await;
    enqueue(&actors, &["b"]).await;
    assert_eq!(ids_of(&queue(&actors).await), [vec!["a"], vec!["b"]]);
    wait_until("both delivered", secs(10), || {
        platform.delivered().len() == 2
    })
    .await;
    let sent: Vec<Vec<String>> = platform.pushes().iter().map(|p| p.dispatch_ids()).collect();
    assert_eq!(
        sent,
        [vec!["a"], vec!["b"]],
        "b never joined the request in flight"
    );
    platform.stop().await;
}

#[actix::test]
async fn both_caps_bound_an_entry_and_an_oversized_dispatch_goes_alone() {
    let dirs = Dirs::new();
    let cap = 300;
    let actors = start(&dirs, &dead_url(), |o| {
        o.max_batch = 3;
        o.max_request_bytes = cap;
    });
    for i in 0..7 {
        enqueue(&actors, &[&format!("d{i}")]).await;
    }
    let padded = |id: &str, pad: usize| {
        let mut d = dispatch(id).to_object();
        d.insert("pad".into(), json!("x".repeat(pad)));
        Dispatch::from(d)
    };
    let big = [
        padded("p0", 80),
        padded("p1", 80),
        padded("p2", 80),
        padded("huge", 400),
    ];
    actors
        .queue
        .send(Enqueue {
            agent_id: AGENT_ID.into(),
            fleet_node_id: None,
            batch: EnqueueBatch::Host(big.to_vec()),
        })
        .await
        .unwrap()
        .unwrap();
    let queued = queue(&actors).await;
    let sizes: Vec<usize> = queued.iter().map(|e| e.dispatches.len()).collect();
    // d0-d2, d3-d5, d6 with p0 (the byte cap closes it), p1 p2, huge alone.
    assert_eq!(sizes, [3, 3, 2, 2, 1], "{:?}", ids_of(&queued));
    for entry in &queued {
        let body = serde_json::to_vec(&PushBody {
            agent_id: &entry.agent_id,
            fleet_node_id: entry.fleet_node_id,
            dispatches: &entry.dispatches,
        })
        .unwrap();
        assert!(
            body.len() <= cap || entry.dispatches.len() == 1,
            "entry {} would send {} bytes",
            entry.seq,
            body.len()
        );
    }
    assert_eq!(ids_of(&queued)[4], ["huge"]);
}

#[actix::test]
async fn a_scanned_dispatch_already_queued_is_still_deduplicated_and_marked_on_delivery() {
    let platform = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let actors = start(&dirs, &platform.url(), |_| {});
    let first = enqueue_scanned(&actors, &["core/a", "core/b"]).await;
    let again = enqueue_scanned(&actors, &["core/b", "core/c", "core/c"]).await;
    assert_eq!((first.dispatches, first.duplicates), (2, 0));
    assert_eq!((again.dispatches, again.duplicates), (1, 2));
    let queued = queue(&actors).await;
    assert_eq!(ids_of(&queued), [vec!["core/a", "core/b", "core/c"]]);
    assert_eq!(
        queued[0].fingerprints.len(),
        3,
        "every joined dispatch keeps its fingerprint"
    );

    go_online(&dirs);
    assert_eq!(drain(&actors).await.count, 3);
    assert_eq!(
        ledger_size(&actors).await,
        3,
        "the Ledger marks every dispatch of the coalesced entry"
    );
    platform.stop().await;
}

#[actix::test]
async fn after_a_restart_every_entry_is_sealed() {
    let dirs = Dirs::new();
    // One process life each: the System ends, the actors stop, the state is closed.
    let incarnation = |id: &'static str| {
        let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
        in_own_system(move || async move {
            let actors = start_offline(&root, &state);
            enqueue(&actors, &[id]).await;
            queue(&actors).await
        })
    };
    incarnation("before").await;
    // The entry may have been in flight when the process died: nothing joins it.
    let queued = incarnation("after").await;
    assert_eq!(ids_of(&queued), [vec!["before"], vec!["after"]]);
}
