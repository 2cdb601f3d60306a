//! delivery_commits: fsyncs per delivered request, in process.
//!
//! The actors run over a store whose redb backend is the testkit's
//! [`FaultyBackend`](agent_sync_testkit::faults::FaultyBackend): redb's own file
//! backend over the real file, counting every `sync_data` (an fsync) and every
//! `set_len` that lengthens the file (redb syncs after each). [`ENTRIES`] host
//! dispatches are queued offline as entries of one dispatch each (`max_batch` 1, so
//! one request per entry); the token then appears (a key file) and one `Drain`
//! delivers them all to the loopback platform. The figure is the fsyncs counted from
//! just before that `Drain` was sent to its reply, over the requests the platform
//! received meanwhile. The target is 1: the durable commit of each outcome. The
//! detail says how many of them followed a file growth, and how many more came in the
//! half second after the reply (the compaction once the queue emptied, say), which
//! the figure leaves out.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_sync::messages::Drain;
use agent_sync_actors::SyncActors;
use agent_sync_testkit as testkit;
use agent_sync_testkit::faults::Faults;

use crate::figures::Figure;
use crate::fixture;
use crate::support::BenchResult;
use crate::support::{enqueue_all, host_enqueue};
use crate::support::{key_file_options, write_key_file};
use agent_sync_testkit::LoopbackPlatform;

/// Entries of one dispatch queued, hence requests delivered by the measured drain.
pub const ENTRIES: usize = 200;
/// How long after the drain's reply later syncs are still counted for the detail.
const AFTER: Duration = Duration::from_millis(500);

/// The counters of the fault backend at one instant.
#[derive(Debug, Clone, Copy)]
struct Counted {
    /// fsyncs so far.
    syncs: u64,
    /// File growths so far (each followed by an fsync of its own).
    grows: u64,
}

impl Counted {
    fn of(faults: &Faults) -> Counted {
        Counted {
            syncs: faults.syncs(),
            grows: faults.grows(),
        }
    }
}

/// Measures delivery_commits on an actix System of its own, over a fresh state dir
/// under `dir`.
pub fn measure(dir: &Path, server: &LoopbackPlatform) -> BenchResult<Figure> {
    actix::System::new().block_on(delivery_commits(dir, server))
}

/// Starts the actors over `faults`' store in `state`: `max_batch` 1, the token read
/// from `key_file` before every request (missing: offline), no drain at start.
fn start(
    faults: &Arc<Faults>,
    state: &Path,
    root: &Path,
    url: &str,
    key_file: &Path,
) -> BenchResult<SyncActors> {
    let store = faults.open_store(state)?;
    let opts = key_file_options(1, key_file);
    Ok(testkit::start_actors_over(&store, root, url, None, &opts))
}

async fn delivery_commits(dir: &Path, server: &LoopbackPlatform) -> BenchResult<Figure> {
    let faults = Faults::new();
    let key_file = dir.join("commits.key");
    let actors = start(
        &faults,
        &dir.join("state-commits"),
        &dir.join("no-workspaces"),
        &server.url(),
        &key_file,
    )?;
    let dispatches = (0..ENTRIES).map(fixture::dispatch).collect();
    let receipt = enqueue_all(&actors, vec![host_enqueue(dispatches)]).await?;
    if receipt.entries != ENTRIES {
        return Err(format!(
            "delivery_commits: {} entries queued, expected {ENTRIES}",
            receipt.entries
        )
        .into());
    }
    // The enqueue's wake-ups find no token and send nothing; let them pass, so the
    // counted window holds the delivery alone.
    for _ in 0..2 {
        let idle = actors.pusher.send(Drain).await??;
        if idle.count != 0 || idle.queued != ENTRIES as u64 {
            return Err(format!(
                "delivery_commits: offline, {} delivered and {} queued; expected 0 and {ENTRIES}",
                idle.count, idle.queued
            )
            .into());
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    write_key_file(&key_file)?;
    let received = server.received();
    let before = Counted::of(&faults);
    let report = actors.pusher.send(Drain).await??;
    let after = Counted::of(&faults);
    let requests = server.received().since(received).requests;
    actix_rt::time::sleep(AFTER).await;
    let later = Counted::of(&faults);
    if report.count != ENTRIES || report.queued != 0 || requests != ENTRIES as u64 {
        return Err(format!(
            "delivery_commits: the drain delivered {} in {requests} requests and left {} \
             queued; expected {ENTRIES}, {ENTRIES} and 0",
            report.count, report.queued
        )
        .into());
    }
    let syncs = after.syncs - before.syncs;
    let grows = after.grows - before.grows;
    Ok(Figure::new(
        "delivery_commits",
        syncs as f64 / requests as f64,
        "fsyncs per delivered request",
        format!(
            "{syncs} fsyncs / {requests} requests = {:.3}: one Drain delivering {ENTRIES} \
             queued entries of 1 dispatch to the loopback platform, fsyncs counted by the \
             testkit's fault backend from just before the Drain to its reply; {grows} of them \
             after a file growth; {} more in the {} ms after the reply, not counted; target 1",
            syncs as f64 / requests as f64,
            later.syncs - after.syncs,
            AFTER.as_millis()
        ),
    ))
}
