//! R1 and R3, crash safety and graceful stop of the real `agent-sync` binary:
//! `kill -9` at any point loses nothing that was acknowledged, and the only request it
//! can make us send twice is the one in flight (R1); a SIGTERM in the middle of a
//! drain sends nothing twice (R3); a second SIGTERM stops at once.
//!
//! # The harness
//!
//! Each round runs in an isolated [`Sandbox`] (as in `tests/cli/main.rs`: a cleared
//! environment, `HOME` and `CORE_WORKSPACE` in a temp dir). A few hundred dispatches
//! are queued, then `agent-sync run --scan-interval 0` (the default daemon: one request
//! in flight, each outcome committed before the next lease) drains them to a platform
//! on 127.0.0.1 that answers slowly (1-4 ms, pseudo-random from the round's seed) and
//! is stopped at a chosen moment, restarted, stopped again, and finally left to
//! finish. The platform ([`platform`]) is the testkit's threaded [`Raw`] server rather
//! than the actix one, because it must act at exact points: kill the daemon while it
//! holds a request (mid-POST), right after it has written a 2xx (before the Queue
//! could record it), or hold a request while the test signals the daemon. Every
//! daemon incarnation gets a server of its own, so each request is attributed to the
//! incarnation that sent it. The rounds are in [`rounds`], the checks after each stop
//! in [`phase`], what every round starts from in [`setup`], the statistics of a kind
//! in [`tally`].
//!
//! Seeded queues are made of entries of 1-3 dispatches, each one request, imported
//! whole ([`Import`]: separate enqueues in one process would coalesce).
//!
//! Kinds of stop point:
//! - `mid-enqueue`: `push --dispatches FILE` of a 300-dispatch file, offline, killed
//!   at a random moment of its run (start, open and repair, commit, exit);
//! - `mid-post`: the daemon is killed while the platform holds its n-th request;
//! - `after-2xx`: killed right after the platform has answered its n-th request;
//! - `anytime`: killed after a random delay (start-up, repair, lease, commit...);
//! - `scanned`: 300 finished workspaces on disk, found by the daemon's own scan;
//!   killed at a random moment, then right after a 2xx (Ledger/Queue atomicity);
//! - `sigterm`: SIGTERM while the platform holds the n-th request, which it then
//!   answers normally: the daemon must exit 0 having started no other request;
//! - `second-sigterm`: SIGTERM, then SIGTERM again while the platform never answers:
//!   the daemon must exit 0 at once (well under `--shutdown-timeout`), the entry
//!   still queued.
//!
//! # What is checked
//!
//! After every stop, the state opens (`queue --json`, exit 0) and:
//! - an entry left the queue only if the platform answered it with a 2xx;
//! - an entry sent but not answered is still queued;
//! - the platform never held two requests of the daemon at once;
//! - the requests sent *and* still queued (they will be sent again) are at most ONE
//!   request (POSTs, i.e. idempotency keys, not dispatches), the last one sent, after
//!   a kill or a second signal; none at all after a graceful stop;
//! - an entry the daemon logged as pushed (after its durable commit) is gone.
//!
//! At the end of a round: the queue is empty, nothing is dead-lettered, every
//! acknowledged dispatch reached the platform at least once (lost = 0), and every
//! extra copy the platform received, counted in requests and in dispatches, is
//! accounted for by the at most one request per kill that was still queued; rounds
//! stopped only gracefully receive no copy at all.
//!
//! `AGENT_SYNC_CRASH_ROUNDS` (default 4) sets the rounds per kind and
//! `AGENT_SYNC_CRASH_SEED` the base seed, e.g.
//! `AGENT_SYNC_CRASH_ROUNDS=50 cargo test --release --test crash -- --nocapture`.
//!
//! [`Import`]: agent_sync::actors::import::Import
//! [`Sandbox`]: agent_sync_testkit::Sandbox
//! [`Raw`]: agent_sync_testkit::Raw

mod phase;
mod platform;
mod rounds;
mod setup;
mod tally;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use agent_sync_testkit::{run, write_done};
use serde_json::{json, Value};

use platform::{Platform, Trigger};
use rounds::{KillAt, Round};
use setup::*;
use tally::Tally;

/// SIGKILL to a child not reaped yet (a `push` in the middle of its run).
fn kill_now(child: &Child) {
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
}

