//! What the Queue decides, as pure functions: how an outcome is classified, how a
//! too-large part splits, when a failed entry is tried again, and whether a new
//! dispatch may join the tail entry. No I/O here, so each rule has a table-driven test.

use std::time::Duration;

use serde::Serialize;

use crate::backoff::{self, RetryAfter};
use crate::dispatch::Dispatch;
use crate::entry::{EntryPart, QueueEntry};
use crate::messages::DeliveryOutcome;
use crate::time::Timestamp;

/// Default most bytes of request body per entry (P11).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 512 * 1024;

/// The longest a hostile `Retry-After` may park the queue.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How the Queue reads a delivery outcome (the response classes of `docs/design.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A 2xx: the part is removed.
    Delivered,
    /// Kept and retried later; `unauthorized` for 401/403 (`auth_failed`).
    Transient { unauthorized: bool },
    /// A 413 on more than one dispatch: split in two.
    TooLarge,
    /// Refused for good: dead-lettered.
    Rejected { status: u16 },
}

/// Classifies one POST's outcome; `part_len` is how many dispatches it carried.
pub(crate) fn classify(outcome: &DeliveryOutcome, part_len: usize) -> Class {
    let transient = Class::Transient {
        unauthorized: false,
    };
    match *outcome {
        DeliveryOutcome::Delivered { .. } => Class::Delivered,
        DeliveryOutcome::Network { .. } => transient,
        DeliveryOutcome::Status { status, .. } => match status {
            401 | 403 => Class::Transient { unauthorized: true },
            413 if part_len > 1 => Class::TooLarge,
            408 | 429 => transient,
            400..=499 | 501 => Class::Rejected { status },
            // 5xx but 501; and 1xx/3xx, which a well-behaved platform never sends here:
            // keep the entry rather than lose it.
            _ => transient,
        },
    }
}

/// Replaces the entry's next part with its two halves, the first `ceil(n/2)`, keyed
/// `<key>.1` and `<key>.2` (a half of a half: `<key>.1.1`, ...).
pub(crate) fn split_next_part(entry: &mut QueueEntry) {
    let len = entry.next_part_len();
    let suffix = entry
        .parts
        .first()
        .map(|p| p.key_suffix.clone())
        .unwrap_or_default();
    let first = len.div_ceil(2);
    let halves = [
        EntryPart {
            len: first,
            key_suffix: format!("{suffix}.1"),
        },
        EntryPart {
            len: len - first,
            key_suffix: format!("{suffix}.2"),
        },
    ];
    if entry.parts.is_empty() {
        entry.parts = halves.to_vec();
    } else {
        entry.parts.splice(0..1, halves);
    }
}

/// How retry delays are spread, so a fleet that failed together does not retry
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Each step spread uniformly over [0.5x, 1.5x], seeded from the OS.
    #[default]
    Random,
    /// The same spread from a fixed seed: deterministic schedules for tests.
    Seeded(u64),
    /// The seed's exact steps (benchmarks compare against this; never in production).
    Off,
}

/// The Queue's source of jitter.
pub(crate) struct Spread {
    /// `None` when jitter is off.
    rng: Option<fastrand::Rng>,
}

impl Spread {
    /// A spread as configured.
    pub(crate) fn new(jitter: Jitter) -> Self {
        Spread {
            rng: match jitter {
                Jitter::Random => Some(fastrand::Rng::new()),
                Jitter::Seeded(seed) => Some(fastrand::Rng::with_seed(seed)),
                Jitter::Off => None,
            },
        }
    }

    /// `step` scaled by a factor uniform in [0.5, 1.5) (OTel's randomization factor
    /// 0.5), at millisecond resolution.
    pub(crate) fn apply(&mut self, step: Duration) -> Duration {
        match &mut self.rng {
            Some(rng) => step.mul_f64(0.5 + rng.f64()),
            None => step,
        }
    }
}

/// `now + max(jitter(backoff(attempts)), Retry-After)`; `Retry-After` is a floor and
/// is capped at a day so a hostile header cannot park the queue.
pub(crate) fn retry_at(
    attempts: u32,
    retry_after: Option<RetryAfter>,
    now: Timestamp,
    spread: &mut Spread,
) -> Timestamp {
    let asked = retry_after.map_or(Duration::ZERO, |r| r.delay_from(now).min(MAX_RETRY_AFTER));
    now.saturating_add(spread.apply(backoff::backoff(attempts)).max(asked))
}

/// The body of `POST /v1/agent/sync`: built by the Pusher, measured by the Queue.
#[derive(Serialize)]
pub struct PushBody<'a> {
    /// Who pushes.
    pub agent_id: &'a str,
    /// Sent only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_node_id: Option<i64>,
    /// The entry's next part.
    pub dispatches: &'a [Dispatch],
}

/// The two caps on an entry (P11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Most dispatches per entry.
    pub max_batch: usize,
    /// Most bytes of request body per entry.
    pub max_request_bytes: usize,
}

