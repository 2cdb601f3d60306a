//! The `agent-sync` command line (design.md §8): arguments, and how they become a
//! [`SyncConfig`].
//!
//! - this file: the clap definitions, durations, flags over environment;
//! - [`commands`]: runs one command against a [`SyncService`](agent_sync::SyncService);
//! - [`output`]: text and `--json` rendering;
//! - [`daemon`]: `run`, the long-lived loop with signal handling and systemd notify;
//! - [`performer`]: where a command is carried out: a service of its own, or the
//!   running agent-sync that holds the state (through its control socket);
//! - [`logging`]: the logger (levels by command, text or JSON lines);
//! - [`generate`]: `completions` and `man`;
//! - [`doctor`]: `doctor`, read-only checks of the installation;
//! - [`error`]: how a command fails, and the exit codes.
//!
//! Exit codes: 0 success (offline and platform-down pushes included), 1 a local
//! failure with an `error:` line on stderr, 2 usage (clap).

pub mod commands;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod generate;
pub mod logging;
pub mod output;
pub mod performer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_sync::actors::watch::WatchMode;
use agent_sync::SyncConfig;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Keeps an AI-agent host in sync with its platform.
#[derive(Debug, Parser)]
#[command(
    name = "agent-sync",
    version,
    about = "Keeps an AI-agent host in sync with its platform: durable push queue, context pull, history.",
    long_about = "Keeps an AI-agent host in sync with its platform.\n\n\
        Finished dispatches found under the workspace root are pushed to the platform \
        API; while the platform is unreachable (or no token is configured) they wait in a \
        durable queue in <state-dir>/sync.redb and go out with backoff later. Fleet \
        context is pulled back and cached.\n\n\
        The token is read from CORE_AGENT_API_KEY, else CORE_BRAIN_KEY, else \
        <home>/.claude/brain.key (home = CORE_HOME, else HOME); it is never a flag. \
        The API URL comes from --api-url, else CORE_API_URL, else CORE_BRAIN_URL, else \
        https://api.lthn.sh. Flags override the environment.\n\n\
        Beside a running agent-sync (`run`, or a host embedding it) on the same state \
        dir, status, queue, dead-letters, requeue, history, push and pull are carried \
        out by that process through its control socket <state-dir>/agent-sync.sock, \
        with the same output.\n\n\
        Logging: RUST_LOG (default info for `run`, warn otherwise), --log-format json \
        for one JSON object per line.",
    after_help = "Examples:\n  \
        agent-sync push                      scan, queue and deliver finished work\n  \
        agent-sync --json status             local status as one JSON object\n  \
        agent-sync run --scan-interval 5m    the daemon\n\n\
        Exit codes: 0 success (also offline or platform down), 1 local failure, 2 usage."
)]
pub struct Cli {
    /// Options every command takes, in any position.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command (`global = true`: accepted before or after the
/// command name), applied over the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Why: hosts keep workspaces in different places.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help = "Workspace root [default: $CORE_WORKSPACE/workspace, else ~/Lethean/workspace]"
    )]
    pub workspace_root: Option<PathBuf>,
    /// Why: several agents on one machine need separate state (`sync.redb`).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help = "State dir holding sync.redb [default: $CORE_WORKSPACE/sync, else ~/Lethean/data/sync]"
    )]
    pub state_dir: Option<PathBuf>,
    /// Why: staging and self-hosted platforms.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help = "Platform API base URL [default: $CORE_API_URL, else $CORE_BRAIN_URL, else https://api.lthn.sh]"
    )]
    pub api_url: Option<String>,
    /// Why: the platform files work under an agent.
    #[arg(
        long,
        global = true,
        value_name = "ID",
        help = "Agent id to push and pull as [default: $AGENT_NAME, else the host name]"
    )]
    pub agent_id: Option<String>,
    /// Why: fleets address hosts by node number; sent with every push.
    #[arg(
        long,
        global = true,
        value_name = "N",
        help = "Fleet node id (an integer) sent with pushes"
    )]
    pub fleet_node_id: Option<i64>,
    /// Why: scripts want machine-readable output.
    #[arg(long, global = true, help = "Print JSON instead of text")]
    pub json: bool,
    /// Why: some labs run the platform on plain http inside a private network.
    #[arg(
        long,
        global = true,
        help = "Allow http:// to a non-loopback host (the token then travels unencrypted)"
    )]
    pub allow_insecure_http: bool,
    /// Why: log shippers (Vector, Fluent Bit, journald exporters) want one JSON object
    /// per line.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value = "text",
        help = "Log lines on stderr as text or as one JSON object per line"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `[time LEVEL target] message`, for people.
    #[default]
    Text,
    /// `{"ts":..,"level":..,"target":..,"message":..}`, one per line.
    Json,
}

