//! The crash rounds: seeded queues, daemon incarnations stopped at chosen points
//! ([`KillAt`]), the checks after every stop ([`check_phase`]) and at the end of a
//! round ([`Round::finish`]), and the statistics of a kind ([`Tally`]). The module
//! docs of `main.rs` say what is checked and why.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use actix::Actor;
use agent_sync::actors::dispatch::Dispatch;
use agent_sync::actors::entry::QueueEntry;
use agent_sync::actors::messages::ImportEntries;
use agent_sync::actors::queue::QueueConfig;
use agent_sync::actors::time::Clock;
use agent_sync::actors::{Queue, Store};
use agent_sync_testkit::{agent_sync_bin, note, pushed_seqs, Daemon, Sandbox};
use serde_json::{json, Value};

use crate::platform::{Platform, Received, Trigger};

/// A token distinctive enough to spot anywhere.
pub const SECRET: &str = "crash-secret-0b1d";
/// The agent every round runs as.
pub const AGENT: &str = "crash-agent";
/// Dispatches per round.
pub const DISPATCHES: usize = 300;
/// Bound on anything the harness waits for.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// `run --shutdown-timeout` of every daemon: long, so a prompt exit is clearly not it.
pub const SHUTDOWN_TIMEOUT: &str = "30s";
/// A second SIGTERM must end the daemon within this (the shutdown timeout is 30 s).
pub const PROMPT_EXIT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------- knobs, seeds

