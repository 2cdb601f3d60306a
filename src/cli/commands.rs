//! Runs one parsed command: resolves the config, finds where to carry it out, does
//! the work, prints the result, and answers the exit code.
//!
//! Where: `status`, `queue`, `dead-letters`, `requeue`, `history`, `push` and `pull`
//! go to the running agent-sync that holds the state, when one answers on its
//! control socket; otherwise (and always for `run`) this process starts a
//! [`SyncService`] on the state, does the work and stops it. Either way the output
//! and the exit code are the same (see [`performer`](super::performer)).
//! `import-legacy` opens the state itself and imports before anything runs on it (see
//! [`legacy`](agent_sync::legacy)).
//!
//! Which commands may use the network:
//! - `push` and `run` send pushes; `pull` only pulls (no start-up drain, and it
//!   enqueues nothing, so the Pusher never sends);
//! - every other command is local: it runs with no token, so nothing at all is sent.
//!
//! Carried out by a running process, `push` and `pull` use that process's token and
//! platform; no token ever crosses the socket.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync::actors::dispatch::check_dispatches;
use agent_sync::actors::lenient::json_kind;
use agent_sync::actors::platform::TokenSource;
use agent_sync::actors::DispatchError;
use agent_sync::control::ControlClient;
use agent_sync::legacy::{self, LegacyError};
use agent_sync::messages::{SyncPull, SyncPush};
use agent_sync::paging::{next_page, Paged};
use agent_sync::{StartError, SyncConfig, SyncService};
use serde_json::Value;

use super::daemon::{self, Close, Settings};
use super::doctor;
use super::error::{CliError, EXIT_FAILURE, EXIT_OK};
use super::output::{self, Format, Listed, Listing};
use super::performer::Performer;
use super::{generate, Cli, Command, GlobalArgs};

/// How long a command waits for the control socket of a process that has just
/// opened the state (it binds the socket right after).
const SOCKET_GRACE: Duration = Duration::from_secs(1);

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
    // Generated from the definition alone: no state, no environment.
    match &command {
        Command::Completions(args) => {
            generate::print(&generate::completions(args.shell))?;
            return Ok(EXIT_OK);
        }
        Command::Man(args) => {
            generate::print(&generate::man_page(args.command.as_deref())?)?;
            return Ok(EXIT_OK);
        }
        _ => {}
    }
    let format = if global.json {
        Format::Json
    } else {
        Format::Text
    };
    if let Command::Doctor = command {
        return Ok(doctor::run(&global, format).await);
    }
    let mut config = global.apply(SyncConfig::from_env());
    // Refuse bad input before anything is opened or sent, so nothing can be queued
    // (R4).
    let dispatches = match &command {
        Command::Push(args) => args
            .dispatches
            .as_deref()
            .map(read_dispatches)
            .transpose()?,
        _ => None,
    };
    let remote_able = command.goes_through_a_running_process();
    if remote_able {
        if let Some(client) = ControlClient::connect(&config.state_dir) {
            return remote(&client, &global, command, format, dispatches).await;
        }
    }
    if !matches!(
        command,
        Command::Push(_) | Command::Run(_) | Command::Pull(_)
    ) {
        // Local commands: no token, so nothing can be sent.
        config.tokens = TokenSource::Fixed(None);
    }
    let settings = Settings::of(&config);
    if let Command::Run(args) = &command {
        config.shutdown_timeout = args.shutdown_timeout;
        config.metrics_addr = args.metrics_addr;
    } else {
        // One-shot commands: a `push` drains in its own call (so its reply counts what
        // it delivered), and nothing else may push at all. They serve no control
        // socket: they are gone in a moment.
        config.drain_on_start = false;
        config.flush_interval = None;
        config.control_socket = false;
    }
    let state_dir = config.state_dir.clone();
    let tokens = config.tokens.clone();
    // Listen before the service starts: its first drain may already be in flight when
    // a SIGTERM comes, and that one must be a graceful stop too (R3).
    let signals = match &command {
        Command::Run(_) => Some(daemon::StopSignals::register()?),
        _ => None,
    };
    if let Command::ImportLegacy(args) = &command {
        let from = args.from.clone().unwrap_or_else(|| state_dir.clone());
        let report = legacy::import(&config, &from).map_err(|e| match e {
            LegacyError::Start(e) => in_use(e, &command),
            other => other.into(),
        })?;
        println!("{}", output::import(format, &report));
        return Ok(EXIT_OK);
    }
    let service = match SyncService::start(config) {
        Ok(service) => service,
        Err(e @ StartError::InUse { .. }) => {
            if remote_able {
                // A process that just opened the state binds its socket right after.
                if let Some(client) = wait_for_socket(&state_dir).await {
                    return remote(&client, &global, command, format, dispatches).await;
                }
            }
            return Err(in_use(e, &command));
        }
        Err(e) => return Err(e.into()),
    };
    let local = Local {
        service: &service,
        signals,
    };
    let result = run_on(
        &Performer::Local(&service),
        Some(local),
        command,
        format,
        dispatches,
        tokens,
        &settings,
    )
    .await;
    match result {
        Ok(Close::AtOnce) => service.abort(),
        _ => service.stop().await,
    }
    result.map(|_| EXIT_OK)
}

