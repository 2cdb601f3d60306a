//! What a host asks of a running [`SyncService`]: push, pull, status, the listings,
//! requeueing, reaping. Each is a message to one actor (a page per message for the
//! listings), awaited.

use agent_sync_actors::entry::{DeadLetter, QueueEntry};
use agent_sync_actors::messages::{
    CachedContext, ListDeadLetters, ListQueue, NamedScanSummary, PullReport, PushReport,
    ReapGhosts, ReapReport, ReapRunning, RecentRecords, Requeue, RequeueReport, ScanWorkspaces,
    SyncPull, SyncPush,
};
use agent_sync_actors::sync_record::SyncRecord;
use agent_sync_actors::SyncError;
use serde_json::Value;

use super::SyncService;
use crate::paging::collect_pages;
use crate::status::{status_of, SyncStatus};

impl SyncService {
    /// Scans exactly the named workspaces (a host that knows which finished) and
    /// queues what is new; the Pusher drains at once. Names outside the root are
    /// refused, reported in the answer.
    pub async fn scan_workspaces(&self, names: Vec<String>) -> Result<NamedScanSummary, SyncError> {
        let scan = ScanWorkspaces {
            names,
            agent_id: self.agent_id.clone(),
            fleet_node_id: self.watch_setup.fleet_node_id,
        };
        self.actors.scanner.send(scan).await?
    }

    /// Scan (unless told otherwise), enqueue, drain once (P1-P6).
    pub async fn push(&self, push: SyncPush) -> Result<PushReport, SyncError> {
        self.actors.pusher.send(push).await?
    }

    /// Pull context, falling back to the cache (L1, L2).
    pub async fn pull(&self, pull: SyncPull) -> Result<PullReport, SyncError> {
        self.actors.puller.send(pull).await?
    }

    /// Rewrite ghost workspaces to `failed` (design.md §7.3).
    pub async fn reap_ghosts(&self) -> Result<ReapReport, SyncError> {
        Ok(self.actors.scanner.send(ReapGhosts).await?)
    }

    /// Reap ghosts among the workspaces the rescan cache knows to be running only:
    /// pid liveness first, no file read unless a pid is gone (design.md §7.3).
    pub async fn reap_running(&self) -> Result<ReapReport, SyncError> {
        Ok(self.actors.scanner.send(ReapRunning).await?)
    }

    /// Local status, without touching the network (H2).
    pub async fn status(&self) -> Result<SyncStatus, SyncError> {
        status_of(&self.actors, &self.agent_id).await
    }

    /// The newest `limit` sync records, oldest first.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<SyncRecord>, SyncError> {
        Ok(self.actors.history.send(RecentRecords { limit }).await??)
    }

    /// Queued entries, oldest first: the first `limit` (all when `None`), asked of
    /// the Queue a page ([`LIST_PAGE`](crate::paging::LIST_PAGE)) per
    /// message, so that no message decodes the whole backlog and the Queue's mailbox
    /// is never held for long.
    pub async fn queue(&self, limit: Option<usize>) -> Result<Vec<QueueEntry>, SyncError> {
        collect_pages(limit, |after, want| self.queue_page(after, want)).await
    }

    /// One page of queued entries, oldest first: seqs after `after`, at most `limit`.
    /// The next page is after the last seq of this one; an empty page is the end.
    pub async fn queue_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<QueueEntry>, SyncError> {
        let list = ListQueue {
            after,
            limit: Some(limit),
        };
        Ok(self.actors.queue.send(list).await??)
    }

    /// Dead letters, oldest first, a page
    /// ([`LIST_PAGE`](crate::paging::LIST_PAGE)) per message.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, SyncError> {
        collect_pages(None, |after, want| self.dead_letters_page(after, want)).await
    }

    /// One page of dead letters, oldest first, paged like [`queue_page`](Self::queue_page).
    pub async fn dead_letters_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, SyncError> {
        let list = ListDeadLetters {
            after,
            limit: Some(limit),
        };
        Ok(self.actors.queue.send(list).await??)
    }

    /// Move dead letters (all when `seqs` is `None`) back to the queue.
    pub async fn requeue(&self, seqs: Option<Vec<u64>>) -> Result<RequeueReport, SyncError> {
        Ok(self.actors.queue.send(Requeue { seqs }).await??)
    }

    /// The cached context.
    pub async fn context(&self) -> Result<Vec<Value>, SyncError> {
        Ok(self.actors.puller.send(CachedContext).await??)
    }
}
