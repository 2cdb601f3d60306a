//! The CLI drain phase (`--only cli`): what a backlog queued by many short
//! `agent-sync` processes costs to deliver, and what one delivery commits.
//!
//! - **cli_calls_coalesced** (`--cli-calls N`, 2,000): N sequential fresh
//!   `agent-sync push --dispatches -` processes, each given one host dispatch on stdin,
//!   offline (no token), all on one state dir; then one `agent-sync push --queue-only`
//!   online. Figures: the requests the loopback platform received (target
//!   1 + ceil((N-1)/100): the first call's entry is the head, which the next process
//!   keeps sealed since it may have been in flight, and the other calls fill entries
//!   of 100), that process's wall time (target
//!   0.25 s), the offline calls' time each, and the dispatch ids the platform got:
//!   exactly the N queued, none twice.
//! - **db_after_cli_drain** (`--cli-drain-dispatches M`, 100,000): M host dispatches
//!   queued offline by `push --dispatches -` calls of 1,000 each, then one
//!   `push --queue-only` online; the size of `sync.redb` once that process has exited
//!   (target 8 MiB).
//! - **delivery_commits** ([`commits`]): fsyncs per delivered request, in
//!   process, over a backend that counts them (target 1).
//!
//! The phase serves a loopback platform of its own (127.0.0.1), which records the
//! calls' requests and counts the drain's; the binary is found as the scale phase finds it ([`support::binary`]).
//! Without it the two binary figures are not measured. The targets are printed after
//! the harness's summary, in its form ([`checks`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

mod commits;
mod run;

use self::run::{db_bytes, dispatches_json, Cli};
use crate::fixture::dispatch_id;

use crate::figures::Figure;
use crate::options::Options;
use crate::support::{self, BenchResult};
use crate::targets::{emit, Check};
use agent_sync_testkit::LoopbackPlatform;

/// Dispatches per offline call of db_after_cli_drain: few processes, as a host that
/// hands over its finished dispatches in batches would run.
const BATCH: usize = 1_000;
/// The epoch (testkit's `LoopbackPlatform::begin_epoch`) of cli_calls_coalesced's
/// requests.
const EPOCH_CALLS: u32 = 1;
/// The Go original's time for the same drain of 2,000 one-dispatch calls, seconds.
const GO_DRAIN_S: f64 = 11.9;

/// Runs the phase against a loopback platform of its own; prints each figure as it
/// is measured.
pub fn run(opts: &Options, work: &Path) -> BenchResult<Vec<Figure>> {
    support::serve(|server| measure(opts, &work.join("cli"), server))
}

fn measure(opts: &Options, dir: &Path, server: &LoopbackPlatform) -> BenchResult<Vec<Figure>> {
    std::fs::create_dir_all(dir)?;
    println!(
        "cli: {} one-dispatch offline calls, {} dispatches in calls of {BATCH}, {} one-dispatch \
         entries in process",
        opts.cli_calls,
        opts.cli_drain_dispatches,
        commits::ENTRIES
    );
    let mut out = Vec::new();
    match support::binary(opts)? {
        Ok(bin) => {
            let cli = Cli::new(&bin, server.url());
            server.set_recording(true);
            calls_coalesced(opts.cli_calls, &cli, dir, server, &mut out)?;
            // Requests are only read above; keeping 100,000 dispatches' bodies would
            // only slow the platform down (the drain below is counted).
            server.set_recording(false);
            db_after_drain(opts.cli_drain_dispatches, &cli, dir, server, &mut out)?;
        }
        Err(why) => println!("cli: the binary's figures are not measured: {why}"),
    }
    emit(&mut out, commits::measure(dir, server)?);
    Ok(out)
}

