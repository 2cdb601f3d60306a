//! The chunk pipeline on the scan's thread: candidates gathered into chunks, each
//! chunk asked about (the Queue, then the Ledger about the rest), the cache rows of
//! terminal workspaces written once the Ledger has answered, the records built and
//! delivered in walk order (the steps are in the module docs of `stream`).

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::cache::{Known, WorkspaceRow, Writes};
use super::candidate::{Candidate, RowPlan};
use super::peers::{halted, Peers};
use super::read::{read_report_below, read_status_below, StatusRead};
use super::sys::{Dir, Resolver};
use crate::dispatch::{DispatchKey, ScannedDispatch};
use crate::error::SyncError;

/// The chunk pipeline on the scan's thread.
pub(super) struct Pipeline<'a> {
    /// The root as configured, for messages.
    pub(super) root_path: &'a Path,
    /// The root, opened: records are built below it.
    pub(super) root: &'a Dir,
    /// How paths below the root are opened.
    pub(super) resolver: Resolver,
    /// Candidates per chunk.
    pub(super) chunk_len: usize,
    /// Record bytes per delivery.
    pub(super) chunk_bytes: usize,
    /// The Ledger, the Queue.
    pub(super) peers: &'a mut dyn Peers,
    /// The rows of terminal workspaces, written once the Ledger has answered.
    pub(super) writes: Writes,
    /// Candidates not asked about yet.
    pub(super) chunk: Vec<Candidate>,
    /// Records built, not delivered yet.
    pub(super) records: Vec<ScannedDispatch>,
    /// Bytes of `records` (their JSON).
    pub(super) record_bytes: usize,
    /// Read buffer for rebuilds and reports.
    pub(super) buffer: Vec<u8>,
    /// Records delivered.
    pub(super) found: usize,
    /// `status.json` read again to build a cached dispatch.
    pub(super) rereads: usize,
    /// Why the walk was stopped.
    pub(super) error: Option<SyncError>,
    /// Set when the service stops: no chunk is asked about from then on.
    pub(super) halt: Option<Arc<AtomicBool>>,
}

impl Pipeline<'_> {
    /// Takes one candidate; a full chunk is asked about and built at once.
    pub(super) fn push(&mut self, candidate: Candidate) -> ControlFlow<()> {
        self.chunk.push(candidate);
        if self.chunk.len() < self.chunk_len {
            return ControlFlow::Continue(());
        }
        match self.process() {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                self.error = Some(error);
                ControlFlow::Break(())
            }
        }
    }

    /// The last chunk and the last records.
    pub(super) fn finish(&mut self) -> Result<(), SyncError> {
        self.process()?;
        self.deliver()
    }

    /// Asks about one chunk, builds what is to be queued.
    fn process(&mut self) -> Result<(), SyncError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        if halted(self.halt.as_deref()) {
            return Err(SyncError::Stopped);
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(self.chunk_len));
        let asked = chunk
            .iter()
            .map(|c| DispatchKey {
                id: c.name.clone(),
                fingerprint: c.fingerprint.clone(),
            })
            .collect();
        // The Queue first, then the Ledger about the rest (see the module docs); only
        // what neither holds is built. The enqueue checks both again.
        let not_queued = self.peers.not_queued(asked)?;
        // Every answer keeps the order it was asked in: match them up in one pass each.
        let same =
            |c: &Candidate, d: &DispatchKey| d.id == c.name && d.fingerprint == c.fingerprint;
        let mut free = not_queued.iter().peekable();
        let asked_ledger: Vec<bool> = chunk
            .iter()
            .map(|c| free.next_if(|d| same(c, d)).is_some())
            .collect();
        let unsynced = self.peers.unsynced(not_queued)?;
        let mut pending = unsynced.iter().peekable();
        let mut wanted = Vec::with_capacity(chunk.len());
        for (candidate, asked_ledger) in chunk.iter().zip(asked_ledger) {
            // A queued dispatch is not synced: only one that is not queued can be.
            let is_unsynced = asked_ledger && pending.next_if(|d| same(candidate, d)).is_some();
            wanted.push(is_unsynced);
            let synced = asked_ledger && !is_unsynced;
            if candidate.row == RowPlan::Fresh || (candidate.row == RowPlan::Cached && synced) {
                self.writes.put_workspace(
                    &candidate.name,
                    &WorkspaceRow {
                        signature: candidate.signature,
                        known: Known::Terminal {
                            fingerprint: candidate.fingerprint.clone(),
                            synced,
                        },
                    },
                );
            }
        }
        for (candidate, unsynced) in chunk.into_iter().zip(wanted) {
            if !unsynced {
                continue;
            }
            if let Some(record) = self.build(candidate) {
                self.records.push(record);
                if self.records.len() >= self.chunk_len || self.record_bytes >= self.chunk_bytes {
                    self.deliver()?;
                }
            }
        }
        Ok(())
    }

    /// The record of one candidate (design.md §4.2); `None` when its `status.json` changed
    /// behind a cached signature (the row is dropped: the next scan reads it).
    fn build(&mut self, candidate: Candidate) -> Option<ScannedDispatch> {
        let status = match candidate.status {
            Some(status) => status,
            None => {
                self.rereads += 1;
                match read_status_below(
                    self.root,
                    self.root_path,
                    &candidate.name,
                    self.resolver,
                    &mut self.buffer,
                ) {
                    StatusRead::Parsed(status)
                        if status.is_terminal()
                            && status.fingerprint() == candidate.fingerprint =>
                    {
                        status
                    }
                    _ => {
                        self.writes.delete_workspace(&candidate.name);
                        return None;
                    }
                }
            }
        };
        let report = if candidate.report {
            read_report_below(
                self.root,
                self.root_path,
                &candidate.name,
                self.resolver,
                &mut self.buffer,
            )
        } else {
            None
        };
        let record = status.to_dispatch(&candidate.name, report.as_ref());
        self.record_bytes += record.json_len();
        Some(ScannedDispatch {
            record,
            id: candidate.name,
            fingerprint: candidate.fingerprint,
        })
    }

    fn deliver(&mut self) -> Result<(), SyncError> {
        self.record_bytes = 0;
        if self.records.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let count = records.len();
        self.peers.deliver(records)?;
        self.found += count;
        Ok(())
    }
}
