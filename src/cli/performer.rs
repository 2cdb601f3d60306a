//! Where a command is carried out: a [`SyncService`] this process started on the
//! state, or the running agent-sync that holds it, through its control socket
//! ([`ControlClient`]). Both answer with the same types, so the output (text and
//! `--json`) and the exit code cannot depend on which one did the work.

use agent_sync::actors::entry::{DeadLetter, QueueEntry};
use agent_sync::actors::sync_record::SyncRecord;
use agent_sync::control::wire::{PullCall, PushCall};
use agent_sync::control::ControlClient;
use agent_sync::messages::{PullReport, PushReport, RequeueReport, SyncPull, SyncPush};
use agent_sync::{SyncService, SyncStatus};

use super::error::CliError;

/// The service that performs a command: this process's, or the running one's.
pub enum Performer<'a> {
    /// A service of this process, on the state it opened.
    Local(&'a SyncService),
    /// The process holding the state.
    Remote {
        /// Its control socket.
        client: &'a ControlClient,
        /// `--agent-id` as given on this command line, passed along (the running
        /// process's own id otherwise).
        agent_id: Option<String>,
        /// `--fleet-node-id` as given on this command line, passed along.
        fleet_node_id: Option<i64>,
    },
}

impl Performer<'_> {
    /// `status`.
    pub async fn status(&self) -> Result<SyncStatus, CliError> {
        Ok(match self {
            Performer::Local(service) => service.status().await?,
            Performer::Remote { client, .. } => client.status().await?,
        })
    }

    /// One page of `queue`: entries after seq `after`, at most `limit`.
    pub async fn queue_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<QueueEntry>, CliError> {
        Ok(match self {
            Performer::Local(service) => service.queue_page(after, limit).await?,
            Performer::Remote { client, .. } => client.queue_page(after, limit).await?,
        })
    }

    /// One page of `dead-letters`: dead letters after seq `after`, at most `limit`.
    pub async fn dead_letters_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, CliError> {
        Ok(match self {
            Performer::Local(service) => service.dead_letters_page(after, limit).await?,
            Performer::Remote { client, .. } => client.dead_letters_page(after, limit).await?,
        })
    }

    /// `history`.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<SyncRecord>, CliError> {
        Ok(match self {
            Performer::Local(service) => service.history(limit).await?,
            Performer::Remote { client, .. } => client.history(limit).await?,
        })
    }

    /// `requeue`.
    pub async fn requeue(&self, seqs: Option<Vec<u64>>) -> Result<RequeueReport, CliError> {
        Ok(match self {
            Performer::Local(service) => service.requeue(seqs).await?,
            Performer::Remote { client, .. } => client.requeue(seqs).await?,
        })
    }

    /// `push`.
    pub async fn push(&self, push: SyncPush) -> Result<PushReport, CliError> {
        Ok(match self {
            Performer::Local(service) => service.push(push).await?,
            Performer::Remote {
                client,
                agent_id,
                fleet_node_id,
            } => {
                let body = PushCall {
                    queue_only: push.queue_only,
                    dispatches: push.dispatches,
                    agent_id: push.agent_id.or_else(|| agent_id.clone()),
                    fleet_node_id: push.fleet_node_id.or(*fleet_node_id),
                };
                client.push(&body).await?
            }
        })
    }

    /// `pull`.
    pub async fn pull(&self, pull: SyncPull) -> Result<PullReport, CliError> {
        Ok(match self {
            Performer::Local(service) => service.pull(pull).await?,
            Performer::Remote {
                client, agent_id, ..
            } => {
                let body = PullCall {
                    since: pull.since,
                    agent_id: pull.agent_id.or_else(|| agent_id.clone()),
                };
                client.pull(&body).await?
            }
        })
    }
}
