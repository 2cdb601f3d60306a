//! The scale phase's fresh processes ([`super`]): one `agent-sync push` run through
//! a measuring helper (this binary re-run with [`MEASURE_FLAG`]) that reports the
//! push's exit code and peak RSS as the kernel counted them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{synced, BenchResult, AGENT_ID, TOKEN};

/// One fresh `agent-sync` process as the kernel saw it.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// Spawn to exit.
    pub wall: Duration,
    /// `ru_maxrss`, KiB.
    pub peak_kib: u64,
    /// The `synced: N` it printed.
    pub synced: usize,
}

/// One `agent-sync push` in a fresh process, with a clean environment, through the
/// measuring helper (see [`measure_child`]).
pub fn push(bin: &Path, root: &Path, state: &Path, home: &Path, url: &str) -> BenchResult<Process> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CORE_AGENT_API_KEY", TOKEN)
        .arg(MEASURE_FLAG)
        .arg(bin)
        .arg("--workspace-root")
        .arg(root)
        .arg("--state-dir")
        .arg(state)
        .args(["--api-url", url, "--agent-id", AGENT_ID, "push"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let t = Instant::now();
    let output = cmd.output()?;
    let wall = t.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> BenchResult<u64> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(MEASURED_PREFIX))
            .flat_map(str::split_whitespace)
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("the measuring helper did not report {name}").into())
    };
    if !output.status.success() || field("code")? != 0 {
        return Err(format!("scale: agent-sync push failed ({})", output.status).into());
    }
    let synced = synced(&stdout)
        .ok_or_else(|| format!("scale: agent-sync push printed {stdout:?}, not `synced: N`"))?;
    Ok(Process {
        wall,
        peak_kib: field("maxrss_kib")?,
        synced,
    })
}

/// The hidden first argument that makes this binary the measuring helper.
pub const MEASURE_FLAG: &str = "--measure-child";
/// Prefix of the helper's result line.
const MEASURED_PREFIX: &str = "measured-child ";

/// The measuring helper: runs `args` (a program and its arguments) with this
/// process's environment, passes its stdout through, then prints its exit code and
/// peak RSS.
///
/// Why a helper: on Linux a child's `ru_maxrss` also counts the memory of the process
/// it was spawned from (exec records the old address space's high-water mark), so
/// `wait4` in the bench itself would report the bench's own tens of MiB. This helper
/// is a fresh process of a few MiB that does nothing before spawning.
pub fn measure_child(args: &[String]) -> BenchResult<()> {
    use std::io::Write;
    let (program, rest) = args
        .split_first()
        .ok_or("--measure-child needs a program")?;
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let (code, maxrss_kib, stdout) = wait_with_rusage(child)?;
    let mut out = std::io::stdout().lock();
    out.write_all(stdout.as_bytes())?;
    writeln!(out, "{MEASURED_PREFIX}code={code} maxrss_kib={maxrss_kib}")?;
    Ok(())
}

/// Waits for `child` with `wait4`, which also returns its resource usage; gives the
/// exit code (or 128 + signal), `ru_maxrss` in KiB and its stdout.
fn wait_with_rusage(mut child: std::process::Child) -> BenchResult<(i32, u64, String)> {
    use std::io::Read;
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        // Read to the end first: the child never blocks on a full pipe.
        pipe.read_to_string(&mut stdout)?;
    }
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data the kernel fills in; `status` and `rusage`
    // outlive the call. `wait4` reaps the child, so `child` is not waited for again.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
    if reaped != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()).into());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // Linux reports ru_maxrss in KiB.
    Ok((code, u64::try_from(rusage.ru_maxrss)?, stdout))
}
