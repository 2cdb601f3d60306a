//! [`SyncStatus`]: what `agent-sync status` shows (H2), read from the actors without
//! touching the network. A [`SyncService`](crate::SyncService) answers it locally and
//! the control API's `/v1/status` over the socket, from the same `status_of`.

use agent_sync_actors::messages::{
    CachedContext, DatabaseSize, HeadSummary, LedgerSize, QueueStatus, ReadSyncState,
};
use agent_sync_actors::time::Timestamp;
use agent_sync_actors::{SyncActors, SyncError};
use serde::{Deserialize, Serialize};

/// Everything `agent-sync status` shows (H2); also the body of the control API's
/// `/v1/status`, hence `Deserialize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Size of `sync.redb` in bytes (it shrinks again after a backlog is delivered).
    /// Absent from the answer of an older daemon: 0.
    #[serde(default)]
    pub db_bytes: u64,
    /// A 401/403 since the last successful push or pull.
    pub auth_failed: bool,
    /// Last successful push.
    pub last_push_at: Option<Timestamp>,
    /// Last successful pull.
    pub last_pull_at: Option<Timestamp>,
    /// The next entry to send, `null` when the queue is empty.
    pub head: Option<HeadSummary>,
    /// Kernel watches held by the tree watcher; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watches: Option<u64>,
    /// Most watches it may hold; absent without a watcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_budget: Option<u64>,
}

/// The status of the actors behind `actors` (H2): what [`SyncService::status`] and
/// the control API's `/v1/status` answer.
pub(crate) async fn status_of(
    actors: &SyncActors,
    agent_id: &str,
) -> Result<SyncStatus, SyncError> {
    let queue = actors.queue.send(QueueStatus).await??;
    let ledger_entries = actors.ledger.send(LedgerSize).await??;
    let state = actors.history.send(ReadSyncState).await??;
    let context_count = actors.puller.send(CachedContext).await??.len();
    let db_bytes = actors.queue.send(DatabaseSize).await??;
    Ok(SyncStatus {
        agent_id: agent_id.to_string(),
        queued_entries: queue.entries,
        queued_dispatches: queue.dispatches,
        dead_letters: queue.dead_letters,
        ledger_entries,
        context_count,
        db_bytes,
        auth_failed: state.auth_failed,
        last_push_at: state.last_push_at,
        last_pull_at: state.last_pull_at,
        head: queue.head,
        watches: actors.watch.active().then(|| actors.watch.watches() as u64),
        watch_budget: actors.watch.active().then(|| actors.watch.budget() as u64),
    })
}
