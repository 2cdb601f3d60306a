//! What the kernel says about the daemon under measurement ([`super`]), a process
//! started and stopped through testkit's `Daemon`: `/proc/<pid>/stat` for its CPU
//! time, `/proc/<pid>/status` for its resident set, and what its log and
//! `agent-sync status --json` say about its watches.

use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_sync_testkit::Sandbox;

use crate::support::BenchResult;

/// User plus system CPU time of `pid` so far, in clock ticks (`/proc/<pid>/stat`
/// fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> BenchResult<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
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
            .ok_or_else(|| format!("daemon: /proc/{pid}/stat: {stat:?}").into())
    };
    // After the name, field 3 (state) is at index 0: utime (14) at 11, stime at 12.
    Ok(field(11)? + field(12)?)
}

/// Waits until the CPU time of `pid` has not moved for `quiet` (its start-up work
/// done), at most `limit`; how long that took, or `None` when it never settled.
pub fn settle(pid: u32, quiet: Duration, limit: Duration) -> BenchResult<Option<Duration>> {
    let started = Instant::now();
    let mut last = cpu_ticks(pid)?;
    while started.elapsed() < limit {
        std::thread::sleep(quiet);
        let now = cpu_ticks(pid)?;
        if now == last {
            return Ok(Some(started.elapsed()));
        }
        last = now;
    }
    Ok(None)
}

/// A memory field of `/proc/<pid>/status` in KiB: `VmHWM` (the peak resident set so
/// far) or `VmRSS` (now).
pub fn memory_kib(pid: u32, field: &str) -> BenchResult<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("daemon: RSS needs /proc/<pid>/status (Linux): {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("daemon: no {field} in /proc/{pid}/status").into())
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

/// `watches` and `watch_budget` of `agent-sync status --json`, answered by the
/// running daemon through its control socket.
pub fn watches(sandbox: &Sandbox, url: &str) -> BenchResult<(u64, u64)> {
    let output = sandbox
        .online(url, &["status", "--json"])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watching_line_and_this_process_can_be_read() {
        let line = "[2026-12-03T14:05:53Z INFO  agent_sync_actors::watch::driver] watching 22101 \
                    directories of the workspace tree (budget 65536)";
        assert_eq!(watching_line(line), Some((22_101, 65_536)));
        assert_eq!(watching_line("watching the tree"), None);
        let me = std::process::id();
        // The peak read after the resident set is at least that (other tests allocate).
        let rss = memory_kib(me, "VmRSS").unwrap();
        assert!(memory_kib(me, "VmHWM").unwrap() >= rss);
        cpu_ticks(me).unwrap();
        assert!(clock_ticks().unwrap() > 0);
    }
}
