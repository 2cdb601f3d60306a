//! resent_after_kill, resent_after_sigterm: what a crash or a graceful stop makes the
//! agent send twice.
//!
//! The parent queues a backlog on one state dir (a `SyncService`, offline, one
//! dispatch per entry so every request is one entry), then runs a child process
//! after another on that state dir: this binary again with the hidden
//! `--phase drain-child`, which starts a real `SyncService` against the parent's
//! loopback platform, drains (`drain_on_start`), and on SIGTERM does
//! `service.stop().await` and exits 0. Each child is ended at one kill point:
//!
//! - **mid-POST**: SIGKILL/SIGTERM as the platform receives the child's n-th request
//!   of the run (n = 2..5), whose answer is then held back (2 s for SIGKILL, 300 ms
//!   for SIGTERM, which the graceful stop waits for);
//! - **right after a 2xx**: the signal a fixed 0.25-4 ms after the platform's handler
//!   returned the 2xx of the n-th request, while the child is committing its outcome;
//! - **random**: the signal a pseudo-random 0-250 ms after the child's first request.
//!
//! Every child run is an epoch the platform logs with each arrival. A request is
//! "sent again" when its `Idempotency-Key` was already seen in an earlier epoch; it is
//! charged to the kill that ended the epoch before the one it arrived in. A last child
//! drains what is left and exits; every dispatch of the backlog must then have been
//! answered 2xx at least once (nothing lost), and no key may arrive twice within one
//! run.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_sync_testkit::{LoopbackPlatform, Notify, Recorded, Scripted};

mod child;

pub use self::child::child;
use self::child::{seed, send_signal, spawn, wait_exit};
use crate::figures::Figure;
use crate::fixture;
use crate::support::{serve, BenchResult, Rng};

/// Entries queued before the first child (one dispatch each).
const BACKLOG: usize = 500;
/// The platform answers every 2xx this long after the request arrived while the
/// kill points run (so a child drains about 150 requests a second).
const PLATFORM_DELAY: Duration = Duration::from_millis(5);
/// Rounds of kill points: each has one of every SIGKILL kind; the first
/// [`SIGTERM_ROUNDS`] one of every SIGTERM kind too.
const KILL_ROUNDS: usize = 4;
/// See [`KILL_ROUNDS`].
const SIGTERM_ROUNDS: usize = 2;
/// Delays after the handler returned a 2xx, by round.
const AFTER_2XX: [Duration; KILL_ROUNDS] = [
    Duration::from_micros(250),
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(4),
];
/// Random kill points fall this long at most after the child's first request.
const RANDOM_WINDOW_MICROS: u64 = 250_000;
/// How long a mid-POST answer is held back for SIGKILL (the child dies meanwhile).
const HOLD_KILL: Duration = Duration::from_secs(2);
/// How long a mid-POST answer is held back for SIGTERM (the graceful stop waits).
const HOLD_TERM: Duration = Duration::from_millis(300);
/// A child that does not reach its kill point, or exit, within this is an error.
const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// Which signal ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful stop.
    Term,
}

/// Where in the run it comes.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// As the n-th request of the run arrives (its answer held back).
    MidPost { nth: u64 },
    /// This long after the n-th request's 2xx left the handler.
    After2xx { nth: u64, delay: Duration },
    /// This long after the run's first request arrived.
    Random { delay: Duration },
}

impl Point {
    fn kind(&self) -> &'static str {
        match self {
            Point::MidPost { .. } => "mid-POST",
            Point::After2xx { .. } => "after 2xx",
            Point::Random { .. } => "random",
        }
    }

    fn describe(&self) -> String {
        match self {
            Point::MidPost { nth } => format!("mid-POST #{nth}"),
            Point::After2xx { nth, delay } => {
                format!("{:.2} ms after 2xx #{nth}", delay.as_secs_f64() * 1e3)
            }
            Point::Random { delay } => format!("{:.0} ms", delay.as_secs_f64() * 1e3),
        }
    }
}

fn plan(rng: &mut Rng) -> Vec<(Signal, Point)> {
    let mut plan = Vec::new();
    for (round, &after) in AFTER_2XX.iter().enumerate() {
        let nth = 2 + round as u64;
        let mut random = || Point::Random {
            delay: Duration::from_micros(rng.next_u64() % RANDOM_WINDOW_MICROS),
        };
        plan.push((Signal::Kill, Point::MidPost { nth }));
        plan.push((Signal::Kill, Point::After2xx { nth, delay: after }));
        plan.push((Signal::Kill, random()));
        if round < SIGTERM_ROUNDS {
            plan.push((Signal::Term, Point::MidPost { nth }));
            plan.push((Signal::Term, Point::After2xx { nth, delay: after }));
            plan.push((Signal::Term, random()));
        }
    }
    plan
}

/// In the parent: the two figures.
pub fn measure(work: &Path) -> BenchResult<Vec<Figure>> {
    serve(|server| measure_against(work, server))
}

