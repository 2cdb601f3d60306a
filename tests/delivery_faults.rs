//! Storage faults after the platform answered (design.md §6 R1, R3): a delivery's
//! outcome is one commit, made by the Queue, and an outcome whose commit fails is held
//! with its lease until it commits. So a full disk after a 2xx sends nothing again,
//! and a power cut at any sync point of a drain re-sends at most the one request that
//! was in flight.
//!
//! The actors run over a [`Faults`] backend in a System of their own, with a loopback
//! platform of that System; the token comes from a key file written once the queue is
//! filled, so nothing is sent before the fault is armed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_sync_actors::messages::*;
use agent_sync_actors::sync_record::Direction;
use agent_sync_actors::SyncActors;
use agent_sync_testkit::*;

/// How the disk fails once the POST is out.
#[derive(Clone, Copy, Debug)]
enum Full {
    /// Every write fails: the outcome's commit never reaches the file.
    Writes,
    /// Every sync fails: the commit's pages reach the file, its fsync does not (it may
    /// be found there after the store reopens the file).
    Syncs,
}

/// Options whose token is read from `dir/key` before every request: missing, the
/// actors are offline.
fn keyed(dir: &Path, max_batch: usize) -> (Options, PathBuf) {
    let key = dir.join("key");
    let opts = Options {
        key_file: Some(key.clone()),
        ..Options::max_batch(max_batch)
    };
    (opts, key)
}

/// Every dispatch id the platform answered with a 2xx, with how many times.
fn delivered_ids(platform: &LoopbackPlatform) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for push in platform.delivered() {
        for id in push.dispatch_ids() {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    seen
}

/// Writes and syncs the store attempted so far: each try of a commit moves it.
fn io_calls(faults: &Faults) -> u64 {
    faults.writes() + faults.syncs()
}

#[actix::test]
async fn a_2xx_whose_commit_fails_is_held_and_never_posted_again() {
    for full in [Full::Writes, Full::Syncs] {
        let dirs = Dirs::new();
        let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
        write_done(&root, "o/r/x");
        let faults = Faults::new();
        let (posts, report, ledger, records) = in_own_system(move || async move {
            let platform = LoopbackPlatform::start().await;
            let store = faults
                .open_store(&state)
                .expect("open over the faulty backend");
            let (opts, key) = keyed(&state, 100);
            let actors = start_actors_over(&store, &root, &platform.url(), None, &opts);
            enqueue(&actors, &["host-1"]).await;
            actors
                .scanner
                .send(ScanToQueue {
                    agent_id: AGENT_ID.into(),
                    fleet_node_id: None,
                })
                .await
                .expect("the scanner runs")
                .expect("the scan");
            std::fs::write(&key, TOKEN).expect("write the key");
            match full {
                Full::Writes => faults.fail_writes(true),
                Full::Syncs => faults.fail_syncs(true),
            }
            let pusher = actors.pusher.clone();
            let drained = actix_rt::spawn(async move { pusher.send(Drain).await });
            wait_until("the POST", secs(20), || platform.pushes().len() == 1).await;
            // The Queue tries the outcome's commit again and again meanwhile.
            let calls = io_calls(&faults);
            wait_until("three more tries of the commit", secs(30), || {
                io_calls(&faults) >= calls + 3
            })
            .await;
            let lease = actors
                .queue
                .send(LeaseNext)
                .await
                .expect("queue")
                .expect("lease");
            assert_eq!(
                lease,
                Lease::InFlight,
                "{full:?}: the lease stays out while held"
            );
            assert_eq!(platform.pushes().len(), 1, "{full:?}: nothing sent again");
            faults.heal();
            let report = drained
                .await
                .expect("the drain task")
                .expect("the pusher runs")
                .expect("the drain succeeds once the disk has room");
            assert!(queue(&actors).await.is_empty(), "{full:?}");
            let ledger = ledger_size(&actors).await;
            let records = records(&actors, None).await;
            (platform.pushes().len(), report.count, ledger, records)
        })
        .await;
        assert_eq!(posts, 1, "{full:?}: one POST, ever");
        assert_eq!(report, 2, "{full:?}");
        assert_eq!(ledger, 1, "{full:?}: the scanned dispatch is in the ledger");
        assert_eq!(
            directions(&records),
            [(Direction::Push, 2)],
            "{full:?}: recorded once, even when the failed commit landed"
        );
        // After a restart: nothing queued, the record kept, nothing to send.
        let (entries, history) = reopen(dirs.root(), dirs.state()).await;
        assert!(entries.is_empty(), "{full:?}: {entries:?}");
        assert_eq!(directions(&history), [(Direction::Push, 2)], "{full:?}");
    }
}

/// The syncs of one drain.
#[derive(Debug, Clone, Copy)]
struct Syncs {
    /// Every sync.
    total: u64,
    /// Those that grew the file (one sync each, besides the commits').
    grows: u64,
}

/// Queues `ids` (one entry each), then drains them with the power cut at sync `cut`
/// of the drain (none: counts the drain's syncs). Returns the drain's syncs, and the
/// ids delivered by this run.
async fn drain_with_cut(
    dirs: &Dirs,
    ids: &'static [&'static str],
    cut: Option<(u64, Cut)>,
) -> (Syncs, BTreeMap<String, usize>) {
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    in_own_system(move || async move {
        let platform = LoopbackPlatform::start().await;
        let faults = Faults::with_power_cuts();
        let store = faults
            .open_store(&state)
            .expect("open over the faulty backend");
        let (opts, key) = keyed(&state, 1);
        let actors = start_actors_over(&store, &root, &platform.url(), None, &opts);
        for id in ids {
            enqueue(&actors, &[id]).await;
        }
        std::fs::write(&key, TOKEN).expect("write the key");
        let before = faults.syncs();
        let grows = faults.grows();
        if let Some((k, side)) = cut {
            faults.cut_at_sync(k, side);
        }
        if cut.is_none() {
            drain(&actors).await;
        } else {
            // A dead machine records nothing more: the outcome in flight stays held,
            // and the drain never ends. The System ends here, as the process would.
            let pusher = actors.pusher.clone();
            actix_rt::spawn(async move { pusher.send(Drain).await });
            wait_until("the power cut", secs(30), || faults.is_cut()).await;
        }
        let counted = Syncs {
            total: faults.syncs() - before,
            grows: faults.grows() - grows,
        };
        (counted, delivered_ids(&platform))
    })
    .await
}

