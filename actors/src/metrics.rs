//! Prometheus metrics of the sync subsystem, with `prometheus-client`.
//!
//! Why `prometheus-client`: it has no global registry. [`Metrics`] is a bundle of
//! handles (each an `Arc` of atomics, cheap to clone, `Send + Sync`); the Pusher and
//! the Puller move the counters and histograms as requests happen. The gauges are
//! computed when scraped: a [`Collector`] reads the queue and the sync state from the
//! store (what is committed, as `status` reads it) at each encode, so a host that
//! encodes its registry right after a push sees that push, with no refresh call.
//! [`Metrics::register`] puts every series into any [`Registry`] (the service's own,
//! or a host's) under the `agent_sync_` prefix.
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
//! | `agent_sync_scan_duration_seconds` | histogram | one scan of the workspace root |

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::messages::{Decision, QueueSummary, SyncState};
use crate::store::{Store, WeakStore};
use crate::time::{Clock, Timestamp};

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

/// Every series agent-sync exports. Clones share the same values.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `agent_sync_requests_total{outcome}`: moved by the Pusher per decision.
    requests: Family<Outcome, Counter>,
    /// `agent_sync_dispatches_delivered_total`: moved by the Pusher.
    dispatches_delivered: Counter,
    /// `agent_sync_request_duration_seconds`: one POST, observed by the Pusher.
    request_duration: Histogram,
    /// `agent_sync_pull_total{outcome}`: moved by the Puller.
    pulls: Family<Outcome, Counter>,
    /// `agent_sync_scan_duration_seconds`: one scan, observed by the Pusher.
    scan_duration: Histogram,
    /// Where the gauges are read from at each scrape, once actors run on a store
    /// ([`Metrics::read_state_from`]); shared by clones, so series registered before
    /// the actors start follow them.
    state: Arc<Mutex<Option<StateSource>>>,
}

/// What the gauges are computed from at scrape time.
#[derive(Clone, Debug)]
pub struct StateSource {
    /// The database, held weakly: a host's registry must not keep it open after the
    /// service stops (another process could not open it then).
    pub store: WeakStore,
    /// The tree watcher's figures.
    pub watch: crate::watch::Stats,
    /// The actors' clock, for the age of the queue's head.
    pub clock: Clock,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh series, every labelled one present at 0; the gauges read 0 until
    /// [`read_state_from`](Self::read_state_from) names their source.
    pub fn new() -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            dispatches_delivered: Counter::default(),
            request_duration: Histogram::new(BUCKETS),
            pulls: Family::default(),
            scan_duration: Histogram::new(BUCKETS),
            state: Arc::default(),
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

    /// Computes the gauges from `store`, `watch` and `clock` at every scrape from now
    /// on (what [`SyncActors`](crate::SyncActors) calls when it starts on a store).
    pub fn read_state_from(&self, store: &Store, watch: crate::watch::Stats, clock: Clock) {
        let source = StateSource {
            store: store.downgrade(),
            watch,
            clock,
        };
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Registers every series into `registry` under the `agent_sync_` prefix (a
    /// sub-registry), so a host can merge them into its own exposition.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix(PREFIX);
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
        registry.register("pull", "Context pulls, by outcome", self.pulls.clone());
        registry.register_with_unit(
            "scan_duration",
            "Time of one scan of the workspace root",
            Unit::Seconds,
            self.scan_duration.clone(),
        );
        registry.register_collector(Box::new(StateGauges {
            state: self.state.clone(),
        }));
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
}

/// The collector of the gauges, registered by [`Metrics::register`]: it reads the
/// committed state at each scrape, so a gauge agrees with `status` at that moment.
/// Before the actors start the gauges read 0; once their store is gone (the service
/// stopped) or cannot be read, they are left out of the exposition rather than shown
/// stale.
#[derive(Debug)]
struct StateGauges {
    /// Shared with [`Metrics`]: `None` until actors run on a store.
    state: Arc<Mutex<Option<StateSource>>>,
}

impl Collector for StateGauges {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let source = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(source) = source else {
            return Gauges::default().encode(encoder);
        };
        let Some(store) = source.store.upgrade() else {
            return Ok(());
        };
        let read = crate::queue::reads::read_summary(&store)
            .and_then(|summary| Ok((summary, crate::history::read_sync_state(&store)?)));
        match read {
            Ok((summary, state)) => {
                Gauges::of(&summary, &state, &source.watch, source.clock.now()).encode(encoder)
            }
            Err(e) => {
                log::warn!("metrics: the queue and sync-state gauges are left out: {e}");
                Ok(())
            }
        }
    }
}

/// The gauges' values at one scrape.
#[derive(Debug, Default, Clone, PartialEq)]
struct Gauges {
    /// `agent_sync_queue_entries`.
    queue_entries: i64,
    /// `agent_sync_queue_dispatches`.
    queue_dispatches: i64,
    /// `agent_sync_queue_oldest_age_seconds`: now minus the head's `queued_at`.
    queue_oldest_age: f64,
    /// `agent_sync_dead_letters`.
    dead_letters: i64,
    /// `agent_sync_last_push_timestamp_seconds`, 0 if never.
    last_push: f64,
    /// `agent_sync_last_pull_timestamp_seconds`, 0 if never.
    last_pull: f64,
    /// `agent_sync_auth_failed`, 0 or 1.
    auth_failed: i64,
    /// `agent_sync_watches`: kernel watches the tree watcher holds (0 without one).
    watches: i64,
    /// `agent_sync_watch_budget`: most watches it may hold (0 without a watcher).
    watch_budget: i64,
}

impl Gauges {
    /// The gauges of a [`QueueSummary`], a [`SyncState`] and the watcher's figures
    /// read at `now`.
    fn of(
        summary: &QueueSummary,
        state: &SyncState,
        watch: &crate::watch::Stats,
        now: Timestamp,
    ) -> Self {
        let active = watch.active();
        Gauges {
            queue_entries: saturating_i64(summary.entries),
            queue_dispatches: saturating_i64(summary.dispatches),
            queue_oldest_age: summary
                .head
                .as_ref()
                .map_or(0.0, |head| seconds(now) - seconds(head.queued_at))
                .max(0.0),
            dead_letters: saturating_i64(summary.dead_letters),
            last_push: state.last_push_at.map_or(0.0, seconds),
            last_pull: state.last_pull_at.map_or(0.0, seconds),
            auth_failed: i64::from(state.auth_failed),
            watches: if active { watch.watches() as i64 } else { 0 },
            watch_budget: if active { watch.budget() as i64 } else { 0 },
        }
    }

