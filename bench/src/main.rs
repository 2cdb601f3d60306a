//! The agent-sync benchmark harness (design.md §10).
//!
//! ```text
//! cargo run --release -p agent-sync-bench -- --workspaces 10000 [--entries 10000] \
//!     [--rss-entries 100000] [--fleet 100] [--outage-secs 30]
//! ```
//!
//! It writes its own workspace tree into a temp dir (honours `TMPDIR`), serves a
//! loopback platform on 127.0.0.1 on a thread of its own, and prints a header, one
//! `name: value unit (detail)` line per figure, and one summary line per target.
//! A missed target is reported, never a failure: the exit code is 0 unless something
//! actually went wrong (1, with an `error:` line), or the flags are wrong (2).
//!
//! - [`fixture`]: the workspace tree, the floor walk, the dispatches.
//! - [`platform`]: the loopback server (delays, outages, arrival log, kill-point
//!   triggers) and a platform that never answers.
//! - [`phases`]: what the phases share (starting the actors), and their order.
//! - [`scan`]: floor walk, cold scan and rescan.
//! - [`push`]: enqueue, POST loop and drain (one POST per entry).
//! - [`coalesce`]: 10,000 one-dispatch enqueues drained, end to end.
//! - [`hung`]: a push is durable while a drain hangs.
//! - [`rss`]: peak RSS in a child process (`--phase rss`).
//! - [`kill`]: requests sent again after kill -9 / SIGTERM of a draining child
//!   process (`--phase drain-child`).
//! - [`fleet`]: two fleets of instances recovering from an outage, with and without
//!   jitter.
//! - [`scale`]: a 100,000-workspace tree in the actors and through fresh `agent-sync`
//!   processes, the database before and after a backlog, growth from 10,000.
//! - [`cli_drain`]: a backlog queued by many short `agent-sync` processes, drained by
//!   one; the database after such a drain; fsyncs per delivered request ([`commits`]);
//!   [`cli_run`] runs the binary.
//! - [`daemon`]: `agent-sync run` watching a 100,000-workspace tree: idle CPU, pickup
//!   latency, a burst, peak RSS ([`daemon_proc`] the process, [`daemon_load`] the
//!   workspaces finishing, [`daemon_report`] their figures and the phase's targets).
//! - [`figures`]: printing figures and targets, machine facts.

mod cli_drain;
mod cli_run;
mod coalesce;
mod commits;
mod daemon;
mod daemon_load;
mod daemon_proc;
mod daemon_report;
mod figures;
mod fixture;
mod fleet;
mod hung;
mod kill;
mod phase_targets;
mod phases;
mod platform;
mod push;
mod rss;
mod scale;
mod scan;

use std::process::ExitCode;

use agent_sync_actors::time::Clock;

use crate::figures::{print_summary, Figure};
use crate::platform::Loopback;

/// Every fallible step of the harness.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: agent-sync-bench [--workspaces N] [--entries N] [--rss-entries N]
                        [--fleet N] [--outage-secs N] [--scale-workspaces N]
                        [--cli-calls N] [--cli-drain-dispatches N]
                        [--daemon-workspaces N] [--idle-secs S] [--pickups N] [--burst N]
                        [--agent-sync PATH] [--only A,B]

  --workspaces N    workspaces in the generated tree (scan, rescan)     default 10000
  --entries N       host dispatches enqueued, entries drained, POSTs     default 10000
                    (enqueue, drain, post_loop, drain_coalesced*)
  --rss-entries N   entries drained by the peak_rss child process        default 100000
  --fleet N         agent instances per fleet (fleet_recovery*)          default 100
  --outage-secs N   how long the platform answers 503 (fleet_recovery*)  default 30
                    (the backoff then decides: with 30 s they clear in ~2 min)
  --scale-workspaces N
                    the large tree of the scale phase; --workspaces is   default 100000
                    the small one its growth is shown from
  --cli-calls N     one-dispatch offline `agent-sync push` processes     default 2000
                    drained by one (cli_calls_coalesced*)
  --cli-drain-dispatches N
                    dispatches queued through the CLI, then drained     default 100000
                    (db_after_cli_drain)
  --daemon-workspaces N
                    the tree `agent-sync run` watches (daemon phase)    default 100000
  --idle-secs S     how long the idle daemon's CPU is measured          default 120
  --pickups N       workspaces finishing one at a time (pickup_p*)      default 50
  --burst N         workspaces finishing within one second (burst_*)    default 5000
  --agent-sync PATH the binary the scale, cli and daemon phases run   default: next
                    to this binary (so `cargo build --release --workspace` first)
  --only A,B        run only these phases (scan, enqueue, drain, coalesced, hung,
                    scale, cli, daemon, rss, kill, fleet); targets of the others print
                    `not measured`

