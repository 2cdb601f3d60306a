//! `agent-sync`: the command line of design.md §8, on top of
//! [`agent_sync::SyncService`]. See `cli/` for the commands.

mod cli;

use clap::Parser;

fn main() {
    // Usage errors exit 2 (and --help/--version 0) right here, before anything opens.
    let args = cli::Cli::parse();
    // The binary owns logging; the library never initialises a logger.
    cli::logging::init(&args);
    let system = actix::System::new();
    let code = system.block_on(cli::commands::execute(args));
    // Exit with the System still alive: dropping its runtime would wait for any task
    // left on its blocking pool, and a stop at once (a second signal) must not wait
    // for anything. Everything that matters was committed before `execute` returned.
    std::process::exit(code);
}
