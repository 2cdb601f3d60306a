//! The scan's [`Peers`] as the Scanner runs it: the Ledger and the Queue asked with
//! ordinary actor messages, each answer awaited on the scan's own (blocking-pool)
//! thread, and what is new sent to the Queue's `Enqueue`, at most one in flight.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::dev::RecipientRequest;
use actix::prelude::*;

use super::block_on::block_on;
use super::walk::Peers;
use super::ScanQueue;
use crate::dispatch::{DispatchKey, ScannedDispatch};
use crate::error::SyncError;
use crate::messages::{Enqueue, EnqueueBatch, EnqueueReceipt, NotQueued, ScanToQueue, Unsynced};

/// A scan's peers, as actor messages awaited on the scan's own thread.
pub(super) struct ActorPeers {
    /// The Ledger's filter.
    pub(super) ledger: Recipient<Unsynced>,
    /// Where what is found is queued.
    pub(super) queue: ScanQueue,
    /// Who the entries are pushed as.
    pub(super) who: ScanToQueue,
    /// The last enqueue, not answered yet.
    pub(super) in_flight: Option<RecipientRequest<Enqueue>>,
    /// What the Queue did, summed.
    pub(super) receipt: EnqueueReceipt,
    /// The Scanner's [`ScanStop`](super::ScanStop): the walk ends early once it is set.
    pub(super) stop: Arc<AtomicBool>,
}

impl ActorPeers {
    /// Waits for the enqueue in flight.
    pub(super) fn wait(&mut self) -> Result<(), SyncError> {
        if let Some(request) = self.in_flight.take() {
            let receipt = block_on(request)??;
            self.receipt.entries += receipt.entries;
            self.receipt.dispatches += receipt.dispatches;
            self.receipt.duplicates += receipt.duplicates;
        }
        Ok(())
    }
}

impl Peers for ActorPeers {
    fn halt(&self) -> Option<Arc<AtomicBool>> {
        Some(self.stop.clone())
    }

    fn unsynced(&mut self, candidates: Vec<DispatchKey>) -> Result<Vec<DispatchKey>, SyncError> {
        Ok(block_on(self.ledger.send(Unsynced { candidates }))??)
    }

    fn not_queued(&mut self, candidates: Vec<DispatchKey>) -> Result<Vec<DispatchKey>, SyncError> {
        Ok(block_on(
            self.queue.not_queued.send(NotQueued { candidates }),
        )??)
    }

    fn deliver(&mut self, found: Vec<ScannedDispatch>) -> Result<(), SyncError> {
        // One enqueue in flight: the previous one is durable before the next is sent.
        self.wait()?;
        self.in_flight = Some(self.queue.enqueue.send(Enqueue {
            agent_id: self.who.agent_id.clone(),
            fleet_node_id: self.who.fleet_node_id,
            batch: EnqueueBatch::Scanned(found),
        }));
        Ok(())
    }
}
