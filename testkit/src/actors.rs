//! Starting the six actors in a test, and one helper per message a test sends them,
//! each panicking with what failed: a test reads as the protocol it checks.
//!
//! Wall-clock checks use windows around the call ([`now`] before and after, then
//! [`assert_between`]); schedules under paused time use [`crate::ScriptedPlatform`]
//! with `Clock::tokio()`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use agent_sync_actors::dispatch::DispatchKey;
use agent_sync_actors::entry::{DeadLetter, QueueEntry};
use agent_sync_actors::messages::*;
use agent_sync_actors::platform::{HttpPlatform, Platform, PlatformConfig, Token, TokenSource};
use agent_sync_actors::queue::{Jitter, QueueConfig, DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES};
use agent_sync_actors::scanner::walk::scan_tree;
use agent_sync_actors::sync_record::{Direction, SyncRecord};
use agent_sync_actors::time::{Clock, Timestamp};
use agent_sync_actors::{ActorsConfig, Store, SyncActors};
use serde_json::Value;

use crate::{dead_url, dispatches, host, millis, Dirs, AGENT_ID, TEST_SEED, TOKEN};

// ------------------------------------------------------------------ starting

/// What varies between tests when starting the actors.
#[derive(Clone, Debug)]
pub struct Options {
    /// Default agent id.
    pub agent_id: String,
    /// Default fleet node id.
    pub fleet_node_id: Option<i64>,
    /// Dispatches per entry.
    pub max_batch: usize,
    /// Request body bytes per entry.
    pub max_request_bytes: usize,
    /// History records kept.
    pub history_limit: usize,
    /// Whole-request timeout of the HTTP client.
    pub request_timeout: Duration,
    /// Largest pull body accepted (L2).
    pub max_context_bytes: usize,
    /// Retry jitter: seeded, so schedules are the same on every run.
    pub jitter: Jitter,
    /// How long a drain's lease on an entry holds (a hung request must not outlive it).
    pub lease_timeout: Duration,
    /// Drain what is queued as soon as the Pusher starts.
    pub drain_on_start: bool,
    /// Read the token from this file before every request (missing: offline)
    /// instead of the token the start helper is given.
    pub key_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agent_id: AGENT_ID.to_string(),
            fleet_node_id: None,
            max_batch: DEFAULT_MAX_BATCH,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            history_limit: 100,
            request_timeout: Duration::from_secs(5),
            max_context_bytes: PlatformConfig::default().max_context_bytes,
            jitter: Jitter::Seeded(TEST_SEED),
            lease_timeout: QueueConfig::default().lease_timeout,
            drain_on_start: true,
            key_file: None,
        }
    }
}

impl Options {
    /// Defaults with `max_batch`.
    pub fn max_batch(max_batch: usize) -> Self {
        Options {
            max_batch,
            ..Options::default()
        }
    }

    /// Defaults, but the Pusher does not drain at start: a test fills the queue first.
    pub fn no_drain() -> Self {
        Options {
            drain_on_start: false,
            ..Options::default()
        }
    }
}

/// The token source of a test: `Fixed(Token::new(token))`.
pub fn token_source(token: Option<&str>) -> TokenSource {
    TokenSource::Fixed(token.map(|t| Token::new(t).expect("a non-blank token")))
}

/// The actors' configuration for a test (no flush interval: timers only).
pub fn actors_config(root: &Path, token: Option<&str>, opts: &Options) -> ActorsConfig {
    let tokens = match &opts.key_file {
        Some(path) => TokenSource::KeyFile(path.clone()),
        None => token_source(token),
    };
    ActorsConfig {
        workspace_root: root.to_path_buf(),
        agent_id: opts.agent_id.clone(),
        fleet_node_id: opts.fleet_node_id,
        tokens,
        queue: QueueConfig {
            max_batch: opts.max_batch,
            max_request_bytes: opts.max_request_bytes,
            jitter: opts.jitter,
            lease_timeout: opts.lease_timeout,
        },
        history_limit: opts.history_limit,
        max_context_items: agent_sync_actors::puller::DEFAULT_MAX_CONTEXT_ITEMS,
        flush_interval: None,
        drain_on_start: opts.drain_on_start,
    }
}

