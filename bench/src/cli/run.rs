//! Running the `agent-sync` binary for the CLI drain phase ([`super`]):
//! where the binary is, and one `push` (or `status`) in a fresh process with a clean
//! environment, its dispatches given on stdin, timed from spawn to exit.
//!
//! Every process runs in one testkit `Sandbox` (a cleared environment, a `HOME` and
//! an empty workspace root of its own: these pushes never scan, they are given their
//! dispatches or `--queue-only`). Offline means what it means to an operator without a
//! token: no `CORE_AGENT_API_KEY` in the environment and no
//! `<HOME>/.claude/brain.key`, so the process queues what it is given and sends
//! nothing. Online sets `CORE_AGENT_API_KEY` to the token the loopback platform
//! expects. Both name the loopback platform with `--api-url`, so an offline call could
//! not reach anything else even if it tried.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use agent_sync_testkit::Sandbox;

use crate::support::{synced, BenchResult, AGENT_ID, TOKEN};

/// What every process of the phase shares: the binary, its environment, the platform.
pub struct Cli {
    /// The binary's installation: its `HOME` holds no `.claude/brain.key`, so an
    /// offline call finds no token there (and the operator's own home is never read).
    pub sandbox: Sandbox,
    /// `--api-url`: the loopback platform.
    pub url: String,
}

/// One finished `agent-sync push`.
#[derive(Debug, Clone, Copy)]
pub struct Pushed {
    /// Spawn to exit, writing its stdin included.
    pub wall: Duration,
    /// The `synced: N` it printed: dispatches this process delivered.
    pub synced: usize,
}

impl Cli {
    /// `agent-sync` in [`Cli::sandbox`] at `bin`, as [`AGENT_ID`].
    pub fn new(bin: &Path, url: String) -> Self {
        Cli {
            sandbox: Sandbox::new(bin, AGENT_ID, TOKEN),
            url,
        }
    }

    /// The command line shared by every call on `state`, with the environment cleared
    /// and the token set only when `online`.
    fn command(&self, state: &Path, online: bool) -> Command {
        let mut cmd = if online {
            self.sandbox.online(&self.url, &[])
        } else {
            self.sandbox.cmd(&[])
        };
        cmd.arg("--state-dir")
            .arg(state)
            .args(["--api-url", &self.url])
            .stderr(Stdio::inherit());
        cmd
    }

    /// `agent-sync push --dispatches -` with `dispatches` (a JSON array) on stdin,
    /// offline: it must queue them and print `synced: 0`.
    pub fn queue(&self, state: &Path, dispatches: &[u8]) -> BenchResult<Pushed> {
        let mut cmd = self.command(state, false);
        cmd.args(["push", "--dispatches", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let t = Instant::now();
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // The CLI reads stdin to the end before it writes anything, so writing
            // all of it first cannot deadlock on the stdout pipe.
            stdin.write_all(dispatches)?;
        }
        let output = child.wait_with_output()?;
        let pushed = finished("push --dispatches -", t.elapsed(), &output)?;
        if pushed.synced != 0 {
            return Err(format!(
                "cli: an offline push printed synced: {}, expected 0 (it found a token?)",
                pushed.synced
            )
            .into());
        }
        Ok(pushed)
    }

    /// `agent-sync push --queue-only`, online: drains what `state` has queued.
    pub fn drain(&self, state: &Path) -> BenchResult<Pushed> {
        let mut cmd = self.command(state, true);
        cmd.args(["push", "--queue-only"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let t = Instant::now();
        let output = cmd.output()?;
        finished("push --queue-only", t.elapsed(), &output)
    }

    /// `queued_entries` and `queued_dispatches` of `agent-sync status --json` (local,
    /// no network): how the calls so far were coalesced.
    pub fn queued(&self, state: &Path) -> BenchResult<(u64, u64)> {
        let output = self
            .command(state, false)
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .output()?;
        if !output.status.success() {
            return Err(format!("cli: agent-sync status failed ({})", output.status).into());
        }
        let status: Value = serde_json::from_slice(&output.stdout)?;
        let field = |name: &str| {
            status[name]
                .as_u64()
                .ok_or_else(|| format!("cli: agent-sync status --json has no {name}: {status}"))
        };
        Ok((field("queued_entries")?, field("queued_dispatches")?))
    }
}

/// Checks the exit and reads `synced: N` from the output of `what`.
fn finished(what: &str, wall: Duration, output: &std::process::Output) -> BenchResult<Pushed> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "cli: agent-sync {what} failed ({}): {stdout}",
            output.status
        )
        .into());
    }
    let synced = synced(&stdout)
        .ok_or_else(|| format!("cli: agent-sync {what} printed {stdout:?}, not `synced: N`"))?;
    Ok(Pushed { wall, synced })
}

/// Host dispatches `range` as the JSON array `--dispatches` reads.
pub fn dispatches_json(range: std::ops::Range<usize>) -> BenchResult<Vec<u8>> {
    let list: Vec<Value> = range
        .map(|i| Value::Object(crate::fixture::dispatch_object(i)))
        .collect();
    Ok(serde_json::to_vec(&list)?)
}

/// The size of the state dir's `sync.redb`, bytes.
pub fn db_bytes(state: &Path) -> BenchResult<u64> {
    let path = state.join("sync.redb");
    Ok(std::fs::metadata(&path)
        .map_err(|e| format!("cli: cannot stat {}: {e}", path.display()))?
        .len())
}