/// The tail entry while it may still take dispatches: never leased, so never sent
/// (after a restart only a last entry that is not the head and was never attempted
/// is reopened: the head may have been in flight when the process died).
#[derive(Debug, Clone)]
pub(crate) struct OpenTail {
    /// The entry as stored, kept decoded so a join costs no read.
    pub entry: QueueEntry,
    /// Its request body's length, were it sent now.
    pub body_bytes: usize,
}

impl OpenTail {
    /// A tail for a new entry holding no dispatch yet.
    pub(crate) fn new(entry: QueueEntry) -> Self {
        let body_bytes = body_len(&entry.agent_id, entry.fleet_node_id, &[]);
        let mut tail = OpenTail { entry, body_bytes };
        let dispatches = std::mem::take(&mut tail.entry.dispatches);
        for dispatch in dispatches {
            let len = dispatch.json_len();
            tail.push(dispatch, len);
        }
        tail
    }

    /// Whether a dispatch of `dispatch_bytes` for (`agent_id`, `fleet_node_id`) may
    /// join this entry (P11): same identity, never attempted, room under both caps.
    /// An empty entry takes any one dispatch, however large.
    pub(crate) fn admits(
        &self,
        agent_id: &str,
        fleet_node_id: Option<i64>,
        dispatch_bytes: usize,
        caps: Caps,
    ) -> bool {
        let entry = &self.entry;
        let n = entry.dispatches.len();
        let comma = usize::from(n > 0);
        entry.agent_id == agent_id
            && entry.fleet_node_id == fleet_node_id
            && entry.attempts == 0
            && entry.parts.is_empty()
            && n < caps.max_batch
            && (n == 0 || self.body_bytes + comma + dispatch_bytes <= caps.max_request_bytes)
    }

    /// Appends a dispatch of `dispatch_bytes` (its JSON length).
    pub(crate) fn push(&mut self, dispatch: Dispatch, dispatch_bytes: usize) {
        self.body_bytes += usize::from(!self.entry.dispatches.is_empty()) + dispatch_bytes;
        self.entry.dispatches.push(dispatch);
    }
}

/// Length of the request body for these dispatches, without building it.
pub(crate) fn body_len(
    agent_id: &str,
    fleet_node_id: Option<i64>,
    dispatches: &[Dispatch],
) -> usize {
    let empty = json_len(&PushBody {
        agent_id,
        fleet_node_id,
        dispatches: &[],
    });
    let items: usize = dispatches.iter().map(Dispatch::json_len).sum();
    empty + items + dispatches.len().saturating_sub(1)
}

