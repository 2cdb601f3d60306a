//! The platform client the CLI hands to [`SyncService::start_with`]: the real
//! [`HttpPlatform`], plus two things only a command line needs.
//!
//! - **Counting.** The Pusher drains the queue as soon as it starts (whatever
//!   survived a restart goes out at once), and that drain's reply goes to nobody. A
//!   `push` that reported only its own drain would print `synced: 0` after delivering
//!   a backlog. The wrapper counts every dispatch the platform acknowledged during the
//!   process, so `synced: N` is what this invocation delivered.
//! - **Holding.** `pull` must only pull, yet the Pusher's start-up drain would push
//!   the queue. Held pushes never resolve: the head is leased in memory only, so when
//!   the service stops the entry is simply still queued, untouched (no attempt is
//!   counted, nothing is sent).
//!
//! It also logs one `info` line per delivered push, which is the daemon's log of
//! pushes: drains run on the Queue's own timers, out of the daemon loop's sight.
//!
//! [`SyncService::start_with`]: agent_sync::SyncService::start_with

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agent_sync::actors::messages::DeliveryOutcome;
use agent_sync::actors::platform::{
    HttpPlatform, LocalFuture, Platform, PlatformConfig, PullOutcome, PushRequest, Token,
};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Whether the CLI's platform sends pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushes {
    /// `push` and `run`: send, count and log deliveries.
    Send,
    /// Every other command: never send (see the module docs).
    Hold,
}

/// [`HttpPlatform`] with delivery counting and push holding.
pub struct CliPlatform {
    /// The real client (built on the service arbiter: awc is `!Send`).
    inner: HttpPlatform,
    /// Send or hold pushes.
    pushes: Pushes,
    /// Dispatches acknowledged by the platform so far, shared with the command.
    delivered: Arc<AtomicUsize>,
}

impl CliPlatform {
    /// Wraps a new [`HttpPlatform`] for `config`.
    pub fn new(config: PlatformConfig, pushes: Pushes, delivered: Arc<AtomicUsize>) -> Self {
        CliPlatform {
            inner: HttpPlatform::new(config),
            pushes,
            delivered,
        }
    }
}

/// Just enough of a push body to count its dispatches without copying them.
#[derive(Deserialize)]
struct Counted {
    /// One element per dispatch, not kept.
    dispatches: Vec<IgnoredAny>,
}

/// Dispatches in a push body (0 if it cannot be read, which our own bodies always can).
fn count_dispatches(body: &[u8]) -> usize {
    serde_json::from_slice::<Counted>(body).map_or(0, |c| c.dispatches.len())
}

impl Platform for CliPlatform {
    fn push(&self, token: &Token, request: PushRequest) -> LocalFuture<DeliveryOutcome> {
        if self.pushes == Pushes::Hold {
            return Box::pin(std::future::pending());
        }
        let dispatches = count_dispatches(&request.body);
        let delivered = self.delivered.clone();
        let send = self.inner.push(token, request);
        Box::pin(async move {
            let outcome = send.await;
            if let DeliveryOutcome::Delivered { payload_size } = outcome {
                delivered.fetch_add(dispatches, Ordering::Relaxed);
                log::info!("push: delivered {dispatches} dispatch(es), {payload_size} bytes");
            }
            outcome
        })
    }

    fn pull(&self, token: &Token, agent_id: &str, since: Option<&str>) -> LocalFuture<PullOutcome> {
        self.inner.pull(token, agent_id, since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_are_counted_from_the_body() {
        assert_eq!(
            count_dispatches(br#"{"agent_id":"a","dispatches":[{"id":1},{"id":2}]}"#),
            2
        );
        assert_eq!(count_dispatches(b"not json"), 0);
    }
}
