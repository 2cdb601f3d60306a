//! R1 and R3, crash safety and graceful stop of the real `agent-sync` binary:
//! `kill -9` at any point loses nothing that was acknowledged, and the only request it
//! can make us send twice is the one in flight (R1); a SIGTERM in the middle of a
//! drain sends nothing twice (R3); a second SIGTERM stops at once.
//!
//! # The harness
//!
//! Each round runs in an isolated sandbox (the approach of `tests/cli.rs`: a cleared
//! environment, `HOME` and `CORE_WORKSPACE` in a temp dir). A few hundred dispatches
//! are queued, then `agent-sync run --scan-interval 0` (the default daemon: one request
//! in flight, each outcome committed before the next lease) drains them to a platform
//! on 127.0.0.1 that answers slowly (1-4 ms, pseudo-random from the round's seed) and
//! is stopped at a chosen moment, restarted, stopped again, and finally left to
//! finish. The platform is a small threaded HTTP/1.1 server written here rather than
//! the actix one of `common`, because it must act at exact points: kill the daemon
//! while it holds a request (mid-POST), right after it has written a 2xx (before the
//! Queue could record it), or hold a request while the test signals the daemon. Every
//! daemon incarnation gets a server of its own, so each request is attributed to the
//! incarnation that sent it.
//!
//! Seeded queues are made of entries of 1-3 dispatches, each one request, imported
//! whole ([`ImportEntries`]: separate enqueues in one process would coalesce).
//!
//! Kinds of stop point:
//! - `mid-enqueue`: `push --dispatches FILE` of a 300-dispatch file, offline, killed
//!   at a random moment of its run (start, open and repair, commit, exit);
//! - `mid-post`: the daemon is killed while the platform holds its n-th request;
//! - `after-2xx`: killed right after the platform has answered its n-th request;
//! - `anytime`: killed after a random delay (start-up, repair, lease, commit...);
//! - `scanned`: 300 finished workspaces on disk, found by the daemon's own scan;
//!   killed at a random moment, then right after a 2xx (Ledger/Queue atomicity);
//! - `sigterm`: SIGTERM while the platform holds the n-th request, which it then
//!   answers normally: the daemon must exit 0 having started no other request;
//! - `second-sigterm`: SIGTERM, then SIGTERM again while the platform never answers:
//!   the daemon must exit 0 at once (well under `--shutdown-timeout`), the entry
//!   still queued.
//!
//! # What is checked
//!
//! After every stop, the state opens (`queue --json`, exit 0) and:
//! - an entry left the queue only if the platform answered it with a 2xx;
//! - an entry sent but not answered is still queued;
//! - the platform never held two requests of the daemon at once;
//! - the requests sent *and* still queued (they will be sent again) are at most ONE
//!   request (POSTs, i.e. idempotency keys, not dispatches), the last one sent, after
//!   a kill or a second signal; none at all after a graceful stop;
//! - an entry the daemon logged as pushed (after its durable commit) is gone.
//!
//! At the end of a round: the queue is empty, nothing is dead-lettered, every
//! acknowledged dispatch reached the platform at least once (lost = 0), and every
//! extra copy the platform received, counted in requests and in dispatches, is
//! accounted for by the at most one request per kill that was still queued; rounds
//! stopped only gracefully receive no copy at all.
//!
//! `AGENT_SYNC_CRASH_ROUNDS` (default 4) sets the rounds per kind and
//! `AGENT_SYNC_CRASH_SEED` the base seed, e.g.
//! `AGENT_SYNC_CRASH_ROUNDS=50 cargo test --release --test crash -- --nocapture`.
//!
//! [`ImportEntries`]: agent_sync::actors::messages::ImportEntries

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use actix::Actor;
use agent_sync::actors::messages::ImportEntries;
use agent_sync::actors::model::QueueEntry;
use agent_sync::actors::queue::QueueConfig;
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
/// `run --shutdown-timeout` of every daemon: long, so a prompt exit is clearly not it.
const SHUTDOWN_TIMEOUT: &str = "30s";
/// A second SIGTERM must end the daemon within this (the shutdown timeout is 30 s).
const PROMPT_EXIT: Duration = Duration::from_secs(5);

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

