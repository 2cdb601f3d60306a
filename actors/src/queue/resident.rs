//! Decoded copies of the entries the Queue sealed, oldest first, so leasing the head
//! and applying its report cost no decode of JSON the Queue itself just encoded.
//!
//! # Why this is safe
//!
//! The Queue is the only writer of the `queue` table, so an entry it committed and
//! has not changed since is exactly the stored row. The invariants:
//!
//! 1. An entry enters only once it is sealed (it never takes another dispatch) and
//!    only after the commit holding it is durable.
//! 2. Entries are in seq order. An entry leaves when it is leased ([`Resident::take`]),
//!    before anything can change its row (only a report on the leased entry does), or
//!    when the head has moved past it.
//! 3. Bounded by [`RESIDENT_BODY_BYTES`] of request body and [`RESIDENT_ENTRIES`]
//!    entries. An entry that does not fit is simply not kept and is decoded from the
//!    table when its turn comes, so the bound costs speed, never correctness.
//!
//! Memory only: after a restart it is empty and every entry is read from the table.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::entry::QueueEntry;

/// Most request-body bytes kept decoded. A dispatch is held as its JSON text, so this
/// is about the memory held too: 50 full entries of small dispatches, enough for a
/// drain running behind a burst of enqueues to find its heads here.
pub(super) const RESIDENT_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Most entries kept decoded: an entry has its own overhead besides its dispatches,
/// and a backlog of one-dispatch entries gains little from being kept (without this
/// bound, 100,000 of them queued kept 16 MiB resident).
pub(super) const RESIDENT_ENTRIES: usize = 64;

/// Sealed entries, oldest first, with their body sizes.
#[derive(Debug, Default)]
pub(super) struct Resident {
    /// (entry, its request body's bytes), by increasing seq.
    entries: VecDeque<(Arc<QueueEntry>, usize)>,
    /// Sum of the body bytes held.
    bytes: usize,
}

impl Resident {
    /// Keeps `entry`, sealed and durably committed, if it fits the bound and comes
    /// after everything held.
    pub(super) fn keep(&mut self, entry: QueueEntry, body_bytes: usize) {
        let in_order = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.seq < entry.seq);
        if in_order
            && self.entries.len() < RESIDENT_ENTRIES
            && self.bytes + body_bytes <= RESIDENT_BODY_BYTES
        {
            self.bytes += body_bytes;
            self.entries.push_back((Arc::new(entry), body_bytes));
        }
    }

    /// The entry `seq` if it is held, removed from here (it is being leased); entries
    /// before it are gone from the table and are dropped.
    pub(super) fn take(&mut self, seq: u64) -> Option<Arc<QueueEntry>> {
        while let Some((front, bytes)) = self.entries.front() {
            if front.seq > seq {
                return None;
            }
            let bytes = *bytes;
            let front_seq = front.seq;
            let (entry, _) = self.entries.pop_front()?;
            self.bytes -= bytes;
            if front_seq == seq {
                return Some(entry);
            }
        }
        None
    }

    /// Entries held (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn entry(seq: u64) -> QueueEntry {
        QueueEntry {
            seq,
            ..QueueEntry::new("a".into(), None, Vec::new(), Timestamp::from_unix_millis(0))
        }
    }

    #[test]
    fn take_returns_the_head_once_and_drops_what_the_head_passed() {
        let mut resident = Resident::default();
        for seq in [3, 5, 8] {
            resident.keep(entry(seq), 10);
        }
        assert!(resident.take(2).is_none(), "before everything held");
        assert_eq!(resident.len(), 3);
        assert_eq!(resident.take(5).map(|e| e.seq), Some(5), "3 is passed");
        assert_eq!(resident.len(), 1);
        assert!(resident.take(5).is_none(), "taken once");
        assert!(resident.take(9).is_none());
        assert_eq!((resident.len(), resident.bytes), (0, 0));
    }

    #[test]
    fn at_most_resident_entries_are_kept() {
        let mut resident = Resident::default();
        for seq in 0..RESIDENT_ENTRIES as u64 + 5 {
            resident.keep(entry(seq), 1);
        }
        assert_eq!(resident.len(), RESIDENT_ENTRIES);
        assert!(resident.take(RESIDENT_ENTRIES as u64).is_none(), "not kept");
    }

    #[test]
    fn the_bound_and_the_order_are_kept() {
        let mut resident = Resident::default();
        resident.keep(entry(1), RESIDENT_BODY_BYTES - 5);
        resident.keep(entry(2), 10);
        assert_eq!(resident.len(), 1, "over the bound: not kept");
        resident.keep(entry(3), 5);
        resident.keep(entry(2), 0);
        assert_eq!(resident.len(), 2, "out of order: not kept");
        assert_eq!(resident.take(3).map(|e| e.seq), Some(3));
        assert_eq!(resident.bytes, 0);
    }
}
