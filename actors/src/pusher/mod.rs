//! The Pusher: drains the Queue to the platform, one request at a time.
//!
//! Its part of a push (design.md §3.1, steps 4-6): lease the head ([`LeaseNext`]),
//! POST its next part, [`Report`] the outcome to the Queue and wait for its commit;
//! only then the next lease. What is specific to the Pusher is below.
//!
//! The drain runs as a spawned future (`drainer`) under a small state machine
//! (`DrainState`), not as an atomic handler: the Pusher's mailbox stays open while a
//! POST waits, so a [`SyncPush`] scans and enqueues durably at once, whatever the
//! platform does, and only its reply waits for the drain that follows.
//!
//! Timers, not polling: after a drain stops on a backing-off head, the Pusher sleeps
//! until that head's `next_attempt`; the Queue wakes it at once on a new enqueue
//! ([`QueueChanged`]). The flush interval is only a safety net.
//!
//! Graceful stop ([`StopPushing`]): no new request starts (a lease taken while the stop
//! arrived is given back unsent, [`ReleaseLease`]); the one in flight may run until
//! the deadline, after which it counts as timed out; either way its outcome is
//! committed before the reply, so nothing is sent twice after the restart (R3). A 2xx
//! counts on its status line, so a body that stalls past the deadline is delivered.

mod drainer;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::time::Instant;
use tokio::sync::{oneshot, watch};

use crate::dispatch::validate_dispatches;
use crate::error::SyncError;
use crate::messages::*;
use crate::metrics::Metrics;
use crate::platform::{Platform, TokenSource};
use crate::queue::Queue;
use crate::scanner::Scanner;
use crate::time::{Clock, Timestamp};
use drainer::Drainer;

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
}

/// The actors the Pusher talks to.
#[derive(Clone)]
pub struct PushPeers {
    /// Finds dispatches.
    pub scanner: Addr<Scanner>,
    /// Owns what is queued, and records each outcome.
    pub queue: Addr<Queue>,
}

/// Who waits for a drain to end.
type Waiter = oneshot::Sender<Result<(), SyncError>>;

/// At most one drain runs; requests that come meanwhile are served by one more.
#[derive(Default)]
struct DrainState {
    /// A drain future is running.
    running: bool,
    /// Waiting for the running drain.
    current: Vec<Waiter>,
    /// Asked for while a drain ran (it may already have passed their work): one more
    /// drain runs after it, and these wait for that one.
    again: Option<Vec<Waiter>>,
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
    /// Whether a drain runs and who waits.
    drain: DrainState,
    /// Dispatches delivered since start: a push's count is the difference across it.
    delivered: Rc<Cell<u64>>,
    /// Set once by [`StopPushing`]: when the request in flight must end. `None` while
    /// running normally.
    stop: watch::Sender<Option<Instant>>,
    /// Request counters and durations, scan durations (`/metrics`).
    metrics: Metrics,
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
            drain: DrainState::default(),
            delivered: Rc::new(Cell::new(0)),
            stop: watch::Sender::new(None),
            metrics: Metrics::new(),
        }
    }

    /// Counts requests and scans into `metrics` (shared with whoever exports them).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    fn stop_asked(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Asks for a drain; `waiter` (if any) is answered when it has ended.
    fn request_drain(&mut self, ctx: &mut Context<Self>, waiter: Option<Waiter>) {
        if self.stop_asked() {
            if let Some(waiter) = waiter {
                let _ = waiter.send(Ok(()));
            }
            return;
        }
        if self.drain.running {
            self.drain.again.get_or_insert_with(Vec::new).extend(waiter);
            return;
        }
        self.drain.current.extend(waiter);
        self.start_drain(ctx);
    }

    fn start_drain(&mut self, ctx: &mut Context<Self>) {
        let Some(token) = self.tokens.read() else {
            // Offline: nothing can be sent; what is queued stays queued.
            self.finish_drain(ctx, Ok(None));
            return;
        };
        self.drain.running = true;
        let drainer = Drainer {
            token,
            platform: self.platform.clone(),
            peers: self.peers.clone(),
            clock: self.clock,
            delivered: self.delivered.clone(),
            stop: self.stop.subscribe(),
            metrics: self.metrics.clone(),
        };
        ctx.spawn(
            drainer
                .run()
                .into_actor(self)
                .map(|result, act, ctx| act.finish_drain(ctx, result)),
        );
    }

    /// Answers the drain's waiters, re-arms the timer, and runs the drain asked for
    /// meanwhile.
    fn finish_drain(
        &mut self,
        ctx: &mut Context<Self>,
        result: Result<Option<Timestamp>, SyncError>,
    ) {
        self.drain.running = false;
        let answer = result.as_ref().map(|_| ()).map_err(Clone::clone);
        let waiters = std::mem::take(&mut self.drain.current);
        let told = !waiters.is_empty();
        for waiter in waiters {
            let _ = waiter.send(answer.clone());
        }
        match result {
            Ok(wake_at) => self.arm_wake(ctx, wake_at),
            // A caller reports the error itself (a CLI's stderr starts with it); a
            // timer's drain has no caller, so the log is the only report.
            Err(e) if told => log::debug!("drain stopped: {e}"),
            Err(e) => log::error!("drain stopped: {e}"),
        }
        if let Some(waiters) = self.drain.again.take() {
            if self.stop_asked() {
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
            } else {
                self.drain.current = waiters;
                self.start_drain(ctx);
            }
        }
    }

    /// Wakes the Pusher at `at`, replacing an earlier wake-up. Nothing to wake for
    /// (an empty queue, no token) keeps a pending one: a spare wake-up only costs an
    /// empty drain, a lost one would strand a backed-off entry.
    fn arm_wake(&mut self, ctx: &mut Context<Self>, at: Option<Timestamp>) {
        let Some(at) = at else { return };
        if self.stop_asked() {
            return;
        }
        if let Some(handle) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        let delay = at.duration_since(self.clock.now());
        self.wake = Some(ctx.notify_later(Wake, delay));
    }

    /// A future that answers with the report of a call that began at `before`, once
    /// `waiter` (a drain) has ended.
    fn report_after(
        &self,
        before: u64,
        drained: Option<oneshot::Receiver<Result<(), SyncError>>>,
    ) -> impl Future<Output = Result<PushReport, SyncError>> + 'static {
        let delivered = self.delivered.clone();
        let queue = self.peers.queue.clone();
        async move {
            if let Some(drained) = drained {
                drained.await.map_err(|_| SyncError::Stopped)??;
            }
            Ok(PushReport {
                count: (delivered.get() - before) as usize,
                queued: queue.send(QueueStatus).await??.dispatches,
            })
        }
    }
}

