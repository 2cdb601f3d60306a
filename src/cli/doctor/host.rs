//! The host side of `doctor`'s state checks: free space on the state's file system
//! (`statvfs`) against a low-water mark, and the running agent-sync (pid, version,
//! uptime) asked through its control socket.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use agent_sync::control::ControlClient;

use super::Check;

/// Free space under which the state's disk is warned about, in bytes.
pub const LOW_WATER_BYTES: u64 = 100 * 1024 * 1024;
/// Free share (percent) under which the state's disk is warned about.
pub const LOW_WATER_PERCENT: u64 = 5;

/// Free space on the state's file system against the low-water mark.
pub fn disk_check(dir: &Path) -> Check {
    let Some(existing) = dir.ancestors().find(|a| a.is_dir()) else {
        return Check::warn(
            "disk",
            "no existing directory to measure",
            "check --state-dir",
        );
    };
    let Ok(c) = CString::new(existing.as_os_str().as_bytes()) else {
        return Check::warn(
            "disk",
            "the state dir's path holds a NUL",
            "check --state-dir",
        );
    };
    // SAFETY: a zeroed statvfs is a valid out-parameter; `c` is a valid path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        let e = std::io::Error::last_os_error();
        return Check::warn(
            "disk",
            format!("statvfs {}: {e}", existing.display()),
            "check the file system",
        );
    }
    let unit = stat.f_frsize as u64;
    let free = (stat.f_bavail as u64).saturating_mul(unit);
    let total = (stat.f_blocks as u64).saturating_mul(unit);
    let mib = |b: u64| b / (1024 * 1024);
    let percent = free.saturating_mul(100).checked_div(total).unwrap_or(100);
    let detail = format!(
        "{} MiB free of {} MiB ({percent} %) on {}",
        mib(free),
        mib(total),
        existing.display()
    );
    if free < LOW_WATER_BYTES || percent < LOW_WATER_PERCENT {
        Check::warn(
            "disk",
            detail,
            "free some space: a full disk refuses new work (nothing queued is lost)",
        )
    } else {
        Check::ok("disk", detail)
    }
}

/// The running agent-sync: pid, version, uptime.
pub async fn daemon_check(client: &ControlClient) -> Check {
    let pid = client
        .pid()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "?".into());
    match client.process().await {
        Ok(Some(p)) => Check::ok(
            "daemon",
            format!(
                "pid {}, version {}, up {} (since {}), on {}",
                p.pid,
                p.version,
                uptime(p.uptime_seconds),
                p.started_at.to_rfc3339(),
                client.path().display()
            ),
        ),
        Ok(None) => Check::ok(
            "daemon",
            format!("pid {pid} (an older agent-sync: it does not tell its version or uptime)"),
        ),
        Err(e) => Check::fail(
            "daemon",
            format!(
                "pid {pid} did not answer on {}: {e}",
                client.path().display()
            ),
            "check that process (its log); restart it if it hangs",
        ),
    }
}

/// `1d 2h`, `3h 4m`, `5m 6s`, `7s`.
fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_at_a_glance() {
        assert_eq!(uptime(7), "7s");
        assert_eq!(uptime(366), "6m 6s");
        assert_eq!(uptime(3 * 3600 + 240), "3h 4m");
        assert_eq!(uptime(90_000), "1d 1h");
    }

    #[test]
    fn the_disk_of_an_existing_dir_is_measured() {
        let dir = std::env::temp_dir().join("no-such-doctor-dir").join("sync");
        let check = disk_check(&dir);
        assert!(check.detail.contains("MiB free of"), "{check:?}");
    }
}