/// Carries `command` out in the running process behind `client`.
async fn remote(
    client: &ControlClient,
    global: &GlobalArgs,
    command: Command,
    format: Format,
    dispatches: Option<Vec<Value>>,
) -> Result<i32, CliError> {
    let performer = Performer::Remote {
        client,
        agent_id: global.agent_id.clone().filter(|a| !a.trim().is_empty()),
        fleet_node_id: global.fleet_node_id,
    };
    let settings = Settings::default();
    run_on(
        &performer,
        None,
        command,
        format,
        dispatches,
        TokenSource::Fixed(None),
        &settings,
    )
    .await
    .map(|_| EXIT_OK)
}

/// Polls for the control socket of the process holding `state_dir`, briefly.
async fn wait_for_socket(state_dir: &Path) -> Option<ControlClient> {
    let started = Instant::now();
    loop {
        if let Some(client) = ControlClient::connect(state_dir) {
            return Some(client);
        }
        if started.elapsed() >= SOCKET_GRACE {
            return None;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The "in use" error, with what to do for the commands that need the state to
/// themselves.
fn in_use(e: StartError, command: &Command) -> CliError {
    match command {
        Command::Run(_) => CliError::StateHeld {
            error: e,
            advice: "agent-sync already runs on this state: stop that process before \
                     starting another `agent-sync run` on it",
        },
        Command::ImportLegacy(_) => CliError::StateHeld {
            error: e,
            advice: "import-legacy needs the state to itself: stop that process, import, \
                     then start it again",
        },
        _ => e.into(),
    }
}

/// What only a command that opened the state itself has.
struct Local<'a> {
    /// The service on the state (`run` needs it to itself).
    service: &'a SyncService,
    /// The stop signals, registered before the service started (`run` only).
    signals: Option<daemon::StopSignals>,
}

async fn run_on(
    performer: &Performer<'_>,
    local: Option<Local<'_>>,
    command: Command,
    format: Format,
    dispatches: Option<Vec<Value>>,
    tokens: TokenSource,
    settings: &Settings,
) -> Result<Close, CliError> {
    let print = |text: String| println!("{text}");
    match command {
        Command::Push(args) => {
            let report = performer
                .push(SyncPush {
                    queue_only: args.queue_only,
                    dispatches,
                    ..SyncPush::default()
                })
                .await?;
            print(output::push(format, report.count, report.queued));
        }
        Command::Pull(args) => {
            let report = performer
                .pull(SyncPull {
                    since: args.since,
                    ..SyncPull::default()
                })
                .await?;
            print(output::pull(format, &report));
        }
        Command::Status => print(output::status(format, &performer.status().await?)),
        Command::History(args) => print(output::history(
            format,
            &performer.history(args.limit).await?,
        )),
        Command::Queue(args) => list(performer, format, Listed::Queue, args.limit).await?,
        Command::DeadLetters(args) => {
            list(performer, format, Listed::DeadLetters, args.limit).await?
        }
        Command::Requeue(args) => {
            let seqs = (!args.all).then_some(args.seqs);
            let report = performer.requeue(seqs).await?;
            print(output::requeue(format, &report));
            if !report.missing.is_empty() {
                return Err(CliError::NoDeadLetter {
                    seqs: report.missing,
                });
            }
        }
        Command::Run(args) => {
            let Some(Local {
                service,
                signals: Some(signals),
            }) = local
            else {
                return Err(CliError::NeedsTheState { command: "`run`" });
            };
            return daemon::run(service, &args, tokens, settings, signals).await;
        }
        // Carried out before any service starts (`run`).
        Command::ImportLegacy(_) | Command::Completions(_) | Command::Man(_) | Command::Doctor => {}
    }
    Ok(Close::Gracefully)
}

/// `queue` and `dead-letters`: the first `limit` (all when `None`), asked for a page
/// ([`LIST_PAGE`](agent_sync::paging::LIST_PAGE)) at a time, locally or through
/// the socket, and each page printed as it comes: a backlog of any size starts
/// printing at once, and neither process ever holds more than a page of it.
async fn list(
    performer: &Performer<'_>,
    format: Format,
    listed: Listed,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let mut listing = Listing::new(format, listed);
    let mut after = None;
    while let Some(want) = next_page(limit, listing.written()) {
        let (text, last) = match listed {
            Listed::Queue => {
                let page = performer.queue_page(after, want).await?;
                (listing.queue_page(&page), page.last().map(Paged::seq))
            }
            Listed::DeadLetters => {
                let page = performer.dead_letters_page(after, want).await?;
                (listing.dead_letter_page(&page), page.last().map(Paged::seq))
            }
        };
        // An empty page is the end (a short one may not be: see `next_page`).
        let Some(last) = last else { break };
        after = Some(last);
        if !write_out(&text)? {
            return Ok(());
        }
    }
    write_out(&listing.finish())?;
    Ok(())
}

/// Writes `text` to stdout at once; `false` when the reader has gone (a closed pipe,
/// as with `agent-sync queue | head`): the listing stops there, quietly.
fn write_out(text: &str) -> Result<bool, CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::Stdout(e)),
    }
}

/// Reads `--dispatches FILE|-`: a JSON array of objects, or an error naming the
/// problem (nothing is queued then).
fn read_dispatches(path: &Path) -> Result<Vec<Value>, CliError> {
    let (source, bytes) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|error| CliError::DispatchesUnreadable { file: None, error })?;
        ("stdin".to_string(), bytes)
    } else {
        let bytes = std::fs::read(path).map_err(|error| CliError::DispatchesUnreadable {
            file: Some(path.to_path_buf()),
            error,
        })?;
        (path.display().to_string(), bytes)
    };
    let invalid = |error: DispatchError| CliError::DispatchesInvalid {
        source: source.clone(),
        error,
    };
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
    check_dispatches(&items).map_err(invalid)?;
    Ok(items)
}
