//! Giving space back (invariant 7): when a report empties the queue, the file is
//! compacted if free pages clearly outweigh live data, between messages, with nothing
//! in flight.

use std::time::Duration;

use actix::prelude::*;

use super::Queue;
use crate::store::{Compaction, COMPACT_MIN_FILE_BYTES};

/// How long a compaction that found a transaction open waits before trying again.
const COMPACT_RETRY: Duration = Duration::from_secs(1);

impl Queue {
    /// After a committed outcome: an emptied queue may give space back.
    pub(super) fn after_outcome(&mut self, empty: bool, ctx: &mut Context<Self>) {
        if empty && !self.compact_pending {
            // After this reply and whatever is already in the mailbox.
            self.compact_pending = true;
            ctx.notify(MaybeCompact);
        }
    }

    /// Compacts the file if the queue's emptying left it sparse (invariant 7).
    fn maybe_compact(&mut self, ctx: &mut Context<Self>) {
        self.compact_pending = false;
        if !self.pending.is_empty() || self.lease.is_some() {
            return;
        }
        let Ok(bytes) = self.store.file_bytes() else {
            return;
        };
        if bytes < self.compact_floor {
            return;
        }
        let floor = |bytes: u64| COMPACT_MIN_FILE_BYTES.max(bytes.saturating_add(bytes / 2));
        match self.store.compact_if_sparse() {
            Ok(Compaction::Compacted { before, after }) => {
                log::info!(
                    "compacted the sync database after a backlog: {before} -> {after} bytes"
                );
                self.compact_floor = floor(after);
            }
            Ok(Compaction::Dense { file_bytes, .. }) => self.compact_floor = floor(file_bytes),
            Ok(Compaction::Busy) => {
                self.compact_pending = true;
                ctx.run_later(COMPACT_RETRY, |act, ctx| act.maybe_compact(ctx));
            }
            Err(e) => {
                log::warn!("{e}");
                self.compact_floor = floor(bytes);
            }
        }
    }
}

/// Internal: the queue emptied; give space back if it is worth it.
#[derive(Message)]
#[rtype(result = "()")]
struct MaybeCompact;

impl Handler<MaybeCompact> for Queue {
    type Result = ();

    fn handle(&mut self, _: MaybeCompact, ctx: &mut Self::Context) {
        self.maybe_compact(ctx);
    }
}
