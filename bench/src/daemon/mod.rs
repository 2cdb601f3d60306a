//! The daemon phase (`--only daemon`): `agent-sync run` as a user runs it, watching a
//! large tree, measured from outside like any other process.
//!
//! The fixture is the scale phase's ([`fixture::generate`], `--daemon-workspaces`,
//! 100,000): 80 % terminal, 20 % running. The terminal ones are delivered first by one
//! `agent-sync push` of the binary, so the daemon starts on a state dir that knows
//! them (its rescan cache persisted). Then a fresh `agent-sync run` process with no
//! flag of its own, in a testkit `Sandbox` (`CORE_WORKSPACE` naming its root and state
//! dir, the token and platform in the environment; `RUST_LOG=info`, its stderr in a
//! log file), started and stopped by testkit's `Daemon`:
//!
//! - **idle_cpu** (target ≤ 0.1 % of one core): once it has logged `watching N
//!   directories ... (budget B)` and its start-up work (reap, rescan, new plan) has
//!   settled (no CPU tick over 1 s), its utime + stime (`/proc/<pid>/stat`, clock
//!   ticks of `sysconf(_SC_CLK_TCK)`) over `--idle-secs` (120) with nothing changing.
//! - **watches** (context): N of that line; `agent-sync status --json` (answered by
//!   the daemon through its control socket) after the idle window and after the burst.
//! - **pickup_p50**, **pickup_p99** (target ≤ 1 s): `--pickups` (50) workspaces
//!   finishing one at a time, 0.2-1.5 s apart at random ([`Rng`], seed printed), half
//!   new task directories, half running ones turning `completed` ([`load`]);
//!   from the rename to the platform's 2xx for that dispatch id.
//! - **burst_requests** (target ≤ 1.2 × ceil(N/100): 60 at 5,000),
//!   **burst_delivered** (target exactly N), **burst_last_2xx** (context): `--burst`
//!   N (5,000) new task directories finishing evenly within one second; requests the
//!   platform received, distinct ids delivered, time from the first write to the last
//!   2xx.
//! - **daemon_rss** (target < 64 MiB): VmHWM of `/proc/<pid>/status` at the end.
//! - **daemon_exit_code** (target 0): SIGTERM at the end; its exit code.
//!
//! The phase serves a loopback platform of its own (127.0.0.1) and prints its targets
//! after the harness's summary, in its form ([`report::checks`]).

use std::process::Stdio;

use std::time::{Duration, Instant};

mod load;
mod process;
mod report;

use self::load::{answered, Tree};
use self::process::{clock_ticks, cpu_ticks, memory_kib, settle, watches, watching_line};
pub use self::report::checks;
use self::report::{emit, EPOCH_BURST, EPOCH_PICKUP};
use crate::figures::{mib, Figure};
use crate::fixture;
use crate::options::Options;
use crate::support::{self, synced, BenchResult, Rng, AGENT_ID, TOKEN};
use agent_sync_testkit::{Daemon, LoopbackPlatform, Sandbox};

/// Arrivals while the daemon starts (there should be none: all was delivered).
const EPOCH_START: u32 = 1;
/// Longest wait for the `watching` line.
const START_LIMIT: Duration = Duration::from_secs(300);
/// CPU time unmoved this long: the start-up work is done.
const QUIET: Duration = Duration::from_secs(1);
/// Longest wait for the start-up work to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Runs the phase against a loopback platform of its own, in a sandbox of its own;
/// prints each figure as it is measured.
pub fn run(opts: &Options) -> BenchResult<Vec<Figure>> {
    support::serve(|server| measure(opts, server))
}

