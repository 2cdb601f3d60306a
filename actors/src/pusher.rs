//! The Pusher: drains the Queue to the platform.
//!
//! One drain at a time (an [`AtomicResponse`]: a drain's awaits never interleave with
//! another's): lease the head, POST its next part with the Bearer token and the
//! entry's `Idempotency-Key`, report the outcome to the Queue, and act on the
//! Queue's [`Decision`]. A delivery is written Ledger -> History -> Queue so the
//! Queue's durable commit carries all three (see `store`).
//!
//! Timers, not polling: after a drain stops on a backing-off head, the Pusher sleeps
//! until that head's `next_attempt`; the Queue wakes it at once on a new enqueue
//! ([`QueueChanged`]). The flush interval is only a safety net.

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::error::{DispatchError, SyncError};
use crate::history::History;
use crate::ledger::Ledger;
use crate::messages::*;
use crate::model::{json_kind, Direction, Dispatch, QueueEntry, SyncRecord};
use crate::platform::{Platform, PushRequest, Token, TokenSource};
use crate::queue::Queue;
use crate::scanner::Scanner;
use crate::time::{Clock, Timestamp};

/// Who the Pusher pushes as, and how often it checks the queue regardless.
#[derive(Clone, Debug)]
pub struct PusherConfig {
    /// Default agent id for pushes that do not name one.
    pub agent_id: String,
    /// Default fleet node id.
    pub fleet_node_id: Option<i64>,
    /// Safety-net drain interval (`None`: only timers and wake-ups).
    pub flush_interval: Option<Duration>,
    /// Drain once at start, so whatever survived a restart goes out without waiting
    /// for a push (a daemon or host wants this; a one-shot `pull` does not).
    pub drain_on_start: bool,
    /// Entries leased, sent in order and reported together (see `queue`).
    pub lease_window: usize,
}

/// The actors the Pusher talks to.
#[derive(Clone)]
pub struct PushPeers {
    /// Finds dispatches.
    pub scanner: Addr<Scanner>,
    /// Marks delivered fingerprints.
    pub ledger: Addr<Ledger>,
    /// Owns what is queued.
    pub queue: Addr<Queue>,
    /// Records syncs.
    pub history: Addr<History>,
}

/// Owns the platform client for pushes.
pub struct Pusher {
    /// Default identity and flush interval.
    config: PusherConfig,
    /// Read before every drain (a key may appear while we run).
    tokens: TokenSource,
    /// awc client or a test stand-in.
    platform: Rc<dyn Platform>,
    /// Scanner, Ledger, Queue, History.
    peers: PushPeers,
    /// Source of "now" for the wake timer.
    clock: Clock,
    /// The pending wake-up at the head's `next_attempt`.
    wake: Option<SpawnHandle>,
}

impl Pusher {
    /// A Pusher; `platform` must have been built on the arbiter the Pusher runs on.
    pub fn new(
        config: PusherConfig,
        tokens: TokenSource,
        platform: Rc<dyn Platform>,
        peers: PushPeers,
        clock: Clock,
    ) -> Self {
        Pusher {
            config,
            tokens,
            platform,
            peers,
            clock,
            wake: None,
        }
    }

    /// Runs `work` (enqueue, then drain) as one atomic step, then re-arms the timer.
    fn atomic<F>(&mut self, work: F) -> AtomicResponse<Self, Result<PushReport, SyncError>>
    where
        F: std::future::Future<Output = Result<(PushReport, Option<Timestamp>), SyncError>>
            + 'static,
    {
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |result, act, ctx| match result {
                Ok((report, wake_at)) => {
                    act.arm_wake(ctx, wake_at);
                    Ok(report)
                }
                Err(e) => Err(e),
            },
        )))
    }

    /// Wakes the Pusher at `at`, replacing an earlier wake-up. Nothing to wake for
    /// (an empty queue, no token, a window still leased) keeps a pending one: a spare
    /// wake-up only costs an empty drain, a lost one would strand a backed-off entry.
    fn arm_wake(&mut self, ctx: &mut Context<Self>, at: Option<Timestamp>) {
        let Some(at) = at else { return };
        if let Some(handle) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        let delay = at.duration_since(self.clock.now());
        self.wake = Some(ctx.notify_later(Drain, delay));
    }

    fn drainer(&self, token: Token) -> Drainer {
        Drainer {
            token,
            platform: self.platform.clone(),
            peers: self.peers.clone(),
            clock: self.clock,
            window: self.config.lease_window.max(1),
        }
    }
}

