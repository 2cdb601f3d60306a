//! One isolated installation of the `agent-sync` binary, and the CLI runner.
//!
//! A [`Sandbox`] is a temp dir holding `home/`, `workspace/` (the workspace root) and
//! `sync/` (the state dir, created by the binary). Every process it starts gets a
//! cleared environment: `PATH`, `HOME` and `CORE_WORKSPACE` pointing inside, and an
//! `AGENT_NAME`; [`Sandbox::online`] adds the token and the platform URL. Finished
//! processes come back as an [`Out`]; a test whose actix System serves a platform
//! waits for them on the blocking pool ([`run_async`]).

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

/// One isolated installation; everything the binary touches lives inside and is
/// removed when the sandbox drops.
pub struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
    agent: String,
    token: String,
}

impl Sandbox {
    /// A fresh installation of the binary at `bin` (in the package's tests:
    /// [`crate::agent_sync_bin!`]) that runs as `agent` and, online, with `token`.
    pub fn new(bin: impl Into<PathBuf>, agent: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("home")).expect("home");
        fs::create_dir_all(dir.path().join("workspace")).expect("workspace root");
        Sandbox {
            dir,
            bin: bin.into(),
            agent: agent.to_string(),
            token: token.to_string(),
        }
    }

    /// The temp dir itself (`CORE_WORKSPACE`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `HOME`.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The workspace root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// The state dir.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("sync")
    }

    /// The database in the state dir.
    pub fn db(&self) -> PathBuf {
        self.state().join("sync.redb")
    }

    /// The control socket in the state dir.
    pub fn socket(&self) -> PathBuf {
        self.state().join("agent-sync.sock")
    }

    /// The token [`Sandbox::online`] hands the binary.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Clears `cmd`'s environment down to this installation's.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("CORE_WORKSPACE", self.dir.path())
            .env("AGENT_NAME", &self.agent)
            .stdin(Stdio::null());
    }

    /// The binary with `args`, offline (no token; no `RUST_LOG`).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        self.env(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// The binary with `args`, the token and the platform at `url`.
    pub fn online(&self, url: &str, args: &[&str]) -> Command {
        let mut cmd = self.cmd(args);
        cmd.env("CORE_AGENT_API_KEY", &self.token)
            .env("CORE_API_URL", url);
        cmd
    }

    /// The binary with `args` run as `nobody` (through `setpriv`, else `runuser`), for
    /// tests run as root, which reads and writes through any mode bits; `None` when
    /// neither tool works here.
    pub fn as_nobody(&self, args: &[&str]) -> Option<Command> {
        let works = |tool: &str| {
            Command::new(tool)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let bin = self.bin.as_os_str();
        let mut cmd = if works("setpriv") {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(bin);
            cmd
        } else if works("runuser") {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "nobody", "--"]).arg(bin);
            cmd
        } else {
            return None;
        };
        self.env(&mut cmd);
        cmd.args(args);
        Some(cmd)
    }

    /// Writes `<tmp>/<name>.json`, host dispatches `{"id", "status": "completed"}` of
    /// these ids, for `push --dispatches`; returns its path.
    pub fn dispatch_file(&self, name: &str, ids: &[&str]) -> String {
        let path = self.dir.path().join(format!("{name}.json"));
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "status": "completed"}))
            .collect();
        fs::write(&path, serde_json::to_vec(&items).expect("json")).expect("write dispatches");
        path.to_str().expect("a UTF-8 path").to_string()
    }

    /// Writes `<tmp>/<prefix>.json`, `count` host dispatches `<prefix>-N` of `pad`
    /// bytes of padding each; returns its path and the ids.
    pub fn padded_dispatches(
        &self,
        prefix: &str,
        count: usize,
        pad: usize,
    ) -> (PathBuf, Vec<String>) {
        let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "status": "completed", "pad": "p".repeat(pad)}))
            .collect();
        let path = self.path().join(format!("{prefix}.json"));
        fs::write(&path, serde_json::to_vec(&items).expect("json")).expect("write dispatches");
        (path, ids)
    }

    /// Writes `count` ghost workspaces (`running`, their worker's pid gone) under the
    /// workspace root, as `org-NN/repo-N/task-NNNNN`, on four threads (20,000 take about
    /// a second); returns the `status.json` a reap rewrites first (walk order is
    /// sorted).
    pub fn write_ghosts(&self, count: usize) -> PathBuf {
        /// pid_max on Linux is at most 2^22: no process can have this pid.
        const DEAD_PID: u64 = 99_999_999;
        const REPOS: usize = 10;
        const TASKS: usize = 100;
        let root = self.root();
        let status = json!({"status": "running", "pid": DEAD_PID, "agent": "codex"}).to_string();
        let name = |i: usize| {
            let (org, rest) = (i / (REPOS * TASKS), i % (REPOS * TASKS));
            format!(
                "org-{org:02}/repo-{}/task-{:05}",
                rest / TASKS,
                rest % TASKS
            )
        };
        std::thread::scope(|scope| {
            for part in 0..4 {
                let (root, status, name) = (&root, &status, &name);
                scope.spawn(move || {
                    for i in (part..count).step_by(4) {
                        let dir = root.join(name(i));
                        fs::create_dir_all(&dir).expect("create a ghost workspace");
                        fs::write(dir.join("status.json"), status).expect("write status.json");
                    }
                });
            }
        });
        root.join(name(0)).join("status.json")
    }

    /// `--json queue`, offline; panics unless the state opens.
    pub fn queue(&self) -> Vec<Value> {
        let out = run(self.cmd(&["--json", "queue"]));
        assert_eq!(out.code, 0, "the state does not open: {}", out.stderr);
        match out.json() {
            Value::Array(entries) => entries,
            other => panic!("queue --json is not an array: {other}"),
        }
    }

    /// The ids of every queued dispatch, head first.
    pub fn queued_ids(&self) -> Vec<String> {
        self.queue()
            .iter()
            .flat_map(|e| e["dispatches"].as_array().expect("dispatches").clone())
            .map(|d| d["id"].as_str().expect("an id").to_string())
            .collect()
    }

    /// `--json status`, offline; panics unless it exits 0.
    pub fn status(&self) -> Value {
        let out = run(self.cmd(&["--json", "status"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()
    }
}

/// What a finished process printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Command output proper.
    pub stdout: String,
    /// `error:` lines and logs.
    pub stderr: String,
}

impl Out {
    fn from(output: Output) -> Out {
        Out {
            code: output.status.code().unwrap_or(-1),
            signal: output.status.signal(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Stdout as JSON; panics with both streams when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Both streams with `secret` replaced by `<TOKEN>`: what a failing assertion may
    /// print.
    pub fn redact(self, secret: &str) -> Self {
        Out {
            stdout: self.stdout.replace(secret, "<TOKEN>"),
            stderr: self.stderr.replace(secret, "<TOKEN>"),
            ..self
        }
    }
}

/// Runs to completion on this thread (tests without a loopback server).
pub fn run(mut cmd: Command) -> Out {
    Out::from(cmd.output().expect("run agent-sync"))
}

/// Runs to completion on the blocking pool, so the loopback server keeps serving.
pub async fn run_async(cmd: Command) -> Out {
    actix_rt::task::spawn_blocking(move || run(cmd))
        .await
        .expect("the blocking pool")
}

/// Runs with `input` on stdin.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn agent-sync");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    Out::from(child.wait_with_output().expect("wait for agent-sync"))
}

/// [`run_with_stdin`] on the blocking pool, so the loopback server keeps serving.
pub async fn run_with_stdin_async(cmd: Command, input: &'static [u8]) -> Out {
    actix_rt::task::spawn_blocking(move || run_with_stdin(cmd, input))
        .await
        .expect("the blocking pool")
}

/// Asserts a local failure: exit 1, one `error:` line (design.md §8), no panic.
#[track_caller]
pub fn assert_error(out: &Out, what: &str) {
    assert_eq!(
        (out.code, out.signal),
        (1, None),
        "{what}: stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.starts_with("error: "), "{what}: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
}
