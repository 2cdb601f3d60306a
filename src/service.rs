//! [`SyncService`]: the six actors on their own arbiter, behind async methods and
//! the actors' addresses.
//!
//! Why a dedicated arbiter: redb commits and fsyncs are blocking. On their own
//! thread they never stall the host's actors; the host only ever awaits messages.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use agent_sync_actors::messages::*;
use agent_sync_actors::model::{DeadLetter, QueueEntry, SyncRecord};
use agent_sync_actors::platform::{HttpPlatform, Platform};
use agent_sync_actors::time::{Clock, Timestamp};
use agent_sync_actors::{OpenError, PlatformConfigError, Store, SyncActors, SyncError};
use serde::Serialize;
use serde_json::Value;

use crate::config::SyncConfig;

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The API URL is unusable or insecure.
    Platform(PlatformConfigError),
    /// The state could not be opened (in use, corrupt, unreadable).
    Open(OpenError),
    /// The service arbiter did not come up.
    Arbiter,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Platform(e) => e.fmt(f),
            StartError::Open(e) => e.fmt(f),
            StartError::Arbiter => f.write_str("the sync arbiter thread did not start; retry"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> Self {
        StartError::Open(e)
    }
}

impl From<PlatformConfigError> for StartError {
    fn from(e: PlatformConfigError) -> Self {
        StartError::Platform(e)
    }
}

/// Everything `agent-sync status` shows (H2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStatus {
    /// The service's default agent id.
    pub agent_id: String,
    /// Entries in the queue.
    pub queued_entries: u64,
    /// Dispatches in those entries.
    pub queued_dispatches: u64,
    /// Entries refused for good, waiting for an operator.
    pub dead_letters: u64,
    /// Dispatch ids the platform has (with some fingerprint).
    pub ledger_entries: u64,
    /// Items in the cached context.
    pub context_count: usize,
    /// A 401/403 since the last successful push or pull.
    pub auth_failed: bool,
    /// Last successful push.
    pub last_push_at: Option<Timestamp>,
    /// Last successful pull.
    pub last_pull_at: Option<Timestamp>,
    /// The next entry to send, `null` when the queue is empty.
    pub head: Option<HeadSummary>,
}

/// A running agent-sync: start it inside an actix `System`, talk to it with its
/// methods or its actors' addresses, [`stop`](SyncService::stop) it when done.
pub struct SyncService {
    /// The six actors' addresses (all on `arbiter`).
    actors: SyncActors,
    /// The thread they run on; `None` once stopped.
    arbiter: Option<Arbiter>,
    /// Default agent id, reported by status.
    agent_id: String,
    /// Where `sync.redb` lives.
    state_dir: PathBuf,
}

impl SyncService {
    /// Validates the config, opens the state (failing fast if another process holds
    /// it, R2) and starts the actors on a new arbiter. Must run inside a `System`.
    pub fn start(config: SyncConfig) -> Result<SyncService, StartError> {
        Self::start_with(config, |platform| Rc::new(HttpPlatform::new(platform)))
    }

    /// [`start`](Self::start) with another platform client (built on the service
    /// arbiter, since clients are `!Send`).
    pub fn start_with(
        config: SyncConfig,
        platform: impl FnOnce(agent_sync_actors::platform::PlatformConfig) -> Rc<dyn Platform>
            + Send
            + 'static,
    ) -> Result<SyncService, StartError> {
        config.platform.validate()?;
        let store = Store::open(&config.state_dir)?;
        let arbiter = Arbiter::new();
        let (sender, receiver) = std::sync::mpsc::channel();
        let actors_config = config.actors();
        let platform_config = config.platform.clone();
        arbiter.spawn_fn(move || {
            let platform = platform(platform_config);
            let actors = SyncActors::start(store, actors_config, platform, Clock::system());
            let _ = sender.send(actors);
        });
        let actors = match receiver.recv_timeout(Duration::from_secs(10)) {
            Ok(actors) => actors,
            Err(_) => {
                arbiter.stop();
                return Err(StartError::Arbiter);
            }
        };
        Ok(SyncService {
            actors,
            arbiter: Some(arbiter),
            agent_id: config.agent_id,
            state_dir: config.state_dir,
        })
    }

    /// The actors, for hosts that prefer sending messages.
    pub fn actors(&self) -> &SyncActors {
        &self.actors
    }

    /// Where to send [`SyncPush`] from a host actor.
    pub fn push_recipient(&self) -> Recipient<SyncPush> {
        self.actors.pusher.clone().recipient()
    }

    /// Where to send [`SyncPull`] from a host actor.
    pub fn pull_recipient(&self) -> Recipient<SyncPull> {
        self.actors.puller.clone().recipient()
    }

    /// The agent id pushes and pulls default to.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The state directory.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// Scan (unless told otherwise), enqueue, drain once (P1-P6).
    pub async fn push(&self, push: SyncPush) -> Result<PushReport, SyncError> {
        self.actors.pusher.send(push).await?
    }

    /// Pull context, falling back to the cache (L1, L2).
    pub async fn pull(&self, pull: SyncPull) -> Result<PullReport, SyncError> {
        self.actors.puller.send(pull).await?
    }

    /// Rewrite ghost workspaces to `failed` (DESIGN 7.3).
    pub async fn reap_ghosts(&self) -> Result<ReapReport, SyncError> {
        Ok(self.actors.scanner.send(ReapGhosts).await?)
    }

    /// Local status, without touching the network (H2).
    pub async fn status(&self) -> Result<SyncStatus, SyncError> {
        let queue = self.actors.queue.send(QueueStatus).await??;
        let ledger_entries = self.actors.ledger.send(LedgerSize).await??;
        let state = self.actors.history.send(ReadSyncState).await??;
        let context_count = self.actors.puller.send(CachedContext).await??.len();
        Ok(SyncStatus {
            agent_id: self.agent_id.clone(),
            queued_entries: queue.entries,
            queued_dispatches: queue.dispatches,
            dead_letters: queue.dead_letters,
            ledger_entries,
            context_count,
            auth_failed: state.auth_failed,
            last_push_at: state.last_push_at,
            last_pull_at: state.last_pull_at,
            head: queue.head,
        })
    }

    /// The newest `limit` sync records, oldest first.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<SyncRecord>, SyncError> {
        Ok(self.actors.history.send(RecentRecords { limit }).await??)
    }

    /// Queued entries, oldest first.
    pub async fn queue(&self, limit: Option<usize>) -> Result<Vec<QueueEntry>, SyncError> {
        Ok(self.actors.queue.send(ListQueue { limit }).await??)
    }

    /// Dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, SyncError> {
        Ok(self.actors.queue.send(ListDeadLetters).await??)
    }

    /// Move dead letters (all when `seqs` is `None`) back to the queue.
    pub async fn requeue(&self, seqs: Option<Vec<u64>>) -> Result<RequeueReport, SyncError> {
        Ok(self.actors.queue.send(Requeue { seqs }).await??)
    }

    /// The cached context.
    pub async fn context(&self) -> Result<Vec<Value>, SyncError> {
        Ok(self.actors.puller.send(CachedContext).await??)
    }

    /// Stops the actors and waits for their thread to end (R3): an in-flight request
    /// is abandoned and its entry stays queued; the database is closed, so another
    /// process may open it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(arbiter) = self.arbiter.take() {
            arbiter.stop();
            if arbiter.join().is_err() {
                log::error!("the sync arbiter panicked while stopping");
            }
        }
    }
}

impl Drop for SyncService {
    fn drop(&mut self) {
        self.shutdown();
    }
}