impl Actor for Pusher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(every) = self.config.flush_interval.filter(|d| !d.is_zero()) {
            ctx.run_interval(every, |_, ctx| ctx.notify(Drain));
        }
        if self.config.drain_on_start {
            ctx.notify(Drain);
        }
    }
}

impl Handler<SyncPush> for Pusher {
    type Result = AtomicResponse<Self, Result<PushReport, SyncError>>;

    fn handle(&mut self, msg: SyncPush, _: &mut Self::Context) -> Self::Result {
        let agent_id = msg.agent_id.unwrap_or_else(|| self.config.agent_id.clone());
        let fleet_node_id = msg.fleet_node_id.or(self.config.fleet_node_id);
        let token = self.tokens.read();
        let peers = self.peers.clone();
        let drainer = token.map(|t| self.drainer(t));
        self.atomic(async move {
            let batch = match msg.dispatches {
                Some(values) => Some(EnqueueBatch::Host(validate_dispatches(values)?)),
                // P3: offline, a scan would be thrown away (it finds them again later).
                None if msg.queue_only || drainer.is_none() => None,
                None => Some(EnqueueBatch::Scanned(
                    peers.scanner.send(Scan).await??.unsynced,
                )),
            };
            if let Some(batch) = batch.filter(|b| !b.is_empty()) {
                peers
                    .queue
                    .send(Enqueue {
                        agent_id,
                        fleet_node_id,
                        batch,
                    })
                    .await??;
            }
            match drainer {
                Some(drainer) => drainer.run().await,
                None => Ok((
                    PushReport {
                        count: 0,
                        queued: queued(&peers).await?,
                    },
                    None,
                )),
            }
        })
    }
}

impl Handler<Drain> for Pusher {
    type Result = AtomicResponse<Self, Result<PushReport, SyncError>>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let drainer = self.tokens.read().map(|t| self.drainer(t));
        let peers = self.peers.clone();
        self.atomic(async move {
            match drainer {
                Some(drainer) => drainer.run().await,
                None => Ok((
                    PushReport {
                        count: 0,
                        queued: queued(&peers).await?,
                    },
                    None,
                )),
            }
        })
    }
}

impl Handler<QueueChanged> for Pusher {
    type Result = ();

    fn handle(&mut self, _: QueueChanged, ctx: &mut Self::Context) {
        ctx.notify(Drain);
    }
}

/// Host dispatches must all be JSON objects; one bad element refuses the whole call.
pub fn validate_dispatches(values: Vec<Value>) -> Result<Vec<Dispatch>, DispatchError> {
    if let Some((index, bad)) = values.iter().enumerate().find(|(_, v)| !v.is_object()) {
        return Err(DispatchError::NotAnObject {
            index,
            found: json_kind(bad),
        });
    }
    Ok(values
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(object) => Some(object),
            _ => None,
        })
        .collect())
}

async fn queued(peers: &PushPeers) -> Result<u64, SyncError> {
    Ok(peers.queue.send(QueueStatus).await??.dispatches)
}

/// The body of `POST /v1/agent/sync`.
#[derive(Serialize)]
struct PushBody<'a> {
    agent_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet_node_id: Option<i64>,
    dispatches: &'a [Dispatch],
}

/// One drain's worth of handles, owned by its future.
struct Drainer {
    token: Token,
    platform: Rc<dyn Platform>,
    peers: PushPeers,
    clock: Clock,
    /// Entries per leased window.
    window: usize,
}

