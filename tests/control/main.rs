//! The CLI beside a running agent-sync (design.md §13), end to end with the built binary:
//! the control socket, commands carried out by the running process, logs by default,
//! systemd notify, completions and the man page, key file hygiene, and an embedded
//! `SyncService` serving the socket to the CLI.
//!
//! Like `tests/cli/main.rs`, every process gets a cleared environment rooted in a temp dir
//! (`<tmp>/workspace`, `<tmp>/sync`); platforms are loopback servers on 127.0.0.1 run
//! by the test's actix System, so child processes are waited for on the blocking pool.
//!
//! | module          | what its tests prove                                        |
//! |-----------------|-------------------------------------------------------------|
//! | [`same_output`] | every command prints the same beside a daemon as without    |
//! | [`files`]       | the control socket file and the key file                    |
//! | [`supervision`] | logs by default, systemd notify                             |
//! | [`completions`] | completions and the man page name every subcommand          |
//! | [`embedded`]    | an embedded `SyncService` serving the socket to the CLI     |

mod completions;
mod embedded;
mod files;
mod same_output;
mod supervision;

use std::path::Path;

use agent_sync_testkit::*;
use serde_json::Value;

/// A token distinctive enough that finding it anywhere is a leak.
const SECRET: &str = "control-secret-51c0ffee77";
/// The agent id every process runs as.
const AGENT: &str = "control-agent";

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// The pid the process serving `socket` reports in `/health`.
async fn served_by(socket: &Path) -> u64 {
    let (_, body) = get_unix(socket, "/health").await;
    let health: Value = serde_json::from_str(&body).expect("health is JSON");
    health["pid"].as_u64().expect("a pid")
}