/// Opens the state and starts the actors against the HTTP platform at `url`, with
/// default options.
pub fn start_actors(
    root: &Path,
    state_dir: &Path,
    url: &str,
    token: Option<&str>,
) -> (SyncActors, Store) {
    start_actors_with(root, state_dir, url, token, &Options::default())
}

/// Like [`start_actors`] with `opts`.
pub fn start_actors_with(
    root: &Path,
    state_dir: &Path,
    url: &str,
    token: Option<&str>,
    opts: &Options,
) -> (SyncActors, Store) {
    let platform = http_platform(url, opts);
    start_actors_on(root, state_dir, platform, token, opts, Clock::system())
}

/// The HTTP platform at `url` with the request timeout and context limit of `opts`:
/// one place, so that every way of starting against a URL talks to it alike.
fn http_platform(url: &str, opts: &Options) -> Rc<dyn Platform> {
    let config = PlatformConfig {
        base_url: url.to_string(),
        request_timeout: opts.request_timeout,
        max_context_bytes: opts.max_context_bytes,
        ..PlatformConfig::default()
    };
    config.validate().expect("a loopback URL is accepted");
    Rc::new(HttpPlatform::new(config))
}

/// [`start_actors_with`] in `dirs`, with [`TOKEN`].
pub fn start_online(dirs: &Dirs, url: &str, opts: &Options) -> (SyncActors, Store) {
    start_actors_with(dirs.root(), dirs.state(), url, Some(TOKEN), opts)
}

/// Opens the state and starts the actors on any platform and clock.
pub fn start_actors_on(
    root: &Path,
    state_dir: &Path,
    platform: Rc<dyn Platform>,
    token: Option<&str>,
    opts: &Options,
    clock: Clock,
) -> (SyncActors, Store) {
    let store = Store::open(state_dir).expect("open the state");
    let config = actors_config(root, token, opts);
    let actors = SyncActors::start(store.clone(), config, platform, clock);
    (actors, store)
}

/// Starts the actors over a store the test opened (e.g. over a [`crate::Faults`]
/// backend: `faults.open_store(state_dir)`) against the HTTP platform at `url`, on the
/// system clock. The actors hold clones of `store`: the file stays open until they
/// stop (their System ends) and every clone is dropped.
pub fn start_actors_over(
    store: &Store,
    root: &Path,
    url: &str,
    token: Option<&str>,
    opts: &Options,
) -> SyncActors {
    let config = actors_config(root, token, opts);
    let platform = http_platform(url, opts);
    SyncActors::start(store.clone(), config, platform, Clock::system())
}

/// Runs `f` in an actix System of its own on a fresh thread and waits for it without
/// blocking the caller's System (which may be serving a platform). When it returns,
/// that System is gone: every actor started in it is dropped, and with them their
/// `Store` clones, so the database can be opened again. A panic in `f` is re-raised
/// here.
pub async fn in_own_system<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let thread = std::thread::spawn(move || actix::System::new().block_on(f()));
    while !thread.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Offline actors (no token, no drain at start) on a state nobody holds: what a
/// restarted process finds there, without sending anything.
pub fn start_offline(root: &Path, state_dir: &Path) -> SyncActors {
    start_actors_with(root, state_dir, &dead_url(), None, &Options::no_drain()).0
}

/// The queue and history of a closed state, read by offline actors in a System of
/// their own (so the state is closed again afterwards).
pub async fn reopen(root: &Path, state_dir: &Path) -> (Vec<QueueEntry>, Vec<SyncRecord>) {
    let (root, state) = (root.to_path_buf(), state_dir.to_path_buf());
    in_own_system(move || async move {
        let actors = start_offline(&root, &state);
        (queue(&actors).await, records(&actors, None).await)
    })
    .await
}

// ------------------------------------------------------------------ messages

/// Any [`SyncPush`]; panics unless it succeeds.
pub async fn sync_push(actors: &SyncActors, msg: SyncPush) -> PushReport {
    actors
        .pusher
        .send(msg)
        .await
        .expect("the pusher is running")
        .unwrap_or_else(|e| panic!("push failed: {e}"))
}

/// A scanning push under the service's agent id.
pub async fn push_default(actors: &SyncActors) -> PushReport {
    sync_push(actors, SyncPush::default()).await
}

