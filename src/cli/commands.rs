//! Runs one parsed command: resolves the config, starts a [`SyncService`], does the
//! work, prints the result, stops the service, and answers the exit code.
//!
//! Which commands may use the network:
//! - `push` and `run` send pushes; `pull` only pulls (no start-up drain, and it
//!   enqueues nothing, so the Pusher never sends);
//! - every other command is local: it runs with no token, so nothing at all is sent.

use std::fmt;
use std::io::Read;
use std::path::Path;

use agent_sync::actors::model::json_kind;
use agent_sync::actors::platform::TokenSource;
use agent_sync::actors::pusher::validate_dispatches;
use agent_sync::actors::{DispatchError, SyncError};
use agent_sync::legacy::LegacyError;
use agent_sync::messages::{SyncPull, SyncPush};
use agent_sync::{StartError, SyncConfig, SyncService};
use serde_json::Value;

use super::output::{self, Format};
use super::{daemon, Cli, Command};

/// Exit code of a success (offline and platform-down pushes included).
pub const EXIT_OK: i32 = 0;
/// Exit code of a local failure (an `error:` line was printed).
pub const EXIT_FAILURE: i32 = 1;

/// A local failure: printed as `error: <message>` and exit code 1.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        CliError(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<StartError> for CliError {
    fn from(e: StartError) -> Self {
        CliError(e.to_string())
    }
}

impl From<SyncError> for CliError {
    fn from(e: SyncError) -> Self {
        CliError(e.to_string())
    }
}

impl From<LegacyError> for CliError {
    fn from(e: LegacyError) -> Self {
        CliError(e.to_string())
    }
}

/// Runs `cli` to completion inside the current actix `System`; returns the exit code.
pub async fn execute(cli: Cli) -> i32 {
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<i32, CliError> {
    let Cli { global, command } = cli;
    let format = if global.json {
        Format::Json
    } else {
        Format::Text
    };
    let mut config = global.apply(SyncConfig::from_env());
    // Refuse bad input before anything is opened, so nothing can be queued (R4).
    let dispatches = match &command {
        Command::Push(args) => args
            .dispatches
            .as_deref()
            .map(read_dispatches)
            .transpose()?,
        _ => None,
    };
    if !matches!(
        command,
        Command::Push(_) | Command::Run(_) | Command::Pull(_)
    ) {
        // Local commands: no token, so nothing can be sent.
        config.tokens = TokenSource::Fixed(None);
    }
    if !matches!(command, Command::Run(_)) {
        // One-shot commands: a `push` drains in its own call (so its reply counts what
        // it delivered), and nothing else may push at all.
        config.drain_on_start = false;
        config.flush_interval = None;
    }
    if let Command::Run(args) = &command {
        if let Some(window) = args.lease_window {
            config.lease_window = usize::from(window);
        }
    }
    let tokens = config.tokens.clone();
    let service = SyncService::start(config)?;
    let result = run_on(&service, command, format, dispatches, tokens).await;
    service.stop();
    result
}

async fn run_on(
    service: &SyncService,
    command: Command,
    format: Format,
    dispatches: Option<Vec<Value>>,
    tokens: TokenSource,
) -> Result<i32, CliError> {
    let print = |text: String| println!("{text}");
    match command {
        Command::Push(args) => {
            let report = service
                .push(SyncPush {
                    queue_only: args.queue_only,
                    dispatches,
                    ..SyncPush::default()
                })
                .await?;
            print(output::push(format, report.count, report.queued));
        }
        Command::Pull(args) => {
            let report = service
                .pull(SyncPull {
                    since: args.since,
                    ..SyncPull::default()
                })
                .await?;
            print(output::pull(format, &report));
        }
        Command::Status => print(output::status(format, &service.status().await?)),
        Command::History(args) => {
            print(output::history(format, &service.history(args.limit).await?))
        }
        Command::Queue => print(output::queue(format, &service.queue(None).await?)),
        Command::DeadLetters => print(output::dead_letters(format, &service.dead_letters().await?)),
        Command::Requeue(args) => {
            let seqs = (!args.all).then_some(args.seqs);
            let report = service.requeue(seqs).await?;
            print(output::requeue(format, &report));
            if !report.missing.is_empty() {
                let missing: Vec<String> = report.missing.iter().map(u64::to_string).collect();
                return Err(CliError::new(format!(
                    "no dead letter with seq {}; see `agent-sync dead-letters`",
                    missing.join(", ")
                )));
            }
        }
        Command::Run(args) => daemon::run(service, &args, tokens).await?,
        Command::ImportLegacy(args) => {
            let from = args
                .from
                .unwrap_or_else(|| service.state_dir().to_path_buf());
            let report = service.import_legacy(&from).await?;
            print(output::import(format, &report));
        }
    }
    Ok(EXIT_OK)
}

/// Reads `--dispatches FILE|-`: a JSON array of objects, or an error naming the
/// problem (nothing is queued then).
fn read_dispatches(path: &Path) -> Result<Vec<Value>, CliError> {
    let (source, bytes) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::new(format!("cannot read dispatches from stdin: {e}")))?;
        ("stdin".to_string(), bytes)
    } else {
        let bytes = std::fs::read(path).map_err(|e| {
            CliError::new(format!(
                "cannot read dispatches file {}: {e}; nothing was queued",
                path.display()
            ))
        })?;
        (path.display().to_string(), bytes)
    };
    let invalid = |e: DispatchError| CliError::new(format!("dispatches from {source}: {e}"));
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(DispatchError::NotAnArray {
            detail: format!("not valid JSON: {e}"),
        })
    })?;
    let Value::Array(items) = value else {
        return Err(invalid(DispatchError::NotAnArray {
            detail: format!("found {}", json_kind(&value)),
        }));
    };
    let objects = validate_dispatches(items).map_err(invalid)?;
    Ok(objects.into_iter().map(Value::Object).collect())
}
