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
//! The platforms, the actors' start-up and the raw server come from
//! `agent-sync-testkit` (its `LoopbackPlatform` on a thread of its own, `Raw`,
//! `start_actors_over`); this file runs the phases in order.
//!
//! - [`options`]: the flags (clap).
//! - [`support`]: what the phases share (actors, enqueue and drain, the platform, the
//!   binary's path, arithmetic); it imports no phase, and no phase imports another.
//! - [`fixture`]: the workspace tree, the floor walk, the dispatches.
//! - [`figures`], [`targets`]: printing figures and targets, machine facts.
//! - [`scan`]: floor walk, cold scan and rescan (`ScanToQueue`).
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
//! - [`cli`]: a backlog queued by many short `agent-sync` processes, drained by one;
//!   the database after such a drain; fsyncs per delivered request.
//! - [`daemon`]: `agent-sync run` watching a 100,000-workspace tree: idle CPU, pickup
//!   latency, a burst, peak RSS.

mod cli;
mod coalesce;
mod daemon;
mod figures;
mod fixture;
mod fleet;
mod hung;
mod kill;
mod options;
mod push;
mod rss;
mod scale;
mod scan;
mod support;
mod targets;

use std::path::Path;
use std::process::ExitCode;

use agent_sync_actors::time::Clock;
use clap::Parser;

use crate::figures::{print_summary, Figure};
use crate::options::{ChildPhase, Options};
use crate::support::BenchResult;
use crate::targets::print_targets;
use agent_sync_testkit::LoopbackPlatform;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(scale::MEASURE_FLAG) {
        // Before anything else: the helper must stay small (see scale::measure_child).
        return exit(scale::measure_child(args.get(2..).unwrap_or_default()));
    }
    // A bad flag exits 2 with clap's message; --help exits 0.
    let opts = Options::parse();
    // testkit's helpers panic where a test would fail: that is an error here too.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match opts.phase {
        Some(ChildPhase::DrainChild) => kill::child(&opts),
        Some(ChildPhase::Rss) => rss::child(&opts),
        None => run(&args, &opts),
    }));
    exit(result.unwrap_or_else(|_| Err("a step panicked (its message is above)".into())))
}

/// 0, or 1 with an `error:` line.
fn exit(result: BenchResult<()>) -> ExitCode {
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
    let figures = support::serve(|server| measure(opts, work.path(), server))?;
    print_summary(&figures);
    // The cli and daemon phases' targets depend on the sizes, so they are not among
    // figures::TARGETS: printed after those, in the same form.
    print_targets(&cli::checks(opts), &figures);
    print_targets(&daemon::checks(opts), &figures);
    Ok(())
}

fn measure(opts: &Options, work: &Path, server: &LoopbackPlatform) -> BenchResult<Vec<Figure>> {
    let mut figures = actix::System::new().block_on(on_this_system(opts, work, server))?;
    if opts.runs("cli") {
        figures.extend(cli::run(opts, work)?);
    }
    if opts.runs("daemon") {
        figures.extend(daemon::run(opts)?);
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

/// The phases that run on the bench's own actix System, in order; each starts its
/// own actors on a fresh state dir, so no phase measures another's leftovers.
async fn on_this_system(
    opts: &Options,
    work: &Path,
    server: &LoopbackPlatform,
) -> BenchResult<Vec<Figure>> {
    let mut figures = Vec::new();
    if opts.runs("scan") {
        scan::scan(opts, work, &server.url(), &mut figures).await?;
    }
    if opts.runs("enqueue") {
        push::enqueue(opts, work, &server.url(), &mut figures).await?;
    }
    if opts.runs("drain") {
        push::drain(opts, work, server, &mut figures).await?;
    }
    if opts.runs("coalesced") {
        coalesce::coalesced(opts, work, &mut figures).await?;
    }
    if opts.runs("hung") {
        hung::durable_while_hung(work, &mut figures).await?;
    }
    if opts.runs("scale") {
        scale::scale(opts, work, server, &mut figures).await?;
    }
    Ok(figures)
}
