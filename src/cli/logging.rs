//! The binary's logger (the library never initialises one).
//!
//! - Level: `RUST_LOG` when set; otherwise `info` for agent-sync's own modules under
//!   `run` (the start and its settings, each delivered request, each backoff decision
//!   with its next attempt, each dead letter, each pull, the stop), `warn` for
//!   everything else and for one-shot commands, which stay quiet.
//! - Format: `--log-format text` (env_logger's `[time LEVEL target] message`), or
//!   `json`: one object per line, `{"ts","level","target","message"}`, for log
//!   shippers.
//!
//! No log line anywhere carries the token: it is only ever put in an
//! `Authorization` header, and `Token`'s `Debug` is redacted.

use std::io::Write;

use agent_sync::actors::time::Clock;
use serde_json::json;

use super::{Cli, Command, LogFormat};

/// The filter of `run` without `RUST_LOG`.
pub const DAEMON_FILTER: &str = "warn,agent_sync=info,agent_sync_actors=info";
/// The filter of one-shot commands without `RUST_LOG`.
pub const ONE_SHOT_FILTER: &str = "warn";

/// The default filter for `command`.
pub fn default_filter(command: &Command) -> &'static str {
    match command {
        Command::Run(_) => DAEMON_FILTER,
        _ => ONE_SHOT_FILTER,
    }
}

/// Initialises the global logger for `cli`, once, before anything runs.
pub fn init(cli: &Cli) {
    let env = env_logger::Env::default().default_filter_or(default_filter(&cli.command));
    let mut builder = env_logger::Builder::from_env(env);
    if cli.global.log_format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = json!({
                "ts": Clock::system().now().to_rfc3339(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}