/// A request as the kill points count it: its run, key, answer and dispatches.
struct Arrival {
    /// The run (epoch) it came in.
    epoch: u32,
    /// Its `Idempotency-Key`.
    key: String,
    /// What it was answered.
    status: u16,
    /// The `id` of each of its dispatches.
    ids: Vec<String>,
}

impl From<&Recorded> for Arrival {
    fn from(request: &Recorded) -> Self {
        Arrival {
            epoch: request.epoch,
            key: request.header("idempotency-key").unwrap_or_default().into(),
            status: request.status,
            ids: request.dispatch_ids(),
        }
    }
}

/// Scripts the platform for one run: every answer after [`PLATFORM_DELAY`], and the
/// `nth` request of the run tells `notify` at `point` (its answer held back for a
/// mid-POST point).
fn arm(server: &LoopbackPlatform, signal: Signal, point: Point, notify: mpsc::Sender<Instant>) {
    let answer = || Scripted::ok().delay(PLATFORM_DELAY);
    let (nth, trigger) = match point {
        Point::MidPost { nth } => {
            let hold = match signal {
                Signal::Kill => HOLD_KILL,
                Signal::Term => HOLD_TERM,
            };
            (
                nth,
                Scripted::ok().delay(hold).notify(Notify::Arrival(notify)),
            )
        }
        Point::After2xx { nth, .. } => (nth, answer().notify(Notify::Answered(notify))),
        Point::Random { .. } => (1, answer().notify(Notify::Arrival(notify))),
    };
    for _ in 1..nth {
        server.respond(answer());
    }
    server.respond(trigger);
}

/// One child run as it ended.
struct Outcome {
    /// What ended it.
    signal: Signal,
    /// When.
    point: Point,
    /// From the signal to the child's exit.
    exit_after: Duration,
    /// How it exited.
    status: ExitStatus,
}

fn measure_against(work: &Path, server: &LoopbackPlatform) -> BenchResult<Vec<Figure>> {
    let started = Instant::now();
    let state = work.join("state-kill");
    let ws = work.join("no-workspaces");
    let url = server.url();
    actix::System::new().block_on(seed(&state, &ws, &url, BACKLOG))?;
    server.set_recording(true);
    server.set_default(Scripted::ok().delay(PLATFORM_DELAY));
    let mut rng = Rng::from_clock();
    let seed = rng.seed();
    let plan = plan(&mut rng);
    let exe = std::env::current_exe()?;
    let mut outcomes = Vec::with_capacity(plan.len());
    for (i, (signal, point)) in plan.iter().enumerate() {
        let epoch = i as u32 + 1;
        server.begin_epoch(epoch);
        let (notify, notified) = mpsc::channel();
        arm(server, *signal, *point, notify);
        let mut child = spawn(&exe, &state, &url, false)?;
        if notified.recv_timeout(CHILD_LIMIT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "resent_after_kill: run {epoch} ({}) never reached its kill point",
                point.describe()
            )
            .into());
        }
        match *point {
            Point::MidPost { .. } => {}
            Point::After2xx { delay, .. } | Point::Random { delay } => std::thread::sleep(delay),
        }
        let signalled = Instant::now();
        send_signal(&mut child, *signal)?;
        let status = wait_exit(&mut child, CHILD_LIMIT)?;
        if *signal == Signal::Term && !status.success() {
            return Err(format!(
                "resent_after_sigterm: the child did not stop cleanly on SIGTERM ({status}) \
                 at {}",
                point.describe()
            )
            .into());
        }
        outcomes.push(Outcome {
            signal: *signal,
            point: *point,
            exit_after: signalled.elapsed(),
            status,
        });
    }
    // The last run drains what is left, at full speed, and exits by itself.
    let last_epoch = plan.len() as u32 + 1;
    server.begin_epoch(last_epoch);
    server.set_default(Scripted::ok());
    let mut child = spawn(&exe, &state, &url, true)?;
    let status = wait_exit(&mut child, Duration::from_secs(120))?;
    if !status.success() {
        return Err(format!("resent_after_kill: the last child failed ({status})").into());
    }
    let arrivals: Vec<Arrival> = server.requests().iter().map(Arrival::from).collect();

    let Tally {
        resent,
        within_run,
        delivered,
    } = tally(&arrivals, plan.len());
    let expected: HashSet<String> = (0..BACKLOG).map(fixture::dispatch_id).collect();
    let lost = expected
        .iter()
        .filter(|id| !delivered.contains(id.as_str()))
        .count();
    if lost != 0 {
        return Err(format!(
            "resent_after_kill: {lost} of {BACKLOG} dispatches never reached the platform"
        )
        .into());
    }
    let requests_last = arrivals.iter().filter(|a| a.epoch == last_epoch).count();
    let common = format!(
        "child = this binary --phase drain-child running SyncService on one state dir with \
         {BACKLOG} queued entries of 1 dispatch, against a loopback platform answering after \
         {} ms; a key seen in an earlier run = 1 request sent again, charged to the signal \
         before; {} requests in all, {within_run} repeated within a run, all {BACKLOG} \
         dispatches delivered after a last run ({requests_last} requests); random seed \
         {seed:#x}; {:.1} s",
        PLATFORM_DELAY.as_millis(),
        arrivals.len(),
        started.elapsed().as_secs_f64()
    );
    let figure = |name: &'static str, signal: Signal, what: &str| {
        let runs: Vec<(usize, &Outcome)> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.signal == signal)
            .collect();
        let most = runs.iter().map(|(i, _)| resent[*i]).max().unwrap_or(0);
        let mut kinds: Vec<String> = Vec::new();
        for kind in ["mid-POST", "after 2xx", "random"] {
            let of_kind: Vec<String> = runs
                .iter()
                .filter(|(_, o)| o.point.kind() == kind)
                .map(|(i, o)| format!("{}: {}", o.point.describe(), resent[*i]))
                .collect();
            kinds.push(format!("{kind} [{}]", of_kind.join(", ")));
        }
        let slowest_exit = runs
            .iter()
            .map(|(_, o)| o.exit_after)
            .max()
            .unwrap_or_default();
        let ended = match signal {
            Signal::Kill => {
                use std::os::unix::process::ExitStatusExt;
                let killed = runs
                    .iter()
                    .filter(|(_, o)| o.status.signal() == Some(9))
                    .count();
                format!("{killed} of {} children died of SIGKILL", runs.len())
            }
            Signal::Term => {
                let clean = runs.iter().filter(|(_, o)| o.status.success()).count();
                format!("{clean} of {} children exited 0", runs.len())
            }
        };
        Figure::new(
            name,
            most as f64,
            "requests",
            format!(
                "most requests sent again after one {what}, over {} points, re-sent per \
                 point: {}; {ended}, the slowest {:.0} ms after the signal; {common}",
                runs.len(),
                kinds.join("; "),
                slowest_exit.as_secs_f64() * 1e3
            ),
        )
    };
    Ok(vec![
        figure("resent_after_kill", Signal::Kill, "kill -9"),
        figure(
            "resent_after_sigterm",
            Signal::Term,
            "SIGTERM (graceful stop)",
        ),
    ])
}

