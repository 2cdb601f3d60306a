//! The scale figures: a large tree scanned in the actors and pushed by the
//! `agent-sync` binary in fresh processes, the database's size before and after a
//! backlog, and how each figure grows from `--workspaces` (10,000) to
//! `--scale-workspaces` (100,000).
//!
//! For each of the two sizes S:
//!
//! - **Tree and floor.** [`fixture::generate`] writes S workspaces (4 in 5 terminal);
//!   the floor is the best of 3 bare walks reading every `status.json`, after one
//!   untimed walk that warms the page cache.
//! - **In the actors.** Fresh actors, offline: `ScanToQueue` with everything new
//!   (`scan_to_queue_cold`: walk, Ledger and Queue asked chunk by chunk, records built
//!   and enqueued durably). The key file is then written and the queue drained to the
//!   loopback platform, one `ScanToQueue` runs (the first after the delivery, which
//!   rewrites the rescan cache), and one more with nothing changed (`scan_to_queue_rescan`:
//!   it must read no `status.json`).
//! - **Through the binary, each a fresh process.** `agent-sync push` on a fresh state
//!   dir with everything new (`push_new`: wall time and peak RSS, every dispatch
//!   delivered), then `push` twice more with nothing new; the second is the cron case
//!   (`push_nothing_new`: wall time and peak RSS, and `push_nothing_new_ratio`, its
//!   wall time over the floor). `push_new_20ms` is the everything-new push again on a
//!   fresh state dir against the platform answering each request after 20 ms.
//!   Peak RSS is the child's `ru_maxrss` from `wait4`, the kernel's own account, read
//!   by a small helper process ([`measure_child`]) so the bench's own memory is not
//!   counted in.
//! - **Database size.** Fresh actors, offline: S host dispatches queued as `Enqueue`
//!   messages of 10 (`db_queued`), then drained; once the queue is empty the Queue
//!   compacts the file (`db_delivered`).
//!
//! The figures of the large size are printed and checked against their targets; a
//! growth table then gives every figure at both sizes and the ratio between them.
//! The binary is looked for next to this one (`target/<profile>/agent-sync`, built by
//! `cargo build --release --workspace`) unless `--agent-sync PATH` names it; without
//! it the binary's figures are reported as not measured, never guessed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_sync::messages::{DatabaseSize, QueueStatus};
use agent_sync_actors::queue::DEFAULT_MAX_BATCH;
use agent_sync_actors::SyncActors;

use crate::figures::{mib, Figure};
use crate::fixture::{self, Tree};
use crate::options::Options;
use crate::support::{
    drain_all, emit, enqueue_in_rounds, key_file_options, millis, scan_to_queue, start_actors,
    BenchResult,
};
use agent_sync_testkit::{LoopbackPlatform, Scripted};

mod process;

pub use self::process::{measure_child, MEASURE_FLAG};
use self::process::{push, Process};

/// Timed repetitions of the floor walk (best is kept).
const FLOOR_ROUNDS: usize = 3;
/// Host dispatches per `Enqueue` message in the database-size run.
const DISPATCHES_PER_MESSAGE: usize = 10;
/// `Enqueue` messages in flight at once in the database-size run.
const MESSAGES_PER_ROUND: usize = 100;
/// How long the database-size run waits for the Queue's compaction to settle.
const COMPACTION_WAIT: Duration = Duration::from_secs(10);

/// Everything measured at one size.
#[derive(Debug, Clone)]
struct Measured {
    /// The tree the size wrote.
    tree: Tree,
    /// The bare walk of that tree (best of the rounds).
    floor: Duration,
    /// `ScanToQueue` on fresh actors.
    scan_cold: Duration,
    /// The first `ScanToQueue` after the delivery of what the cold one queued.
    scan_after_delivery: Duration,
    /// The next one, nothing changed.
    rescan: Duration,
    /// The binary's figures, if the binary was found.
    push: Option<Pushes>,
    /// `sync.redb` bytes with the backlog queued.
    db_queued: u64,
    /// And once it was delivered.
    db_delivered: u64,
}

