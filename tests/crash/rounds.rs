//! The crash rounds: a [`Round`] runs daemon incarnations stopped at chosen points
//! ([`KillAt`]), checks each one ([`check_phase`]) and the round as a whole at its
//! end ([`Round::finish`]), adding to the statistics of its kind ([`Tally`]). The
//! module docs of `main.rs` say what is checked and why.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::thread;
use std::time::{Duration, Instant};

use agent_sync_testkit::{pushed_seqs, Daemon, Sandbox};

use crate::phase::{check_phase, End, Phase};
use crate::platform::{Platform, Trigger};
use crate::setup::{
    base_seed, dispatch, queued_entries, sandbox, seed_queue, Entry, Lcg, DEADLINE, DISPATCHES,
    PROMPT_EXIT, SECRET, SHUTDOWN_TIMEOUT,
};
use crate::tally::Tally;

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

/// One seeded round of a kind: its sandbox, its daemon incarnations so far, and the
/// dispatches it must see delivered.
pub struct Round {
    /// Kind, index and seed, for every message.
    pub label: String,
    /// The round's seed: the platforms' delays and the stop points follow from it.
    pub seed: u64,
    /// Where the stop points are drawn from.
    pub rng: Lcg,
    /// The round's own installation of the binary.
    pub sandbox: Sandbox,
    /// The daemon scans the workspace root at start (else it only drains).
    pub scan: bool,
    /// The incarnations run so far, oldest first.
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
