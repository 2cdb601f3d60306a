//! A candidate: a terminal workspace the rescan cache does not know to be synced, on
//! its way from the walk (the parallel walk, or named workspaces) to the scan's chunk
//! pipeline, where the Queue and the Ledger are asked about it; and what a walk
//! counted on the way.

use super::read::REPORT_FILE;
use super::rules::Workspace;
use super::sys::Signature;
use crate::status::WorkspaceStatus;

/// A terminal workspace the cache does not know to be synced: the Ledger is asked.
#[derive(Debug)]
pub(crate) struct Candidate {
    /// Workspace name = dispatch id.
    pub name: String,
    /// Its fingerprint now.
    pub fingerprint: String,
    /// Its parsed `status.json`; `None` when the cache answered (it is read again
    /// only if the dispatch is to be queued).
    pub status: Option<WorkspaceStatus>,
    /// Its `status.json`'s signature.
    pub signature: Signature,
    /// `false` when the walk saw no `.meta/report.json` (the builder then does not
    /// try to open one); `true` when it may be there or was not looked for.
    pub report: bool,
    /// What the caller writes to the cache once the Ledger has answered.
    pub row: RowPlan,
}

impl Candidate {
    /// A terminal workspace whose `status.json` was just read: its row is stored once
    /// the Ledger answered if the file has settled, else nothing is stored (racy).
    pub(crate) fn read_afresh(
        ws: &Workspace<'_>,
        status: WorkspaceStatus,
        signature: Signature,
        settled: bool,
    ) -> Candidate {
        Candidate {
            name: ws.name.to_string(),
            fingerprint: status.fingerprint(),
            status: Some(status),
            signature,
            // Looked for here, on a worker, rather than opened on the scan's thread
            // for every candidate: most workspaces have no report.
            report: ws.may_have(REPORT_FILE),
            row: if settled {
                RowPlan::Fresh
            } else {
                RowPlan::Racy
            },
        }
    }
}

/// The cache row a [`Candidate`] leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowPlan {
    /// Read afresh and settled: store it, synced or not.
    Fresh,
    /// From the cache, stored as unsynced: rewrite it only if it is synced now.
    Cached,
    /// Too recent to store (racy): write nothing.
    Racy,
}

/// What a walk counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Workspaces found (any status).
    pub workspaces: usize,
    /// Workspaces skipped (corrupt or unreadable `status.json`).
    pub skipped: usize,
    /// `status.json` files read.
    pub status_reads: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.workspaces += other.workspaces;
        self.skipped += other.skipped;
        self.status_reads += other.status_reads;
    }
}
