//! What a scan asks and tells the other actors, as the walk sees them: a trait, so the
//! same pipeline runs against the Scanner's actor messages, a bare walk that keeps
//! everything, and the stand-ins of the tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dispatch::{DispatchKey, ScannedDispatch};
use crate::error::SyncError;

/// What a scan asks and tells the other actors; the Scanner answers with actor
/// messages, a bare walk with nothing.
pub(crate) trait Peers {
    /// The candidates whose (id, fingerprint) the Ledger does not hold, in order.
    fn unsynced(&mut self, candidates: Vec<DispatchKey>) -> Result<Vec<DispatchKey>, SyncError>;

    /// Of these, the ones the Queue does not hold yet, in order.
    fn not_queued(&mut self, candidates: Vec<DispatchKey>) -> Result<Vec<DispatchKey>, SyncError>;

    /// The next records, in walk order.
    fn deliver(&mut self, found: Vec<ScannedDispatch>) -> Result<(), SyncError>;

    /// A flag that, once set, ends the scan early with [`SyncError::Stopped`] (the
    /// Scanner's `ScanStop`); `None`: the scan always runs to the end.
    fn halt(&self) -> Option<Arc<AtomicBool>> {
        None
    }
}

/// Whether `halt` is set.
pub(super) fn halted(halt: Option<&AtomicBool>) -> bool {
    halt.is_some_and(|h| h.load(Ordering::SeqCst))
}
