//! The daemon phase's figures of the load ([`crate::daemon`]): the pickup latency
//! and the burst, measured from the loopback platform's arrival log; how the phase
//! prints its figures; and its targets (printed after the harness's summary, in its
//! form, like the `cli` phase's: their limits depend on the sizes).

use std::time::{Duration, Instant};

use super::load::{self, answered, quantile, Finished, Kind, Tree};
use crate::figures::Figure;
use crate::options::Options;
use crate::support::BenchResult;
pub use crate::targets::emit;
use crate::targets::Check;
use agent_sync_testkit::LoopbackPlatform;

/// Arrivals of the pickup run.
pub const EPOCH_PICKUP: u32 = 2;
/// Arrivals of the burst.
pub const EPOCH_BURST: u32 = 3;
/// Longest wait for the last pickup's 2xx (a missing one counts as this long).
const PICKUP_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for the burst's last 2xx.
const BURST_WAIT: Duration = Duration::from_secs(120);
/// The burst is written evenly over this.
const BURST_SPAN: Duration = Duration::from_secs(1);

/// pickup_p50, pickup_p99.
pub fn pickup_figures(server: &LoopbackPlatform, finished: &[Finished], out: &mut Vec<Figure>) {
    let ids: Vec<String> = finished.iter().map(|f| f.id.clone()).collect();
    let got = answered(server, EPOCH_PICKUP, &ids, PICKUP_WAIT);
    let latency = |f: &Finished| {
        got.first
            .get(&f.id)
            .map_or(PICKUP_WAIT, |at| at.saturating_duration_since(f.renamed))
    };
    let of_kind = |kind: Option<Kind>| {
        let mut all: Vec<Duration> = finished
            .iter()
            .filter(|f| kind.is_none_or(|k| f.kind == k))
            .map(latency)
            .collect();
        all.sort();
        all
    };
    let (all, new, turned) = (
        of_kind(None),
        of_kind(Some(Kind::New)),
        of_kind(Some(Kind::Turned)),
    );
    let missing = finished.len() - got.first.len();
    let n = finished.len();
    let s = |d: Duration| d.as_secs_f64();
    emit(
        out,
        Figure::new(
            "pickup_p50",
            s(quantile(&all, 0.5)),
            "s",
            format!(
                "{n} workspaces finishing one at a time 0.2-1.5 s apart, {} new task dirs and {} \
                 running turned completed (status.json temp file + rename); rename to the \
                 platform's 2xx for that dispatch id; new: p50 {:.3} s, max {:.3} s; turned: p50 \
                 {:.3} s, max {:.3} s; {} requests",
                new.len(),
                turned.len(),
                s(quantile(&new, 0.5)),
                s(quantile(&new, 1.0)),
                s(quantile(&turned, 0.5)),
                s(quantile(&turned, 1.0)),
                got.requests
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "pickup_p99",
            s(quantile(&all, 0.99)),
            "s",
            format!(
                "nearest rank of the same {n}; {missing} not delivered within {PICKUP_WAIT:?} \
                 (counted as that long)"
            ),
        ),
    );
    if missing > 0 {
        println!("pickup: FAILED: {missing} of {n} finished workspaces were not delivered");
    }
}

/// burst_requests, burst_delivered, burst_last_2xx.
pub fn burst(
    n: usize,
    tree: &Tree<'_>,
    server: &LoopbackPlatform,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let started = Instant::now();
    let finished = load::burst(tree, n, BURST_SPAN)?;
    let written = started.elapsed();
    let ids: Vec<String> = finished.iter().map(|f| f.id.clone()).collect();
    // Waits for every id (or the limit), then one second more: a request after the
    // last id would still count.
    answered(server, EPOCH_BURST, &ids, BURST_WAIT);
    std::thread::sleep(Duration::from_secs(1));
    let got = answered(server, EPOCH_BURST, &ids, Duration::ZERO);
    let last = got
        .first
        .values()
        .max()
        .map(|at| at.duration_since(started));
    let delivered = got.first.len();
    emit(
        out,
        Figure::new(
            "burst_requests",
            got.requests as f64,
            "requests",
            format!(
                "requests the platform received for {n} new task dirs written in {:.3} s \
                 (spread over {BURST_SPAN:?}); target <= {}",
                written.as_secs_f64(),
                burst_limit(n)
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "burst_delivered",
            delivered as f64,
            "dispatches",
            format!(
                "distinct ids of the {n} answered 2xx; {} dispatches received in all ({} more \
                 than once or not of the burst)",
                got.received,
                got.received.saturating_sub(delivered)
            ),
        ),
    );
    emit(
        out,
        Figure::new(
            "burst_last_2xx",
            last.map_or(f64::NAN, |d| d.as_secs_f64()),
            "s",
            "from the burst's first write to the last of its dispatches answered 2xx".into(),
        ),
    );
    if delivered != n {
        println!("burst: FAILED: {delivered} of {n} delivered within {BURST_WAIT:?}");
    }
    Ok(())
}

/// burst_requests' target: the entries of 100 a burst of `n` needs, plus 20 %.
fn burst_limit(n: usize) -> usize {
    (n.div_ceil(100) * 6).div_ceil(5)
}

/// The phase's targets: `(figure, op, limit)`, op one of `<=`, `<`, `=`; printed
/// after the harness's summary.
pub fn checks(opts: &Options) -> [Check; 6] {
    [
        ("idle_cpu", "<=", 0.1),
        ("pickup_p99", "<=", 1.0),
        ("burst_requests", "<=", burst_limit(opts.burst) as f64),
        ("burst_delivered", "=", opts.burst as f64),
        ("daemon_rss", "<", 64.0),
        ("daemon_exit_code", "=", 0.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_targets_follow_the_sizes() {
        let opts = Options::from_args(&[
            "--daemon-workspaces",
            "2000",
            "--idle-secs=2",
            "--burst",
            "200",
        ])
        .unwrap();
        assert_eq!((opts.daemon_workspaces, opts.idle_secs), (2_000, 2));
        assert_eq!((opts.burst, opts.pickups), (200, 50));
        assert_eq!(burst_limit(5_000), 60);
        assert_eq!(burst_limit(200), 3);
        let defaults = Options::default();
        assert_eq!(
            (defaults.daemon_workspaces, defaults.idle_secs),
            (100_000, 120)
        );
        assert_eq!(checks(&defaults)[2].2, 60.0);
    }
}