impl Actor for Pusher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(every) = self.config.flush_interval.filter(|d| !d.is_zero()) {
            ctx.run_interval(every, |act, ctx| act.request_drain(ctx, None));
        }
        if self.config.drain_on_start {
            self.request_drain(ctx, None);
        }
    }
}

impl Handler<SyncPush> for Pusher {
    type Result = ResponseFuture<Result<PushReport, SyncError>>;

    fn handle(&mut self, msg: SyncPush, ctx: &mut Self::Context) -> Self::Result {
        let before = self.delivered.get();
        let agent_id = msg.agent_id.unwrap_or_else(|| self.config.agent_id.clone());
        let fleet_node_id = msg.fleet_node_id.or(self.config.fleet_node_id);
        let online = self.tokens.read().is_some();
        let peers = self.peers.clone();
        let pusher = ctx.address();
        let report = self.report_after(before, None);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let batch = match msg.dispatches {
                Some(values) => Some(EnqueueBatch::Host(validate_dispatches(values)?)),
                // P3: offline, a scan would be thrown away (it finds them again later).
                None if msg.queue_only || !online => None,
                None => {
                    // The Scanner queues what is new itself, chunk by chunk, through the
                    // same Enqueue (coalescing, dedup): memory stays flat however large
                    // the tree, and a failure part-way keeps what was queued.
                    let started = std::time::Instant::now();
                    let scanned = peers
                        .scanner
                        .send(ScanToQueue {
                            agent_id: agent_id.clone(),
                            fleet_node_id,
                        })
                        .await?;
                    metrics.observe_scan(started.elapsed());
                    scanned?;
                    None
                }
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
            if online {
                pusher.send(Drain).await??;
            }
            report.await
        })
    }
}

impl Handler<Drain> for Pusher {
    type Result = ResponseFuture<Result<PushReport, SyncError>>;

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        let before = self.delivered.get();
        let (waiter, drained) = oneshot::channel();
        self.request_drain(ctx, Some(waiter));
        Box::pin(self.report_after(before, Some(drained)))
    }
}

/// Internal: a timer or the Queue says work may be due.
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

impl Handler<Wake> for Pusher {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.wake = None;
        self.request_drain(ctx, None);
    }
}

impl Handler<QueueChanged> for Pusher {
    type Result = ();

    fn handle(&mut self, _: QueueChanged, ctx: &mut Self::Context) {
        self.request_drain(ctx, None);
    }
}

impl Handler<StopPushing> for Pusher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopPushing, ctx: &mut Self::Context) -> Self::Result {
        if !self.stop_asked() {
            self.stop.send_replace(Some(Instant::now() + msg.deadline));
        }
        if let Some(handle) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        let (waiter, drained) = oneshot::channel();
        if self.drain.running {
            self.drain.current.push(waiter);
        } else {
            let _ = waiter.send(Ok(()));
        }
        Box::pin(async move {
            let _ = drained.await;
        })
    }
}