/// Restarts online over the plain store and drains what is left: the ids delivered.
async fn restart_and_drain(dirs: &Dirs) -> BTreeMap<String, usize> {
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    in_own_system(move || async move {
        let platform = LoopbackPlatform::start().await;
        let (actors, _store): (SyncActors, _) = start_actors_with(
            &root,
            &state,
            &platform.url(),
            Some(TOKEN),
            &Options::no_drain(),
        );
        drain(&actors).await;
        assert!(queue(&actors).await.is_empty());
        delivered_ids(&platform)
    })
    .await
}

#[actix::test]
async fn a_power_cut_at_any_sync_of_a_drain_resends_at_most_the_request_in_flight() {
    const IDS: &[&str] = &["a", "b", "c", "d"];
    let (syncs, delivered) = drain_with_cut(&Dirs::new(), IDS, None).await;
    assert_eq!(delivered.len(), IDS.len());
    assert_eq!(
        syncs.total - syncs.grows,
        IDS.len() as u64,
        "one commit, so one sync, per delivered request: {syncs:?}"
    );
    let total = syncs.total;
    note(&format!("drain of {} requests: {syncs:?}", IDS.len()));
    for side in [Cut::BeforeSync, Cut::AfterSync] {
        for k in 1..=total {
            let what = format!("cut {side:?} sync {k} of {total}");
            let dirs = Dirs::new();
            let (_, first) = drain_with_cut(&dirs, IDS, Some((k, side))).await;
            let (entries, history) = reopen(dirs.root(), dirs.state()).await;
            let queued: Vec<String> = entries.iter().flat_map(entry_ids).collect();
            let recorded: u64 = history
                .iter()
                .filter(|r| r.direction == Direction::Push)
                .map(|r| r.items_count)
                .sum();
            // One fact: a dispatch is queued or recorded as delivered, never both,
            // never neither.
            assert_eq!(
                recorded as usize + queued.len(),
                IDS.len(),
                "{what}: queued {queued:?}, recorded {recorded}"
            );
            // Delivered but still queued: only the request in flight at the cut.
            let resend: Vec<&String> = queued.iter().filter(|id| first.contains_key(*id)).collect();
            assert!(resend.len() <= 1, "{what}: {resend:?}");
            let second = restart_and_drain(&dirs).await;
            for id in IDS {
                let times = first.get(*id).unwrap_or(&0) + second.get(*id).unwrap_or(&0);
                let allowed = if resend.iter().any(|r| r == id) { 2 } else { 1 };
                assert_eq!(times, allowed, "{what}: {id} delivered {times} time(s)");
            }
        }
    }
}