/// Shells `completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (`source <(agent-sync completions bash)`).
    Bash,
    /// zsh (a `_agent-sync` file on `$fpath`).
    Zsh,
    /// fish (`~/.config/fish/completions/agent-sync.fish`).
    Fish,
}

impl GlobalArgs {
    /// Flags over environment over defaults (design.md §8): `config` is the one
    /// resolved from the environment; every flag given replaces its value.
    pub fn apply(&self, mut config: SyncConfig) -> SyncConfig {
        if let Some(root) = &self.workspace_root {
            config.workspace_root = root.clone();
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        if let Some(url) = &self.api_url {
            config.platform.base_url = url.clone();
        }
        if let Some(agent) = self.agent_id.as_ref().filter(|a| !a.trim().is_empty()) {
            config.agent_id = agent.clone();
        }
        if self.fleet_node_id.is_some() {
            config.fleet_node_id = self.fleet_node_id;
        }
        config.platform.allow_insecure_http |= self.allow_insecure_http;
        config
    }
}

/// The commands of design.md §8.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Scan for finished work, queue it durably, and deliver the queue once.
    #[command(after_help = "Examples:\n  \
        agent-sync push\n  \
        agent-sync push --queue-only\n  \
        echo '[{\"id\":\"core/x/1\",\"status\":\"completed\"}]' | agent-sync push --dispatches -\n\n\
        Prints `synced: N` (N dispatches delivered by this call). Without a token the \
        dispatches given with --dispatches are queued and N is 0; an unreachable \
        platform is not an error either: the queue retries with backoff.")]
    Push(PushArgs),
    /// Pull fleet context from the platform (falls back to the cached copy).
    #[command(after_help = "Examples:\n  \
        agent-sync pull\n  \
        agent-sync --json pull --since 2026-04-14T12:00:00Z\n\n\
        Prints `context items: N`. With --since the items received are merged into the \
        cache by id.")]
    Pull(PullArgs),
    /// Show local state: queue, dead letters, ledger, context, last syncs.
    #[command(after_help = "Example:\n  agent-sync --json status\n\n\
        Never touches the network.")]
    Status,
    /// Show sync records, oldest first.
    #[command(
        after_help = "Example:\n  agent-sync history --limit 10   the newest ten, oldest first"
    )]
    History(HistoryArgs),
    /// List queued entries in delivery order.
    #[command(after_help = "Examples:\n  \
        agent-sync --json queue\n  \
        agent-sync queue --limit 10   the next ten to be sent\n\n\
        Entries are read and printed a page (1,000) at a time, so a large backlog \
        starts printing at once.")]
    Queue(ListArgs),
    /// List entries the platform refused for good.
    #[command(after_help = "Examples:\n  \
        agent-sync dead-letters\n  \
        agent-sync dead-letters --limit 10   the oldest ten\n\n\
        Move them back with `agent-sync requeue SEQ...` or `agent-sync requeue --all`.")]
    DeadLetters(ListArgs),
    /// Move dead letters back to the queue.
    #[command(
        after_help = "Examples:\n  agent-sync requeue 12 15\n  agent-sync requeue --all\n\n\
        Exits 1 when a SEQ given is not a dead letter (the others are still moved)."
    )]
    Requeue(RequeueArgs),
    /// Run as a daemon: reap ghosts, scan and push on an interval, drain on backoff
    /// timers, pull on an interval, until SIGINT or SIGTERM.
    #[command(after_help = "Examples:\n  \
        agent-sync run\n  \
        agent-sync run --scan-interval 5m --pull-interval 1h\n  \
        agent-sync run --scan-interval 0     only drain what is queued\n  \
        agent-sync run --metrics-addr 127.0.0.1:9464\n\n\
        Durations: 90s, 5m, 1h, 250ms, or 0 for off. Without a token it keeps running \
        and sends nothing; the key file is read again on every cycle. Serves the control \
        API on <state-dir>/agent-sync.sock (status, queue, push, ... from the CLI go \
        through it; /metrics and /health too). Logs at info on stderr unless RUST_LOG \
        says otherwise. Under systemd Type=notify it reports READY, STOPPING and \
        WATCHDOG.")]
    Run(RunArgs),
    /// Import the Go agent's sync files (queue, ledger, records, status, context), once.
    #[command(after_help = "Examples:\n  \
        agent-sync import-legacy\n  \
        agent-sync import-legacy --from ~/Lethean/sync\n\n\
        Reads queue.json, ledger.json, records.json, status.json and context.json, never \
        modifies them, and imports them only once: a second run imports nothing.")]
    ImportLegacy(ImportArgs),
    /// Check the installation: configuration, platform, workspace root, state, daemon.
    #[command(after_help = "Examples:\n  \
        agent-sync doctor\n  \
        agent-sync --json doctor\n\n\
        One line per check: ok, warn or fail, with what to do. Exits 1 when a check \
        fails, else 0. Changes nothing: the database is opened read-only (or the \
        running agent-sync is asked through its socket), and the platform gets one \
        GET /v1/agent/status, never a push. The token is never shown.")]
    Doctor,
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    #[command(after_help = "Examples:\n  \
        source <(agent-sync completions bash)\n  \
        agent-sync completions zsh > ~/.zfunc/_agent-sync\n  \
        agent-sync completions fish > ~/.config/fish/completions/agent-sync.fish")]
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout: agent-sync(1), or one command's.
    #[command(after_help = "Examples:\n  \
        agent-sync man > /usr/local/share/man/man1/agent-sync.1\n  \
        agent-sync man push > /usr/local/share/man/man1/agent-sync-push.1")]
    Man(ManArgs),
}

