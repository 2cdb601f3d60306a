//! [`Daemon`]: an `agent-sync run` of a [`Sandbox`], its stderr in a log file, killed
//! and reaped if the test ends (or fails) before it stops.
//!
//! Waits come in two forms: `async` ones for tests whose actix System serves a
//! platform (the System keeps running while they poll), blocking ones for plain
//! `#[test]`s. Both fail as soon as the daemon exits early, with its log.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Sandbox;

/// How long a daemon may take to exit after SIGTERM (design.md §6 R3).
pub const STOP_WITHIN: Duration = Duration::from_secs(10);
/// The default bound on what a test waits for a daemon to do on its own.
const DEADLINE: Duration = Duration::from_secs(30);

/// A running `agent-sync run`.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    /// Replaced by `<TOKEN>` in what a failing wait prints.
    secret: String,
    deadline: Duration,
}

impl Daemon {
    /// Starts `cmd` (a command of `sandbox`) with stdout discarded and stderr in
    /// `<sandbox>/<name>.log`, at `RUST_LOG=level` when given (else the binary's
    /// default level).
    pub fn spawn(sandbox: &Sandbox, name: &str, level: Option<&str>, mut cmd: Command) -> Daemon {
        let log = sandbox.path().join(format!("{name}.log"));
        let file = fs::File::create(&log).expect("daemon log");
        if let Some(level) = level {
            cmd.env("RUST_LOG", level);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::from(file));
        let child = cmd.spawn().expect("spawn the daemon");
        Daemon {
            child,
            log,
            secret: sandbox.token().to_string(),
            deadline: DEADLINE,
        }
    }

    /// Waits bounded by `deadline` instead of 30 s.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log with the token replaced: for failure messages.
    fn shown(&self) -> String {
        self.log().replace(&self.secret, "<TOKEN>")
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: signalling our own child, not yet reaped (reaping takes `&mut`).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Its exit status, once it has exited (reaped then: it is not signalled again).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Panics if it exited, or if the deadline passed since `started`.
    #[track_caller]
    fn check(&mut self, what: &str, started: Instant) {
        if let Some(status) = self.try_wait() {
            panic!(
                "the daemon exited ({status}) before {what}; log:\n{}",
                self.shown()
            );
        }
        assert!(
            started.elapsed() < self.deadline,
            "timed out waiting for {what}; log:\n{}",
            self.shown()
        );
    }

    /// Blocks until `condition` holds of its log.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, mut condition: impl FnMut(&str) -> bool) {
        let started = Instant::now();
        while !condition(&self.log()) {
            self.check(what, started);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Blocks until `condition` holds (of files it writes, say), polling every 2 ms.
    #[track_caller]
    pub fn wait_until(&mut self, what: &str, mut condition: impl FnMut() -> bool) {
        let started = Instant::now();
        while !condition() {
            self.check(what, started);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits, on the System, until its log contains `needle`.
    pub async fn wait_log(&mut self, what: &str, needle: &str) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            self.check(what, started);
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until it logged that it runs: its signal handlers and control socket
    /// are in place from then on.
    pub async fn wait_running(&mut self) {
        self.wait_log("the daemon to start", "agent-sync running")
            .await;
    }

    /// Blocking [`Daemon::wait_running`].
    pub fn wait_running_blocking(&mut self) {
        self.wait_for("the daemon to start", |log| {
            log.contains("agent-sync running")
        });
    }

    /// SIGTERM, then its exit status and how long the exit took; fails after
    /// [`STOP_WITHIN`].
    pub async fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        let sent = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return (status, sent.elapsed());
            }
            self.assert_stopping(sent);
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Blocking [`Daemon::terminate`].
    pub fn terminate_blocking(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let sent = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            self.assert_stopping(sent);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Two SIGTERMs `gap` apart (the second one stops at once, R3), blocking; its exit
    /// status and how long the exit took from the first. Fails after [`STOP_WITHIN`].
    pub fn terminate_twice(&mut self, gap: Duration) -> (ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        let sent = Instant::now();
        std::thread::sleep(gap);
        // Not reaped yet (no `try_wait` since), so the pid is still ours even if it
        // has exited: a zombie takes the signal harmlessly.
        self.signal(libc::SIGTERM);
        loop {
            if let Some(status) = self.try_wait() {
                return (status, sent.elapsed());
            }
            self.assert_stopping(sent);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[track_caller]
    fn assert_stopping(&self, sent: Instant) {
        assert!(
            sent.elapsed() < STOP_WITHIN,
            "the daemon did not exit within {STOP_WITHIN:?} of SIGTERM; log:\n{}",
            self.shown()
        );
    }

    /// [`Daemon::terminate`], asserting exit 0; how long the exit took.
    pub async fn stop(&mut self) -> Duration {
        let (status, took) = self.terminate().await;
        assert_eq!(status.code(), Some(0), "log:\n{}", self.shown());
        took
    }

    /// Dispatches it has recorded as delivered ([`recorded_dispatches`] of its log).
    pub fn recorded_dispatches(&self) -> usize {
        recorded_dispatches(&self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Dispatches a daemon has recorded as delivered: its `pushed entry N: K dispatch(es)`
/// info lines, written after the durable commit. The server answering is not enough:
/// a daemon stopped between the answer and the commit correctly keeps the entry.
pub fn recorded_dispatches(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.split("pushed entry ").nth(1))
        .filter_map(|rest| {
            rest.split(": ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

/// The seqs of the entries a daemon logged as pushed (after their durable commit).
pub fn pushed_seqs(log: &str) -> std::collections::BTreeSet<u64> {
    log.lines()
        .filter_map(|l| l.split("pushed entry ").nth(1))
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect()
}
