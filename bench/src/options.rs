//! The bench's command line: sizes of the phases, the binary they run, and which of
//! them run. Parsed by clap; a wrong flag exits 2 with clap's message.

use std::path::PathBuf;

use clap::Parser;

/// The phases `--only` may name, in the order they run.
pub const PHASES: [&str; 11] = [
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

/// The hidden child modes: the bench runs itself again for what must be measured in
/// a process of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChildPhase {
    /// The peak RSS child (the `rss` phase).
    Rss,
    /// A draining `SyncService` the `kill` phase signals.
    DrainChild,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "agent-sync-bench",
    about = "The agent-sync benchmark harness (design.md §10): figures and targets.",
    after_help = "Exit code: 0 (targets missed included), 1 on an error, 2 on bad flags."
)]
pub struct Options {
    /// Workspaces in the generated tree (scan, rescan).
    #[arg(long, default_value_t = 10_000, value_parser = positive)]
    pub workspaces: usize,
    /// Host dispatches enqueued, entries drained, POSTs (enqueue, drain, post_loop,
    /// drain_coalesced*).
    #[arg(long, default_value_t = 10_000, value_parser = positive)]
    pub entries: usize,
    /// Entries drained by the peak_rss child process.
    #[arg(long, default_value_t = 100_000, value_parser = positive)]
    pub rss_entries: usize,
    /// Agent instances per fleet (fleet_recovery*).
    #[arg(long, default_value_t = 100, value_parser = positive)]
    pub fleet: usize,
    /// How long the platform answers 503 (fleet_recovery*); the backoff then decides:
    /// with 30 s they clear in about 2 minutes.
    #[arg(long, default_value_t = 30, value_parser = positive_secs)]
    pub outage_secs: u64,
    /// The large tree of the scale phase; --workspaces is the small one its growth is
    /// shown from.
    #[arg(long, default_value_t = 100_000, value_parser = positive)]
    pub scale_workspaces: usize,
    /// One-dispatch offline `agent-sync push` processes drained by one
    /// (cli_calls_coalesced*).
    #[arg(long, default_value_t = 2_000, value_parser = positive)]
    pub cli_calls: usize,
    /// Dispatches queued through the CLI, then drained (db_after_cli_drain).
    #[arg(long, default_value_t = 100_000, value_parser = positive)]
    pub cli_drain_dispatches: usize,
    /// The tree `agent-sync run` watches (daemon phase).
    #[arg(long, default_value_t = 100_000, value_parser = positive)]
    pub daemon_workspaces: usize,
    /// How long the idle daemon's CPU is measured, in seconds.
    #[arg(long, default_value_t = 120, value_parser = positive_secs)]
    pub idle_secs: u64,
    /// Workspaces finishing one at a time (pickup_p*).
    #[arg(long, default_value_t = 50, value_parser = positive)]
    pub pickups: usize,
    /// Workspaces finishing within one second (burst_*).
    #[arg(long, default_value_t = 5_000, value_parser = positive)]
    pub burst: usize,
    /// The binary the scale, cli and daemon phases run (default: next to this binary,
    /// so `cargo build --release --workspace` first).
    #[arg(long = "agent-sync", value_name = "PATH")]
    pub agent_sync: Option<PathBuf>,
    /// Run only these phases (scan, enqueue, drain, coalesced, hung, scale, cli,
    /// daemon, rss, kill, fleet); targets of the others print `not measured`.
    #[arg(long, value_name = "A,B", value_parser = phase_list, default_value = "", hide_default_value = true)]
    pub only: PhaseList,
    /// Hidden: the child mode this process runs in.
    #[arg(long, hide = true, value_enum)]
    pub phase: Option<ChildPhase>,
    /// Hidden: the parent's loopback platform, for the child.
    #[arg(long, hide = true)]
    pub platform_url: Option<String>,
    /// Hidden: the drain child's state dir.
    #[arg(long, hide = true)]
    pub state_dir: Option<PathBuf>,
    /// Hidden: the drain child exits once its queue is empty.
    #[arg(long, hide = true)]
    pub exit_when_empty: bool,
}

/// The phases `--only` named (all run when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseList(pub Vec<String>);

impl Options {
    /// Whether phase `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.only.0.is_empty() || self.only.0.iter().any(|p| p == name)
    }

    /// The flags `args` as given after the program's name: what the tests of every
    /// phase's flags parse, so each spells out only its own.
    #[cfg(test)]
    pub fn from_args(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("agent-sync-bench").chain(args.iter().copied()))
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::parse_from(["agent-sync-bench"])
    }
}

/// A count of at least one.
fn positive(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("wants a positive integer, not {value:?}"))
}

/// Seconds, at least one.
fn positive_secs(value: &str) -> Result<u64, String> {
    positive(value).map(|n| n as u64)
}

/// `A,B`: names of [`PHASES`], blanks ignored.
fn phase_list(value: &str) -> Result<PhaseList, String> {
    let mut list = Vec::new();
    for phase in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !PHASES.contains(&phase) {
            return Err(format!("unknown phase {phase:?}"));
        }
        list.push(phase.to_string());
    }
    Ok(PhaseList(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults_and_both_spellings() {
        let opts = Options::from_args(&["--workspaces", "500", "--entries=20"]).unwrap();
        assert_eq!(opts.workspaces, 500);
        assert_eq!(opts.entries, 20);
        assert_eq!(opts.rss_entries, 100_000);
        assert_eq!(
            Options::from_args(&["--help"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
        assert!(Options::from_args(&["--entries"]).is_err());
        assert!(Options::from_args(&["--entries", "0"]).is_err());
        assert!(Options::from_args(&["--bogus"]).is_err());
        let opts = Options::from_args(&["--outage-secs", "2", "--fleet=10"]).unwrap();
        assert_eq!((opts.outage_secs, opts.fleet), (2, 10));
        let child = Options::from_args(&[
            "--phase",
            "drain-child",
            "--state-dir",
            "/tmp/x",
            "--exit-when-empty",
        ])
        .unwrap();
        assert_eq!(child.phase, Some(ChildPhase::DrainChild));
        assert!(child.exit_when_empty);
        assert!(Options::from_args(&["--phase", "bogus"]).is_err());
        let only = Options::from_args(&["--only", "kill,fleet"]).unwrap();
        assert!(only.runs("kill") && only.runs("fleet") && !only.runs("scan"));
        assert!(Options::default().runs("scan"));
        assert!(Options::from_args(&["--only", "kill,bogus"]).is_err());
    }

    #[test]
    fn the_ci_command_line_parses() {
        let ci = "--workspaces 500 --entries 500 --rss-entries 5000 --fleet 20 --outage-secs 1 \
                  --scale-workspaces 2000 --cli-calls 50 --cli-drain-dispatches 5000 \
                  --daemon-workspaces 2000 --idle-secs 2 --pickups 6 --burst 200";
        let opts = Options::from_args(&ci.split_whitespace().collect::<Vec<_>>()).unwrap();
        assert_eq!((opts.burst, opts.idle_secs, opts.pickups), (200, 2, 6));
    }
}
