//! `agent-sync completions <bash|zsh|fish>` (clap_complete) and `agent-sync man`
//! (clap_mangen): both are generated from the clap definition, so they always name
//! every command and option the binary has.

use std::io::Write;

use clap::CommandFactory;

use super::error::CliError;
use super::{Cli, Shell};

/// The binary's name as shells and `man` know it.
const BIN: &str = "agent-sync";

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut Cli::command(), BIN, &mut script);
    script
}

/// The man page, in roff: agent-sync(1), or agent-sync-COMMAND(1) for `command`.
pub fn man_page(command: Option<&str>) -> Result<Vec<u8>, CliError> {
    let cli = Cli::command();
    let page = match command {
        None => cli,
        Some(name) => {
            let names: Vec<String> = cli
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            let sub =
                cli.find_subcommand(name)
                    .cloned()
                    .ok_or_else(|| CliError::NoSuchCommand {
                        name: name.to_string(),
                        known: names,
                    })?;
            let full = format!("{BIN}-{name}");
            sub.name(full.clone())
                .bin_name(format!("{BIN} {name}"))
                .display_name(full)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(CliError::ManPage)?;
    Ok(roff)
}

/// Writes `bytes` to stdout.
pub fn print(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(CliError::Stdout)
}