/// A push of what is queued only (no scan).
pub async fn push_queue_only(actors: &SyncActors) -> PushReport {
    sync_push(
        actors,
        SyncPush {
            queue_only: true,
            ..SyncPush::default()
        },
    )
    .await
}

/// A push of these host dispatches.
pub async fn push_host(actors: &SyncActors, dispatches: Vec<Value>) -> PushReport {
    sync_push(
        actors,
        SyncPush {
            dispatches: Some(dispatches),
            ..SyncPush::default()
        },
    )
    .await
}

/// A push of one [`host`] dispatch per id.
pub async fn push_host_ids(actors: &SyncActors, ids: &[&str]) -> PushReport {
    push_host(actors, ids.iter().map(|id| host(id)).collect()).await
}

/// A [`Drain`]; panics unless it succeeds.
pub async fn drain(actors: &SyncActors) -> PushReport {
    actors
        .pusher
        .send(Drain)
        .await
        .expect("the pusher is running")
        .unwrap_or_else(|e| panic!("drain failed: {e}"))
}

/// Queues these ids as host dispatches `{"id", "status": "completed"}` under
/// [`AGENT_ID`] (no token is needed to enqueue).
pub async fn enqueue(actors: &SyncActors, ids: &[&str]) -> EnqueueReceipt {
    enqueue_as(actors, AGENT_ID, None, ids).await
}

/// [`enqueue`] under `agent` and `fleet`.
pub async fn enqueue_as(
    actors: &SyncActors,
    agent: &str,
    fleet: Option<i64>,
    ids: &[&str],
) -> EnqueueReceipt {
    actors
        .queue
        .send(Enqueue {
            agent_id: agent.into(),
            fleet_node_id: fleet,
            batch: EnqueueBatch::Host(dispatches(ids)),
        })
        .await
        .expect("the queue is running")
        .expect("enqueue")
}

/// Every queued entry, head first.
pub async fn queue(actors: &SyncActors) -> Vec<QueueEntry> {
    list_queue(&actors.queue).await
}

/// Every entry `queue` holds, head first (a Queue started on its own).
pub async fn list_queue(queue: &actix::Addr<agent_sync_actors::queue::Queue>) -> Vec<QueueEntry> {
    queue
        .send(ListQueue::default())
        .await
        .expect("the queue is running")
        .expect("list the queue")
}

/// Leases and reports a 2xx for up to `entries` entries from the head of `queue` (a
/// Queue started on its own), stopping at the first lease that is not ready; returns
/// how many it delivered. What the Pusher does with a platform that accepts
/// everything, without a platform: for tests of the Queue's own bookkeeping (the
/// Ledger marks and compaction that follow a delivery).
pub async fn deliver_leased(
    queue: &actix::Addr<agent_sync_actors::queue::Queue>,
    entries: usize,
) -> usize {
    let mut delivered = 0;
    while delivered < entries {
        let entry = match queue
            .send(LeaseNext)
            .await
            .expect("the queue is running")
            .expect("lease")
        {
            Lease::Ready(entry) => entry,
            _ => break,
        };
        queue
            .send(Report {
                seq: entry.seq,
                outcome: DeliveryOutcome::Delivered { payload_size: 1 },
                payload_size: 1,
            })
            .await
            .expect("the queue is running")
            .expect("report");
        delivered += 1;
    }
    delivered
}

/// Waits until the queue is empty (a timer drain records its outcome just after the
/// 2xx the platform sent).
pub async fn eventually_empty(actors: &SyncActors) {
    for _ in 0..500 {
        if queue(actors).await.is_empty() {
            return;
        }
        actix_rt::time::sleep(millis(10)).await;
    }
    panic!("the queue did not empty: {:?}", queue(actors).await);
}

/// The queue's counts and head.
pub async fn summary(actors: &SyncActors) -> QueueSummary {
    actors
        .queue
        .send(QueueStatus)
        .await
        .expect("the queue is running")
        .expect("queue status")
}

/// Every dead letter, oldest first.
pub async fn dead_letters(actors: &SyncActors) -> Vec<DeadLetter> {
    actors
        .queue
        .send(ListDeadLetters::default())
        .await
        .expect("the queue is running")
        .expect("list dead letters")
}