/// Arguments of `man`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Why: agent-sync(1) lists the commands as agent-sync-COMMAND(1) pages.
    #[arg(value_name = "COMMAND", help = "Print agent-sync-COMMAND(1) instead")]
    pub command: Option<String>,
}

impl Command {
    /// True for the commands a running agent-sync carries out when it holds the
    /// state (through its control socket).
    pub fn goes_through_a_running_process(&self) -> bool {
        matches!(
            self,
            Command::Push(_)
                | Command::Pull(_)
                | Command::Status
                | Command::History(_)
                | Command::Queue(_)
                | Command::DeadLetters(_)
                | Command::Requeue(_)
        )
    }
}

/// Arguments of `completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// Why: each shell has its own completion language.
    #[arg(value_enum, help = "The shell to complete for")]
    pub shell: Shell,
}

/// Arguments of `push`.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Why: a flush must not rescan (P6).
    #[arg(long, help = "Only deliver what is already queued; never scan")]
    pub queue_only: bool,
    /// Why: hosts hand in their own records, pushed verbatim (P2).
    #[arg(
        long,
        value_name = "FILE|-",
        help = "Push this JSON array of dispatch objects (from FILE, or - for stdin) instead of scanning"
    )]
    pub dispatches: Option<PathBuf>,
}

/// Arguments of `pull`.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Why: incremental pulls; the reply is merged into the cache by id.
    #[arg(
        long,
        value_name = "T",
        help = "Only context since T (passed to the platform as `since`)"
    )]
    pub since: Option<String>,
}

/// Arguments of `history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Why: the log keeps 100 records; usually the last few matter.
    #[arg(
        long,
        value_name = "N",
        help = "Show only the newest N records (still oldest first)"
    )]
    pub limit: Option<usize>,
}

/// Arguments of `queue` and `dead-letters`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Why: a backlog can be large; usually the head (what goes next) matters.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        help = "Show only the first N, oldest first (default: all, read a page at a time)"
    )]
    pub limit: Option<usize>,
}

/// Arguments of `requeue`: seqs or `--all`, one of them required.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["seqs", "all"])))]
pub struct RequeueArgs {
    /// Why: an operator fixes one refusal at a time.
    #[arg(value_name = "SEQ", help = "Dead letters to move back, by seq")]
    pub seqs: Vec<u64>,
    /// Why: after a platform fix every refusal is retryable.
    #[arg(long, conflicts_with = "seqs", help = "Move every dead letter back")]
    pub all: bool,
}