impl Drainer {
    /// Sends until the queue is empty or the head backs off; returns what was
    /// delivered and when to wake up next.
    async fn run(self) -> Result<(PushReport, Option<Timestamp>), SyncError> {
        let peers = &self.peers;
        let mut count = 0;
        let wake_at = loop {
            let entries = match peers.queue.send(LeaseWindow { max: self.window }).await?? {
                LeasedWindow::Ready(entries) => entries,
                LeasedWindow::Waiting { until } => break Some(until),
                LeasedWindow::Empty | LeasedWindow::InFlight => break None,
            };
            let sent = self.send_window(&entries).await?;
            // Ledger and History first (non-durable), then the Queue's durable commit
            // carries all three: see `store` crash semantics.
            let delivered: Vec<(&QueueEntry, &Sent)> = entries
                .iter()
                .zip(&sent)
                .filter(|(_, s)| matches!(s.outcome, DeliveryOutcome::Delivered { .. }))
                .collect();
            if !delivered.is_empty() {
                let fingerprints = delivered
                    .iter()
                    .flat_map(|(e, _)| e.next_part_fingerprints())
                    .collect();
                peers.ledger.send(MarkSynced { fingerprints }).await??;
                let records = delivered
                    .iter()
                    .map(|(e, s)| {
                        self.record(e, Direction::Push, e.next_part_len(), s.payload_size)
                    })
                    .collect();
                peers.history.send(RecordMany(records)).await??;
            }
            let outcomes = entries
                .iter()
                .zip(&sent)
                .map(|(e, s)| (e.seq, s.outcome.clone()))
                .collect();
            let decisions = peers.queue.send(ReportWindow { outcomes }).await??;
            let mut retry_at = None;
            let mut dead = Vec::new();
            for ((entry, sent), decision) in entries.iter().zip(&sent).zip(decisions) {
                match decision {
                    Decision::Delivered { dispatches } => {
                        log::info!(
                            "pushed entry {}: {dispatches} dispatch(es), {} bytes",
                            entry.seq,
                            sent.payload_size
                        );
                        count += dispatches;
                    }
                    Decision::Split => {
                        log::info!("entry {} was too large; split in two", entry.seq)
                    }
                    Decision::DeadLettered { dispatches, status } => {
                        log::warn!(
                            "entry {} refused with HTTP {status}; {dispatches} dispatch(es) moved to dead letters",
                            entry.seq
                        );
                        dead.push(self.record(
                            entry,
                            Direction::DeadLetter,
                            dispatches,
                            sent.payload_size,
                        ));
                    }
                    Decision::RetryAt { at, unauthorized } => {
                        if unauthorized {
                            peers.history.send(SetAuthFailed(true)).await??;
                        }
                        log::info!(
                            "push of entry {} failed ({}); retry at {at}",
                            entry.seq,
                            describe(&sent.outcome)
                        );
                        retry_at = Some(at);
                    }
                }
            }
            if !dead.is_empty() {
                peers.history.send(RecordMany(dead)).await??;
            }
            if retry_at.is_some() {
                break retry_at;
            }
        };
        let queued = queued(peers).await?;
        Ok((PushReport { count, queued }, wake_at))
    }

    /// POSTs the window's entries one at a time, in order. Stops after anything but a
    /// 2xx (the Queue's decision may reorder: a split, a backoff), after an entry with
    /// parts still to send (they go before the next entry), and once the window's time
    /// budget is spent (it bounds what a crash can make us send again).
    async fn send_window(&self, entries: &[QueueEntry]) -> Result<Vec<Sent>, SyncError> {
        let started = actix_rt::time::Instant::now();
        let mut sent = Vec::with_capacity(entries.len());
        for entry in entries {
            let body = serde_json::to_vec(&PushBody {
                agent_id: &entry.agent_id,
                fleet_node_id: entry.fleet_node_id,
                dispatches: entry.next_part(),
            })
            .map_err(|e| SyncError::Store(crate::error::StoreError::new("encode a push", e)))?;
            let payload_size = body.len() as u64;
            let request = PushRequest {
                body,
                idempotency_key: entry.next_part_key(),
            };
            let outcome = self.platform.push(&self.token, request).await;
            let delivered = matches!(outcome, DeliveryOutcome::Delivered { .. });
            sent.push(Sent {
                outcome,
                payload_size,
            });
            if !delivered || entry.parts.len() > 1 || started.elapsed() >= WINDOW_BUDGET {
                break;
            }
        }
        Ok(sent)
    }

    fn record(
        &self,
        entry: &QueueEntry,
        direction: Direction,
        items: usize,
        payload_size: u64,
    ) -> SyncRecord {
        SyncRecord {
            agent_id: entry.agent_id.clone(),
            fleet_node_id: entry.fleet_node_id,
            direction,
            payload_size,
            items_count: items as u64,
            synced_at: self.clock.now().whole_seconds(),
        }
    }
}

/// One POST of a window and what came of it.
struct Sent {
    outcome: DeliveryOutcome,
    payload_size: u64,
}

/// How long one window may keep delivering before its outcomes are committed.
const WINDOW_BUDGET: Duration = Duration::from_millis(100);

fn describe(outcome: &DeliveryOutcome) -> &str {
    match outcome {
        DeliveryOutcome::Delivered { .. } => "delivered",
        DeliveryOutcome::Status { detail, .. } | DeliveryOutcome::Network { detail } => detail,
    }
}
