//! End-to-end tests of the `agent-sync` binary (design.md §8).
//!
//! Every test runs the built binary with a cleared environment: `HOME` and
//! `CORE_WORKSPACE` point into a temp dir of its own (so the workspace root is
//! `<tmp>/workspace` and the state dir `<tmp>/sync`), plus `PATH` and an `AGENT_NAME`.
//! Tests that talk to a platform use the loopback server of `common` on 127.0.0.1;
//! while the server runs on the test's actix System, child processes are waited for
//! on the blocking pool so the server keeps answering.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{dead_url, status_json, wait_until, write_done, write_workspace, LoopbackPlatform};
use common::{Scripted, PULL_PATH};
use serde_json::{json, Value};

/// A token distinctive enough that finding it anywhere in output is a leak.
const SECRET: &str = "cli-secret-7f3a9c41d2";
/// The agent id every test runs as.
const AGENT: &str = "cli-agent";
/// How long a daemon may take to exit after SIGTERM (design.md §6 R3).
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// Bounded waits for things a daemon does on its own.
const DEADLINE: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------ helpers

/// One isolated installation: `<tmp>/home`, `<tmp>/workspace`, `<tmp>/sync`.
struct Sandbox {
    /// Removed when the test ends; everything the binary touches lives inside.
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("home")).expect("home");
        fs::create_dir_all(dir.path().join("workspace")).expect("workspace root");
        Sandbox { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("sync")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The binary with a clean, offline environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-sync"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("CORE_WORKSPACE", self.dir.path())
            .env("AGENT_NAME", AGENT)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// The binary with a token and the platform at `url`.
    fn online(&self, url: &str, args: &[&str]) -> Command {
        let mut cmd = self.cmd(args);
        cmd.env("CORE_AGENT_API_KEY", SECRET)
            .env("CORE_API_URL", url);
        cmd
    }
}