/// Queues `entries` into the state, each one queue entry (one request) exactly as
/// given, in-process, and closes it. Imported whole: separate `Enqueue`s in one
/// process would coalesce into the tail entry.
fn seed_queue(state: &Path, entries: Vec<Vec<Value>>) {
    let state = state.to_path_buf();
    thread::spawn(move || {
        actix::System::new().block_on(async move {
            let store = Store::open(&state).expect("open the state");
            let clock = Clock::system();
            let queue = Queue::new(store, QueueConfig::default(), clock).start();
            let now = clock.now();
            let entries: Vec<QueueEntry> = entries
                .into_iter()
                .map(|dispatches| QueueEntry {
                    seq: 0,
                    agent_id: AGENT.into(),
                    fleet_node_id: None,
                    dispatches: dispatches
                        .into_iter()
                        .map(|d| d.as_object().expect("an object").clone())
                        .collect(),
                    fingerprints: BTreeMap::new(),
                    queued_at: now,
                    attempts: 0,
                    next_attempt: None,
                    last_error: None,
                    idempotency_key: String::new(),
                    parts: Vec::new(),
                })
                .collect();
            let count = entries.len();
            let imported = queue
                .send(ImportEntries { entries })
                .await
                .expect("the queue")
                .expect("import the entries");
            assert_eq!(imported, count, "every seeded entry is queued");
        })
    })
    .join()
    .expect("seeding thread");
}

// ---------------------------------------------------------------- the platform

/// What the platform does at one request of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// Nothing: answer everything.
    Never,
    /// Receive the n-th push (0-based), then SIGKILL without answering (mid-POST).
    KillHolding(usize),
    /// Answer the n-th push with a 2xx, then SIGKILL at once (before the Queue
    /// records it).
    KillAfterAnswer(usize),
    /// Hold the n-th push until [`Platform::release`], then answer it as any other
    /// (never, if it is not released: the test signals the daemon meanwhile).
    Hold(usize),
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
    /// A kill trigger fired.
    fired: AtomicBool,
    /// The `Hold` request arrived and is being held.
    held: AtomicBool,
    /// The held request may be answered.
    released: Mutex<bool>,
    release: Condvar,
    /// Requests read and not answered yet, and the most at any time (1: one in flight).
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
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

    /// Holds the current request until released (`true`) or the platform stops.
    fn hold(&self) -> bool {
        self.held.store(true, Ordering::SeqCst);
        let mut released = lock(&self.released);
        while !*released && !self.stop.load(Ordering::SeqCst) {
            released = self
                .release
                .wait_timeout(released, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *released
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
            held: AtomicBool::new(false),
            released: Mutex::new(false),
            release: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
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

    fn held(&self) -> bool {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Lets the held request be answered.
    fn release(&self) {
        *lock(&self.shared.released) = true;
        self.shared.release.notify_all();
    }

    fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
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
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        match shared.trigger {
            Trigger::KillHolding(n) if n == index => {
                shared.kill();
                continue; // never answered; the next read sees EOF
            }
            // Held until released, then answered as any other; never released: never
            // answered.
            Trigger::Hold(n) if n == index && !shared.hold() => return,
            _ => {}
        }
        thread::sleep(shared.delay(index));
        // Before the answer: the daemon may send its next request as soon as it has it.
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        if writer
            .write_all(answer)
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
        lock(&shared.log)[index].answered = true;
        if shared.trigger == Trigger::KillAfterAnswer(index) {
            shared.kill();
        }
    }
}

// ------------------------------------------------------------------ the rounds

/// How a daemon incarnation ends.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// SIGKILL by the platform's trigger.
    Request(Trigger),
    /// SIGKILL after this long.
    Time(Duration),
    /// SIGTERM while the platform holds the n-th request, which it then answers.
    Stop(usize),
    /// SIGTERM while the platform holds the n-th request, then SIGTERM again; the
    /// request is never answered.
    StopTwice(usize),
    /// Not killed: it finishes, then stops on SIGTERM.
    Finish,
}

/// How an incarnation actually ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// SIGKILL: at most the request in flight is sent again.
    Killed,
    /// One SIGTERM, exit 0: nothing is sent again.
    Graceful,
    /// A second SIGTERM, exit 0: the request in flight is abandoned, sent again.
    AtOnce,
}

