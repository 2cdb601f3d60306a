//! [`ScriptedPlatform`]: an in-process `Platform` for tests under paused tokio time,
//! where real sockets give spurious timeouts (design.md §11). A test pauses time
//! first (`tokio::time::pause()`, once per test), then starts the actors on the
//! platform and the tokio clock with [`ScriptedPlatform::start_actors`]; from there
//! `tokio::time::sleep` moves the Pusher's timers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use agent_sync_actors::messages::DeliveryOutcome;
use agent_sync_actors::platform::{LocalFuture, Platform, PullOutcome, PushRequest, Token};
use agent_sync_actors::time::Clock;
use agent_sync_actors::{Store, SyncActors};

use crate::{start_actors_on, Dirs, Options, TOKEN};

/// A `Platform` that answers pushes from a script without any socket, and records the
/// virtual (tokio) time of each push: for schedules under `tokio::time::pause`.
#[derive(Clone)]
pub struct ScriptedPlatform {
    inner: Rc<RefCell<ScriptedInner>>,
}

struct ScriptedInner {
    script: VecDeque<DeliveryOutcome>,
    default: DeliveryOutcome,
    pushes: Vec<(actix_rt::time::Instant, PushRequest)>,
}

impl ScriptedPlatform {
    /// Answers every push with `default` once the script is used up.
    /// A scripted `Delivered` gets the real body size.
    pub fn new(default: DeliveryOutcome) -> Self {
        ScriptedPlatform {
            inner: Rc::new(RefCell::new(ScriptedInner {
                script: VecDeque::new(),
                default,
                pushes: Vec::new(),
            })),
        }
    }

    /// Delivers every push not scripted otherwise.
    pub fn delivering() -> Self {
        ScriptedPlatform::new(DeliveryOutcome::Delivered { payload_size: 0 })
    }

    /// Opens the state of `dirs` and starts the actors on this platform and the tokio
    /// clock, with [`TOKEN`] (or `opts.key_file`). Time must be paused already.
    pub fn start_actors(&self, dirs: &Dirs, opts: &Options) -> (SyncActors, Store) {
        start_actors_on(
            dirs.root(),
            dirs.state(),
            self.as_platform(),
            Some(TOKEN),
            opts,
            Clock::tokio(),
        )
    }

    /// Queues a one-shot outcome.
    pub fn respond(&self, outcome: DeliveryOutcome) {
        self.inner.borrow_mut().script.push_back(outcome);
    }

    /// Changes the default outcome.
    pub fn set_default(&self, outcome: DeliveryOutcome) {
        self.inner.borrow_mut().default = outcome;
    }

    /// Virtual time of every push so far.
    pub fn push_times(&self) -> Vec<actix_rt::time::Instant> {
        self.inner.borrow().pushes.iter().map(|(t, _)| *t).collect()
    }

    /// Every push request so far.
    pub fn push_requests(&self) -> Vec<PushRequest> {
        self.inner
            .borrow()
            .pushes
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The platform as the actors take it.
    pub fn as_platform(&self) -> Rc<dyn Platform> {
        Rc::new(self.clone())
    }
}

/// The outcome `HttpPlatform` reports for an HTTP `status` without `Retry-After`.
pub fn status_outcome(status: u16) -> DeliveryOutcome {
    DeliveryOutcome::Status {
        status,
        retry_after: None,
        detail: format!("HTTP {status}"),
    }
}

impl Platform for ScriptedPlatform {
    fn push(&self, token: &Token, request: PushRequest) -> LocalFuture<DeliveryOutcome> {
        assert_eq!(token.expose(), TOKEN, "the pusher used another token");
        let mut inner = self.inner.borrow_mut();
        let outcome = match inner.script.pop_front() {
            Some(o) => o,
            None => inner.default.clone(),
        };
        let outcome = match outcome {
            DeliveryOutcome::Delivered { .. } => DeliveryOutcome::Delivered {
                payload_size: request.body.len() as u64,
            },
            other => other,
        };
        inner.pushes.push((actix_rt::time::Instant::now(), request));
        Box::pin(async move { outcome })
    }

    fn pull(
        &self,
        _token: &Token,
        _agent_id: &str,
        _since: Option<&str>,
    ) -> LocalFuture<PullOutcome> {
        Box::pin(async { PullOutcome::Failed("the scripted platform does not pull".into()) })
    }
}