fn measure(opts: &Options, server: &LoopbackPlatform) -> BenchResult<Vec<Figure>> {
    let mut rng = Rng::from_clock();
    println!(
        "daemon: {} workspaces, {} s idle, {} pickups, a burst of {}; seed {}",
        opts.daemon_workspaces,
        opts.idle_secs,
        opts.pickups,
        opts.burst,
        rng.seed()
    );
    let bin = match support::binary(opts)? {
        Ok(bin) => bin,
        Err(why) => {
            println!("daemon: not measured: {why}");
            return Ok(Vec::new());
        }
    };
    let sandbox = Sandbox::new(bin, AGENT_ID, TOKEN);
    let root = sandbox.root();
    let url = server.url();
    let t = Instant::now();
    let fixture = fixture::generate(&root, opts.daemon_workspaces)?;
    log::info!("daemon: tree written in {:.1} s", t.elapsed().as_secs_f64());
    deliver(&sandbox, &url, fixture.terminal)?;
    server.set_recording(true);
    server.begin_epoch(EPOCH_START);
    let run = sandbox.online(&url, &["run"]);
    let mut daemon = Daemon::spawn(&sandbox, "daemon", Some("info"), run).deadline(START_LIMIT);
    daemon.wait_for("the watching line", |log| {
        log.lines().any(|l| watching_line(l).is_some())
    });
    let (watching, budget) = (daemon.log().lines().find_map(watching_line))
        .ok_or("daemon: the watching line went from its log")?;
    let pid = daemon.pid();
    let settled = settle(pid, QUIET, SETTLE_LIMIT)?;
    let hwm_started = memory_kib(pid, "VmHWM")?;
    let mut out = Vec::new();
    idle(opts, pid, settled, &mut out)?;
    let start_requests = epoch_requests(server, EPOCH_START);
    let (status_watches, status_budget) = watches(&sandbox, &url)?;
    emit(
        &mut out,
        Figure::new(
            "watches",
            watching as f64,
            "watches",
            format!(
                "kernel watches of the daemon's line `watching {watching} directories ... \
                 (budget {budget})` on {} workspaces ({} running); `agent-sync status --json` \
                 through the control socket after the idle window: {status_watches} of \
                 {status_budget}; the daemon's start sent {start_requests} requests",
                fixture.workspaces,
                fixture.workspaces - fixture.terminal
            ),
        ),
    );
    let tree = Tree {
        root: &root,
        workspaces: fixture.workspaces,
    };
    server.begin_epoch(EPOCH_PICKUP);
    let finished = load::pickups(&tree, opts.pickups, &mut rng)?;
    report::pickup_figures(server, &finished, &mut out);
    let hwm_pickups = memory_kib(pid, "VmHWM")?;
    server.begin_epoch(EPOCH_BURST);
    report::burst(opts.burst, &tree, server, &mut out)?;
    let peak = memory_kib(pid, "VmHWM")?;
    let rss_end = memory_kib(pid, "VmRSS")?;
    let (watches_after, _) = watches(&sandbox, &url)?;
    let log = daemon.log();
    let complaints: Vec<&str> = (log.lines())
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    for line in complaints.iter().take(5) {
        println!("daemon: its log: {line}");
    }
    // SIGTERM; exit code 128 + the signal when a signal ended it.
    let t = Instant::now();
    let status = daemon.terminate_blocking();
    let stop = t.elapsed();
    let code = (status.code())
        .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
        .unwrap_or(-1);
    emit(
        &mut out,
        Figure::new(
            "daemon_rss",
            mib(peak),
            "MiB",
            format!(
                "peak RSS (VmHWM of /proc/<pid>/status) of the daemon over the phase, read \
                 before SIGTERM; VmHWM once started and settled {:.1} MiB, after the pickups \
                 {:.1} MiB; VmRSS at the end {:.1} MiB; it held {watches_after} watches after \
                 the burst; {} warn or error lines in its log",
                mib(hwm_started),
                mib(hwm_pickups),
                mib(rss_end),
                complaints.len()
            ),
        ),
    );
    emit(
        &mut out,
        Figure::new(
            "daemon_exit_code",
            f64::from(code),
            "code",
            format!("exit code after SIGTERM, {:.0} ms later", millis(stop)),
        ),
    );
    Ok(out)
}

/// One `agent-sync push` delivering the fixture's terminal workspaces.
fn deliver(sandbox: &Sandbox, url: &str, terminal: usize) -> BenchResult<()> {
    let t = Instant::now();
    let output = sandbox
        .online(url, &["push"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || synced(&stdout) != Some(terminal) {
        return Err(format!(
            "daemon: agent-sync push ({}) printed {stdout:?}, expected synced: {terminal}",
            output.status
        )
        .into());
    }
    log::info!(
        "daemon: {terminal} delivered by one push in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// idle_cpu: the daemon's CPU over `--idle-secs` with nothing changing.
fn idle(
    opts: &Options,
    pid: u32,
    settled: Option<Duration>,
    out: &mut Vec<Figure>,
) -> BenchResult<()> {
    let hz = clock_ticks()?;
    let before = cpu_ticks(pid)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(opts.idle_secs));
    let ticks = cpu_ticks(pid)?.saturating_sub(before);
    let wall = t.elapsed().as_secs_f64();
    let cpu = ticks as f64 / hz as f64;
    let settled = settled.map_or_else(
        || format!("had not settled after {SETTLE_LIMIT:?}"),
        |d| format!("settled {:.1} s after it", d.as_secs_f64()),
    );
    emit(
        out,
        Figure::new(
            "idle_cpu",
            cpu / wall * 100.0,
            "%",
            format!(
                "share of one core: {ticks} clock ticks ({cpu:.2} s of utime + stime, \
                 /proc/<pid>/stat, {hz} ticks/s) over {wall:.1} s with nothing changing, from \
                 the `watching` log line once the start-up work {settled} (no tick for {:.0} \
                 s)",
                QUIET.as_secs_f64()
            ),
        ),
    );
    Ok(())
}

/// Requests the platform received in `epoch`.
fn epoch_requests(server: &LoopbackPlatform, epoch: u32) -> usize {
    answered(server, epoch, &[], Duration::ZERO).requests
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}