/// What a finished process printed.
struct Out {
    /// Exit code (-1 when killed by a signal).
    code: i32,
    /// Command output proper.
    stdout: String,
    /// `error:` lines and logs.
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

fn finish(output: std::process::Output) -> Out {
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs to completion on this thread (tests without a loopback server).
fn run(mut cmd: Command) -> Out {
    finish(cmd.output().expect("run agent-sync"))
}

/// Runs to completion on the blocking pool, so the loopback server keeps serving.
async fn run_async(mut cmd: Command) -> Out {
    actix_rt::task::spawn_blocking(move || finish(cmd.output().expect("run agent-sync")))
        .await
        .expect("the blocking pool")
}

/// Runs with `input` on stdin.
fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Out {
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
    finish(child.wait_with_output().expect("wait for agent-sync"))
}

/// [`run_with_stdin`] on the blocking pool, so the loopback server keeps serving.
async fn run_with_stdin_async(cmd: Command, input: &'static [u8]) -> Out {
    actix_rt::task::spawn_blocking(move || run_with_stdin(cmd, input))
        .await
        .expect("the blocking pool")
}

/// A `run` daemon, killed hard if a test fails before stopping it.
struct Daemon {
    /// The `agent-sync run` process.
    child: Child,
    /// Its stderr (logs at info), read to know it started and to explain failures.
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with info logging into `<sandbox>/daemon.log`.
    fn spawn(sandbox: &Sandbox, mut cmd: Command) -> Daemon {
        let log = sandbox.dir.path().join("daemon.log");
        let file = fs::File::create(&log).expect("daemon log");
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        let child = cmd.spawn().expect("spawn the daemon");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon listens for signals (it logs that it runs after that).
    async fn wait_running(&self) {
        wait_until("the daemon to start", DEADLINE, || {
            self.log().contains("agent-sync running")
        })
        .await;
    }

    /// Sends `signal` to the daemon.
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Sends SIGTERM and waits for the exit, failing after [`STOP_WITHIN`].
    async fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        let sent = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < STOP_WITHIN,
                "the daemon did not exit within {STOP_WITHIN:?} of SIGTERM; log:\n{}",
                self.log()
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
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

fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec(value).expect("json")).expect("write json");
}

// ------------------------------------------------------------- usage and help

#[test]
fn help_explains_every_command_with_an_example() {
    let sandbox = Sandbox::new();
    let out = run(sandbox.cmd(&["--help"])).ok();
    for command in [
        "push",
        "pull",
        "status",
        "history",
        "queue",
        "dead-letters",
        "requeue",
        "run",
        "import-legacy",
    ] {
        assert!(out.stdout.contains(command), "--help lacks {command}");
        let sub = run(sandbox.cmd(&[command, "--help"])).ok();
        assert!(
            sub.stdout.contains("Example"),
            "{command} --help has no example:\n{}",
            sub.stdout
        );
    }
}

#[test]
fn malformed_options_and_missing_arguments_are_usage_errors_exit_2() {
    let sandbox = Sandbox::new();
    for args in [
        &["history", "--limit", "many"][..],
        &["run", "--scan-interval", "soon"],
        &["run", "--pull-interval", "5x"],
        &["requeue"],
        &["requeue", "1", "--all"],
        &["status", "--fleet-node-id", "seven"],
        &["frobnicate"],
    ] {
        let out = run(sandbox.cmd(args));
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    assert!(
        !sandbox.state().join("sync.redb").exists(),
        "usage errors open nothing"
    );
}

// ------------------------------------------------------------------ status

#[test]
fn status_of_a_fresh_state_in_text_and_json() {
    let sandbox = Sandbox::new();
    let text = run(sandbox.cmd(&["status"])).ok().stdout;
    for line in [
        "agent id: cli-agent",
        "queued entries: 0",
        "queued dispatches: 0",
        "dead letters: 0",
        "ledger entries: 0",
        "context items: 0",
        "auth failed: no",
        "last push: never",
        "last pull: never",
        "head: none",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Global options in any position.
    let status = run(sandbox.cmd(&["status", "--json"])).ok().json();
    assert_eq!(
        status,
        json!({
            "agent_id": AGENT, "queued_entries": 0, "queued_dispatches": 0,
            "dead_letters": 0, "ledger_entries": 0, "context_count": 0,
            "auth_failed": false, "last_push_at": null, "last_pull_at": null, "head": null
        })
    );
    assert!(sandbox.state().join("sync.redb").exists());
}

#[test]
fn flags_override_the_environment() {
    let sandbox = Sandbox::new();
    let other_state = sandbox.dir.path().join("elsewhere");
    let state = other_state.to_str().expect("utf-8 path");
    let status = run(sandbox.cmd(&[
        "--json",
        "--agent-id",
        "flagged",
        "--state-dir",
        state,
        "status",
    ]))
    .ok()
    .json();
    assert_eq!(status["agent_id"], "flagged");
    assert!(other_state.join("sync.redb").exists());
    assert!(!sandbox.state().join("sync.redb").exists());
}

// -------------------------------------------------------------------- push

#[actix_rt::test]
async fn push_offline_queues_host_dispatches_then_delivers_them_online() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    let file = sandbox.dir.path().join("dispatches.json");
    write_json(
        &file,
        &json!([{"id": "host-1", "status": "completed", "extra": {"k": 1}}]),
    );

    // Offline: exit 0, nothing synced, the host dispatch queued, the scan not (P3).
    let out = run_async(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(
        queue[0]["dispatches"],
        json!([{"id": "host-1", "status": "completed", "extra": {"k": 1}}])
    );
    assert_eq!(queue[0]["agent_id"], AGENT);
    assert_eq!(queue[0]["attempts"], 0);
    assert!(queue[0]["idempotency_key"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    let text = run_async(sandbox.cmd(&["queue"])).await.ok().stdout;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("seq 1") && text.contains("dispatches 1"),
        "{text}"
    );
    assert!(platform.requests().is_empty());

    // Online: the queued host dispatch and the scanned workspace are delivered.
    let out = run_async(sandbox.online(&platform.url(), &["push", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(out, json!({"success": true, "count": 2, "queued": 0}));
    let delivered = platform.delivered();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(delivered[0].dispatches()[0]["id"], "host-1");
    assert_eq!(delivered[1].dispatch_ids(), ["core/go-io/task-1"]);
    for request in &delivered {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(request.json()["agent_id"], AGENT);
    }

    // Delivered work is not pushed again (P7).
    let out = run_async(sandbox.online(&platform.url(), &["push"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    assert_eq!(platform.pushes().len(), 2);

    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["queued_entries"], 0);
    assert_eq!(status["ledger_entries"], 1);
    assert!(
        status["last_push_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{status}"
    );

    // History: oldest first, newest N with --limit, one line each in text.
    let history = run_async(sandbox.cmd(&["--json", "history"]))
        .await
        .ok()
        .json();
    let records = history.as_array().unwrap();
    assert_eq!(records.len(), 2, "{history}");
    assert!(records
        .iter()
        .all(|r| r["direction"] == "push" && r["items_count"] == 1));
    let last = run_async(sandbox.cmd(&["history", "--limit", "1", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(last, json!([records[1].clone()]));
    let text = run_async(sandbox.cmd(&["history"])).await.ok().stdout;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("push") && l.contains(AGENT)),
        "{text}"
    );
    platform.stop().await;
}

#[actix_rt::test]
async fn push_queue_only_with_an_empty_queue_sends_nothing() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(out, json!({"success": true, "count": 0, "queued": 0}));
    assert!(platform.requests().is_empty(), "{:?}", platform.requests());
    platform.stop().await;
}

#[test]
fn push_to_a_platform_that_is_down_exits_0_and_keeps_the_entry() {
    let sandbox = Sandbox::new();
    let out = run_with_stdin(
        sandbox.online(&dead_url(), &["push", "--dispatches", "-"]),
        br#"[{"id": "a"}, {"id": "b"}]"#,
    )
    .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let status = run(sandbox.cmd(&["--json", "status"])).ok().json();
    assert_eq!(status["queued_dispatches"], 2);
    assert_eq!(status["head"]["attempts"], 1);
    assert!(status["head"]["next_attempt"].is_string(), "{status}");
    assert!(status["head"]["last_error"].is_string(), "{status}");
    let text = run(sandbox.cmd(&["status"])).ok().stdout;
    assert!(
        text.contains("head: seq 1, attempts 1, next attempt "),
        "{text}"
    );
}

#[test]
fn invalid_dispatches_exit_1_naming_the_problem_and_queue_nothing() {
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let cases = [
        ("object.json", r#"{"id": "a"}"#, "must be a JSON array"),
        (
            "mixed.json",
            r#"[{"id": "a"}, 5]"#,
            "dispatch 1 is a number",
        ),
        ("broken.json", r#"[{"id": "#, "not valid JSON"),
    ];
    for (name, body, expected) in cases {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        let out = run(sandbox.cmd(&["push", "--dispatches", path.to_str().unwrap()]));
        assert_eq!(out.code, 1, "{name}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: "), "{name}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
        assert!(
            out.stderr.contains(name),
            "{name} not named: {}",
            out.stderr
        );
    }
    let missing = dir.join("missing.json");
    let out = run(sandbox.cmd(&["push", "--dispatches", missing.to_str().unwrap()]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: cannot read dispatches file")
            && out.stderr.contains("missing.json"),
        "{}",
        out.stderr
    );
    let out = run_with_stdin(sandbox.cmd(&["push", "--dispatches", "-"]), b"[null]");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("dispatch 0 is null"), "{}", out.stderr);
    let queue = run(sandbox.cmd(&["queue", "--json"])).ok().json();
    assert_eq!(queue, json!([]));
}

// -------------------------------------------------------------------- pull

#[actix_rt::test]
async fn pull_prints_the_context_and_never_pushes() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    // Something queued: `pull` must leave it alone.
    let out = run_with_stdin(
        sandbox.cmd(&["push", "--dispatches", "-"]),
        br#"[{"id": "q"}]"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let items = json!([{"id": "m1", "text": "one"}, {"id": "m2", "text": "two"}]);
    platform.set_default(Scripted::ok().json(json!({"data": {"context": items}})));

    let out = run_async(sandbox.online(&platform.url(), &["pull"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "context items: 2");
    let out = run_async(sandbox.online(
        &platform.url(),
        &["--json", "pull", "--since", "2026-04-14T12:00:00Z"],
    ))
    .await
    .ok()
    .json();
    assert_eq!(out, json!({"success": true, "count": 2, "context": items}));

    let requests = platform.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests
        .iter()
        .all(|r| r.method == "GET" && r.path == PULL_PATH));
    assert_eq!(requests[0].query, format!("agent_id={AGENT}"));
    assert_eq!(
        requests[1].query,
        format!("agent_id={AGENT}&since=2026-04-14T12%3A00%3A00Z")
    );

    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["context_count"], 2);
    assert!(status["last_pull_at"].is_string());
    assert_eq!(status["queued_entries"], 1);
    assert_eq!(
        status["head"]["attempts"], 0,
        "pull must not try to push: {status}"
    );

    // Offline, the cache answers.
    let out = run_async(sandbox.cmd(&["pull", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(out["count"], 2);
    platform.stop().await;
}

// ------------------------------------------------------- dead letters, requeue

#[actix_rt::test]
async fn refused_entries_are_listed_and_requeued_by_seq_or_all() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::status(422).body("bad dispatch"));
    let out = run_with_stdin_async(
        sandbox.online(&platform.url(), &["push", "--dispatches", "-"]),
        br#"[{"id": "x"}]"#,
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "synced: 0"),
        "{}",
        out.stderr
    );

    let letters = run_async(sandbox.cmd(&["--json", "dead-letters"]))
        .await
        .ok()
        .json();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    assert_eq!(letters[0]["seq"], 1);
    assert_eq!(letters[0]["status"], 422);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("bad dispatch"),
        "{letters}"
    );
    assert_eq!(letters[0]["dispatches"], json!([{"id": "x"}]));
    let text = run_async(sandbox.cmd(&["dead-letters"])).await.ok().stdout;
    assert!(text.starts_with("seq 1  HTTP 422"), "{text}");

    // A seq that is not a dead letter: reported, exit 1, the others still move.
    let out = run_async(sandbox.cmd(&["requeue", "1", "99", "--json"])).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.json(),
        json!({"requeued": [{"seq": 1, "new_seq": 2}], "missing": [99]})
    );
    assert!(
        out.stderr.starts_with("error: no dead letter with seq 99"),
        "{}",
        out.stderr
    );
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue[0]["seq"], 2);

    // Refused again, then --all brings it back.
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    let out = run_async(sandbox.cmd(&["requeue", "--all"])).await.ok();
    assert_eq!(
        out.stdout.trim(),
        "requeued: dead letter 2 is queue entry 3"
    );
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(
        (
            status["dead_letters"].clone(),
            status["queued_entries"].clone()
        ),
        (json!(0), json!(1))
    );
    platform.stop().await;
}

// ------------------------------------------------------- local failures (exit 1)

#[test]
fn a_second_process_on_the_same_state_fails_fast() {
    let sandbox = Sandbox::new();
    let held = agent_sync_actors::Store::open(&sandbox.state()).expect("hold the state");
    let started = Instant::now();
    let out = run(sandbox.cmd(&["status"]));
    assert_eq!(out.code, 1);
    // The holder (this test process) has no control socket: its pid comes from the
    // lock table.
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: state in {} is in use by another agent-sync process (pid {})",
            sandbox.state().display(),
            std::process::id()
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it must not hang"
    );
    drop(held);
    run(sandbox.cmd(&["status"])).ok();
}

#[test]
fn a_corrupt_database_is_reported_and_left_untouched() {
    let sandbox = Sandbox::new();
    fs::create_dir_all(sandbox.state()).unwrap();
    let path = sandbox.state().join("sync.redb");
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &garbage).unwrap();
    for args in [&["status"][..], &["push", "--queue-only"]] {
        let out = run(sandbox.cmd(args));
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            out.stderr.starts_with("error: the sync database"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("left untouched"), "{}", out.stderr);
    }
    assert_eq!(fs::read(&path).unwrap(), garbage);
}

#[test]
fn plain_http_to_a_remote_host_is_refused_unless_allowed() {
    let sandbox = Sandbox::new();
    let url = "http://platform.invalid";
    let out = run(sandbox.online(url, &["push"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: refusing plain http"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(SECRET));
    assert!(
        !sandbox.state().join("sync.redb").exists(),
        "refused before opening anything"
    );
    // Allowed explicitly, a local command runs (and sends nothing).
    run(sandbox.online(url, &["--allow-insecure-http", "status"])).ok();
}

// ------------------------------------------------------------------ secrets

#[actix_rt::test]
async fn the_token_never_appears_in_output_even_at_trace_level() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    // A refused pull (401), a delivered push, an unrecognised pull body, status.
    platform.respond(Scripted::status(401).body("no"));
    let mut outputs = Vec::new();
    for args in [
        &["pull"][..],
        &["push"],
        &["--json", "pull"],
        &["--json", "status"],
    ] {
        let mut cmd = sandbox.online(&platform.url(), args);
        cmd.env("RUST_LOG", "trace");
        let out = run_async(cmd).await;
        assert_eq!(
            out.code,
            0,
            "{args:?}: {}",
            out.stderr.replace(SECRET, "<TOKEN>")
        );
        outputs.push(out);
    }
    assert_eq!(platform.delivered().len(), 1);
    assert_eq!(platform.requests().len(), 3);
    for out in &outputs {
        assert!(!out.stdout.contains(SECRET), "token on stdout");
        assert!(!out.stderr.contains(SECRET), "token in the log");
    }
    assert!(outputs[1].stderr.contains("TRACE"), "trace logging was on");
    platform.stop().await;
}

// ------------------------------------------------------------------- daemon

#[actix_rt::test]
async fn the_daemon_delivers_new_work_and_stops_cleanly_on_sigterm() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    let mut daemon = Daemon::spawn(
        &sandbox,
        sandbox.online(&platform.url(), &["run", "--scan-interval", "1s"]),
    );
    daemon.wait_running().await;
    write_done(&sandbox.root(), "core/go-io/late");
    wait_until("the new workspace to be delivered", DEADLINE, || {
        platform
            .delivered()
            .iter()
            .any(|r| r.dispatch_ids() == ["core/go-io/late"])
    })
    .await;
    // The server answering is not the daemon recording it: its log line comes after
    // the durable commit (stopped in between, the entry would stay queued, correctly).
    wait_until("the daemon to record the delivery", DEADLINE, || {
        daemon.log().contains("pushed entry 1: 1 dispatch(es)")
    })
    .await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(took < STOP_WITHIN);
    // The state was closed: another process can open it.
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["ledger_entries"], 1);
    platform.stop().await;
}

#[actix_rt::test]
async fn sigterm_mid_request_waits_for_it_then_nothing_is_sent_twice_after_restart() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(Duration::from_millis(1500)));
    write_done(&sandbox.root(), "core/go-io/slow");
    let mut daemon = Daemon::spawn(&sandbox, sandbox.online(&platform.url(), &["run"]));
    wait_until("the push to be in flight", DEADLINE, || {
        !platform.pushes().is_empty()
    })
    .await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(took < STOP_WITHIN, "took {took:?}");
    assert_eq!(
        platform.delivered().len(),
        1,
        "the request in flight completed"
    );
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(
        queue,
        json!([]),
        "its outcome was committed before the exit"
    );

    // The next process, scanning and draining, finds nothing to send: no dispatch
    // reaches the platform twice.
    platform.set_default(Scripted::ok());
    let out = run_async(sandbox.online(&platform.url(), &["push"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    assert_eq!(platform.pushes().len(), 1, "{:?}", platform.pushes());
    platform.stop().await;
}

#[actix_rt::test]
async fn sigterm_mid_request_times_it_out_at_the_shutdown_deadline_and_keeps_the_entry() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(Duration::from_secs(60)));
    write_done(&sandbox.root(), "core/go-io/slow");
    let cmd = sandbox.online(&platform.url(), &["run", "--shutdown-timeout", "1s"]);
    let mut daemon = Daemon::spawn(&sandbox, cmd);
    wait_until("the push to be in flight", DEADLINE, || {
        !platform.pushes().is_empty()
    })
    .await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(
        took >= Duration::from_millis(900),
        "it waited for the request: {took:?}"
    );
    assert!(took < STOP_WITHIN, "took {took:?}");
    platform.stop().await;
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue.as_array().map(Vec::len), Some(1), "{queue}");
    assert_eq!(queue[0]["dispatches"][0]["id"], "core/go-io/slow");
    assert_eq!(
        queue[0]["attempts"], 1,
        "the timeout was committed as an attempt"
    );
    assert!(
        queue[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("shutdown deadline")),
        "{queue}"
    );
}

#[actix_rt::test]
async fn a_second_signal_stops_at_once_and_the_entry_stays_queued() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().delay(Duration::from_secs(60)));
    write_done(&sandbox.root(), "core/go-io/slow");
    let cmd = sandbox.online(&platform.url(), &["run", "--shutdown-timeout", "60s"]);
    let mut daemon = Daemon::spawn(&sandbox, cmd);
    wait_until("the push to be in flight", DEADLINE, || {
        !platform.pushes().is_empty()
    })
    .await;
    daemon.signal(libc::SIGTERM);
    wait_until("the first signal to be seen", DEADLINE, || {
        daemon
            .log()
            .contains("stopping after the request in flight")
    })
    .await;
    let (status, took) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(
        took < STOP_WITHIN,
        "the second signal did not stop it at once: {took:?}"
    );
    assert!(daemon.log().contains("second SIGTERM"), "{}", daemon.log());
    platform.stop().await;
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue.as_array().map(Vec::len), Some(1), "{queue}");
    assert_eq!(
        queue[0]["attempts"], 0,
        "abandoned, not recorded as an attempt"
    );
}

#[actix_rt::test]
async fn the_daemon_without_a_token_waits_then_uses_a_key_file_provisioned_later() {
    let sandbox = Sandbox::new();
    let platform = LoopbackPlatform::start().await;
    write_done(&sandbox.root(), "core/go-io/task-1");
    let mut cmd = sandbox.cmd(&["run", "--scan-interval", "1s"]);
    cmd.env("CORE_API_URL", platform.url());
    let mut daemon = Daemon::spawn(&sandbox, cmd);
    daemon.wait_running().await;
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert!(platform.requests().is_empty(), "offline: nothing is sent");
    let key = sandbox.home().join(".claude").join("brain.key");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, format!("{SECRET}\n")).unwrap();
    wait_until("delivery with the new key", DEADLINE, || {
        platform.delivered().len() == 1
    })
    .await;
    assert_eq!(
        platform.delivered()[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let (status, _) = daemon.terminate().await;
    assert_eq!(status.code(), Some(0));
    assert!(!daemon.log().contains(SECRET));
    platform.stop().await;
}

#[actix_rt::test]
async fn the_daemon_reaps_ghost_workspaces_even_with_scanning_off() {
    let sandbox = Sandbox::new();
    let ghost =
        json!({"status": "running", "pid": 99_999_999, "agent": "codex", "runs": 1}).to_string();
    let dir = write_workspace(&sandbox.root(), "core/go-io/ghost", &ghost);
    let status_file = dir.join("status.json");

    // --no-reap leaves it alone.
    let mut daemon = Daemon::spawn(
        &sandbox,
        sandbox.cmd(&["run", "--scan-interval", "0", "--no-reap"]),
    );
    daemon.wait_running().await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(daemon.terminate().await.0.code(), Some(0));
    assert_eq!(fs::read_to_string(&status_file).unwrap(), ghost);

    let mut daemon = Daemon::spawn(&sandbox, sandbox.cmd(&["run", "--scan-interval", "0"]));
    wait_until("the ghost to be reaped", DEADLINE, || {
        fs::read_to_string(&status_file).is_ok_and(|s| s.contains("failed"))
    })
    .await;
    assert_eq!(daemon.terminate().await.0.code(), Some(0));
    let status: Value = serde_json::from_str(&fs::read_to_string(&status_file).unwrap()).unwrap();
    assert_eq!(status["status"], "failed");
    assert_eq!(status["question"], "dead worker on restart");
    assert_eq!(status["pid"], 99_999_999);
}

// ------------------------------------------------------------- legacy import

/// The Go agent's sync dir, as it wrote it (RFC 3339 with nanoseconds and offsets,
/// zero times, `runs` read back as a float).
fn write_go_state(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fs::create_dir_all(dir).unwrap();
    let files = [
        (
            "queue.json",
            json!([{
                "agent_id": "go-agent",
                "fleet_node_id": 3,
                "dispatches": [{
                    "id": "core/go-io/task-9", "workspace": "core/go-io/task-9",
                    "status": "completed", "runs": 2.0,
                    "updated_at": "2026-04-14T13:00:00.123456789+01:00"
                }],
                "queued_at": "2026-04-14T12:36:44.987654321+01:00",
                "attempts": 2,
                "next_attempt": "0001-01-01T00:00:00Z"
            }]),
        ),
        (
            "ledger.json",
            json!({
                "core/go-io/task-1": "2026-04-10T09:00:00Z#1",
                "core/go-io/task-2": "2026-04-11T09:00:00.5+02:00#0"
            }),
        ),
        (
            "records.json",
            json!([
                {"agent_id": "go-agent", "direction": "push", "payload_size": 512, "items_count": 3,
                 "synced_at": "2026-04-13T10:00:00Z"},
                {"agent_id": "go-agent", "fleet_node_id": 3, "direction": "pull", "payload_size": 100,
                 "items_count": 1, "synced_at": "2026-04-13T11:00:00Z"}
            ]),
        ),
        (
            "status.json",
            json!({
                "last_push_at": "2026-04-13T11:00:00.5+01:00",
                "last_pull_at": "0001-01-01T00:00:00Z"
            }),
        ),
        (
            "context.json",
            json!([{"id": "m1", "content": "remember this"}]),
        ),
    ];
    files
        .iter()
        .map(|(name, value)| {
            let path = dir.join(name);
            let bytes = serde_json::to_vec_pretty(value).unwrap();
            fs::write(&path, &bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

#[actix_rt::test]
async fn import_legacy_runs_once_leaves_the_files_and_its_queue_delivers() {
    let sandbox = Sandbox::new();
    // Default --from is the state dir, where the Go agent kept its files.
    let files = write_go_state(&sandbox.state());

    let first = run_async(sandbox.cmd(&["--json", "import-legacy"]))
        .await
        .ok()
        .json();
    assert_eq!(first["already_imported"], false, "{first}");
    assert_eq!(first["queue_entries"], 1);
    assert_eq!(first["queued_dispatches"], 1);
    assert_eq!(first["ledger_entries"], 2);
    assert_eq!(first["history_records"], 2);
    assert_eq!(first["context_items"], 1);
    assert_eq!(first["last_push_at"], "2026-04-13T10:00:00.5Z");
    assert_eq!(first["last_pull_at"], Value::Null);

    let second = run_async(sandbox.cmd(&["import-legacy"])).await.ok().stdout;
    assert!(second.contains("already imported: yes"), "{second}");
    assert!(second.contains("queue entries: 0"), "{second}");
    for (path, bytes) in &files {
        assert_eq!(
            &fs::read(path).unwrap(),
            bytes,
            "{} was modified",
            path.display()
        );
    }

    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(queue.as_array().map(Vec::len), Some(1), "{queue}");
    assert_eq!(queue[0]["agent_id"], "go-agent");
    assert_eq!(queue[0]["attempts"], 2);
    assert_eq!(queue[0]["next_attempt"], Value::Null);
    assert_eq!(queue[0]["queued_at"], "2026-04-14T11:36:44.987Z");
    assert_eq!(queue[0]["dispatches"][0]["id"], "core/go-io/task-9");
    let history = run_async(sandbox.cmd(&["--json", "history"]))
        .await
        .ok()
        .json();
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    assert_eq!(history[0]["direction"], "push");
    assert_eq!(history[1]["fleet_node_id"], 3);
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["ledger_entries"], 2);
    assert_eq!(status["context_count"], 1);
    assert_eq!(status["queued_entries"], 1);
    assert_eq!(status["last_push_at"], "2026-04-13T10:00:00.5Z");
    assert_eq!(status["head"]["attempts"], 2);

    // Delivering the imported entry marks the ledger with the fingerprint derived at
    // import, so the same workspace found by a scan is not pushed again.
    let platform = LoopbackPlatform::start().await;
    let out = run_async(sandbox.online(&platform.url(), &["push", "--queue-only"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 1");
    let delivered = platform.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].json()["agent_id"], "go-agent");
    assert_eq!(delivered[0].json()["fleet_node_id"], 3);
    let status = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(status["ledger_entries"], 3);
    assert_eq!(status["queued_entries"], 0);
    write_workspace(
        &sandbox.root(),
        "core/go-io/task-9",
        &status_json("completed", "2026-04-14T13:00:00+01:00", 2),
    );
    let out = run_async(sandbox.online(&platform.url(), &["push"]))
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "synced: 0");
    assert_eq!(
        platform.pushes().len(),
        1,
        "the imported fingerprint matched the scan"
    );
    platform.stop().await;
}

#[test]
fn import_legacy_refuses_a_corrupt_file_and_imports_nothing() {
    let sandbox = Sandbox::new();
    let go = sandbox.dir.path().join("go-sync");
    write_go_state(&go);
    fs::write(go.join("records.json"), "{\"oops\"").unwrap();
    let out = run(sandbox.cmd(&["import-legacy", "--from", go.to_str().unwrap()]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("records.json"),
        "{}",
        out.stderr
    );
    let status = run(sandbox.cmd(&["--json", "status"])).ok().json();
    assert_eq!(
        (
            status["queued_entries"].clone(),
            status["ledger_entries"].clone()
        ),
        (json!(0), json!(0))
    );
    // Fixed, it imports (no marker was written by the failed run).
    write_go_state(&go);
    let out = run(sandbox.cmd(&["import-legacy", "--from", go.to_str().unwrap()])).ok();
    assert!(out.stdout.contains("queue entries: 1"), "{}", out.stdout);
}