Exit code: 0 (targets missed included), 1 on an error, 2 on bad flags.";

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Workspaces in the fixture.
    pub workspaces: usize,
    /// Enqueue, drain and POST loop size.
    pub entries: usize,
    /// Entries drained by the RSS child.
    pub rss_entries: usize,
    /// Agent instances per fleet.
    pub fleet: usize,
    /// Seconds the platform answers 503 in the fleet phase.
    pub outage_secs: u64,
    /// Workspaces in the scale phase's large tree.
    pub scale_workspaces: usize,
    /// One-dispatch offline CLI calls drained by one (cli phase).
    pub cli_calls: usize,
    /// Dispatches queued through the CLI and drained before the database is measured
    /// (cli phase).
    pub cli_drain_dispatches: usize,
    /// Workspaces in the tree the daemon watches (daemon phase).
    pub daemon_workspaces: usize,
    /// Seconds the idle daemon's CPU time is measured over (daemon phase).
    pub idle_secs: u64,
    /// Workspaces finishing one at a time for the pickup latency (daemon phase).
    pub pickups: usize,
    /// Workspaces finishing within one second (daemon phase).
    pub burst: usize,
    /// The `agent-sync` binary the scale phase runs (default: next to this one).
    pub agent_sync: Option<std::path::PathBuf>,
    /// Only these phases (all when empty).
    pub only: Vec<String>,
    /// Hidden: `rss` runs the peak RSS child, `drain-child` a draining SyncService.
    pub phase: Option<String>,
    /// Hidden: the parent's loopback platform, for the child.
    pub platform_url: Option<String>,
    /// Hidden: the drain child's state dir.
    pub state_dir: Option<std::path::PathBuf>,
    /// Hidden: the drain child exits once its queue is empty.
    pub exit_when_empty: bool,
}

/// The phases `--only` may name, in the order they run.
const PHASES: [&str; 11] = [
    "scan",
    "enqueue",
    "drain",
    "coalesced",
    "hung",
    "scale",
    "cli",
    "daemon",
    "rss",
    "kill",
    "fleet",
];

impl Options {
    /// Whether phase `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == name)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workspaces: 10_000,
            entries: 10_000,
            rss_entries: 100_000,
            fleet: 100,
            outage_secs: 30,
            scale_workspaces: 100_000,
            cli_calls: 2_000,
            cli_drain_dispatches: 100_000,
            daemon_workspaces: 100_000,
            idle_secs: 120,
            pickups: 50,
            burst: 5_000,
            agent_sync: None,
            only: Vec::new(),
            phase: None,
            platform_url: None,
            state_dir: None,
            exit_when_empty: false,
        }
    }
}