/// The binary's runs at one size.
#[derive(Debug, Clone, Copy)]
struct Pushes {
    /// The first push: every terminal workspace is new.
    new: Process,
    /// The next, the first after their delivery.
    after_delivery: Process,
    /// The one after: nothing new.
    nothing_new: Process,
    /// `new` on a fresh state dir, the platform answering in 20 ms.
    new_20ms: Process,
}

/// The scale phase: both sizes, the large one's figures, then the growth table.
pub async fn scale(
    opts: &Options,
    work: &Path,
    server: &LoopbackPlatform,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let bin = crate::support::binary(opts)?;
    if let Err(why) = &bin {
        println!("scale: the binary's figures are not measured: {why}");
    }
    let sizes = [opts.workspaces, opts.scale_workspaces];
    let mut runs = Vec::new();
    for size in sizes {
        let dir = work.join(format!("scale-{size}"));
        runs.push(measure(size, &dir, server, bin.as_ref().ok()).await?);
    }
    let (small, large) = (&runs[0], &runs[1]);
    for figure in figures(large) {
        emit(out, figure);
    }
    print_growth(small, large);
    Ok(())
}

async fn measure(
    size: usize,
    dir: &Path,
    server: &LoopbackPlatform,
    bin: Option<&PathBuf>,
) -> BenchResult<Measured> {
    let root = dir.join("workspaces");
    let t = Instant::now();
    let tree = fixture::generate(&root, size)?;
    log::info!(
        "scale: {size} workspaces written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    fixture::floor_walk(&root)?;
    let mut floor = Duration::MAX;
    for _ in 0..FLOOR_ROUNDS {
        let t = Instant::now();
        fixture::floor_walk(&root)?;
        floor = floor.min(t.elapsed());
    }
    let (scan_cold, scan_after_delivery, rescan) = scans(&tree, &root, dir, &server.url()).await?;
    let push = match bin {
        Some(bin) => Some(pushes(bin, &tree, &root, dir, server)?),
        None => None,
    };
    let (db_queued, db_delivered) = database(size, dir, &server.url()).await?;
    Ok(Measured {
        tree,
        floor,
        scan_cold,
        scan_after_delivery,
        rescan,
        push,
        db_queued,
        db_delivered,
    })
}

/// Cold `ScanToQueue`, then delivery, then the first scan after it and a rescan.
async fn scans(
    tree: &Tree,
    root: &Path,
    dir: &Path,
    url: &str,
) -> BenchResult<(Duration, Duration, Duration)> {
    let key_file = dir.join("scan.key");
    let actors = start_actors(
        &dir.join("state-scan"),
        root,
        url,
        None,
        &key_file_options(DEFAULT_MAX_BATCH, &key_file),
    )?;
    let t = Instant::now();
    let cold = actors.scanner.send(scan_to_queue()).await??;
    let scan_cold = t.elapsed();
    if cold.workspaces != tree.workspaces
        || cold.found != tree.terminal
        || cold.receipt.dispatches != tree.terminal
    {
        return Err(format!(
            "scale: the cold scan found {} workspaces and queued {} of {} found; expected {} and {}",
            cold.workspaces, cold.receipt.dispatches, cold.found, tree.workspaces, tree.terminal
        )
        .into());
    }
    drain_all(&actors, &key_file, tree.terminal).await?;
    let t = Instant::now();
    let first = actors.scanner.send(scan_to_queue()).await??;
    let after_delivery = t.elapsed();
    let t = Instant::now();
    let again = actors.scanner.send(scan_to_queue()).await??;
    let rescan = t.elapsed();
    if first.found != 0 || again.found != 0 || again.status_reads != 0 {
        return Err(format!(
            "scale: after the delivery the scans found {} and {} (expected 0), the rescan read \
             {} status.json (expected 0)",
            first.found, again.found, again.status_reads
        )
        .into());
    }
    Ok((scan_cold, after_delivery, rescan))
}

/// The binary's four fresh-process pushes.
fn pushes(
    bin: &Path,
    tree: &Tree,
    root: &Path,
    dir: &Path,
    server: &LoopbackPlatform,
) -> BenchResult<Pushes> {
    let state = dir.join("state-push");
    let new = push(bin, root, &state, dir, &server.url())?;
    let after_delivery = push(bin, root, &state, dir, &server.url())?;
    let nothing_new = push(bin, root, &state, dir, &server.url())?;
    server.set_default(Scripted::ok().delay(Duration::from_millis(20)));
    let new_20ms = push(bin, root, &dir.join("state-push-20ms"), dir, &server.url());
    server.set_default(Scripted::ok());
    let new_20ms = new_20ms?;
    for (what, run, expected) in [
        ("everything new", new, tree.terminal),
        ("the first after delivery", after_delivery, 0),
        ("nothing new", nothing_new, 0),
        ("everything new, 20 ms platform", new_20ms, tree.terminal),
    ] {
        if run.synced != expected {
            return Err(format!(
                "scale: push ({what}) printed synced: {}, expected {expected}",
                run.synced
            )
            .into());
        }
    }
    Ok(Pushes {
        new,
        after_delivery,
        nothing_new,
        new_20ms,
    })
}

/// `sync.redb` with `n` host dispatches queued, and after their delivery.
async fn database(n: usize, dir: &Path, url: &str) -> BenchResult<(u64, u64)> {
    let key_file = dir.join("db.key");
    let actors = start_actors(
        &dir.join("state-db"),
        &dir.join("no-workspaces"),
        url,
        None,
        &key_file_options(DEFAULT_MAX_BATCH, &key_file),
    )?;
    enqueue_in_rounds(&actors, n, DISPATCHES_PER_MESSAGE, MESSAGES_PER_ROUND).await?;
    let queued = actors.queue.send(QueueStatus).await??;
    if queued.dispatches != n as u64 {
        return Err(format!(
            "scale: {} dispatches queued, expected {n}",
            queued.dispatches
        )
        .into());
    }
    let db_queued = actors.queue.send(DatabaseSize).await??;
    drain_all(&actors, &key_file, n).await?;
    let db_delivered = settled_size(&actors).await?;
    Ok((db_queued, db_delivered))
}

/// The file size once the compaction that follows the queue emptying is done: read
/// every 100 ms until two reads agree (or [`COMPACTION_WAIT`] passes).
async fn settled_size(actors: &SyncActors) -> BenchResult<u64> {
    let started = Instant::now();
    let mut last = actors.queue.send(DatabaseSize).await??;
    loop {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let now = actors.queue.send(DatabaseSize).await??;
        if now == last || started.elapsed() > COMPACTION_WAIT {
            return Ok(now);
        }
        last = now;
    }
}

/// The large size's figures, with their targets in [`crate::figures::TARGETS`].
fn figures(m: &Measured) -> Vec<Figure> {
    let n = m.tree.workspaces;
    let mut figures = vec![
        Figure::new(
            "scan_to_queue_cold",
            millis(m.scan_cold),
            "ms",
            format!(
                "{n} workspaces ({} terminal, {} with report.json), fresh actors, offline: \
                 ScanToQueue streaming everything new into the Queue, durably; floor walk {:.1} ms",
                m.tree.terminal,
                m.tree.reports,
                millis(m.floor)
            ),
        ),
        Figure::new(
            "scan_to_queue_rescan",
            millis(m.rescan),
            "ms",
            format!(
                "{n} workspaces, all {} terminal delivered, nothing changed since the previous \
                 ScanToQueue, 0 status.json read; the first after the delivery took {:.1} ms",
                m.tree.terminal,
                millis(m.scan_after_delivery)
            ),
        ),
    ];
    if let Some(p) = &m.push {
        figures.extend([
            Figure::new(
                "push_new",
                p.new.wall.as_secs_f64(),
                "s",
                format!(
                    "fresh `agent-sync push` process, fresh state dir, {n} workspaces, {} \
                     dispatches new and delivered to the loopback platform",
                    p.new.synced
                ),
            ),
            Figure::new(
                "push_new_rss",
                mib(p.new.peak_kib),
                "MiB",
                "peak RSS (ru_maxrss) of that push_new process".into(),
            ),
            Figure::new(
                "push_new_20ms",
                p.new_20ms.wall.as_secs_f64(),
                "s",
                format!(
                    "push_new on another fresh state dir, the platform answering each request \
                     20 ms after it arrived; peak RSS {:.1} MiB",
                    mib(p.new_20ms.peak_kib)
                ),
            ),
            Figure::new(
                "push_nothing_new",
                p.nothing_new.wall.as_secs_f64(),
                "s",
                format!(
                    "fresh `agent-sync push` process over the same tree, everything synced and \
                     the rescan cache persisted by the push before it; that one, the first \
                     after the delivery, took {:.2} s and {:.1} MiB",
                    p.after_delivery.wall.as_secs_f64(),
                    mib(p.after_delivery.peak_kib)
                ),
            ),
            Figure::new(
                "push_nothing_new_rss",
                mib(p.nothing_new.peak_kib),
                "MiB",
                "peak RSS (ru_maxrss) of that push_nothing_new process".into(),
            ),
            Figure::new(
                "push_nothing_new_ratio",
                p.nothing_new.wall.as_secs_f64() / m.floor.as_secs_f64().max(1e-9),
                "x",
                format!(
                    "push_nothing_new / floor walk ({:.1} ms: a warm bare walk reading all {n} \
                     status.json)",
                    millis(m.floor)
                ),
            ),
        ]);
    }
    figures.extend([
        Figure::new(
            "db_queued",
            mib_of_bytes(m.db_queued),
            "MiB",
            format!(
                "sync.redb with {n} host dispatches queued ({} per Enqueue, coalesced into \
                 entries of at most {DEFAULT_MAX_BATCH})",
                DISPATCHES_PER_MESSAGE
            ),
        ),
        Figure::new(
            "db_delivered",
            mib_of_bytes(m.db_delivered),
            "MiB",
            format!(
                "sync.redb once those {n} were delivered and the queue is empty ({} bytes, after \
                 the Queue's compaction)",
                m.db_delivered
            ),
        ),
    ]);
    figures
}

/// Bytes as MiB.
fn mib_of_bytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints every figure at both sizes and how it grew (the binary's figures only when
/// both sizes have them).
fn print_growth(small: &Measured, large: &Measured) {
    let (a, b) = (small.tree.workspaces, large.tree.workspaces);
    println!(
        "growth from {a} to {b} workspaces ({:.1}x; linear time grows by about that, flat \
         memory by 1.0x):",
        b as f64 / a.max(1) as f64
    );
    type Of = fn(&Measured) -> Option<f64>;
    let rows: [(&str, &str, Of); 10] = [
        ("floor walk", "ms", |m| Some(millis(m.floor))),
        ("scan_to_queue_cold", "ms", |m| Some(millis(m.scan_cold))),
        ("scan_to_queue_rescan", "ms", |m| Some(millis(m.rescan))),
        ("push_new", "ms", |m| m.push.map(|p| millis(p.new.wall))),
        ("push_new_rss", "MiB", |m| {
            m.push.map(|p| mib(p.new.peak_kib))
        }),
        ("push_new_20ms", "ms", |m| {
            m.push.map(|p| millis(p.new_20ms.wall))
        }),
        ("push_nothing_new", "ms", |m| {
            m.push.map(|p| millis(p.nothing_new.wall))
        }),
        ("push_nothing_new_rss", "MiB", |m| {
            m.push.map(|p| mib(p.nothing_new.peak_kib))
        }),
        ("db_queued", "MiB", |m| Some(mib_of_bytes(m.db_queued))),
        ("db_delivered", "MiB", |m| {
            Some(mib_of_bytes(m.db_delivered))
        }),
    ];
    for (name, unit, of) in rows {
        if let (Some(x), Some(y)) = (of(small), of(large)) {
            println!(
                "  {name:<24} {x:>10.1} {unit:<3} -> {y:>10.1} {unit:<3} {:>6.1}x",
                y / x.max(1e-9)
            );
        }
    }
}
