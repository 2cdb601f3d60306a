//! Stopping a [`SyncService`]: gracefully (the request in flight finishes and its
//! outcome is committed, R3) or at once; either way the socket file goes and the
//! database closes, so another process may open it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use agent_sync_actors::messages::{QueueStatus, StopPushing};

use super::SyncService;

/// How long past the shutdown deadline a stop waits for the outcome's commit.
const STOP_MARGIN: Duration = Duration::from_secs(5);

impl SyncService {
    /// Graceful stop (R3): no new request starts; the one in flight completes, or
    /// counts as timed out at the shutdown deadline (`SyncConfig::shutdown_timeout`),
    /// and its outcome is committed; then the control servers stop (calls in progress
    /// may finish), the socket file goes, the actors stop and the database closes, so
    /// another process may open it. Nothing is sent twice after a graceful stop. A scan
    /// or ghost reap in progress ends early (what it queued stays queued).
    pub async fn stop(mut self) {
        self.finish_in_flight().await;
        if let Some(control) = self.control.take() {
            control.stop(true).await;
        }
        self.shutdown();
    }

    /// Stops at once: a scan or ghost reap in progress ends at its next batch or
    /// workspace; a request in flight is abandoned and its entry stays queued (it
    /// is sent again, with the same idempotency key, after the next start).
    pub fn abort(mut self) {
        self.shutdown();
    }

    /// The first half of [`stop`](Self::stop), for callers that keep the service
    /// (the daemon listens for a second signal meanwhile): stops new requests and
    /// waits for the one in flight and any enqueue still being committed.
    pub async fn finish_in_flight(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A scan or ghost reap on the blocking pool ends at its next batch or
        // workspace (what it queued stays; the next start finds the rest): the
        // arbiter's shutdown waits for the blocking pool.
        self.actors.scan_stop.stop();
        let deadline = self.shutdown_timeout;
        let stopped = self.actors.pusher.send(StopPushing { deadline });
        // The Pusher ends the request itself at the deadline; the margin covers the
        // commit of its outcome.
        if actix_rt::time::timeout(deadline + STOP_MARGIN, stopped)
            .await
            .is_err()
        {
            log::warn!("the request in flight did not end by the shutdown deadline; abandoning it");
        }
        // Answering a status commits enqueues still waiting for their group commit.
        let _ = self.actors.queue.send(QueueStatus).await;
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Before the arbiter stops: its runtime waits for the blocking pool when it
        // is dropped, so a walk or reap still running would hold up even an abort.
        self.actors.scan_stop.stop();
        if let Some(arbiter) = self.arbiter.take() {
            // The servers first: nothing may answer on the socket once the state is
            // free for another process.
            if let Some(control) = self.control.take() {
                control.stop_blocking(&arbiter.handle());
            }
            arbiter.stop();
            if arbiter.join().is_err() {
                log::error!("the sync arbiter panicked while stopping");
            }
        }
    }
}

impl Drop for SyncService {
    fn drop(&mut self) {
        self.shutdown();
    }
}
