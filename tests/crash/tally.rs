//! The statistics of one kind of stop over all its rounds ([`Tally`]), printed at
//! the end of each test.

use std::time::Duration;

use agent_sync_testkit::note;

use crate::setup::{rounds, SHUTDOWN_TIMEOUT};

/// Statistics of one kind, over all its rounds.
#[derive(Default)]
pub struct Tally {
    /// Rounds finished.
    pub rounds: usize,
    /// SIGKILLs (of a daemon or of a `push`).
    pub kills: usize,
    /// Daemons stopped by one SIGTERM in the middle of a drain.
    pub stops: usize,
    /// Daemons stopped by a second SIGTERM while a request was held, and the
    /// slowest exit after it.
    pub second_signals: usize,
    pub slowest_second_exit: Duration,
    /// Dispatches the rounds expected delivered.
    pub dispatches: usize,
    /// Of those, never answered with a 2xx.
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
