//! Stopping the Scanner's blocking work early, when the service stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Ends the Scanner's blocking work early: a scan's walk (between candidate batches,
/// and on the walk's workers at each workspace) and a ghost reap (before each
/// workspace). That work runs on tokio's blocking pool, which a runtime's shutdown
/// waits for, so without this a stop, even an abort, would wait for a whole walk of
/// the tree (a reap of 20,000 ghosts: 10 s of fsyncs). Set once, when a stop or an
/// abort of the service begins, and never cleared: from then on every scan answers
/// [`SyncError::Stopped`](crate::error::SyncError::Stopped) and every reap rewrites
/// nothing. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct ScanStop(Arc<AtomicBool>);

impl ScanStop {
    /// Asks the scan or reap in progress, and every later one, to end early.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for the walk's worker threads.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}