/// Arguments of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Why: correctness never rests on the watcher; a rescan of the whole tree (cheap
    /// thanks to the rescan cache) catches whatever events could not. Unset: 10m while
    /// watching, 60s without a watcher.
    #[arg(long, value_name = "D", value_parser = parse_duration,
          help = "Rescan the whole tree and push this often, the fallback behind the watcher (0 = never scan, only drain the queue) [default: 10m while watching, else 60s]")]
    pub scan_interval: Option<Duration>,
    /// Why: sub-second pickup, and a daemon that spends nothing while nothing changes.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = parse_watch,
          help = "Watch the workspace tree and scan what changes at once: auto (where the platform has a watcher, unless --scan-interval 0 asks to only drain), on, off")]
    pub watch: WatchMode,
    /// Why: context changes slowly and pulls cost the platform.
    #[arg(long, value_name = "D", default_value = "0", value_parser = parse_duration,
          help = "Pull context this often (0 = never)")]
    pub pull_interval: Duration,
    /// Why: some hosts reap their own workers.
    #[arg(
        long,
        help = "Do not rewrite `running` workspaces whose pid is gone to `failed`"
    )]
    pub no_reap: bool,
    /// Why: a stop must not abandon a request the platform may already have
    /// stored (a duplicate after the restart), nor hang a service manager forever.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration,
          help = "On SIGTERM/SIGINT, let the request in flight run this long (a second signal stops at once)")]
    pub shutdown_timeout: Duration,
    /// Why: Prometheus scrapes over TCP; the control socket is local only. Off unless
    /// given, and only ever the address given (a non-loopback one exposes the metrics
    /// to the network).
    #[arg(
        long,
        value_name = "ADDR",
        help = "Also serve /metrics and /health over TCP, e.g. 127.0.0.1:9464 [default: off]"
    )]
    pub metrics_addr: Option<SocketAddr>,
}

/// Arguments of `import-legacy`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Why: the Go agent's files may live elsewhere than the state dir.
    #[arg(
        long,
        value_name = "DIR",
        help = "Directory holding the Go agent's sync files [default: the state dir]"
    )]
    pub from: Option<PathBuf>,
}

/// Parses `--watch`: `auto`, `on` or `off`.
pub fn parse_watch(text: &str) -> Result<WatchMode, String> {
    match text {
        "auto" => Ok(WatchMode::Auto),
        "on" => Ok(WatchMode::On),
        "off" => Ok(WatchMode::Off),
        other => Err(format!("`{other}` is not one of auto, on, off")),
    }
}

/// Parses `90s`, `5m`, `1h`, `250ms`, or a plain number of seconds (`0` = off).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration; use e.g. 90s, 5m, 1h or 0");
    let value: u64 = number.parse().map_err(|_| bad())?;
    let seconds = |factor: u64| {
        value
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(bad)
    };
    match unit {
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "ms" => Ok(Duration::from_millis(value)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_take_units_and_refuse_words() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["soon", "", "5x", "-1s", "1.5s", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn global_options_go_anywhere_and_override_the_environment() {
        let cli = Cli::try_parse_from([
            "agent-sync",
            "status",
            "--json",
            "--agent-id",
            "flag",
            "--fleet-node-id",
            "7",
        ])
        .unwrap();
        assert!(cli.global.json);
        let env = SyncConfig::from_lookup(|k| match k {
            "AGENT_NAME" => Some("env".into()),
            "CORE_API_URL" => Some("https://env.example".into()),
            _ => None,
        });
        let config = cli.global.apply(env);
        assert_eq!(config.agent_id, "flag");
        assert_eq!(config.fleet_node_id, Some(7));
        assert_eq!(config.platform.base_url, "https://env.example");
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["agent-sync", "requeue"]).is_err());
        assert!(Cli::try_parse_from(["agent-sync", "requeue", "1", "--all"]).is_err());
        assert!(Cli::try_parse_from(["agent-sync", "history", "--limit", "many"]).is_err());
        for listing in ["queue", "dead-letters"] {
            assert!(Cli::try_parse_from(["agent-sync", listing, "--limit", "0"]).is_err());
            let cli = Cli::try_parse_from(["agent-sync", listing, "--limit", "2"]).unwrap();
            assert!(matches!(
                cli.command,
                Command::Queue(ListArgs { limit: Some(2) })
                    | Command::DeadLetters(ListArgs { limit: Some(2) })
            ));
        }
    }
}
