//! The agent-sync benchmark harness (DESIGN section 10).
//!
//! ```text
//! cargo run --release -p agent-sync-bench -- --workspaces 10000 [--entries 10000] [--rss-entries 100000]
//! ```
//!
//! It writes its own workspace tree into a temp dir (honours `TMPDIR`), serves a
//! loopback platform on 127.0.0.1 on a thread of its own, and prints a header, one
//! `name: value unit (detail)` line per figure, and one summary line per target.
//! A missed target is reported, never a failure: the exit code is 0 unless something
//! actually went wrong (1, with an `error:` line), or the flags are wrong (2).
//!
//! - [`fixture`]: the workspace tree, the floor walk, the dispatches.
//! - [`platform`]: the loopback server.
//! - [`phases`]: what the phases share (starting the actors), and their order.
//! - [`scan`]: floor walk, cold scan and rescan.
//! - [`push`]: enqueue, POST loop and drain.
//! - [`rss`]: peak RSS in a child process (`--phase rss`).
//! - [`figures`]: printing figures and targets, machine facts.

mod figures;
mod fixture;
mod phases;
mod platform;
mod push;
mod rss;
mod scan;

use std::process::ExitCode;

use agent_sync_actors::time::Clock;

use crate::figures::{print_summary, Figure};
use crate::platform::Loopback;

/// Every fallible step of the harness.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: agent-sync-bench [--workspaces N] [--entries N] [--rss-entries N]

  --workspaces N    workspaces in the generated tree (scan, rescan)     default 10000
  --entries N       host dispatches enqueued, entries drained, POSTs     default 10000
  --rss-entries N   entries drained by the peak_rss child process        default 100000

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
    /// Hidden: `rss` runs the peak RSS child.
    pub phase: Option<String>,
    /// Hidden: the parent's loopback platform, for the child.
    pub platform_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workspaces: 10_000,
            entries: 10_000,
            rss_entries: 100_000,
            phase: None,
            platform_url: None,
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
            "--phase" => match value()?.as_str() {
                "rss" => opts.phase = Some("rss".into()),
                other => return Err(format!("unknown phase {other:?}")),
            },
            "--platform-url" => opts.platform_url = Some(value()?),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().collect();
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
        "agent-sync-bench: command `{}`; machine: {}; date: {}; build: {}; \
         sizes: {} workspaces, {} entries, {} rss entries; work dir: {}",
        args.join(" "),
        figures::machine(),
        Clock::system().now().to_rfc3339_seconds(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        opts.workspaces,
        opts.entries,
        opts.rss_entries,
        work.path().display()
    );
    let server = Loopback::start()?;
    let result = measure(opts, work.path(), &server);
    let stopped = server.stop();
    let figures = result?;
    stopped?;
    print_summary(&figures);
    Ok(())
}

fn measure(opts: &Options, work: &std::path::Path, server: &Loopback) -> BenchResult<Vec<Figure>> {
    let mut figures = actix::System::new().block_on(phases::run(opts, work, server))?;
    let rss = rss::measure(opts, server)?;
    rss.print();
    figures.push(rss);
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
    }
}
