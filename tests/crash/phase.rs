//! One daemon incarnation ([`Phase`]), how it ended ([`End`]), and the checks after
//! every stop ([`check_phase`]); the module docs of `main.rs` say what is checked and
//! why.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use crate::platform::{Platform, Received};
use crate::setup::Entry;

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
    /// The round's label, with the phase's number and stop point.
    pub label: String,
    /// The platform it sent to, alone.
    pub platform: Platform,
    /// How it ended.
    pub end: End,
    /// The request the platform held while the daemon was signalled.
    pub held: Option<usize>,
    /// From the second SIGTERM to the exit.
    pub second_exit: Option<Duration>,
    /// The queue once it was dead.
    pub after: Vec<Entry>,
    /// Seqs it logged as pushed (logged after their durable commit).
    pub logged: BTreeSet<u64>,
}

impl Phase {
    /// The requests it sent whose entry is still queued: they will be sent again.
    pub fn resent(&self) -> Vec<Received> {
        let still: HashSet<&str> = self.after.iter().map(|e| e.key.as_str()).collect();
        self.platform
            .log()
            .into_iter()
            .filter(|r| still.contains(r.key.as_str()))
            .collect()
    }
}

/// The per-stop checks of the module docs; `text` is the daemon's log.
pub fn check_phase(before: &[Entry], phase: &Phase, text: &str) {
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
