//! `agent-sync`: the command line of design.md §8, on top of
//! [`agent_sync::SyncService`]. See `cli/` for the commands.

mod cli;

use clap::Parser;

fn main() {
    // Usage errors exit 2 (and --help/--version 0) right here, before anything opens.
    let args = cli::Cli::parse();
    // The binary owns logging; the library never initialises a logger.
    cli::logging::init(&args);
    let code = actix::System::new().block_on(cli::commands::execute(args));
    std::process::exit(code);
}