/// `Ok(None)` for `--help`.
fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        if matches!(flag, "-h" | "--help") {
            return Ok(None);
        }
        if flag == "--exit-when-empty" {
            opts.exit_when_empty = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let count = |v: String| -> Result<usize, String> {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} wants a positive integer, not {v:?}"))
        };
        match flag {
            "--workspaces" => opts.workspaces = count(value()?)?,
            "--entries" => opts.entries = count(value()?)?,
            "--rss-entries" => opts.rss_entries = count(value()?)?,
            "--fleet" => opts.fleet = count(value()?)?,
            "--outage-secs" => opts.outage_secs = count(value()?)? as u64,
            "--scale-workspaces" => opts.scale_workspaces = count(value()?)?,
            "--cli-calls" => opts.cli_calls = count(value()?)?,
            "--cli-drain-dispatches" => opts.cli_drain_dispatches = count(value()?)?,
            "--daemon-workspaces" => opts.daemon_workspaces = count(value()?)?,
            "--idle-secs" => opts.idle_secs = count(value()?)? as u64,
            "--pickups" => opts.pickups = count(value()?)?,
            "--burst" => opts.burst = count(value()?)?,
            "--agent-sync" => opts.agent_sync = Some(value()?.into()),
            "--phase" => match value()?.as_str() {
                phase @ ("rss" | "drain-child") => opts.phase = Some(phase.into()),
                other => return Err(format!("unknown phase {other:?}")),
            },
            "--platform-url" => opts.platform_url = Some(value()?),
            "--state-dir" => opts.state_dir = Some(value()?.into()),
            "--only" => {
                for phase in value()?.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if !PHASES.contains(&phase) {
                        return Err(format!("unknown phase {phase:?} for --only"));
                    }
                    opts.only.push(phase.to_string());
                }
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(scale::MEASURE_FLAG) {
        // Before anything else: the helper must stay small (see scale::measure_child).
        return match scale::measure_child(args.get(2..).unwrap_or_default()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let opts = match parse(args.get(1..).unwrap_or_default()) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match opts.phase.as_deref() {
        Some("drain-child") => kill::child(&opts),
        Some(_) => rss::child(&opts),
        None => run(&args, &opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String], opts: &Options) -> BenchResult<()> {
    let work = tempfile::Builder::new()
        .prefix("agent-sync-bench-")
        .tempdir()?;
    println!(
        "agent-sync-bench: command `{}`; machine: {}, load average {} at start; date: {}; \
         build: {}; \
         sizes: {} workspaces ({} in the scale phase), {} entries, {} rss entries, fleets \
         of {}, {} s outage; \
         work dir: {}",
        args.join(" "),
        figures::machine(),
        figures::load_average(),
        Clock::system().now().to_rfc3339_seconds(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        opts.workspaces,
        opts.scale_workspaces,
        opts.entries,
        opts.rss_entries,
        opts.fleet,
        opts.outage_secs,
        work.path().display()
    );
    let server = Loopback::start()?;
    let result = measure(opts, work.path(), &server);
    let stopped = server.stop();
    let figures = result?;
    stopped?;
    print_summary(&figures);
    cli_drain::print_summary(opts, &figures);
    daemon_report::print_summary(opts, &figures);
    Ok(())
}

fn measure(opts: &Options, work: &std::path::Path, server: &Loopback) -> BenchResult<Vec<Figure>> {
    let mut figures = actix::System::new().block_on(phases::run(opts, work, server))?;
    if opts.runs("cli") {
        figures.extend(cli_drain::run(opts, work)?);
    }
    if opts.runs("daemon") {
        figures.extend(daemon::run(opts, work)?);
    }
    if opts.runs("rss") {
        let rss = rss::measure(opts, server)?;
        rss.print();
        figures.push(rss);
    }
    if opts.runs("kill") {
        for figure in kill::measure(work)? {
            figure.print();
            figures.push(figure);
        }
    }
    if opts.runs("fleet") {
        figures.extend(fleet::run(opts, work)?);
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_parse_with_defaults_and_both_spellings() {
        let opts = parse(&args(&["--workspaces", "500", "--entries=20"]))
            .unwrap()
            .unwrap();
        assert_eq!(opts.workspaces, 500);
        assert_eq!(opts.entries, 20);
        assert_eq!(opts.rss_entries, 100_000);
        assert_eq!(parse(&args(&["--help"])).unwrap(), None);
        assert!(parse(&args(&["--entries"])).is_err());
        assert!(parse(&args(&["--entries", "0"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
        let opts = parse(&args(&["--outage-secs", "2", "--fleet=10"]))
            .unwrap()
            .unwrap();
        assert_eq!((opts.outage_secs, opts.fleet), (2, 10));
        let child = parse(&args(&[
            "--phase",
            "drain-child",
            "--state-dir",
            "/tmp/x",
            "--exit-when-empty",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(child.phase.as_deref(), Some("drain-child"));
        assert!(child.exit_when_empty);
        assert!(parse(&args(&["--phase", "bogus"])).is_err());
        let only = parse(&args(&["--only", "kill,fleet"])).unwrap().unwrap();
        assert!(only.runs("kill") && only.runs("fleet") && !only.runs("scan"));
        assert!(Options::default().runs("scan"));
        assert!(parse(&args(&["--only", "kill,bogus"])).is_err());
    }
}