/// `push --dispatches` of a 300-dispatch file, offline, killed at a random moment.
#[test]
fn crash_mid_enqueue_never_loses_an_acknowledged_push() {
    // How long such a push takes here, to spread the kills over its whole run.
    let calibration = sandbox();
    let file = calibration.path().join("big.json");
    write_dispatches(&file, "cal", DISPATCHES);
    let started = Instant::now();
    let out = calibration
        .cmd(&["push", "--dispatches", file.to_str().unwrap()])
        .output()
        .expect("push");
    assert!(out.status.success());
    let run_time = started.elapsed();

    let mut tally = Tally::default();
    for index in 0..rounds() {
        let mut round = Round::new("mid-enqueue", index);
        let sandbox = &round.sandbox;
        let small = |name: &str, count: usize| {
            let path = sandbox.path().join(format!("{name}.json"));
            write_dispatches(&path, name, count);
            let out = sandbox
                .cmd(&["push", "--dispatches", path.to_str().unwrap()])
                .output()
                .expect("push");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (0..count)
                .map(|i| format!("{name}-{i:03}"))
                .collect::<Vec<_>>()
        };
        let mut acked: BTreeSet<String> = small("first", 40).into_iter().collect();
        for big in 0..3 {
            let name = format!("big{big}");
            let path = sandbox.path().join(format!("{name}.json"));
            write_dispatches(&path, &name, DISPATCHES);
            let ids: Vec<String> = (0..DISPATCHES).map(|i| format!("{name}-{i:03}")).collect();
            // The first kill anywhere in the run; the others near its end, where the
            // commit and the exit are.
            let micros = run_time.as_micros() as u64;
            let delay = Duration::from_micros(if big == 0 {
                round.rng.below(micros * 13 / 10 + 1)
            } else {
                micros * 6 / 10 + round.rng.below(micros / 2 + 1)
            });
            let mut child = sandbox
                .cmd(&["push", "--dispatches", path.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn push");
            thread::sleep(delay);
            kill_now(&child);
            let status = child.wait().expect("wait");
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr)
                .expect("read stderr");
            assert!(
                status.success() || status.signal() == Some(libc::SIGKILL),
                "{}: {status}: {stderr}",
                round.label
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            let queued: HashSet<String> = queued_entries(sandbox)
                .into_iter()
                .flat_map(|e| e.ids)
                .collect();
            let present = ids.iter().filter(|id| queued.contains(*id)).count();
            if status.success() {
                tally.enqueue_outcomes.0 += 1;
                acked.extend(ids);
            } else if present == DISPATCHES {
                tally.enqueue_outcomes.1 += 1;
                acked.extend(ids); // queued: it must be delivered like the rest
            } else {
                tally.enqueue_outcomes.2 += 1;
            }
            assert!(
                present == 0 || present == DISPATCHES,
                "{}: a killed push left {present} of its {DISPATCHES} dispatches",
                round.label
            );
            let missing: Vec<&String> = acked.iter().filter(|id| !queued.contains(*id)).collect();
            assert!(
                missing.is_empty(),
                "{}: acknowledged dispatches missing after a kill: {:?}",
                round.label,
                &missing[..missing.len().min(5)]
            );
            tally.kills += 1;
        }
        acked.extend(small("last", 40));
        round.expected = acked;
        // Nothing killed during delivery: each arrives exactly once.
        round.finish(&mut tally);
    }
    tally.print("mid-enqueue");
    assert_eq!(tally.lost, 0);
    assert_eq!(tally.duplicates, 0, "no delivery was interrupted");
    assert_eq!(tally.duplicate_requests, 0, "no delivery was interrupted");
}

fn write_dispatches(path: &Path, prefix: &str, count: usize) {
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let mut d = dispatch(&format!("{prefix}-{i:03}"));
            d["report"] = json!({"summary": "s".repeat(900)});
            d
        })
        .collect();
    fs::write(path, serde_json::to_vec(&items).expect("json")).expect("write dispatches");
}

