//! walk_floor, scan_cold, scan_ratio, rescan, rescan_ratio: the Scanner against a
//! bare walk of the same tree.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync::messages::{Drain, ScanSummary, ScanToQueue};
use agent_sync_actors::platform::TokenSource;
use agent_sync_actors::queue::DEFAULT_MAX_BATCH;
use agent_sync_actors::scanner::walk;

use crate::figures::Figure;
use crate::fixture;
use crate::phases::{emit, millis, start_actors, write_key_file, AGENT_ID};
use crate::{BenchResult, Options};

/// Timed repetitions of the floor walk, the cold scan and the rescans (best is kept).
const ROUNDS: usize = 3;

/// A scan that does not see the whole fixture is an error, not a figure.
fn check_scan(report: &ScanSummary, workspaces: usize, unsynced: usize) -> BenchResult<()> {
    if report.workspaces != workspaces || report.found != unsynced || report.skipped != 0 {
        return Err(format!(
            "scan found {} workspaces ({} skipped) and {} unsynced; expected {workspaces} and {unsynced}",
            report.workspaces,
            report.skipped,
            report.found
        )
        .into());
    }
    Ok(())
}

/// walk_floor, scan_cold, scan_ratio, rescan, rescan_ratio.
///
/// Each round starts fresh actors (fresh store, empty ledger, and a Scanner with an
/// empty walk cache) without a token, then: floor walk; cold `ScanToQueue` (nothing is
/// sent meanwhile); the key file written and the queue drained, untimed, so the
/// Ledger holds every candidate and the queue is empty; a `ScanToQueue` (the first
/// after a delivery); and a `ScanToQueue` again with nothing changed since the
/// previous one, on disk or in the Ledger: the rescan. The best of the rounds is kept
/// for each.
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
    for round in 0..ROUNDS {
        let state = work.join(format!("state-scan-{round}"));
        std::fs::create_dir_all(&state)?;
        let key_file = state.join("bench.key");
        let actors = start_actors(
            &state,
            &root,
            url,
            TokenSource::KeyFile(key_file.clone()),
            DEFAULT_MAX_BATCH,
        )?;
        let scan_to_queue = || ScanToQueue {
            agent_id: AGENT_ID.into(),
            fleet_node_id: None,
        };
        let t = Instant::now();
        fixture::floor_walk(&root)?;
        floor = floor.min(t.elapsed());

        // Diagnostic only: the library's walk and parse, without actors or Ledger.
        let t = Instant::now();
        let walk = walk::scan_tree(&root);
        bare = bare.min(t.elapsed());
        drop(walk);

        let t = Instant::now();
        let report = actors.scanner.send(scan_to_queue()).await??;
        cold = cold.min(t.elapsed());
        check_scan(&report, tree.workspaces, tree.terminal)?;

        write_key_file(&key_file)?;
        let delivered = actors.pusher.send(Drain).await??;
        if delivered.queued != 0 {
            return Err(format!(
                "{} dispatches left queued after the drain",
                delivered.queued
            )
            .into());
        }

        let t = Instant::now();
        let report = actors.scanner.send(scan_to_queue()).await??;
        after_delivery = after_delivery.min(t.elapsed());
        check_scan(&report, tree.workspaces, 0)?;

        let t = Instant::now();
        let report = actors.scanner.send(scan_to_queue()).await??;
        rescan = rescan.min(t.elapsed());
        check_scan(&report, tree.workspaces, 0)?;
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
                "{} workspaces, {} terminal, {} with report.json; ScanToQueue -> Scanner -> Queue, Ledger, Enqueue, \
                 fresh actors and store, empty ledger; best of {ROUNDS}, each after a floor walk; \
                 walk::scan_tree alone, no actors: {:.1} ms",
                tree.workspaces,
                tree.terminal,
                tree.reports,
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
                "a ScanToQueue after a ScanToQueue with nothing changed in between, on disk \
                 or in the Ledger, all {} terminal synced, 0 queued; best of {ROUNDS}; the scan \
                 before it, the first after the Ledger marked them, took {:.1} ms",
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