/// Bytes of `value` as compact JSON, counted without allocating.
pub(crate) fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Our values serialise infallibly (string keys only); a failure counts as 0.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(status: u16) -> DeliveryOutcome {
        DeliveryOutcome::Status {
            status,
            retry_after: None,
            detail: String::new(),
        }
    }

    #[test]
    fn every_response_class_is_decided_as_designed() {
        let transient = Class::Transient {
            unauthorized: false,
        };
        let unauthorized = Class::Transient { unauthorized: true };
        let network = DeliveryOutcome::Network {
            detail: "reset".into(),
        };
        let delivered = DeliveryOutcome::Delivered { payload_size: 1 };
        #[rustfmt::skip]
        let table: [(DeliveryOutcome, usize, Class); 17] = [
            (delivered, 1, Class::Delivered),
            (network, 1, transient),
            (status(408), 1, transient),
            (status(429), 1, transient),
            (status(500), 1, transient),
            (status(502), 1, transient),
            (status(503), 1, transient),
            (status(599), 1, transient),
            (status(302), 1, transient),
            (status(401), 1, unauthorized),
            (status(403), 2, unauthorized),
            (status(413), 2, Class::TooLarge),
            (status(413), 1, Class::Rejected { status: 413 }),
            (status(400), 1, Class::Rejected { status: 400 }),
            (status(404), 3, Class::Rejected { status: 404 }),
            (status(422), 1, Class::Rejected { status: 422 }),
            (status(501), 1, Class::Rejected { status: 501 }),
        ];
        for (outcome, len, expected) in table {
            assert_eq!(classify(&outcome, len), expected, "{outcome:?} on {len}");
        }
    }

    fn entry(dispatches: usize) -> QueueEntry {
        let dispatches = (0..dispatches)
            .map(|i| {
                Dispatch::from(
                    json!({ "id": format!("d{i}") })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        QueueEntry {
            seq: 1,
            idempotency_key: "k".into(),
            ..QueueEntry::new("a".into(), None, dispatches, Timestamp::from_unix_millis(0))
        }
    }

    #[test]
    fn a_split_keeps_order_and_derives_keys_from_the_parent() {
        // (dispatches, splits, expected (len, key) of the parts)
        type Row = (usize, usize, &'static [(usize, &'static str)]);
        let table: [Row; 3] = [
            (5, 1, &[(3, "k.1"), (2, "k.2")]),
            (5, 2, &[(2, "k.1.1"), (1, "k.1.2"), (2, "k.2")]),
            (4, 1, &[(2, "k.1"), (2, "k.2")]),
        ];
        for (n, splits, expected) in table {
            let mut e = entry(n);
            for _ in 0..splits {
                split_next_part(&mut e);
            }
            let parts: Vec<(usize, String)> = e
                .parts
                .iter()
                .map(|p| (p.len, format!("k{}", p.key_suffix)))
                .collect();
            let expected: Vec<(usize, String)> =
                expected.iter().map(|(l, k)| (*l, k.to_string())).collect();
            assert_eq!(parts, expected, "{n} dispatches split {splits} times");
        }
    }

    #[test]
    fn jittered_steps_stay_within_half_and_one_and_a_half_of_the_seed() {
        let mut spread = Spread::new(Jitter::Seeded(7));
        let now = Timestamp::from_unix_millis(0);
        for attempts in 1..=6u32 {
            let step = backoff::backoff(attempts);
            let mut seen = Vec::new();
            for _ in 0..200 {
                let delay = retry_at(attempts, None, now, &mut spread).duration_since(now);
                assert!(
                    delay >= step / 2 && delay <= step * 3 / 2,
                    "{delay:?} vs {step:?}"
                );
                seen.push(delay);
            }
            seen.sort();
            seen.dedup();
            assert!(seen.len() > 100, "attempt {attempts}: jitter must spread");
        }
        let mut off = Spread::new(Jitter::Off);
        let exact: Vec<u64> = (0..7)
            .map(|a| {
                retry_at(a, None, now, &mut off)
                    .duration_since(now)
                    .as_secs()
            })
            .collect();
        assert_eq!(exact, [0, 1, 5, 15, 60, 300, 300]);
    }

    #[test]
    fn retry_after_is_a_floor_over_the_jittered_step_and_capped_at_a_day() {
        let now = Timestamp::from_unix_millis(0);
        let mut spread = Spread::new(Jitter::Seeded(1));
        // (attempts, Retry-After seconds, lowest delay, highest delay)
        let table: [(u32, u64, u64, u64); 4] = [
            (1, 120, 120, 120),
            (3, 2, 7, 23),
            (5, 400, 400, 450),
            (1, 10 * 24 * 3600, 24 * 3600, 24 * 3600),
        ];
        for (attempts, asked, low, high) in table {
            for _ in 0..50 {
                let after = Some(RetryAfter::Delay(Duration::from_secs(asked)));
                let delay = retry_at(attempts, after, now, &mut spread).duration_since(now);
                let secs = delay.as_secs_f64();
                assert!(
                    secs >= low as f64 - 0.5 && secs <= high as f64,
                    "attempts {attempts}, Retry-After {asked}: {secs}"
                );
            }
        }
    }

    #[test]
    fn body_len_is_the_length_of_the_body_the_pusher_sends() {
        for n in [0, 1, 3] {
            for fleet in [None, Some(42)] {
                let e = entry(n);
                let body = serde_json::to_vec(&PushBody {
                    agent_id: &e.agent_id,
                    fleet_node_id: fleet,
                    dispatches: &e.dispatches,
                })
                .unwrap();
                assert_eq!(body_len(&e.agent_id, fleet, &e.dispatches), body.len());
                let mut tail = OpenTail::new(QueueEntry {
                    fleet_node_id: fleet,
                    ..e
                });
                assert_eq!(tail.body_bytes, body.len());
                let extra = Dispatch::parse(r#"{"id":"x"}"#).unwrap();
                let len = extra.json_len();
                tail.push(extra, len);
                let body = serde_json::to_vec(&PushBody {
                    agent_id: &tail.entry.agent_id,
                    fleet_node_id: fleet,
                    dispatches: &tail.entry.dispatches,
                })
                .unwrap();
                assert_eq!(tail.body_bytes, body.len());
            }
        }
    }

    #[test]
    fn the_tail_admits_only_the_same_identity_with_room_and_never_attempted() {
        let caps = Caps {
            max_batch: 3,
            max_request_bytes: 80,
        };
        let tail = |n: usize| OpenTail::new(entry(n));
        let attempted = {
            let mut t = tail(1);
            t.entry.attempts = 1;
            t
        };
        let split = {
            let mut t = tail(2);
            split_next_part(&mut t.entry);
            t
        };
        let fleet = OpenTail::new(QueueEntry {
            fleet_node_id: Some(7),
            ..entry(1)
        });
        // (tail, agent, fleet, dispatch bytes, admitted)
        let table: Vec<(OpenTail, &str, Option<i64>, usize, bool)> = vec![
            (tail(1), "a", None, 10, true),
            (tail(1), "b", None, 10, false),
            (tail(1), "a", Some(7), 10, false),
            (fleet.clone(), "a", Some(7), 10, true),
            (fleet, "a", None, 10, false),
            (attempted, "a", None, 10, false),
            (split, "a", None, 10, false),
            (tail(3), "a", None, 1, false),
            (tail(1), "a", None, 80, false),
            (tail(0), "a", None, 10_000, true),
        ];
        for (i, (t, agent, fleet, bytes, admitted)) in table.into_iter().enumerate() {
            assert_eq!(t.admits(agent, fleet, bytes, caps), admitted, "row {i}");
        }
    }
}
