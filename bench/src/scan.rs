//! walk_floor, scan_cold, scan_ratio, rescan, rescan_ratio: the Scanner's
//! `ScanToQueue`, the path a push and the daemon run (scan, then enqueue what is new),
//! against a bare walk of the same tree.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync::messages::ScanSummary;
use agent_sync_actors::queue::DEFAULT_MAX_BATCH;
use agent_sync_actors::scanner::walk;

use crate::figures::Figure;
use crate::fixture;
use crate::options::Options;
use crate::support::{
    drain_all, emit, key_file_options, millis, scan_to_queue, start_actors, BenchResult,
};

/// Timed repetitions of the floor walk, the cold scan and the rescans (best is kept).
const ROUNDS: usize = 3;

/// A scan that does not see the whole fixture, or queues other than `queued`
/// dispatches, is an error, not a figure.
fn check_scan(summary: &ScanSummary, workspaces: usize, queued: usize) -> BenchResult<()> {
    if summary.workspaces != workspaces
        || summary.skipped != 0
        || summary.found != queued
        || summary.receipt.dispatches != queued
    {
        return Err(format!(
            "scan found {} workspaces ({} skipped) and queued {} of {} dispatches found; \
             expected {workspaces} and {queued}",
            summary.workspaces, summary.skipped, summary.receipt.dispatches, summary.found
        )
        .into());
    }
    Ok(())
}

/// walk_floor, scan_cold, scan_ratio, rescan, rescan_ratio.
///
/// Each round starts fresh actors (fresh store, empty queue and ledger, and a Scanner
/// with an empty walk cache), offline until the bench writes their key file, then:
/// floor walk; cold `ScanToQueue` (every terminal workspace read and queued); the
/// queue drained to the loopback platform, untimed, as the Pusher would; a
/// `ScanToQueue` (the first after a delivery); and a `ScanToQueue` again with nothing
/// changed since the previous one, on disk or in the store: the rescan. The best of
/// the rounds is kept for each.
pub async fn scan(
    opts: &Options,
    work: &Path,
    url: &str,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let root = work.join("workspaces");
    let started = Instant::now();
    let tree = fixture::generate(&root, opts.workspaces)?;
    log::info!(
        "fixture: {} workspaces written in {:.1} s",
        tree.workspaces,
        started.elapsed().as_secs_f64()
    );
    // Warm the page cache once, untimed.
    let warm = fixture::floor_walk(&root)?;
    if warm.files != tree.workspaces {
        return Err(format!(
            "floor walk read {} status.json, expected {}",
            warm.files, tree.workspaces
        )
        .into());
    }
    let [mut floor, mut bare, mut cold, mut after_delivery, mut rescan] = [Duration::MAX; 5];
    let mut rescan_reads = 0;
    for round in 0..ROUNDS {
        let key_file = work.join(format!("scan-{round}.key"));
        let actors = start_actors(
            &work.join(format!("state-scan-{round}")),
            &root,
            url,
            None,
            &key_file_options(DEFAULT_MAX_BATCH, &key_file),
        )?;
        let t = Instant::now();
        fixture::floor_walk(&root)?;
        floor = floor.min(t.elapsed());

        // Diagnostic only: the library's walk and parse, without actors or store.
        let t = Instant::now();
        let walk = walk::scan_tree(&root);
        bare = bare.min(t.elapsed());
        drop(walk);

        let t = Instant::now();
        let summary = actors.scanner.send(scan_to_queue()).await??;
        cold = cold.min(t.elapsed());
        check_scan(&summary, tree.workspaces, tree.terminal)?;

        drain_all(&actors, &key_file, tree.terminal).await?;

        let t = Instant::now();
        let summary = actors.scanner.send(scan_to_queue()).await??;
        after_delivery = after_delivery.min(t.elapsed());
        check_scan(&summary, tree.workspaces, 0)?;

        let t = Instant::now();
        let summary = actors.scanner.send(scan_to_queue()).await??;
        let took = t.elapsed();
        if took < rescan {
            rescan = took;
            rescan_reads = summary.status_reads;
        }
        check_scan(&summary, tree.workspaces, 0)?;
    }
    emit(
        out,
        Figure::new(
            "walk_floor",
            millis(floor),
            "ms",
            format!(
                "bare std::fs walk of org/repo/task reading {} status.json, {} KiB; \
                 best of {ROUNDS} after 1 untimed warm-up walk",
                warm.files,
                warm.bytes / 1024
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "scan_cold",
            millis(cold),
            "ms",
            format!(
                "{} workspaces, {} terminal, {} with report.json; ScanToQueue -> Scanner -> \
                 Queue, Ledger, Enqueue: all {} terminal queued; fresh actors and store, empty \
                 queue and ledger; best of {ROUNDS}, each after a floor walk; \
                 walk::scan_tree alone, no actors: {:.1} ms",
                tree.workspaces,
                tree.terminal,
                tree.reports,
                tree.terminal,
                millis(bare)
            ),
        ),
    );
    let scan_ratio = cold.as_secs_f64() / floor.as_secs_f64().max(1e-9);
    emit(
        out,
        Figure::new(
            "scan_ratio",
            scan_ratio,
            "x",
            "scan_cold / walk_floor".into(),
        ),
    );
    emit(
        out,
        Figure::new(
            "rescan",
            millis(rescan),
            "ms",
            format!(
                "a ScanToQueue after a ScanToQueue with nothing changed in between, on \
                 disk or in the store, all {} terminal delivered, 0 queued, {rescan_reads} \
                 status.json read; best of {ROUNDS}; the ScanToQueue before it, the first \
                 after their delivery, took {:.1} ms",
                tree.terminal,
                millis(after_delivery)
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "rescan_ratio",
            rescan.as_secs_f64() / cold.as_secs_f64().max(1e-9),
            "x",
            "rescan / scan_cold".into(),
        ),
    );
    Ok(())
}
