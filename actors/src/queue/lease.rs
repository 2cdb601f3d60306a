//! Leasing: only the head, only while no other lease is out (invariant 3). A lease is
//! memory only; the head it hands out is sealed for good.

use std::sync::Arc;

use actix::prelude::*;
use redb::ReadableTable;

use super::Queue;
use crate::entry::QueueEntry;
use crate::error::StoreError;
use crate::messages::{Lease, LeaseNext, ReleaseLease};
use crate::store::codec::decode_or_warn;
use crate::store::schema::QUEUE;
use crate::time::Timestamp;

/// The one lease out.
#[derive(Debug)]
pub(super) struct Leased {
    /// The entry as handed to the Pusher: its report is applied to this copy.
    pub(super) entry: Arc<QueueEntry>,
    /// When the lease lapses (the Pusher died without reporting).
    pub(super) expires: Timestamp,
}

/// Where [`Queue::head_to_lease`] found the head.
enum Head {
    /// The open tail (kept decoded by the Queue).
    OpenTail,
    /// A resident copy.
    Resident(Arc<QueueEntry>),
    /// Read from its row.
    Decoded(QueueEntry),
}

impl Queue {
    /// Leases the head if it is due and no lease is out; a leased entry is sealed.
    fn lease_next(&mut self) -> Result<Lease, StoreError> {
        let now = self.clock.now();
        if self.held.is_some() {
            return Ok(Lease::InFlight);
        }
        if let Some(lease) = &self.lease {
            if now < lease.expires {
                return Ok(Lease::InFlight);
            }
            log::warn!("a lease on the queue head was never reported; leasing it again");
            self.lease = None;
        }
        let Some(head) = self.head_to_lease()? else {
            return Ok(Lease::Empty);
        };
        if let Some(until) = head.next_attempt.filter(|t| *t > now) {
            return Ok(Lease::Waiting { until });
        }
        self.lease = Some(Leased {
            entry: Arc::clone(&head),
            expires: now.saturating_add(self.config.lease_timeout),
        });
        Ok(Lease::Ready(head))
    }

    /// The head entry, about to be leased: the open tail or a resident copy when it is
    /// one of those (no read of its row beyond the key), else the first row that
    /// decodes; one that does not is skipped with a warning and left in place: never
    /// lost, never blocking. The head leaves the open tail (sealed) or `resident`; a
    /// head that is backing off is never either, since both hold only fresh entries.
    fn head_to_lease(&mut self) -> Result<Option<Arc<QueueEntry>>, StoreError> {
        let first = self.store.read("read the queue head", |txn| {
            let queue = txn.open_table(QUEUE)?;
            for row in queue.iter()? {
                let (seq, bytes) = row?;
                let seq = seq.value();
                if self.open_tail.as_ref().is_some_and(|t| t.entry.seq == seq) {
                    return Ok(Some(Head::OpenTail));
                }
                if let Some(entry) = self.resident.take(seq) {
                    return Ok(Some(Head::Resident(entry)));
                }
                if let Some(entry) = decode_or_warn("queue entry", seq, bytes.value()) {
                    return Ok(Some(Head::Decoded(entry)));
                }
            }
            Ok(None)
        })?;
        Ok(first.and_then(|head| match head {
            Head::OpenTail => self.open_tail.take().map(|t| Arc::new(t.entry)),
            Head::Resident(entry) => Some(entry),
            Head::Decoded(entry) => Some(Arc::new(entry)),
        }))
    }
}

impl Handler<LeaseNext> for Queue {
    type Result = Result<Lease, StoreError>;

    fn handle(&mut self, _: LeaseNext, _: &mut Self::Context) -> Self::Result {
        // An enqueue answered but not yet committed must not be invisible to a lease.
        self.commit_pending();
        self.lease_next()
    }
}

/// Gives the lease back unsent: the Pusher was told to stop after it leased.
impl Handler<ReleaseLease> for Queue {
    type Result = ();

    fn handle(&mut self, msg: ReleaseLease, _: &mut Self::Context) {
        if self.held.is_none() && self.lease.as_ref().is_some_and(|l| l.entry.seq == msg.seq) {
            self.lease = None;
        }
    }
}