pub fn rounds() -> usize {
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
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
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
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// One isolated installation of the binary, run as [`AGENT`] with [`SECRET`].
pub fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// The queue as `queue --json` lists it; the state must open after every crash.
pub fn queued_entries(sandbox: &Sandbox) -> Vec<Entry> {
    sandbox
        .queue()
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

/// A queued entry as `queue --json` lists it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    pub key: String,
    pub ids: Vec<String>,
}

pub fn dispatch(id: &str) -> Value {
    json!({"id": id, "status": "completed", "agent": "codex", "pad": "p".repeat(48)})
}

/// Queues `entries` into the state, each one queue entry (one request) exactly as
/// given, in-process, and closes it. Imported whole: separate `Enqueue`s in one
/// process would coalesce into the tail entry.
pub fn seed_queue(state: &Path, entries: Vec<Vec<Value>>) {
    let state = state.to_path_buf();
    thread::spawn(move || {
        actix::System::new().block_on(async move {
            let store = Store::open(&state).expect("open the state");
            let clock = Clock::system();
            let queue = Queue::new(store, QueueConfig::default(), clock).start();
            let now = clock.now();
            let entries: Vec<QueueEntry> = entries
                .into_iter()
                .map(|dispatches| {
                    let dispatches = dispatches
                        .into_iter()
                        .map(|d| Dispatch::from(d.as_object().expect("an object").clone()))
                        .collect();
                    QueueEntry::new(AGENT.into(), None, dispatches, now)
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

// ------------------------------------------------------------------ the rounds

/// How a daemon incarnation ends.
#[derive(Clone, Copy, Debug)]
pub enum KillAt {
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
pub enum End {
    /// SIGKILL: at most the request in flight is sent again.
    Killed,
    /// One SIGTERM, exit 0: nothing is sent again.
    Graceful,
    /// A second SIGTERM, exit 0: the request in flight is abandoned, sent again.
    AtOnce,
}

/// One daemon incarnation and what came of it.
pub struct Phase {
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
pub struct Tally {
    pub rounds: usize,
    /// SIGKILLs (of a daemon or of a `push`).
    pub kills: usize,
    /// Daemons stopped by one SIGTERM in the middle of a drain.
    pub stops: usize,
    /// Daemons stopped by a second SIGTERM while a request was held, and the
    /// slowest exit after it.
    pub second_signals: usize,
    pub slowest_second_exit: Duration,
    pub dispatches: usize,
    pub lost: usize,
    /// Extra copies the platform received, in requests (idempotency keys) and in
    /// dispatches.
    pub duplicate_requests: usize,
    pub duplicates: usize,
    /// Most requests to be re-sent after one kill (or second signal).
    pub max_resent_after_kill: usize,
    /// Most requests to be re-sent after one graceful stop.
    pub max_resent_after_stop: usize,
    /// Killed `push` runs that had exited 0 / committed unacknowledged / left nothing.
    pub enqueue_outcomes: (usize, usize, usize),
}

impl Tally {
    pub fn print(&self, kind: &str) {
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
        note(&line);
    }
}

pub struct Round {
    pub label: String,
    pub seed: u64,
    pub rng: Lcg,
    pub sandbox: Sandbox,
    /// The daemon scans the workspace root at start (else it only drains).
    pub scan: bool,
    pub phases: Vec<Phase>,
    /// Acknowledged (or seeded) dispatch ids: each must reach the platform.
    pub expected: BTreeSet<String>,
}

impl Round {
    pub fn new(kind: &str, index: usize) -> Self {
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
            sandbox: sandbox(),
            scan: false,
            phases: Vec::new(),
            expected: BTreeSet::new(),
        }
    }

    /// 300 host dispatches in entries of 1-3, queued before the first daemon starts.
    pub fn seed_entries(&mut self) {
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
            queued_entries(&self.sandbox).len(),
            count,
            "{}: each seeded entry is one request",
            self.label
        );
    }

    /// Runs one daemon incarnation until `kill`.
    pub fn phase(&mut self, kill: KillAt) {
        let before = queued_entries(&self.sandbox);
        let number = self.phases.len();
        let (trigger, held) = match kill {
            KillAt::Request(trigger) => (trigger, None),
            KillAt::Stop(n) | KillAt::StopTwice(n) => (Trigger::Hold(n), Some(n)),
            KillAt::Time(_) | KillAt::Finish => (Trigger::Never, None),
        };
        let platform = Platform::start(self.seed.wrapping_add(number as u64), trigger);
        let args = [
            "run",
            "--scan-interval",
            if self.scan { "1h" } else { "0" },
            "--shutdown-timeout",
            SHUTDOWN_TIMEOUT,
        ];
        let cmd = self.sandbox.online(&platform.url(), &args);
        let name = format!("daemon-{number}");
        let mut daemon = Daemon::spawn(&self.sandbox, &name, Some("info"), cmd).deadline(DEADLINE);
        platform.set_pid(daemon.pid());
        let label = format!("{} phase {number} ({kill:?})", self.label);
        let started = Instant::now();
        // Set once the second SIGTERM is sent.
        let mut second_at = None;
        let end = match kill {
            KillAt::Request(_) => {
                let mut quiet_since = (Instant::now(), 0);
                loop {
                    if platform.fired() {
                        break;
                    }
                    if let Some(status) = daemon.try_wait() {
                        platform.disarm(); // reaped: its pid may be recycled
                        if platform.fired() {
                            break; // killed by the trigger between the two checks
                        }
                        panic!(
                            "{label}: the daemon exited on its own ({status}); log:\n{}",
                            daemon.log()
                        );
                    }
                    // Safety net (the trigger is always within what is queued): once
                    // idle, kill it anyway.
                    let seen = platform.log().len();
                    if seen != quiet_since.1 {
                        quiet_since = (Instant::now(), seen);
                    } else if quiet_since.0.elapsed() > Duration::from_millis(800) {
                        daemon.signal(libc::SIGKILL);
                        break;
                    }
                    assert!(
                        started.elapsed() < DEADLINE,
                        "{label}: timed out; log:\n{}",
                        daemon.log()
                    );
                    thread::sleep(Duration::from_millis(1));
                }
                End::Killed
            }
            KillAt::Time(after) => {
                thread::sleep(after);
                daemon.signal(libc::SIGKILL);
                End::Killed
            }
            KillAt::Stop(_) | KillAt::StopTwice(_) => {
                // SIGTERM is handled only once the daemon says it runs.
                daemon.wait_for(
                    &format!("the held request and the start ({label})"),
                    |log| platform.held() && log.contains("agent-sync running"),
                );
                daemon.signal(libc::SIGTERM);
                daemon.wait_for(&format!("the first SIGTERM ({label})"), |log| {
                    log.contains("received; stopping")
                });
                if matches!(kill, KillAt::Stop(_)) {
                    // Long enough for the stop to reach the Pusher: answered before
                    // that, the drain would rightly send one more request.
                    thread::sleep(Duration::from_millis(100));
                    platform.release();
                    End::Graceful
                } else {
                    daemon.signal(libc::SIGTERM);
                    second_at = Some(Instant::now());
                    End::AtOnce
                }
            }
            KillAt::Finish => {
                // SIGTERM is handled only once the daemon says it runs.
                daemon.wait_for(&format!("the start ({label})"), |log| {
                    log.contains("agent-sync running")
                });
                self.wait_all_delivered(&platform, &before, &label, &|| daemon.log());
                daemon.signal(libc::SIGTERM);
                End::Graceful
            }
        };
        let status = wait_exit(&mut daemon, &platform, &label);
        match end {
            End::Killed => assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{label}: {status}; log:\n{}",
                daemon.log()
            ),
            End::Graceful | End::AtOnce => {
                assert_eq!(
                    status.code(),
                    Some(0),
                    "{label}: {status}; log:\n{}",
                    daemon.log()
                )
            }
        }
        let second_exit = second_at.map(|at| at.elapsed());
        if let Some(took) = second_exit {
            assert!(
                took < PROMPT_EXIT,
                "{label}: {took:?} from the second SIGTERM to the exit (shutdown timeout \
                 {SHUTDOWN_TIMEOUT}); log:\n{}",
                daemon.log()
            );
        }
        // Let the platform read whatever the dead process had already written.
        thread::sleep(Duration::from_millis(20));
        let text = daemon.log();
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
        let logged = pushed_seqs(&text);
        let after = queued_entries(&self.sandbox);
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
    pub fn finish(&mut self, tally: &mut Tally) {
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

/// Waits for the daemon to exit; the platform is disarmed before it is reaped.
fn wait_exit(daemon: &mut Daemon, platform: &Platform, label: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        // Nothing may signal a pid once reaped: disarm, then look (a kill trigger may
        // have fired meanwhile, which is what this phase waits for anyway).
        platform.disarm();
        if let Some(status) = daemon.try_wait() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            panic!("{label}: the daemon did not exit (killed on drop)");
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