/// One daemon incarnation and what came of it.
struct Phase {
    label: String,
    platform: Platform,
    end: End,
    /// The request the platform held while the daemon was signalled.
    held: Option<usize>,
    /// From the second SIGTERM to the exit.
    second_exit: Option<Duration>,
    /// The queue once it was dead.
    after: Vec<Entry>,
    /// Seqs it logged as pushed (logged after their durable commit).
    logged: BTreeSet<u64>,
}

impl Phase {
    /// The requests it sent whose entry is still queued: they will be sent again.
    fn resent(&self) -> Vec<Received> {
        let still: HashSet<&str> = self.after.iter().map(|e| e.key.as_str()).collect();
        self.platform
            .log()
            .into_iter()
            .filter(|r| still.contains(r.key.as_str()))
            .collect()
    }
}

/// Statistics of one kind, over all its rounds.
#[derive(Default)]
struct Tally {
    rounds: usize,
    /// SIGKILLs (of a daemon or of a `push`).
    kills: usize,
    /// Daemons stopped by one SIGTERM in the middle of a drain.
    stops: usize,
    /// Daemons stopped by a second SIGTERM while a request was held, and the
    /// slowest exit after it.
    second_signals: usize,
    slowest_second_exit: Duration,
    dispatches: usize,
    lost: usize,
    /// Extra copies the platform received, in requests (idempotency keys) and in
    /// dispatches.
    duplicate_requests: usize,
    duplicates: usize,
    /// Most requests to be re-sent after one kill (or second signal).
    max_resent_after_kill: usize,
    /// Most requests to be re-sent after one graceful stop.
    max_resent_after_stop: usize,
    /// Killed `push` runs that had exited 0 / committed unacknowledged / left nothing.
    enqueue_outcomes: (usize, usize, usize),
}

