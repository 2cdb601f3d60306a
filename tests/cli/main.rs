//! End-to-end tests of the `agent-sync` binary's one-shot commands (design.md §8):
//! usage, status, push, pull, dead letters and requeue, local failures, secrets.
//! `tests/daemon.rs` covers `run`, `tests/import_legacy.rs` the legacy import.
//!
//! Every test runs the built binary in a [`Sandbox`]: a cleared environment whose
//! `HOME` and `CORE_WORKSPACE` point into a temp dir of its own (so the workspace root
//! is `<tmp>/workspace` and the state dir `<tmp>/sync`), plus `PATH` and an
//! `AGENT_NAME`. Tests that talk to a platform use a [`LoopbackPlatform`] on
//! 127.0.0.1; while it runs on the test's actix System, child processes are waited
//! for on the blocking pool ([`run_async`]).
//!
//! | module       | what its tests prove                                          |
//! |--------------|---------------------------------------------------------------|
//! | [`usage`]    | help, usage errors (exit 2), `status`, flags over the environment |
//! | [`push`]     | `push` offline and online, queue-only, platform down, bad files |
//! | [`pull`]     | `pull` from the platform or the cache, never a push           |
//! | [`listings`] | `queue`, `dead-letters`, `requeue`, paging with `--limit`     |
//! | [`safety`]   | refusals that touch nothing (exit 1), the token never printed |

mod listings;
mod pull;
mod push;
mod safety;
mod usage;

use std::fs;
use std::path::Path;

use agent_sync_testkit::*;
use serde_json::Value;

/// A token distinctive enough that finding it anywhere in output is a leak.
const SECRET: &str = "cli-secret-7f3a9c41d2";
/// The agent id every test runs as.
const AGENT: &str = "cli-agent";

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// Writes `value` to `path` as JSON (dispatch files).
fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec(value).expect("json")).expect("write json");
}
