//! R1, crash safety of the real `agent-sync` binary: `kill -9` at any point loses nothing
//! that was acknowledged, and the only duplicates are the leased window in flight.
//!
//! # The harness
//!
//! Each round runs in an isolated sandbox (the approach of `tests/cli.rs`: a cleared
//! environment, `HOME` and `CORE_WORKSPACE` in a temp dir). A few hundred dispatches
//! are queued, then `agent-sync run --scan-interval 0` drains them to a platform on
//! 127.0.0.1 that answers slowly (1-4 ms, pseudo-random from the round's seed) and is
//! killed with SIGKILL at a chosen moment, restarted, killed again, and finally left to
//! finish. The platform is a small threaded HTTP/1.1 server written here rather than
//! the actix one of `common`, because it must act at exact points: kill the daemon
//! while it holds a request (mid-POST), or right after it has written a 2xx (before
//! the Queue could record it). Every daemon incarnation gets a server of its own, so
//! each request is attributed to the incarnation that sent it.
//!
//! Kinds of kill point:
//! - `mid-enqueue`: `push --dispatches FILE` of a 300-dispatch file, offline, killed
//!   at a random moment of its run (start, open and repair, commit, exit);
//! - `mid-post`: the daemon is killed while the platform holds its n-th request;
//! - `after-2xx`: killed right after the platform has answered its n-th request;
//! - `anytime`: killed after a random delay (start-up, repair, lease, commit...);
//! - `scanned`: 300 finished workspaces on disk, found by the daemon's own scan;
//!   killed at a random moment, then right after a 2xx (Ledger/Queue atomicity).
//!
//! # What is checked
//!
//! After every kill, the state opens (`queue --json`, exit 0) and:
//! - an entry left the queue only if the platform answered it with a 2xx;
//! - an entry sent but not answered is still queued;
//! - the entries sent *and* still queued (they will be sent again) are the tail of
//!   what that incarnation sent — one window — and at most `lease_window` entries;
//! - an entry the daemon logged as pushed (after its durable commit) is gone.
//!
//! At the end of a round: the queue is empty, nothing is dead-lettered, every
//! acknowledged dispatch reached the platform at least once (lost = 0), and every
//! extra copy the platform received is accounted for by one of those windows.
//!
//! `AGENT_SYNC_CRASH_ROUNDS` (default 4) sets the rounds per kind and
//! `AGENT_SYNC_CRASH_SEED` the base seed, e.g.
//! `AGENT_SYNC_CRASH_ROUNDS=50 cargo test --release --test crash -- --nocapture`.
//! Windows cycle over the default (32), 1 and 4 (`run --lease-window`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use actix::Actor;
use agent_sync::actors::messages::{Enqueue, EnqueueBatch};
use agent_sync::actors::queue::{QueueConfig, DEFAULT_LEASE_WINDOW};
use agent_sync::actors::time::Clock;
use agent_sync::actors::{Queue, Store};
use serde_json::{json, Value};

/// A token distinctive enough to spot anywhere.
const SECRET: &str = "crash-secret-0b1d";
/// The agent every round runs as.
const AGENT: &str = "crash-agent";
/// Dispatches per round.
const DISPATCHES: usize = 300;
/// Bound on anything the harness waits for.
const DEADLINE: Duration = Duration::from_secs(60);
/// Windows the rounds cycle over (`None`: the default, no flag).
const WINDOWS: [Option<u16>; 3] = [None, Some(1), Some(4)];

// ------------------------------------------------------------------- knobs, seeds

