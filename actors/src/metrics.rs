//! Prometheus metrics of the sync subsystem, with `prometheus-client`.
//!
//! Why `prometheus-client`: it has no global registry. [`Metrics`] is a bundle of
//! handles (each an `Arc` of atomics, cheap to clone, `Send + Sync`); the Pusher and
//! the Puller move the counters and histograms as requests happen, and whoever serves
//! `/metrics` sets the gauges from the actors' own state just before encoding
//! ([`Metrics::set_queue`], [`Metrics::set_sync_state`]), so a gauge always agrees
//! with `status`. [`Metrics::register`] puts every series into any [`Registry`]
//! (the service's own, or a host's) under the `agent_sync_` prefix.
//!
//! | series | type | what |
//! |---|---|---|
//! | `agent_sync_queue_entries` | gauge | entries queued (one request each) |
//! | `agent_sync_queue_dispatches` | gauge | dispatches in them |
//! | `agent_sync_queue_oldest_age_seconds` | gauge | age of the head entry, 0 when empty |
//! | `agent_sync_dead_letters` | gauge | entries refused for good |
//! | `agent_sync_requests_total{outcome}` | counter | push requests by outcome |
//! | `agent_sync_dispatches_delivered_total` | counter | dispatches the platform took |
//! | `agent_sync_request_duration_seconds` | histogram | one push request, send to answer |
//! | `agent_sync_last_push_timestamp_seconds` | gauge | last successful push, 0 if never |
//! | `agent_sync_last_pull_timestamp_seconds` | gauge | last successful pull, 0 if never |
//! | `agent_sync_auth_failed` | gauge | 1 after a 401/403 until the next success |
//! | `agent_sync_pull_total{outcome}` | counter | pulls by outcome |
//! | `agent_sync_scan_duration_seconds` | histogram | one workspace scan |

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::messages::{Decision, QueueSummary, SyncState};
use crate::time::Timestamp;

/// The prefix of every series.
pub const PREFIX: &str = "agent_sync";

/// Bucket bounds (seconds) of the request and scan histograms: a loopback answer
/// takes milliseconds, a slow platform up to the 30 s request timeout.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What became of one push request, as the Queue decided it (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A 2xx: the dispatches were delivered.
    Delivered,
    /// Network failure, timeout, 408, 429 or 5xx: kept, retried with backoff.
    Transient,
    /// 401/403: kept, retried, `auth_failed` set.
    Unauthorized,
    /// 413 on several dispatches: split in two.
    TooLarge,
    /// Any other 4xx: moved to dead letters.
    Rejected,
}

impl RequestOutcome {
    /// Every outcome, so each series exists (at 0) from the start.
    pub const ALL: [RequestOutcome; 5] = [
        RequestOutcome::Delivered,
        RequestOutcome::Transient,
        RequestOutcome::Unauthorized,
        RequestOutcome::TooLarge,
        RequestOutcome::Rejected,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Delivered => "delivered",
            RequestOutcome::Transient => "transient",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::Rejected => "rejected",
        }
    }

    /// The outcome a Queue decision stands for.
    pub fn of(decision: &Decision) -> Self {
        match decision {
            Decision::Delivered { .. } => RequestOutcome::Delivered,
            Decision::RetryAt {
                unauthorized: true, ..
            } => RequestOutcome::Unauthorized,
            Decision::RetryAt { .. } => RequestOutcome::Transient,
            Decision::Split => RequestOutcome::TooLarge,
            Decision::DeadLettered { .. } => RequestOutcome::Rejected,
        }
    }
}

/// What became of one pull (the `outcome` label of `agent_sync_pull_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullResult {
    /// A recognised envelope: the cache was updated.
    Ok,
    /// 401/403: `auth_failed` set, the cache kept.
    Unauthorized,
    /// Another status >= 300: the cache kept.
    Status,
    /// No usable answer (network, timeout, body over the limit): the cache kept.
    Failed,
    /// A 2xx whose body is not a recognised envelope: the cache kept.
    BadBody,
}

impl PullResult {
    /// Every result, so each series exists (at 0) from the start.
    pub const ALL: [PullResult; 5] = [
        PullResult::Ok,
        PullResult::Unauthorized,
        PullResult::Status,
        PullResult::Failed,
        PullResult::BadBody,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PullResult::Ok => "ok",
            PullResult::Unauthorized => "unauthorized",
            PullResult::Status => "status",
            PullResult::Failed => "failed",
            PullResult::BadBody => "bad_body",
        }
    }
}

/// The `outcome` label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// One of [`RequestOutcome::as_str`] or [`PullResult::as_str`].
    outcome: String,
}

impl Outcome {
    fn new(outcome: &str) -> Self {
        Outcome {
            outcome: outcome.to_string(),
        }
    }
}