/// The newest `limit` history records (all when `None`), oldest first.
pub async fn records(actors: &SyncActors, limit: Option<usize>) -> Vec<SyncRecord> {
    actors
        .history
        .send(RecentRecords { limit })
        .await
        .expect("history is running")
        .expect("read history")
}

/// Last push, last pull, `auth_failed`.
pub async fn sync_state(actors: &SyncActors) -> SyncState {
    actors
        .history
        .send(ReadSyncState)
        .await
        .expect("history is running")
        .expect("read sync state")
}

/// Entries in the Ledger.
pub async fn ledger_size(actors: &SyncActors) -> u64 {
    actors
        .ledger
        .send(LedgerSize)
        .await
        .expect("the ledger is running")
        .expect("ledger size")
}

/// The ids a scan of `root` would queue now: terminal dispatches neither queued nor
/// synced, asked of the Queue and the Ledger as a scan asks them, without queueing
/// anything (a queued dispatch would be delivered, and change what a test counts).
pub async fn scan_ids(actors: &SyncActors, root: &Path) -> Vec<String> {
    let candidates = scan_tree(root)
        .terminal
        .into_iter()
        .map(|d| DispatchKey {
            id: d.id,
            fingerprint: d.fingerprint,
        })
        .collect();
    let not_queued = actors
        .queue
        .send(NotQueued { candidates })
        .await
        .expect("the queue is running")
        .expect("not queued");
    let unsynced = actors
        .ledger
        .send(Unsynced {
            candidates: not_queued,
        })
        .await
        .expect("the ledger is running")
        .expect("unsynced");
    unsynced.into_iter().map(|key| key.id).collect()
}

/// A pull under the service's agent id, `since` if given.
pub async fn pull(actors: &SyncActors, since: Option<&str>) -> PullReport {
    actors
        .puller
        .send(SyncPull {
            agent_id: None,
            since: since.map(str::to_string),
        })
        .await
        .expect("the puller is running")
        .expect("pull")
}

/// The context cache.
pub async fn cached_context(actors: &SyncActors) -> Vec<Value> {
    actors
        .puller
        .send(CachedContext)
        .await
        .expect("the puller is running")
        .expect("read the context cache")
}

// ------------------------------------------------------------------ reading replies

/// The reply of a push or drain: `count` delivered, `queued` dispatches left.
pub fn pushed(count: usize, queued: u64) -> PushReport {
    PushReport { count, queued }
}

/// The `id` of every dispatch of an entry, in order.
pub fn entry_ids(entry: &QueueEntry) -> Vec<String> {
    entry
        .dispatches
        .iter()
        .map(|d| d.id().expect("dispatch id"))
        .collect()
}

/// Direction and item count of each history record.
pub fn directions(records: &[SyncRecord]) -> Vec<(Direction, u64)> {
    records
        .iter()
        .map(|r| (r.direction, r.items_count))
        .collect()
}

/// The wall clock, as the actors read it.
pub fn now() -> Timestamp {
    Clock::system().now()
}

/// `t` lies in `[from, to]`.
#[track_caller]
pub fn assert_between(what: &str, t: Timestamp, from: Timestamp, to: Timestamp) {
    assert!(
        from <= t && t <= to,
        "{what} = {t} is not within [{from}, {to}]"
    );
}

/// `next_attempt` is a jittered `step` after the failure, which happened within
/// `[before, after]`: within [0.5x, 1.5x] of it (50 ms of slack).
#[track_caller]
pub fn assert_backoff(
    next: Option<Timestamp>,
    before: Timestamp,
    after: Timestamp,
    step: Duration,
) {
    let next = next.expect("next_attempt is set");
    let from = before.saturating_add(step / 2);
    let to = after
        .saturating_add(step * 3 / 2)
        .saturating_add(millis(50));
    assert_between("next_attempt", next, from, to);
}

/// `next` is `delay` after some instant of `[before, after]` (50 ms of slack).
#[track_caller]
pub fn assert_next_attempt(
    next: Option<Timestamp>,
    before: Timestamp,
    after: Timestamp,
    delay: Duration,
) {
    let next = next.expect("next_attempt is set");
    let slack = millis(50);
    let from = Timestamp::from_unix_millis(before.saturating_add(delay).unix_millis() - 50);
    assert_between(
        "next_attempt",
        next,
        from,
        after.saturating_add(delay).saturating_add(slack),
    );
}