impl Tally {
    fn print(&self, kind: &str) {
        let mut line = format!(
            "crash[{kind}]: rounds {}, kill points {}, dispatches {}, lost {}, \
             duplicates {} request(s) / {} dispatch(es), max requests re-sent after one kill {}",
            self.rounds,
            self.kills,
            self.dispatches,
            self.lost,
            self.duplicate_requests,
            self.duplicates,
            self.max_resent_after_kill
        );
        if self.stops > 0 {
            line.push_str(&format!(
                "; graceful stops mid-drain {}, max requests re-sent after one {}",
                self.stops, self.max_resent_after_stop
            ));
        }
        if self.second_signals > 0 {
            line.push_str(&format!(
                "; second SIGTERMs {} (each abandons the request in flight), slowest exit \
                 after one {:?} (shutdown timeout {SHUTDOWN_TIMEOUT})",
                self.second_signals, self.slowest_second_exit
            ));
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
    /// The daemon scans the workspace root at start (else it only drains).
    scan: bool,
    phases: Vec<Phase>,
    /// Acknowledged (or seeded) dispatch ids: each must reach the platform.
    expected: BTreeSet<String>,
}

impl Round {
    fn new(kind: &str, index: usize) -> Self {
        // FNV-1a of the kind: kinds of the same length get different seeds.
        let kind_hash = kind.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let seed = base_seed()
            .wrapping_add(index as u64 * 7919)
            .wrapping_add(kind_hash);
        Round {
            label: format!("{kind} round {index} (seed {seed})"),
            seed,
            rng: Lcg::new(seed),
            sandbox: Sandbox::new(),
            scan: false,
            phases: Vec::new(),
            expected: BTreeSet::new(),
        }
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
        let count = entries.len();
        seed_queue(&self.sandbox.state(), entries);
        assert_eq!(
            self.sandbox.queue().len(),
            count,
            "{}: each seeded entry is one request",
            self.label
        );
    }

    /// Runs one daemon incarnation until `kill`.
    fn phase(&mut self, kill: KillAt) {
        let before = self.sandbox.queue();
        let number = self.phases.len();
        let (trigger, held) = match kill {
            KillAt::Request(trigger) => (trigger, None),
            KillAt::Stop(n) | KillAt::StopTwice(n) => (Trigger::Hold(n), Some(n)),
            KillAt::Time(_) | KillAt::Finish => (Trigger::Never, None),
        };
        let platform = Platform::start(self.seed.wrapping_add(number as u64), trigger);
        let log_path = self.sandbox.path().join(format!("daemon-{number}.log"));
        let args = [
            "run",
            "--scan-interval",
            if self.scan { "1h" } else { "0" },
            "--shutdown-timeout",
            SHUTDOWN_TIMEOUT,
        ];
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
        // Set once the second SIGTERM is sent.
        let mut second_at = None;
        let end = match kill {
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
                    // Safety net (the trigger is always within what is queued): once
                    // idle, kill it anyway.
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
                End::Killed
            }
            KillAt::Time(after) => {
                thread::sleep(after);
                kill_now(child);
                End::Killed
            }
            KillAt::Stop(_) | KillAt::StopTwice(_) => {
                // SIGTERM is handled only once the daemon says it runs.
                wait_until(
                    child,
                    &label,
                    &log,
                    "the held request and the start",
                    || platform.held() && log().contains("agent-sync running"),
                );
                sigterm(child);
                wait_until(child, &label, &log, "the first SIGTERM", || {
                    log().contains("received; stopping")
                });
                if matches!(kill, KillAt::Stop(_)) {
                    // Long enough for the stop to reach the Pusher: answered before
                    // that, the drain would rightly send one more request.
                    thread::sleep(Duration::from_millis(100));
                    platform.release();
                    End::Graceful
                } else {
                    sigterm(child);
                    second_at = Some(Instant::now());
                    End::AtOnce
                }
            }
            KillAt::Finish => {
                // SIGTERM is handled only once the daemon says it runs.
                wait_until(child, &label, &log, "the start", || {
                    log().contains("agent-sync running")
                });
                self.wait_all_delivered(&platform, &before, &label, &log);
                sigterm(child);
                End::Graceful
            }
        };
        let status = wait_exit(child, &platform, &label);
        match end {
            End::Killed => assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{label}: {status}; log:\n{}",
                log()
            ),
            End::Graceful | End::AtOnce => {
                assert_eq!(status.code(), Some(0), "{label}: {status}; log:\n{}", log())
            }
        }
        let second_exit = second_at.map(|at| at.elapsed());
        if let Some(took) = second_exit {
            assert!(
                took < PROMPT_EXIT,
                "{label}: {took:?} from the second SIGTERM to the exit (shutdown timeout \
                 {SHUTDOWN_TIMEOUT}); log:\n{}",
                log()
            );
        }
        // Let the platform read whatever the dead process had already written.
        thread::sleep(Duration::from_millis(20));
        let text = log();
        assert!(!text.contains(SECRET), "{label}: the token is in the log");
        assert!(
            !text.contains("panicked"),
            "{label}: the daemon panicked:\n{text}"
        );
        if end == End::Graceful {
            assert!(
                !text.contains("shutdown deadline; abandoning"),
                "{label}: a graceful stop abandoned its request:\n{text}"
            );
        }
        let logged = text
            .lines()
            .filter_map(|l| l.split("pushed entry ").nth(1))
            .filter_map(|rest| rest.split(':').next()?.parse().ok())
            .collect();
        let after = self.sandbox.queue();
        let phase = Phase {
            label,
            platform,
            end,
            held,
            second_exit,
            after,
            logged,
        };
        check_phase(&before, &phase, &text);
        self.phases.push(phase);
    }