/// cli_calls_offline, cli_calls_coalesced_requests, cli_calls_coalesced_drain,
/// cli_calls_coalesced_delivered, cli_calls_coalesced_duplicates.
fn calls_coalesced(
    n: usize,
    cli: &Cli,
    dir: &Path,
    server: &LoopbackPlatform,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let state = dir.join("state-calls");
    server.begin_epoch(EPOCH_CALLS);
    let mut walls = Vec::with_capacity(n);
    for i in 0..n {
        walls.push(cli.queue(&state, &dispatches_json(i..i + 1)?)?.wall);
    }
    let (entries, queued) = cli.queued(&state)?;
    if queued != n as u64 {
        return Err(format!("cli: {n} offline calls left {queued} dispatches queued").into());
    }
    let drain = cli.drain(&state)?;
    let arrivals = server.requests_in(EPOCH_CALLS);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in arrivals.iter().flat_map(|a| a.dispatch_ids()) {
        *seen.entry(id).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    let delivered = (0..n)
        .filter(|i| seen.contains_key(&dispatch_id(*i)))
        .count();
    let unexpected = seen.len() - delivered;
    walls.sort();
    let total: Duration = walls.iter().sum();
    let mean = total.as_secs_f64() * 1_000.0 / n as f64;
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1_000.0);
    emit(
        out,
        Figure::new(
            "cli_calls_offline",
            mean,
            "ms",
            format!(
                "mean of {n} sequential fresh `agent-sync push --dispatches -` processes of 1 \
             dispatch each, offline (no token), one state dir; median {:.1} ms, slowest {:.1} \
             ms, {:.1} s in all; they left {entries} entries queued for {queued} dispatches",
                ms(walls.get(n / 2)),
                ms(walls.last()),
                total.as_secs_f64()
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "cli_calls_coalesced_requests",
            arrivals.len() as f64,
            "requests",
            format!(
            "requests the loopback platform received for those {n} calls' dispatches, all from \
             one `agent-sync push --queue-only` online, which printed synced: {}; target <= \
             {} (1 + ceil((N-1)/100))",
            drain.synced,
            requests_limit(n)
        ),
        ),
    );
    emit(
        out,
        Figure::new(
            "cli_calls_coalesced_drain",
            drain.wall.as_secs_f64(),
            "s",
            format!(
                "wall time of that one process, spawn to exit; target <= 0.25 s; Go original \
             {GO_DRAIN_S} s at 2,000 calls"
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "cli_calls_coalesced_delivered",
            delivered as f64,
            "dispatches",
            format!(
                "distinct dispatch ids of the {n} queued that the platform received; {unexpected} \
             ids it was not given; target exactly {n}"
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "cli_calls_coalesced_duplicates",
            duplicates as f64,
            "dispatches",
            format!(
                "dispatches the platform received more than once, over {} received in all; \
             target 0",
                seen.values().sum::<usize>()
            ),
        ),
    );
    if duplicates > 0 || delivered != n || unexpected > 0 {
        println!(
            "cli_calls_coalesced: FAILED TARGET: the platform received {delivered} of the {n} \
             dispatches queued, {duplicates} more than once, {unexpected} never queued"
        );
    }
    Ok(())
}

/// db_after_cli_drain.
fn db_after_drain(
    m: usize,
    cli: &Cli,
    dir: &Path,
    server: &LoopbackPlatform,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let state = dir.join("state-drain");
    let before = server.received();
    let t = Instant::now();
    let mut calls = 0;
    for first in (0..m).step_by(BATCH) {
        cli.queue(&state, &dispatches_json(first..m.min(first + BATCH))?)?;
        calls += 1;
    }
    let queuing = t.elapsed();
    let (entries, queued) = cli.queued(&state)?;
    if queued != m as u64 {
        return Err(format!("cli: {calls} offline calls left {queued} of {m} queued").into());
    }
    let db_queued = db_bytes(&state)?;
    let drain = cli.drain(&state)?;
    let db = db_bytes(&state)?;
    let requests = server.received().since(before).requests;
    emit(
        out,
        Figure::new(
            "db_after_cli_drain",
            mib(db),
            "MiB",
            format!(
                "sync.redb once one `agent-sync push --queue-only` online had delivered {} of {m} \
             dispatches ({requests} requests, {:.2} s) and exited: {db} bytes; they were queued \
             by {calls} offline `push --dispatches -` calls of up to {BATCH} ({:.1} s), into \
             {entries} entries, sync.redb then {:.2} MiB",
                drain.synced,
                drain.wall.as_secs_f64(),
                queuing.as_secs_f64(),
                mib(db_queued)
            ),
        ),
    );
    if drain.synced != m {
        println!(
            "db_after_cli_drain: FAILED: the drain delivered {} of {m}; the size is not that \
             of a drained queue",
            drain.synced
        );
    }
    Ok(())
}

/// cli_calls_coalesced_requests' target for `n` calls: the first call's entry alone
/// (the head is never reopened: it may have been in flight), then entries of 100.
fn requests_limit(n: usize) -> usize {
    1 + n.saturating_sub(1).div_ceil(100)
}

/// Bytes as MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// This phase's targets, printed after the harness's summary; their limits depend on
/// the sizes, so they are not among [`crate::figures::TARGETS`].
pub fn checks(opts: &Options) -> [Check; 6] {
    [
        (
            "cli_calls_coalesced_requests",
            "<=",
            requests_limit(opts.cli_calls) as f64,
        ),
        ("cli_calls_coalesced_drain", "<=", 0.25),
        ("cli_calls_coalesced_delivered", "=", opts.cli_calls as f64),
        ("cli_calls_coalesced_duplicates", "<=", 0.0),
        ("db_after_cli_drain", "<=", 8.0),
        ("delivery_commits", "<=", 1.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_targets_follow_the_sizes() {
        let opts =
            Options::from_args(&["--cli-calls", "50", "--cli-drain-dispatches=5000"]).unwrap();
        assert_eq!((opts.cli_calls, opts.cli_drain_dispatches), (50, 5_000));
        assert_eq!(requests_limit(2_000), 21);
        assert_eq!(requests_limit(50), 2);
        assert_eq!(requests_limit(1), 1);
        assert_eq!(requests_limit(101), 2);
        let defaults = Options::default();
        assert_eq!(checks(&defaults)[0].2, 21.0);
        assert_eq!(checks(&defaults)[2].2, 2_000.0);
    }
}