    /// Writes every gauge, named and described as the module's table says.
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let seconds = Some(&Unit::Seconds);
        gauge(
            e,
            "queue_entries",
            "Entries waiting to be pushed (one request each)",
            None,
            self.queue_entries,
        )?;
        gauge(
            e,
            "queue_dispatches",
            "Dispatches in the queued entries",
            None,
            self.queue_dispatches,
        )?;
        gauge(
            e,
            "queue_oldest_age",
            "Age of the oldest queued entry (0 when the queue is empty)",
            seconds,
            self.queue_oldest_age,
        )?;
        gauge(
            e,
            "dead_letters",
            "Entries the platform refused for good",
            None,
            self.dead_letters,
        )?;
        gauge(
            e,
            "last_push_timestamp",
            "Unix time of the last successful push (0 if never)",
            seconds,
            self.last_push,
        )?;
        gauge(
            e,
            "last_pull_timestamp",
            "Unix time of the last successful pull (0 if never)",
            seconds,
            self.last_pull,
        )?;
        gauge(
            e,
            "auth_failed",
            "1 when the platform answered 401/403 since the last successful push or pull",
            None,
            self.auth_failed,
        )?;
        gauge(
            e,
            "watches",
            "Kernel watches held by the workspace tree watcher (0 without one)",
            None,
            self.watches,
        )?;
        gauge(
            e,
            "watch_budget",
            "Most kernel watches the tree watcher may hold (0 without one)",
            None,
            self.watch_budget,
        )
    }
}

/// Writes one gauge computed at scrape time.
fn gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
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

    /// A collector of fixed gauge values, to check their encoding.
    #[derive(Debug)]
    struct Fixed(Gauges);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            self.0.encode(encoder)
        }
    }

    #[test]
    fn gauges_follow_the_summary_and_state_they_are_read_from() {
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
        let state = SyncState {
            last_push_at: Some(Timestamp::from_unix_millis(2_000)),
            last_pull_at: None,
            auth_failed: true,
        };
        let gauges = Gauges::of(
            &summary,
            &state,
            &crate::watch::Stats::default(),
            Timestamp::from_unix_millis(1_090_500),
        );
        let metrics = Metrics::new();
        metrics.record_request(RequestOutcome::TooLarge, Duration::from_millis(20));
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        registry
            .sub_registry_with_prefix("fixed")
            .register_collector(Box::new(Fixed(gauges)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "fixed_queue_entries 2",
            "fixed_queue_dispatches 5",
            "fixed_dead_letters 1",
            "fixed_queue_oldest_age_seconds 90.5",
            "fixed_last_push_timestamp_seconds 2.0",
            "fixed_last_pull_timestamp_seconds 0.0",
            "fixed_auth_failed 1",
            "fixed_watches 0",
            "agent_sync_requests_total{outcome=\"too_large\"} 1",
            "agent_sync_request_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn gauges_are_read_from_the_store_at_each_scrape_and_dropped_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.read_state_from(&store, crate::watch::Stats::default(), Clock::system());
        let scrape = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        assert!(scrape(&registry).contains("agent_sync_queue_entries 0"));
        drop(store);
        // The registry does not keep the database open, and shows no stale gauge.
        let text = scrape(&registry);
        assert!(!text.contains("agent_sync_queue_entries"), "{text}");
        assert!(text.contains("agent_sync_requests_total"), "{text}");
        Store::open(dir.path()).unwrap();
    }
}