    /// Waits until every expected id was answered (in any incarnation), every entry
    /// queued at the start of this one was answered by it (one re-sent after a kill
    /// included), and the platform has been quiet long enough for the last commit.
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

        // Every copy of every request and of every id the platform received, over all
        // incarnations.
        let mut requests: BTreeMap<String, usize> = BTreeMap::new();
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        let mut answered: HashSet<String> = HashSet::new();
        for phase in &self.phases {
            for r in phase.platform.log() {
                *requests.entry(r.key.clone()).or_default() += 1;
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

        // Every extra copy is the re-send of the one request in flight at a kill (or
        // at a second signal); a graceful stop leaves none.
        let duplicate_requests: usize = requests.values().map(|n| n - 1).sum();
        let duplicates: usize = received.values().map(|n| n - 1).sum();
        let (mut resent_requests, mut resent_dispatches) = (0, 0);
        for phase in &self.phases {
            let resent = phase.resent();
            match phase.end {
                End::Killed | End::AtOnce => {
                    resent_requests += resent.len();
                    resent_dispatches += resent.iter().map(|r| r.ids.len()).sum::<usize>();
                    tally.max_resent_after_kill = tally.max_resent_after_kill.max(resent.len());
                    if phase.end == End::Killed {
                        tally.kills += 1;
                    } else {
                        tally.second_signals += 1;
                    }
                    if let Some(took) = phase.second_exit {
                        tally.slowest_second_exit = tally.slowest_second_exit.max(took);
                    }
                }
                End::Graceful => {
                    tally.max_resent_after_stop = tally.max_resent_after_stop.max(resent.len());
                    if phase.held.is_some() {
                        tally.stops += 1;
                    }
                }
            }
        }
        let twice: Vec<(&String, &usize)> = requests.iter().filter(|(_, n)| **n > 1).collect();
        assert_eq!(
            duplicate_requests, resent_requests,
            "{label}: requests sent more than once {twice:?}, not explained by the one \
             request in flight at each kill"
        );
        assert_eq!(
            duplicates, resent_dispatches,
            "{label}: duplicate dispatches not explained by the requests in flight at the kills"
        );
        tally.rounds += 1;
        tally.dispatches += self.expected.len();
        tally.lost += lost.len();
        tally.duplicate_requests += duplicate_requests;
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

fn sigterm(child: &Child) {
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Polls `ready` until it holds; fails if the daemon exits first or on the deadline.
fn wait_until(
    child: &mut Child,
    label: &str,
    log: &dyn Fn() -> String,
    what: &str,
    mut ready: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "{label}: the daemon exited ({status}) before {what}; log:\n{}",
                log()
            );
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{label}: timed out waiting for {what}; log:\n{}",
            log()
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for the daemon to exit; the platform is disarmed before it is reaped.
fn wait_exit(child: &mut Child, platform: &Platform, label: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        // Nothing may signal a pid once reaped: disarm, then look (a kill trigger may
        // have fired meanwhile, which is what this phase waits for anyway).
        platform.disarm();
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

/// The per-stop checks of the module docs; `text` is the daemon's log.
fn check_phase(before: &[Entry], phase: &Phase, text: &str) {
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
    // One request in flight, ever.
    assert!(
        phase.platform.max_in_flight() <= 1,
        "{label}: the platform held {} requests at once",
        phase.platform.max_in_flight()
    );
    // Logged as pushed = durably recorded: never queued again.
    for seq in &phase.logged {
        assert!(
            !after_seqs.contains(seq),
            "{label}: entry {seq} was logged as pushed but is still queued"
        );
    }
    // The requests to be sent again, by their index in what this incarnation sent.
    let resent: Vec<usize> = received
        .iter()
        .enumerate()
        .filter(|(_, r)| after.contains(r.key.as_str()))
        .map(|(i, _)| i)
        .collect();
    if let Some(held) = phase.held {
        // Signalled while the platform held request `held`: nothing new started.
        assert_eq!(
            received.len(),
            held + 1,
            "{label}: a request started after the SIGTERM; log:\n{text}"
        );
    }
    match phase.end {
        End::Killed => {
            // At most the one in flight: the last request sent.
            assert!(
                resent.len() <= 1 && resent.iter().all(|&i| i + 1 == received.len()),
                "{label}: requests {resent:?} of {} will be sent again; at most the last \
                 one (in flight) may be",
                received.len()
            );
        }
        End::Graceful => {
            assert!(
                resent.is_empty(),
                "{label}: a graceful stop left requests {resent:?} of {} sent and still \
                 queued; log:\n{text}",
                received.len()
            );
        }
        End::AtOnce => {
            // Abandoned: the held request, unanswered, is still queued, alone.
            let held = phase.held.expect("a held request");
            assert_eq!(
                resent,
                vec![held],
                "{label}: the abandoned request is not (only) the one held; log:\n{text}"
            );
            assert!(
                !received[held].answered,
                "{label}: the held one was answered"
            );
        }
    }
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
    assert_eq!(tally.duplicate_requests, 0, "no delivery was interrupted");
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

/// Seeded rounds: `stops` stops per round at points `pick` chooses from the entries
/// left, then a finish. Prints and returns the kind's tally.
fn delivery_rounds(kind: &str, stops: usize, pick: fn(&mut Lcg, usize) -> KillAt) -> Tally {
    let mut tally = Tally::default();
    for index in 0..rounds() {
        let mut round = Round::new(kind, index);
        round.seed_entries();
        for _ in 0..stops {
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
    assert!(
        tally.max_resent_after_kill <= 1,
        "more than the request in flight"
    );
    assert_eq!(
        tally.max_resent_after_stop, 0,
        "re-sent after a graceful stop"
    );
    tally
}

#[test]
fn crash_mid_post_resends_at_most_the_request_in_flight() {
    delivery_rounds("mid-post", 2, |rng, left| {
        KillAt::Request(Trigger::KillHolding(rng.below(left as u64) as usize))
    });
}

#[test]
fn crash_right_after_a_2xx_resends_at_most_the_request_in_flight() {
    delivery_rounds("after-2xx", 2, |rng, left| {
        KillAt::Request(Trigger::KillAfterAnswer(rng.below(left as u64) as usize))
    });
}

#[test]
fn crash_at_random_moments_loses_nothing() {
    // Start-up and repair take tens of ms; each entry a few ms.
    delivery_rounds("anytime", 2, |rng, left| {
        KillAt::Time(Duration::from_millis(rng.below(80 + 3 * left as u64)))
    });
}

/// SIGTERM while the platform holds a request it then answers: the daemon exits 0
/// with that outcome committed and nothing else started, up to twice per round; after the
/// restarts and the final drain no request, no dispatch, arrived twice (R3).
#[test]
fn graceful_stop_mid_drain_resends_nothing() {
    let tally = delivery_rounds("sigterm", 2, |rng, left| {
        KillAt::Stop(rng.below(left as u64) as usize)
    });
    // The first stop of a round always lands mid-drain; the second only when the
    // first held request was not the last one queued.
    assert!(tally.stops >= rounds(), "a round without a stop mid-drain");
    assert_eq!(tally.duplicate_requests, 0, "a request was sent twice");
    assert_eq!(tally.duplicates, 0, "a dispatch was sent twice");
}

/// A second SIGTERM while the platform never answers: the daemon exits 0 at once,
/// well under `--shutdown-timeout 30s`, with the entry still queued; it is the one
/// request sent again after the restart.
#[test]
fn second_sigterm_stops_at_once_keeping_the_request_queued() {
    let tally = delivery_rounds("second-sigterm", 1, |rng, left| {
        KillAt::StopTwice(rng.below(left as u64) as usize)
    });
    assert_eq!(tally.second_signals, rounds());
    assert_eq!(
        tally.duplicate_requests,
        rounds(),
        "exactly the abandoned request is sent again, once per round"
    );
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
        round.phase(KillAt::Request(Trigger::KillAfterAnswer(n)));
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
    assert!(tally.max_resent_after_kill <= 1);
}