fn rounds() -> usize {
    std::env::var("AGENT_SYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

fn base_seed() -> u64 {
    std::env::var("AGENT_SYNC_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234)
}

/// A tiny deterministic generator (Knuth's MMIX LCG, high bits).
#[derive(Clone, Debug)]
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Self {
        let mut lcg = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        lcg.next();
        lcg
    }

    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------------ sandbox

/// One isolated installation: `<tmp>/home`, `<tmp>/workspace`, `<tmp>/sync`.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("home")).expect("home");
        fs::create_dir_all(dir.path().join("workspace")).expect("workspace root");
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("sync")
    }

    /// The binary with a clean, offline environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-sync"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
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

    /// `queue --json`: the state must open after every crash.
    fn queue(&self) -> Vec<Entry> {
        let out = self.cmd(&["--json", "queue"]).output().expect("run queue");
        assert!(
            out.status.success(),
            "the state does not open after a crash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing: Value = serde_json::from_slice(&out.stdout).expect("queue JSON");
        listing
            .as_array()
            .expect("an array")
            .iter()
            .map(|e| Entry {
                seq: e["seq"].as_u64().expect("seq"),
                key: e["idempotency_key"].as_str().expect("key").to_string(),
                ids: e["dispatches"]
                    .as_array()
                    .expect("dispatches")
                    .iter()
                    .map(|d| d["id"].as_str().expect("id").to_string())
                    .collect(),
            })
            .collect()
    }

    fn status(&self) -> Value {
        let out = self
            .cmd(&["--json", "status"])
            .output()
            .expect("run status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

/// A queued entry as `queue --json` lists it.
#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    key: String,
    ids: Vec<String>,
}

fn dispatch(id: &str) -> Value {
    json!({"id": id, "status": "completed", "agent": "codex", "pad": "p".repeat(48)})
}

/// Queues `entries` (each one queue entry) into the state, in-process, and closes it.
fn seed_queue(state: &Path, entries: Vec<Vec<Value>>) {
    let state = state.to_path_buf();
    thread::spawn(move || {
        actix::System::new().block_on(async move {
            let store = Store::open(&state).expect("open the state");
            let config = QueueConfig {
                max_batch: 1000,
                ..QueueConfig::default()
            };
            let queue = Queue::new(store, config, Clock::system()).start();
            // Sent together: one group commit.
            let sends: Vec<_> = entries
                .into_iter()
                .map(|dispatches| {
                    queue.send(Enqueue {
                        agent_id: AGENT.into(),
                        fleet_node_id: None,
                        batch: EnqueueBatch::Host(
                            dispatches
                                .into_iter()
                                .map(|d| d.as_object().expect("an object").clone())
                                .collect(),
                        ),
                    })
                })
                .collect();
            for send in sends {
                send.await.expect("the queue").expect("enqueue");
            }
        })
    })
    .join()
    .expect("seeding thread");
}

// ---------------------------------------------------------------- the platform

/// When the platform kills the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// Never: answer everything.
    Never,
    /// Receive the n-th push (0-based), then kill without answering (mid-POST).
    HoldAt(usize),
    /// Answer the n-th push with a 2xx, then kill at once (before the Queue records it).
    AfterAnswer(usize),
}

/// One push the platform read in full.
#[derive(Clone, Debug)]
struct Received {
    key: String,
    ids: Vec<String>,
    /// A 2xx was written back.
    answered: bool,
    at: Instant,
}

struct Shared {
    log: Mutex<Vec<Received>>,
    trigger: Trigger,
    seed: u64,
    /// The daemon to kill: 0 until known and again once disarmed. Under a lock so a
    /// kill can never race the reaping of the child (after which the pid may be
    /// recycled: pid_max is 32768 on this machine).
    pid: Mutex<i32>,
    /// The trigger fired.
    fired: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn kill(&self) {
        let pid = lock(&self.pid);
        if *pid <= 0 {
            // Not known yet, or the phase is over and the child reaped: never signal a
            // pid that may now belong to another process.
            return;
        }
        // Before the kill: whoever sees the daemon dead then sees this too.
        self.fired.store(true, Ordering::SeqCst);
        // SAFETY: signalling the test's own child: armed means not yet reaped.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }

    /// 1-4 ms, from the seed and the request's index.
    fn delay(&self, index: usize) -> Duration {
        let mut lcg = Lcg::new(self.seed ^ (index as u64).wrapping_mul(0x100_0000_01b3));
        Duration::from_millis(1 + lcg.below(4))
    }
}

/// A slow HTTP/1.1 platform on 127.0.0.1 that records pushes and may kill the daemon.
struct Platform {
    shared: Arc<Shared>,
    port: u16,
    accept: Option<thread::JoinHandle<()>>,
}

impl Platform {
    fn start(seed: u64, trigger: Trigger) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            trigger,
            seed,
            pid: Mutex::new(0),
            fired: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = accepting.clone();
                thread::spawn(move || serve(stream, &conn));
            }
        });
        Platform {
            shared,
            port,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_pid(&self, pid: u32) {
        *lock(&self.shared.pid) = i32::try_from(pid).expect("a pid");
    }

    /// Called before the child is reaped: from here on no trigger signals anything.
    fn disarm(&self) {
        *lock(&self.shared.pid) = 0;
    }

    fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    fn log(&self) -> Vec<Received> {
        lock(&self.shared.log).clone()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A request line, headers (lowercase names) and body; `None` at EOF or on garbage.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut length = 0usize;
    let mut key = String::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().ok()?,
                "idempotency-key" => key = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let _ = path;
    Some((method, key, body))
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    while let Some((method, key, body)) = read_request(&mut reader) {
        if method != "POST" {
            let _ = writer.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
            continue;
        }
        let body: Value = serde_json::from_slice(&body).expect("a JSON push body");
        let ids = body["dispatches"]
            .as_array()
            .expect("dispatches")
            .iter()
            .map(|d| d["id"].as_str().expect("an id").to_string())
            .collect();
        let index = {
            let mut log = lock(&shared.log);
            log.push(Received {
                key,
                ids,
                answered: false,
                at: Instant::now(),
            });
            log.len() - 1
        };
        if shared.trigger == Trigger::HoldAt(index) {
            shared.kill();
            continue; // never answered; the next read sees EOF
        }
        thread::sleep(shared.delay(index));
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        if writer
            .write_all(answer)
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
        lock(&shared.log)[index].answered = true;
        if shared.trigger == Trigger::AfterAnswer(index) {
            shared.kill();
        }
    }
}

// ------------------------------------------------------------------ the rounds

/// How a daemon incarnation ends.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// By the platform's trigger.
    Request(Trigger),
    /// After this long.
    Time(Duration),
    /// Not killed: it finishes, then stops on SIGTERM.
    Finish,
}

/// One daemon incarnation and what came of it.
struct Phase {
    label: String,
    platform: Platform,
    killed: bool,
    /// The queue once it was dead.
    after: Vec<Entry>,
    /// Seqs it logged as pushed (logged after their durable commit).
    logged: BTreeSet<u64>,
}

/// Statistics of one kind, over all its rounds.
#[derive(Default)]
struct Tally {
    rounds: usize,
    kills: usize,
    dispatches: usize,
    lost: usize,
    /// Extra copies the platform received.
    duplicates: usize,
    /// Per window: (kills, most entries re-sent after one kill).
    per_window: BTreeMap<usize, (usize, usize)>,
    /// Killed `push` runs that had committed / had not.
    enqueue_outcomes: (usize, usize, usize),
}

impl Tally {
    fn print(&self, kind: &str) {
        let windows: Vec<String> = self
            .per_window
            .iter()
            .map(|(w, (kills, max))| {
                format!("window {w}: {kills} kill(s), max {max} entr(ies) re-sent")
            })
            .collect();
        let mut line = format!(
            "crash[{kind}]: rounds {}, kill points {}, dispatches {}, lost {}, duplicates {}",
            self.rounds, self.kills, self.dispatches, self.lost, self.duplicates
        );
        if !windows.is_empty() {
            line.push_str(&format!(" ({})", windows.join("; ")));
        }
        let (acked, committed, rolled_back) = self.enqueue_outcomes;
        if acked + committed + rolled_back > 0 {
            line.push_str(&format!(
                " (killed pushes: {acked} had exited 0, {committed} committed unacknowledged, {rolled_back} left nothing)"
            ));
        }
        line.push_str(&format!(
            "; more: AGENT_SYNC_CRASH_ROUNDS=N (now {}), AGENT_SYNC_CRASH_SEED",
            rounds()
        ));
        // Straight to the stream: shown even when the test harness captures output.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

struct Round {
    label: String,
    seed: u64,
    rng: Lcg,
    sandbox: Sandbox,
    window: Option<u16>,
    /// The daemon scans the workspace root at start (else it only drains).
    scan: bool,
    phases: Vec<Phase>,
    /// Acknowledged (or seeded) dispatch ids: each must reach the platform.
    expected: BTreeSet<String>,
}

impl Round {
    fn new(kind: &str, index: usize) -> Self {
        let seed = base_seed()
            .wrapping_add(index as u64 * 7919)
            .wrapping_add(kind.len() as u64 * 104_729);
        Round {
            label: format!("{kind} round {index} (seed {seed})"),
            seed,
            rng: Lcg::new(seed),
            sandbox: Sandbox::new(),
            window: WINDOWS[index % WINDOWS.len()],
            scan: false,
            phases: Vec::new(),
            expected: BTreeSet::new(),
        }
    }

    fn window(&self) -> usize {
        self.window.map_or(DEFAULT_LEASE_WINDOW, usize::from)
    }

    /// 300 host dispatches in entries of 1-3, queued before the first daemon starts.
    fn seed_entries(&mut self) {
        let mut entries = Vec::new();
        let mut next = 0;
        while next < DISPATCHES {
            let size = (1 + self.rng.below(3) as usize).min(DISPATCHES - next);
            let ids: Vec<String> = (next..next + size).map(|i| format!("d-{i:03}")).collect();
            self.expected.extend(ids.iter().cloned());
            entries.push(ids.iter().map(|id| dispatch(id)).collect());
            next += size;
        }
        seed_queue(&self.sandbox.state(), entries);
    }

    /// Runs one daemon incarnation until `kill`.
    fn phase(&mut self, kill: KillAt) {
        let before = self.sandbox.queue();
        let number = self.phases.len();
        let trigger = match kill {
            KillAt::Request(trigger) => trigger,
            _ => Trigger::Never,
        };
        let platform = Platform::start(self.seed.wrapping_add(number as u64), trigger);
        let log_path = self.sandbox.path().join(format!("daemon-{number}.log"));
        let mut args = vec!["run", "--scan-interval", if self.scan { "1h" } else { "0" }];
        let window = self.window.map(|w| w.to_string());
        if let Some(window) = &window {
            args.extend(["--lease-window", window.as_str()]);
        }
        let mut cmd = self.sandbox.online(&platform.url(), &args);
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log_path).expect("log")));
        let mut guard = KillOnDrop(cmd.spawn().expect("spawn the daemon"));
        let child = &mut guard.0;
        platform.set_pid(child.id());
        let label = format!("{} phase {number} ({kill:?})", self.label);
        let started = Instant::now();
        let log = || fs::read_to_string(&log_path).unwrap_or_default();
        let killed = match kill {
            KillAt::Request(_) => {
                let mut quiet_since = (Instant::now(), 0);
                loop {
                    if platform.fired() {
                        break;
                    }
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        platform.disarm(); // reaped: its pid may be recycled
                        if platform.fired() {
                            break; // killed by the trigger between the two checks
                        }
                        panic!(
                            "{label}: the daemon exited on its own ({status}); log:\n{}",
                            log()
                        );
                    }
                    // The trigger may lie beyond what is left (a window re-sent fewer
                    // entries than counted): once idle, kill it anyway.
                    let seen = platform.log().len();
                    if seen != quiet_since.1 {
                        quiet_since = (Instant::now(), seen);
                    } else if quiet_since.0.elapsed() > Duration::from_millis(800) {
                        kill_now(child);
                        break;
                    }
                    assert!(
                        started.elapsed() < DEADLINE,
                        "{label}: timed out; log:\n{}",
                        log()
                    );
                    thread::sleep(Duration::from_millis(1));
                }
                true
            }
            KillAt::Time(after) => {
                thread::sleep(after);
                kill_now(child);
                true
            }
            KillAt::Finish => {
                // SIGTERM is handled only once the daemon says it runs.
                while !log().contains("agent-sync running") {
                    assert!(
                        started.elapsed() < DEADLINE,
                        "{label}: no start; log:\n{}",
                        log()
                    );
                    thread::sleep(Duration::from_millis(2));
                }
                self.wait_all_delivered(&platform, &before, &label, &log);
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                false
            }
        };
        platform.disarm();
        let status = wait_exit(child, &label);
        if killed {
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{label}: {status}; log:\n{}",
                log()
            );
        } else {
            assert_eq!(status.code(), Some(0), "{label}; log:\n{}", log());
        }
        // Let the platform read whatever the dead process had already written.
        thread::sleep(Duration::from_millis(20));
        let text = log();
        assert!(!text.contains(SECRET), "{label}: the token is in the log");
        assert!(
            !text.contains("panicked"),
            "{label}: the daemon panicked:\n{text}"
        );
        let logged = text
            .lines()
            .filter_map(|l| l.split("pushed entry ").nth(1))
            .filter_map(|rest| rest.split(':').next()?.parse().ok())
            .collect();
        let after = self.sandbox.queue();
        let phase = Phase {
            label,
            platform,
            killed,
            after,
            logged,
        };
        check_phase(&before, &phase, self.window());
        self.phases.push(phase);
    }

    /// Waits until every expected id was answered and the platform has been quiet.
    /// Waits until every expected id was answered (in any incarnation), every entry
    /// queued at the start of this one was answered by it (a window re-sent after a
    /// kill), and the platform has been quiet long enough for the last commit.
    fn wait_all_delivered(
        &self,
        current: &Platform,
        queued: &[Entry],
        label: &str,
        log: &dyn Fn() -> String,
    ) {
        let started = Instant::now();
        loop {
            let mut answered: HashSet<String> = HashSet::new();
            for p in self.phases.iter().map(|p| &p.platform).chain([current]) {
                for r in p.log().into_iter().filter(|r| r.answered) {
                    answered.extend(r.ids);
                }
            }
            let now: HashSet<String> = current
                .log()
                .into_iter()
                .filter(|r| r.answered)
                .map(|r| r.key)
                .collect();
            let last = current.log().last().map(|r| r.at);
            let quiet = last.is_none_or(|at| at.elapsed() > Duration::from_millis(300));
            if self.expected.iter().all(|id| answered.contains(id))
                && queued.iter().all(|e| now.contains(&e.key))
                && quiet
            {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{label}: not everything was delivered in time; missing {:?}; log:\n{}",
                self.expected
                    .iter()
                    .filter(|id| !answered.contains(*id))
                    .take(10)
                    .collect::<Vec<_>>(),
                log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets a last daemon finish; checks the round as a whole; adds to `tally`.
    fn finish(&mut self, tally: &mut Tally) {
        self.phase(KillAt::Finish);
        let label = self.label.clone();
        assert!(
            self.phases.last().expect("a phase").after.is_empty(),
            "{label}: the queue is not empty at the end"
        );
        let status = self.sandbox.status();
        assert_eq!(status["queued_entries"], 0, "{label}: {status}");
        assert_eq!(status["dead_letters"], 0, "{label}: {status}");

        // Every copy of every id the platform received, over all incarnations.
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        let mut answered: HashSet<String> = HashSet::new();
        for phase in &self.phases {
            for r in phase.platform.log() {
                for id in &r.ids {
                    *received.entry(id.clone()).or_default() += 1;
                    if r.answered {
                        answered.insert(id.clone());
                    }
                }
            }
        }
        let lost: Vec<&String> = self
            .expected
            .iter()
            .filter(|id| !answered.contains(*id))
            .collect();
        assert!(lost.is_empty(), "{label}: lost {lost:?}");

        // Every extra copy is one re-send of a window that was in flight at a kill.
        let duplicates: usize = received.values().map(|n| n - 1).sum();
        let mut explained = 0;
        for phase in self.phases.iter().filter(|p| p.killed) {
            let still: HashSet<&str> = phase.after.iter().map(|e| e.key.as_str()).collect();
            let resent: Vec<Received> = phase
                .platform
                .log()
                .into_iter()
                .filter(|r| still.contains(r.key.as_str()))
                .collect();
            explained += resent.iter().map(|r| r.ids.len()).sum::<usize>();
            let entry = tally.per_window.entry(self.window()).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(resent.len());
            tally.kills += 1;
        }
        assert_eq!(
            duplicates, explained,
            "{label}: duplicates not explained by the windows in flight"
        );
        tally.rounds += 1;
        tally.dispatches += self.expected.len();
        tally.lost += lost.len();
        tally.duplicates += duplicates;
    }
}

/// A daemon that is killed if the test fails before it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn kill_now(child: &Child) {
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
}

fn wait_exit(child: &mut Child, label: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("{label}: the daemon did not exit");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The per-kill checks of the module docs.
fn check_phase(before: &[Entry], phase: &Phase, window: usize) {
    let label = &phase.label;
    let received = phase.platform.log();
    let answered: HashSet<&str> = received
        .iter()
        .filter(|r| r.answered)
        .map(|r| r.key.as_str())
        .collect();
    let after: HashSet<&str> = phase.after.iter().map(|e| e.key.as_str()).collect();
    let after_seqs: HashSet<u64> = phase.after.iter().map(|e| e.seq).collect();

    // Nothing leaves the queue without a 2xx.
    for entry in before {
        assert!(
            after.contains(entry.key.as_str()) || answered.contains(entry.key.as_str()),
            "{label}: entry {} ({:?}) left the queue unanswered",
            entry.seq,
            entry.ids
        );
    }
    // Sent at most once per incarnation; unanswered ones are still queued.
    let mut keys = HashSet::new();
    for r in &received {
        assert!(keys.insert(r.key.as_str()), "{label}: {} sent twice", r.key);
        if !r.answered {
            assert!(
                after.contains(r.key.as_str()),
                "{label}: entry {} was never answered yet left the queue",
                r.key
            );
        }
    }
    // Logged as pushed = durably recorded: never queued again.
    for seq in &phase.logged {
        assert!(
            !after_seqs.contains(seq),
            "{label}: entry {seq} was logged as pushed but is still queued"
        );
    }
    if !phase.killed {
        return;
    }
    // What will be sent again is the tail of what was sent: one window at most.
    let resent: Vec<usize> = received
        .iter()
        .enumerate()
        .filter(|(_, r)| after.contains(r.key.as_str()))
        .map(|(i, _)| i)
        .collect();
    let tail: Vec<usize> = (received.len() - resent.len()..received.len()).collect();
    assert_eq!(
        resent, tail,
        "{label}: the entries to be re-sent are not the window in flight"
    );
    assert!(
        resent.len() <= window,
        "{label}: {} entries to re-send, more than the window of {window}",
        resent.len()
    );
}

// ----------------------------------------------------------------------- kinds

/// `push --dispatches` of a 300-dispatch file, offline, killed at a random moment.
#[test]
fn crash_mid_enqueue_never_loses_an_acknowledged_push() {
    // How long such a push takes here, to spread the kills over its whole run.
    let calibration = Sandbox::new();
    let file = calibration.path().join("big.json");
    write_dispatches(&file, "cal", DISPATCHES);
    let started = Instant::now();
    let out = calibration
        .cmd(&["push", "--dispatches", file.to_str().unwrap()])
        .output()
        .expect("push");
    assert!(out.status.success());
    let run_time = started.elapsed();

    let mut tally = Tally::default();
    for index in 0..rounds() {
        let mut round = Round::new("mid-enqueue", index);
        let sandbox = &round.sandbox;
        let small = |name: &str, count: usize| {
            let path = sandbox.path().join(format!("{name}.json"));
            write_dispatches(&path, name, count);
            let out = sandbox
                .cmd(&["push", "--dispatches", path.to_str().unwrap()])
                .output()
                .expect("push");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (0..count)
                .map(|i| format!("{name}-{i:03}"))
                .collect::<Vec<_>>()
        };
        let mut acked: BTreeSet<String> = small("first", 40).into_iter().collect();
        for big in 0..3 {
            let name = format!("big{big}");
            let path = sandbox.path().join(format!("{name}.json"));
            write_dispatches(&path, &name, DISPATCHES);
            let ids: Vec<String> = (0..DISPATCHES).map(|i| format!("{name}-{i:03}")).collect();
            // The first kill anywhere in the run; the others near its end, where the
            // commit and the exit are.
            let micros = run_time.as_micros() as u64;
            let delay = Duration::from_micros(if big == 0 {
                round.rng.below(micros * 13 / 10 + 1)
            } else {
                micros * 6 / 10 + round.rng.below(micros / 2 + 1)
            });
            let mut child = sandbox
                .cmd(&["push", "--dispatches", path.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn push");
            thread::sleep(delay);
            kill_now(&child);
            let status = child.wait().expect("wait");
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr)
                .expect("read stderr");
            assert!(
                status.success() || status.signal() == Some(libc::SIGKILL),
                "{}: {status}: {stderr}",
                round.label
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            let queued: HashSet<String> = sandbox.queue().into_iter().flat_map(|e| e.ids).collect();
            let present = ids.iter().filter(|id| queued.contains(*id)).count();
            if status.success() {
                tally.enqueue_outcomes.0 += 1;
                acked.extend(ids);
            } else if present == DISPATCHES {
                tally.enqueue_outcomes.1 += 1;
                acked.extend(ids); // queued: it must be delivered like the rest
            } else {
                tally.enqueue_outcomes.2 += 1;
            }
            assert!(
                present == 0 || present == DISPATCHES,
                "{}: a killed push left {present} of its {DISPATCHES} dispatches",
                round.label
            );
            let missing: Vec<&String> = acked.iter().filter(|id| !queued.contains(*id)).collect();
            assert!(
                missing.is_empty(),
                "{}: acknowledged dispatches missing after a kill: {:?}",
                round.label,
                &missing[..missing.len().min(5)]
            );
            tally.kills += 1;
        }
        acked.extend(small("last", 40));
        round.expected = acked;
        // Nothing killed during delivery: each arrives exactly once.
        round.finish(&mut tally);
    }
    tally.print("mid-enqueue");
    assert_eq!(tally.lost, 0);
    assert_eq!(tally.duplicates, 0, "no delivery was interrupted");
}

fn write_dispatches(path: &Path, prefix: &str, count: usize) {
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let mut d = dispatch(&format!("{prefix}-{i:03}"));
            d["report"] = json!({"summary": "s".repeat(900)});
            d
        })
        .collect();
    fs::write(path, serde_json::to_vec(&items).expect("json")).expect("write dispatches");
}

/// Two kills per round at points `pick` chooses from the entries left, then a finish.
fn delivery_rounds(kind: &str, pick: fn(&mut Lcg, usize) -> KillAt) {
    let mut tally = Tally::default();
    for index in 0..rounds() {
        let mut round = Round::new(kind, index);
        round.seed_entries();
        for _ in 0..2 {
            let left = round.sandbox.queue().len();
            if left == 0 {
                break;
            }
            let kill = pick(&mut round.rng, left);
            round.phase(kill);
        }
        round.finish(&mut tally);
    }
    tally.print(kind);
    assert_eq!(tally.lost, 0);
}

#[test]
fn crash_mid_post_resends_only_the_window_in_flight() {
    delivery_rounds("mid-post", |rng, left| {
        KillAt::Request(Trigger::HoldAt(rng.below(left as u64) as usize))
    });
}

#[test]
fn crash_right_after_a_2xx_resends_only_the_window_in_flight() {
    delivery_rounds("after-2xx", |rng, left| {
        KillAt::Request(Trigger::AfterAnswer(rng.below(left as u64) as usize))
    });
}

#[test]
fn crash_at_random_moments_loses_nothing() {
    // Start-up and repair take tens of ms; each entry a few ms.
    delivery_rounds("anytime", |rng, left| {
        KillAt::Time(Duration::from_millis(rng.below(80 + 3 * left as u64)))
    });
}

/// 300 finished workspaces found by the daemon's own scan: a kill at a random moment
/// (reap, scan, enqueue, delivery), then right after a 2xx. The Ledger and History are
/// recorded with the Queue's commit, so nothing is queued twice nor skipped.
#[test]
fn crash_while_scanned_workspaces_are_delivered_loses_nothing() {
    let mut tally = Tally::default();
    for index in 0..rounds() {
        let mut round = Round::new("scanned", index);
        round.scan = true;
        let root = round.sandbox.root();
        for i in 0..DISPATCHES {
            let id = format!("core/repo-{}/task-{i:03}", i % 7);
            let dir = root.join(&id);
            fs::create_dir_all(&dir).expect("workspace");
            let status =
                json!({"status": "completed", "updated_at": "2026-04-14T12:00:00Z", "runs": 1});
            fs::write(dir.join("status.json"), status.to_string()).expect("status.json");
            round.expected.insert(id);
        }
        let first = Duration::from_millis(round.rng.below(250));
        round.phase(KillAt::Time(first));
        let left = round.sandbox.queue().len().max(1);
        let n = round.rng.below(left as u64) as usize;
        round.phase(KillAt::Request(Trigger::AfterAnswer(n)));
        round.finish(&mut tally);
        // The Ledger survived the kills with the Queue: a new push finds nothing.
        let status = round.sandbox.status();
        assert_eq!(
            status["ledger_entries"], DISPATCHES,
            "{}: {status}",
            round.label
        );
        let platform = Platform::start(0, Trigger::Never);
        let out = round
            .sandbox
            .online(&platform.url(), &["push"])
            .output()
            .expect("push");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "synced: 0");
        assert!(platform.log().is_empty(), "{}: pushed again", round.label);
    }
    tally.print("scanned");
    assert_eq!(tally.lost, 0);
}
