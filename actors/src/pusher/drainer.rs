//! One drain: lease the Queue's head, POST its next part, report the outcome, and
//! again, until the queue is empty, the head backs off, or a stop is asked for. The
//! Pusher runs it as a spawned future (see the module docs of `pusher`).

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use actix_rt::time::Instant;
use tokio::sync::watch;

use super::PushPeers;
use crate::entry::QueueEntry;
use crate::error::{EncodeError, SyncError};
use crate::messages::{Decision, DeliveryOutcome, Lease, LeaseNext, ReleaseLease, Report};
use crate::metrics::{Metrics, RequestOutcome};
use crate::platform::{Platform, PushRequest, Token};
use crate::queue::PushBody;
use crate::time::{Clock, Timestamp};

/// One drain's worth of handles, owned by its future.
pub(super) struct Drainer {
    /// Read when the drain started.
    pub(super) token: Token,
    /// Where requests go.
    pub(super) platform: Rc<dyn Platform>,
    /// Queue, Ledger, History.
    pub(super) peers: PushPeers,
    /// Timestamps for records.
    pub(super) clock: Clock,
    /// The Pusher's delivered counter.
    pub(super) delivered: Rc<Cell<u64>>,
    /// The stop deadline, once a stop is asked for.
    pub(super) stop: watch::Receiver<Option<Instant>>,
    /// Where each request's outcome and duration are counted.
    pub(super) metrics: Metrics,
}

impl Drainer {
    /// Sends until the queue is empty, the head backs off, or a stop is asked for;
    /// returns when to wake up next.
    pub(super) async fn run(mut self) -> Result<Option<Timestamp>, SyncError> {
        let queue = self.peers.queue.clone();
        loop {
            if self.stop.borrow().is_some() {
                return Ok(None);
            }
            let entry = match queue.send(LeaseNext).await?? {
                Lease::Ready(entry) => entry,
                Lease::Waiting { until } => return Ok(Some(until)),
                Lease::Empty | Lease::InFlight => return Ok(None),
            };
            if self.stop.borrow().is_some() {
                // The stop came while the lease was being taken: no request starts.
                queue.send(ReleaseLease { seq: entry.seq }).await?;
                return Ok(None);
            }
            let started = std::time::Instant::now();
            let (outcome, payload_size) = self.send(&entry).await?;
            let took = started.elapsed();
            let decision = queue
                .send(Report {
                    seq: entry.seq,
                    outcome: outcome.clone(),
                    payload_size,
                })
                .await??;
            self.metrics
                .record_request(RequestOutcome::of(&decision), took);
            match decision {
                Decision::Delivered { dispatches } => {
                    self.delivered.set(self.delivered.get() + dispatches as u64);
                    self.metrics.add_delivered(dispatches);
                    log::info!(
                        "pushed entry {}: {dispatches} dispatch(es), {payload_size} bytes",
                        entry.seq
                    );
                }
                Decision::Split => log::info!("entry {} was too large; split in two", entry.seq),
                Decision::DeadLettered { dispatches, status } => {
                    log::warn!(
                        "entry {} refused with HTTP {status}; {dispatches} dispatch(es) moved to dead letters",
                        entry.seq
                    );
                }
                Decision::RetryAt { at, unauthorized } => {
                    log::info!(
                        "push of entry {} failed ({}); retry at {at} (in {:.1}s){}",
                        entry.seq,
                        describe(&outcome),
                        at.duration_since(self.clock.now()).as_secs_f64(),
                        if unauthorized {
                            "; the platform refused the token: check it"
                        } else {
                            ""
                        }
                    );
                    return Ok(Some(at));
                }
            }
        }
    }

    /// POSTs the entry's next part; once a stop is asked for, the request may run
    /// until the stop deadline and then counts as a timeout.
    async fn send(&mut self, entry: &QueueEntry) -> Result<(DeliveryOutcome, u64), SyncError> {
        let body = serde_json::to_vec(&PushBody {
            agent_id: &entry.agent_id,
            fleet_node_id: entry.fleet_node_id,
            dispatches: entry.next_part(),
        })
        .map_err(|e| {
            SyncError::Encode(EncodeError {
                what: "a push body",
                source: Arc::new(e),
            })
        })?;
        let payload_size = body.len() as u64;
        let request = PushRequest {
            body,
            idempotency_key: entry.next_part_key(),
        };
        let mut post = pin!(self.platform.push(&self.token, request));
        let mut deadline = pin!(stop_deadline(self.stop.clone()));
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(outcome) = post.as_mut().poll(cx) {
                return Poll::Ready(outcome);
            }
            deadline
                .as_mut()
                .poll(cx)
                .map(|()| DeliveryOutcome::Network {
                    detail: "no answer before the shutdown deadline".into(),
                })
        })
        .await;
        Ok((outcome, payload_size))
    }
}

/// Resolves at the stop deadline; never, while no stop is asked for.
async fn stop_deadline(mut stop: watch::Receiver<Option<Instant>>) {
    let at = match stop.wait_for(Option::is_some).await {
        Ok(at) => *at,
        Err(_) => None,
    };
    match at {
        Some(at) => actix_rt::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn describe(outcome: &DeliveryOutcome) -> &str {
    match outcome {
        DeliveryOutcome::Delivered { .. } => "delivered",
        DeliveryOutcome::Status { detail, .. } | DeliveryOutcome::Network { detail } => detail,
    }
}