/// What the platform's log says about re-sends.
struct Tally<'a> {
    /// Requests sent again, by the index of the run whose end (signal) they follow.
    resent: Vec<usize>,
    /// Requests whose key had already come in the same run (never expected).
    within_run: usize,
    /// Dispatch ids answered 2xx at least once.
    delivered: HashSet<&'a str>,
}

/// A request is sent again when its key came in an earlier run (epoch); it is charged
/// to the signal that ended the run before the one it came in (epoch e, 1-based,
/// follows the end of run e - 1, index e - 2). `runs` is how many runs were ended by a
/// signal.
fn tally(arrivals: &[Arrival], runs: usize) -> Tally<'_> {
    let mut last_epoch: HashMap<&str, u32> = HashMap::new();
    let mut tally = Tally {
        resent: vec![0; runs],
        within_run: 0,
        delivered: HashSet::new(),
    };
    for arrival in arrivals {
        if arrival.status == 200 {
            tally
                .delivered
                .extend(arrival.ids.iter().map(String::as_str));
        }
        match last_epoch.insert(&arrival.key, arrival.epoch) {
            None => {}
            Some(last) if last == arrival.epoch => tally.within_run += 1,
            Some(_) => {
                let ended_by = arrival.epoch.saturating_sub(2) as usize;
                if let Some(count) = tally.resent.get_mut(ended_by) {
                    *count += 1;
                }
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(epoch: u32, key: &str, status: u16, ids: &[&str]) -> Arrival {
        Arrival {
            epoch,
            key: key.into(),
            status,
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_key_from_an_earlier_run_is_charged_to_the_signal_before_its_run() {
        let log = [
            arrival(1, "a", 200, &["d1"]),
            arrival(1, "b", 200, &["d2"]),
            // Run 1 was killed after b's 2xx left but before its commit: b again.
            arrival(2, "b", 200, &["d2"]),
            arrival(2, "c", 200, &["d3"]),
            // Run 2 was killed mid-POST of d: d again, and once more within run 3.
            arrival(2, "d", 503, &["d4"]),
            arrival(3, "d", 200, &["d4"]),
            arrival(3, "d", 200, &["d4"]),
            // Last run (not ended by a signal).
            arrival(4, "e", 200, &["d5"]),
        ];
        let t = tally(&log, 3);
        assert_eq!(t.resent, [1, 1, 0]);
        assert_eq!(t.within_run, 1);
        let mut delivered: Vec<&str> = t.delivered.into_iter().collect();
        delivered.sort();
        assert_eq!(delivered, ["d1", "d2", "d3", "d4", "d5"]);
    }

    #[test]
    fn the_plan_has_every_kind_of_point_for_both_signals() {
        let plan = plan(&mut Rng::new(7));
        let count = |signal: Signal, kind: &str| {
            plan.iter()
                .filter(|(s, p)| *s == signal && p.kind() == kind)
                .count()
        };
        for kind in ["mid-POST", "after 2xx", "random"] {
            assert_eq!(count(Signal::Kill, kind), KILL_ROUNDS);
            assert_eq!(count(Signal::Term, kind), SIGTERM_ROUNDS);
        }
    }
}
