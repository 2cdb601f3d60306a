//! Shared support of the agent-sync integration tests (`tests/` of the `agent-sync`
//! package), compiled once for every test binary; the benchmark harness (`bench/`)
//! runs on it too (its platforms, raw server, daemon handle and actor start-up).
//!
//! | module          | what it holds                                                   |
//! |-----------------|-----------------------------------------------------------------|
//! | [`sandbox`]     | one isolated installation of the binary, the CLI runner, [`Out`] |
//! | [`daemon`]      | a running `agent-sync run`: log, signals, waits, kill on drop   |
//! | [`platform`]    | [`LoopbackPlatform`]: a scriptable actix-web platform on 127.0.0.1 (the bench's too) |
//! | [`raw`]         | [`Raw`]: a threaded HTTP/1.1 server for faults at the socket level |
//! | [`scripted`]    | [`ScriptedPlatform`]: an in-process platform for paused time    |
//! | [`actors`]      | starting the actors, and one helper per message a test sends   |
//! | [`fixtures`]    | temp dirs, workspaces (`status.json`, reports), dispatches      |
//! | [`exposition`]  | a strict parser of the Prometheus text exposition              |
//! | [`control`]     | plain HTTP/1.1 `GET` over the control socket or TCP             |
//! | [`faults`]      | [`Faults`], [`FaultyBackend`]: fsyncs counted, disk full, power cut |
//! | [`proxy`]       | [`ConnectProxy`]: a recording `CONNECT` proxy on 127.0.0.1      |
//! | [`tls`]         | [`TestCert`]: a test CA's certificate, and a TLS server with it |
//!
//! Everything a test commonly needs is also at the crate root, so a test file starts
//! with `use agent_sync_testkit::*;`. The binary under test is only known inside the
//! `agent-sync` package's tests: [`agent_sync_bin!`] names it there, and
//! [`Sandbox::new`] takes it as a parameter.
//!
//! Only 127.0.0.1 is ever used.

pub mod actors;
pub mod control;
pub mod daemon;
pub mod exposition;
pub mod faults;
pub mod fixtures;
pub mod platform;
pub mod proxy;
pub mod raw;
pub mod sandbox;
pub mod scripted;
pub mod tls;

use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use actors::*;
pub use control::{get_tcp, get_unix, http_get_on, http_get_tcp, http_get_unix};
pub use daemon::{pushed_seqs, recorded_dispatches, Daemon, STOP_WITHIN};
pub use exposition::{parse_exposition, sample, Sample};
pub use faults::{Cut, Faults, FaultyBackend};
pub use fixtures::*;
pub use platform::{
    dead_url, free_addr, free_port, parse_push_body, LoopbackPlatform, Notify, Received, Recorded,
    Scripted,
};
pub use proxy::{basic_auth, ConnectProxy, Tunnel};
pub use raw::{Early, Head, Raw, Reply, Req};
pub use sandbox::{
    assert_error, run, run_async, run_with_stdin, run_with_stdin_async, Out, Sandbox,
};
pub use scripted::{status_outcome, ScriptedPlatform};
pub use tls::TestCert;

/// The path of the `agent-sync` binary under test, as cargo tells the package's
/// integration tests (`CARGO_BIN_EXE_agent-sync`): expanded in the test, where the
/// variable is set.
#[macro_export]
macro_rules! agent_sync_bin {
    () => {
        env!("CARGO_BIN_EXE_agent-sync")
    };
}

/// The token of the in-process tests; it must never show up in `Debug` output.
pub const TOKEN: &str = "test-token";
/// Every subcommand of the `agent-sync` binary (help, completions and man tests).
pub const SUBCOMMANDS: &[&str] = &[
    "push",
    "pull",
    "status",
    "history",
    "queue",
    "dead-letters",
    "requeue",
    "run",
    "import-legacy",
    "completions",
    "man",
    "doctor",
];
/// The default agent id of [`Options`].
pub const AGENT_ID: &str = "test-agent";
/// The push endpoint.
pub const PUSH_PATH: &str = "/v1/agent/sync";
/// The pull endpoint.
pub const PULL_PATH: &str = "/v1/agent/context";
/// Seed of the retry jitter in tests.
pub const TEST_SEED: u64 = 0x5eed;

/// `s` seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `ms` milliseconds.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Polls `condition` every 10 ms on the actix System until it holds; panics after
/// `timeout`. For tests whose System also serves a platform.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `condition` every 20 ms, blocking the thread, until it holds; panics after
/// `timeout`. For plain `#[test]`s (a [`Raw`] server needs no System).
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Panics when `text` (some `Debug` output) contains [`TOKEN`].
pub fn assert_no_token(text: &str) {
    assert!(
        !text.contains(TOKEN),
        "the token leaked into Debug output: {}",
        text.replace(TOKEN, "<TOKEN>")
    );
}

/// Prints a finding to the test's stderr, shown even when the harness captures output.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Locks `m`; a panicking test thread must not hide what was recorded.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