/// A float gauge (seconds, timestamps).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every series agent-sync exports. Clones share the same values.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `agent_sync_queue_entries`: set from `QueueStatus` at scrape time.
    queue_entries: Gauge,
    /// `agent_sync_queue_dispatches`: set from `QueueStatus` at scrape time.
    queue_dispatches: Gauge,
    /// `agent_sync_queue_oldest_age_seconds`: now minus the head's `queued_at`.
    queue_oldest_age: FloatGauge,
    /// `agent_sync_dead_letters`: set from `QueueStatus` at scrape time.
    dead_letters: Gauge,
    /// `agent_sync_requests_total{outcome}`: moved by the Pusher per decision.
    requests: Family<Outcome, Counter>,
    /// `agent_sync_dispatches_delivered_total`: moved by the Pusher.
    dispatches_delivered: Counter,
    /// `agent_sync_request_duration_seconds`: one POST, observed by the Pusher.
    request_duration: Histogram,
    /// `agent_sync_last_push_timestamp_seconds`: from `ReadSyncState`.
    last_push: FloatGauge,
    /// `agent_sync_last_pull_timestamp_seconds`: from `ReadSyncState`.
    last_pull: FloatGauge,
    /// `agent_sync_auth_failed`: from `ReadSyncState`, 0 or 1.
    auth_failed: Gauge,
    /// `agent_sync_pull_total{outcome}`: moved by the Puller.
    pulls: Family<Outcome, Counter>,
    /// `agent_sync_scan_duration_seconds`: one scan, observed by the Pusher.
    scan_duration: Histogram,
    /// `agent_sync_watches`: kernel watches the tree watcher holds (0 without one).
    watches: Gauge,
    /// `agent_sync_watch_budget`: most watches it may hold (0 without a watcher).
    watch_budget: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh series, every labelled one present at 0.
    pub fn new() -> Self {
        let metrics = Metrics {
            queue_entries: Gauge::default(),
            queue_dispatches: Gauge::default(),
            queue_oldest_age: FloatGauge::default(),
            dead_letters: Gauge::default(),
            requests: Family::default(),
            dispatches_delivered: Counter::default(),
            request_duration: Histogram::new(BUCKETS),
            last_push: FloatGauge::default(),
            last_pull: FloatGauge::default(),
            auth_failed: Gauge::default(),
            watches: Gauge::default(),
            watch_budget: Gauge::default(),
            pulls: Family::default(),
            scan_duration: Histogram::new(BUCKETS),
        };
        for outcome in RequestOutcome::ALL {
            drop(
                metrics
                    .requests
                    .get_or_create(&Outcome::new(outcome.as_str())),
            );
        }
        for result in PullResult::ALL {
            drop(metrics.pulls.get_or_create(&Outcome::new(result.as_str())));
        }
        metrics
    }

    /// Registers every series into `registry` under the `agent_sync_` prefix (a
    /// sub-registry), so a host can merge them into its own exposition.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix(PREFIX);
        registry.register(
            "queue_entries",
            "Entries waiting to be pushed (one request each)",
            self.queue_entries.clone(),
        );
        registry.register(
            "queue_dispatches",
            "Dispatches in the queued entries",
            self.queue_dispatches.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest queued entry (0 when the queue is empty)",
            Unit::Seconds,
            self.queue_oldest_age.clone(),
        );
        registry.register(
            "dead_letters",
            "Entries the platform refused for good",
            self.dead_letters.clone(),
        );
        registry.register(
            "requests",
            "Push requests sent, by what the queue made of the answer",
            self.requests.clone(),
        );
        registry.register(
            "dispatches_delivered",
            "Dispatches the platform accepted",
            self.dispatches_delivered.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from sending a push request to its answer (or failure)",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        registry.register_with_unit(
            "last_push_timestamp",
            "Unix time of the last successful push (0 if never)",
            Unit::Seconds,
            self.last_push.clone(),
        );
        registry.register_with_unit(
            "last_pull_timestamp",
            "Unix time of the last successful pull (0 if never)",
            Unit::Seconds,
            self.last_pull.clone(),
        );
        registry.register(
            "auth_failed",
            "1 when the platform answered 401/403 since the last successful push or pull",
            self.auth_failed.clone(),
        );
        registry.register("pull", "Context pulls, by outcome", self.pulls.clone());
        registry.register(
            "watches",
            "Kernel watches held by the workspace tree watcher (0 without one)",
            self.watches.clone(),
        );
        registry.register(
            "watch_budget",
            "Most kernel watches the tree watcher may hold (0 without one)",
            self.watch_budget.clone(),
        );
        registry.register_with_unit(
            "scan_duration",
            "Time of one scan of the workspace root",
            Unit::Seconds,
            self.scan_duration.clone(),
        );
    }

    /// Sets the watch gauges from the tree watcher's figures (0 when none runs).
    pub fn set_watch(&self, stats: &crate::watch::Stats) {
        let active = stats.active();
        self.watches
            .set(if active { stats.watches() as i64 } else { 0 });
        self.watch_budget
            .set(if active { stats.budget() as i64 } else { 0 });
    }

    /// One push request ended with `outcome` after `duration`.
    pub fn record_request(&self, outcome: RequestOutcome, duration: Duration) {
        self.requests
            .get_or_create(&Outcome::new(outcome.as_str()))
            .inc();
        self.request_duration.observe(duration.as_secs_f64());
    }

    /// `count` dispatches were delivered.
    pub fn add_delivered(&self, count: usize) {
        self.dispatches_delivered.inc_by(count as u64);
    }

    /// One pull ended with `result`.
    pub fn record_pull(&self, result: PullResult) {
        self.pulls
            .get_or_create(&Outcome::new(result.as_str()))
            .inc();
    }

    /// One scan took `duration`.
    pub fn observe_scan(&self, duration: Duration) {
        self.scan_duration.observe(duration.as_secs_f64());
    }

    /// Sets the queue gauges from a [`QueueSummary`] read at `now`.
    pub fn set_queue(&self, summary: &QueueSummary, now: Timestamp) {
        self.queue_entries.set(saturating_i64(summary.entries));
        self.queue_dispatches
            .set(saturating_i64(summary.dispatches));
        self.dead_letters.set(saturating_i64(summary.dead_letters));
        let age = summary
            .head
            .as_ref()
            .map_or(0.0, |head| seconds(now) - seconds(head.queued_at));
        self.queue_oldest_age.set(age.max(0.0));
    }

    /// Sets the last push/pull and auth gauges from a [`SyncState`].
    pub fn set_sync_state(&self, state: &SyncState) {
        self.last_push.set(state.last_push_at.map_or(0.0, seconds));
        self.last_pull.set(state.last_pull_at.map_or(0.0, seconds));
        self.auth_failed.set(i64::from(state.auth_failed));
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Unix seconds, with milliseconds as the fraction.
fn seconds(t: Timestamp) -> f64 {
    t.unix_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::HeadSummary;

    fn encode(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn every_series_is_named_as_documented_and_present_from_the_start() {
        let text = encode(&Metrics::new());
        for name in [
            "agent_sync_queue_entries ",
            "agent_sync_queue_dispatches ",
            "agent_sync_queue_oldest_age_seconds ",
            "agent_sync_dead_letters ",
            "agent_sync_requests_total{outcome=\"delivered\"} 0",
            "agent_sync_requests_total{outcome=\"transient\"} 0",
            "agent_sync_requests_total{outcome=\"unauthorized\"} 0",
            "agent_sync_requests_total{outcome=\"too_large\"} 0",
            "agent_sync_requests_total{outcome=\"rejected\"} 0",
            "agent_sync_dispatches_delivered_total 0",
            "agent_sync_request_duration_seconds_count 0",
            "agent_sync_last_push_timestamp_seconds ",
            "agent_sync_last_pull_timestamp_seconds ",
            "agent_sync_auth_failed 0",
            "agent_sync_pull_total{outcome=\"ok\"} 0",
            "agent_sync_scan_duration_seconds_count 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn gauges_follow_the_summary_and_state_they_are_set_from() {
        let metrics = Metrics::new();
        let queued_at = Timestamp::from_unix_millis(1_000_000);
        let summary = QueueSummary {
            entries: 2,
            dispatches: 5,
            dead_letters: 1,
            head: Some(HeadSummary {
                seq: 1,
                attempts: 0,
                next_attempt: None,
                last_error: None,
                queued_at,
            }),
        };
        metrics.set_queue(&summary, Timestamp::from_unix_millis(1_090_500));
        metrics.set_sync_state(&SyncState {
            last_push_at: Some(Timestamp::from_unix_millis(2_000)),
            last_pull_at: None,
            auth_failed: true,
        });
        metrics.record_request(RequestOutcome::TooLarge, Duration::from_millis(20));
        let text = encode(&metrics);
        for line in [
            "agent_sync_queue_entries 2",
            "agent_sync_queue_dispatches 5",
            "agent_sync_dead_letters 1",
            "agent_sync_queue_oldest_age_seconds 90.5",
            "agent_sync_last_push_timestamp_seconds 2.0",
            "agent_sync_last_pull_timestamp_seconds 0.0",
            "agent_sync_auth_failed 1",
            "agent_sync_requests_total{outcome=\"too_large\"} 1",
            "agent_sync_request_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