/// Seeded rounds: `stops` stops per round at points `pick` chooses from the entries
/// left, then a finish. Prints and returns the kind's tally.
fn delivery_rounds(kind: &str, stops: usize, pick: fn(&mut Lcg, usize) -> KillAt) -> Tally {
    let mut tally = Tally::default();
    for index in 0..rounds() {
        let mut round = Round::new(kind, index);
        round.seed_entries();
        for _ in 0..stops {
            let left = queued_entries(&round.sandbox).len();
            if left == 0 {
                break;
            }
            let kill = pick(&mut round.rng, left);
            round.phase(kill);
        }
        round.finish(&mut tally);
    }
    tally.print(kind);
    assert_eq!(tally.lost, 0);
    assert!(
        tally.max_resent_after_kill <= 1,
        "more than the request in flight"
    );
    assert_eq!(
        tally.max_resent_after_stop, 0,
        "re-sent after a graceful stop"
    );
    tally
}

#[test]
fn crash_mid_post_resends_at_most_the_request_in_flight() {
    delivery_rounds("mid-post", 2, |rng, left| {
        KillAt::Request(Trigger::KillHolding(rng.below(left as u64) as usize))
    });
}

#[test]
fn crash_right_after_a_2xx_resends_at_most_the_request_in_flight() {
    delivery_rounds("after-2xx", 2, |rng, left| {
        KillAt::Request(Trigger::KillAfterAnswer(rng.below(left as u64) as usize))
    });
}

#[test]
fn crash_at_random_moments_loses_nothing() {
    // Start-up and repair take tens of ms; each entry a few ms.
    delivery_rounds("anytime", 2, |rng, left| {
        KillAt::Time(Duration::from_millis(rng.below(80 + 3 * left as u64)))
    });
}

/// SIGTERM while the platform holds a request it then answers: the daemon exits 0
/// with that outcome committed and nothing else started, up to twice per round; after the
/// restarts and the final drain no request, no dispatch, arrived twice (R3).
#[test]
fn graceful_stop_mid_drain_resends_nothing() {
    let tally = delivery_rounds("sigterm", 2, |rng, left| {
        KillAt::Stop(rng.below(left as u64) as usize)
    });
    // The first stop of a round always lands mid-drain; the second only when the
    // first held request was not the last one queued.
    assert!(tally.stops >= rounds(), "a round without a stop mid-drain");
    assert_eq!(tally.duplicate_requests, 0, "a request was sent twice");
    assert_eq!(tally.duplicates, 0, "a dispatch was sent twice");
}

/// A second SIGTERM while the platform never answers: the daemon exits 0 at once,
/// well under `--shutdown-timeout 30s`, with the entry still queued; it is the one
/// request sent again after the restart.
#[test]
fn second_sigterm_stops_at_once_keeping_the_request_queued() {
    let tally = delivery_rounds("second-sigterm", 1, |rng, left| {
        KillAt::StopTwice(rng.below(left as u64) as usize)
    });
    assert_eq!(tally.second_signals, rounds());
    assert_eq!(
        tally.duplicate_requests,
        rounds(),
        "exactly the abandoned request is sent again, once per round"
    );
}

/// 300 finished workspaces found by the daemon's own scan: a kill at a random moment
/// (reap, scan, enqueue, delivery), then right after a 2xx. The Ledger and History are
/// recorded with the Queue's commit, so nothing is queued twice nor skipped.
#[test]
fn crash_while_scanned_workspaces_are_delivered_loses_nothing() {
    let mut tally = Tally::default();
    for index in 0..rounds() {
        let mut round = Round::new("scanned", index);
        round.scan = true;
        let root = round.sandbox.root();
        for i in 0..DISPATCHES {
            let id = format!("core/repo-{}/task-{i:03}", i % 7);
            write_done(&root, &id);
            round.expected.insert(id);
        }
        let first = Duration::from_millis(round.rng.below(250));
        round.phase(KillAt::Time(first));
        let left = queued_entries(&round.sandbox).len().max(1);
        let n = round.rng.below(left as u64) as usize;
        round.phase(KillAt::Request(Trigger::KillAfterAnswer(n)));
        round.finish(&mut tally);
        // The Ledger survived the kills with the Queue: a new push finds nothing.
        let status = round.sandbox.status();
        assert_eq!(
            status["ledger_entries"], DISPATCHES,
            "{}: {status}",
            round.label
        );
        let platform = Platform::start(0, Trigger::Never);
        let out = run(round.sandbox.online(&platform.url(), &["push"]));
        assert_eq!(out.stdout.trim(), "synced: 0");
        assert!(platform.log().is_empty(), "{}: pushed again", round.label);
    }
    tally.print("scanned");
    assert_eq!(tally.lost, 0);
    assert!(tally.max_resent_after_kill <= 1);
}
