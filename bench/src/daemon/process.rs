//! The daemon under measurement ([`crate::daemon`]): one `agent-sync run` process of
//! the binary with its default flags, its stderr log read line by line on a thread of
//! its own, and what the kernel says about it (`/proc/<pid>/stat` for CPU time,
//! `/proc/<pid>/status` for the peak RSS).
//!
//! The process is killed (SIGKILL) when a [`Daemon`] is dropped while it still runs,
//! so an error in the phase never leaves it behind; the phase itself ends it with
//! SIGTERM ([`Daemon::terminate`]) and checks that it exits 0.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::BenchResult;
use crate::support::{AGENT_ID, TOKEN};

/// How often the log and the process are looked at while waiting.
const POLL: Duration = Duration::from_millis(20);

/// A running `agent-sync run`.
pub struct Daemon {
    /// The process; `None` once it was waited for.
    child: Option<Child>,
    /// Its pid, for `/proc` and signals.
    pub pid: libc::pid_t,
    /// Every line it wrote to stderr so far (its log, at info).
    log: Arc<Mutex<Vec<String>>>,
}

/// Where the daemon and the CLI calls beside it run: the same environment the
/// scale phase gives a push (token in the environment, the rest as global flags).
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// The `agent-sync` binary.
    pub bin: &'a Path,
    /// `HOME`: a dir of the bench's, so the operator's home is never read.
    pub home: &'a Path,
    /// `--workspace-root`.
    pub root: &'a Path,
    /// `--state-dir`.
    pub state: &'a Path,
    /// `--api-url`: the loopback platform.
    pub url: &'a str,
}

impl Env<'_> {
    /// `agent-sync <global flags> <args>` with a clean environment and the token set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home)
            .env("CORE_AGENT_API_KEY", TOKEN)
            .arg("--workspace-root")
            .arg(self.root)
            .arg("--state-dir")
            .arg(self.state)
            .args(["--api-url", self.url, "--agent-id", AGENT_ID])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `watches` and `watch_budget` of `agent-sync status --json`, answered by the
    /// running daemon through its control socket.
    pub fn watches(&self) -> BenchResult<(u64, u64)> {
        let output = self
            .command(&["status", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            return Err(format!("daemon: agent-sync status failed ({})", output.status).into());
        }
        let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let field = |name: &str| {
            status[name]
                .as_u64()
                .ok_or_else(|| format!("daemon: agent-sync status --json has no {name}: {status}"))
        };
        Ok((field("watches")?, field("watch_budget")?))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Daemon {
    /// Starts `agent-sync run` with no flag of its own, logging at info.
    pub fn spawn(env: &Env<'_>) -> BenchResult<Daemon> {
        let mut child = env
            .command(&["run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = libc::pid_t::try_from(child.id())?;
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::Builder::new()
                .name("daemon-log".into())
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        match line {
                            Ok(line) => lock(&log).push(line),
                            Err(_) => break,
                        }
                    }
                })?;
        }
        Ok(Daemon {
            child: Some(child),
            pid,
            log,
        })
    }

    /// The first log line `pick` accepts, waiting up to `limit` for it; an error when
    /// the daemon exits first or the time is up.
    pub fn wait_for<T>(
        &mut self,
        limit: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> BenchResult<T> {
        let started = Instant::now();
        loop {
            if let Some(found) = lock(&self.log).iter().find_map(|l| pick(l)) {
                return Ok(found);
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(format!(
                        "daemon: agent-sync run exited ({status}) before the expected log line; \
                         its log:\n{}",
                        lock(&self.log).join("\n")
                    )
                    .into());
                }
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "daemon: the expected log line did not come within {limit:?}; its log:\n{}",
                    lock(&self.log).join("\n")
                )
                .into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Its log lines at `WARN` or `ERROR` so far.
    pub fn complaints(&self) -> Vec<String> {
        lock(&self.log)
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .cloned()
            .collect()
    }

    /// User plus system CPU time so far, in clock ticks (`/proc/<pid>/stat` fields 14
    /// and 15).
    pub fn cpu_ticks(&self) -> BenchResult<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map_err(|e| format!("daemon: CPU time needs /proc/<pid>/stat (Linux): {e}"))?;
        // The name (field 2) may hold spaces and parentheses: count from the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| -> BenchResult<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("daemon: /proc/{}/stat: {stat:?}", self.pid).into())
        };
        // After the name, field 3 (state) is at index 0: utime (14) at 11, stime at 12.
        Ok(field(11)? + field(12)?)
    }

    /// Waits until the daemon's CPU time has not moved for `quiet` (its start-up work
    /// done), at most `limit`; how long that took, or `None` when it never settled.
    pub fn settle(&self, quiet: Duration, limit: Duration) -> BenchResult<Option<Duration>> {
        let started = Instant::now();
        let mut last = self.cpu_ticks()?;
        while started.elapsed() < limit {
            std::thread::sleep(quiet);
            let now = self.cpu_ticks()?;
            if now == last {
                return Ok(Some(started.elapsed()));
            }
            last = now;
        }
        Ok(None)
    }

    /// A memory field of `/proc/<pid>/status` in KiB: `VmHWM` (its peak resident
    /// set so far) or `VmRSS` (now).
    pub fn memory_kib(&self, field: &str) -> BenchResult<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| format!("daemon: RSS needs /proc/<pid>/status (Linux): {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("daemon: no {field} in /proc/{}/status", self.pid).into())
    }

    /// Sends SIGTERM and waits up to `limit` for the exit: the exit code (128 + the
    /// signal when a signal ended it) and how long the stop took.
    pub fn terminate(&mut self, limit: Duration) -> BenchResult<(i32, Duration)> {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().ok_or("daemon: already stopped")?;
        let started = Instant::now();
        // SAFETY: kill only sends a signal to our own child, which has not been reaped.
        if unsafe { libc::kill(self.pid, libc::SIGTERM) } != 0 {
            return Err(format!("daemon: SIGTERM: {}", std::io::Error::last_os_error()).into());
        }
        loop {
            if let Some(status) = child.try_wait()? {
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
                return Ok((code, started.elapsed()));
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("daemon: still running {limit:?} after SIGTERM").into());
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/<pid>/stat`.
pub fn clock_ticks() -> BenchResult<u64> {
    // SAFETY: sysconf reads a constant of the system; no memory is involved.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| "sysconf(_SC_CLK_TCK) failed".into())
}

/// `(N, B)` of the watcher's start line, `watching N directories of the workspace
/// tree (budget B)`.
pub fn watching_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.split_once("watching ")?.1;
    let (n, rest) = rest.split_once(" directories")?;
    let budget = rest.split_once("(budget ")?.1.split_once(')')?.0;
    Some((n.parse().ok()?, budget.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watching_line_and_this_process_can_be_read() {
        let line = "[2026-12-03T14:05:53Z INFO  agent_sync_actors::watch::driver] watching 22101 \
                    directories of the workspace tree (budget 65536)";
        assert_eq!(watching_line(line), Some((22_101, 65_536)));
        assert_eq!(watching_line("watching the tree"), None);
        let me = Daemon {
            child: None,
            pid: libc::pid_t::try_from(std::process::id()).unwrap(),
            log: Arc::default(),
        };
        // The peak read after the resident set is at least that (other tests allocate).
        let rss = me.memory_kib("VmRSS").unwrap();
        assert!(me.memory_kib("VmHWM").unwrap() >= rss);
        me.cpu_ticks().unwrap();
        assert!(clock_ticks().unwrap() > 0);
    }
}
