//! The platform of the crash rounds: a [`Raw`] server that answers pushes slowly
//! (1-4 ms, pseudo-random from the round's seed), records them, counts the requests
//! in flight, and acts at an exact point of one push ([`Trigger`]): kill the daemon
//! while it holds the push, kill it right after the 2xx was written, or hold the push
//! while the test signals the daemon. Every daemon incarnation gets one of its own,
//! so each request is attributed to the incarnation that sent it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use agent_sync_testkit::{Raw, Reply, Req};

use crate::setup::Lcg;

/// What the platform does at one request of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Nothing: answer everything.
    Never,
    /// Receive the n-th push (0-based), then SIGKILL without answering (mid-POST).
    KillHolding(usize),
    /// Answer the n-th push with a 2xx, then SIGKILL at once (before the Queue
    /// records it).
    KillAfterAnswer(usize),
    /// Hold the n-th push until [`Platform::release`], then answer it as any other
    /// (never, if it is not released: the test signals the daemon meanwhile).
    Hold(usize),
}

/// One push the platform read in full.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its idempotency key.
    pub key: String,
    /// Its dispatch ids.
    pub ids: Vec<String>,
    /// A 2xx was written back.
    pub answered: bool,
    /// When it arrived.
    pub at: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the server's reply hook shares with the test.
struct Control {
    trigger: Trigger,
    seed: u64,
    /// Pushes seen so far: the index of the next one.
    pushes: AtomicUsize,
    /// The daemon to kill: 0 until known and again once disarmed. Under a lock so a
    /// kill can never race the reaping of the child (after which the pid may be
    /// recycled: pid_max is 32768 on this machine).
    pid: Mutex<i32>,
    /// A kill trigger fired.
    fired: AtomicBool,
    /// The `Hold` request arrived and is being held.
    held: AtomicBool,
    /// The held request may be answered.
    released: Mutex<bool>,
    release: Condvar,
    /// Requests read and not answered yet, and the most at any time (1: one in flight).
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

impl Control {
    fn kill(&self) {
        let pid = lock(&self.pid);
        if *pid <= 0 {
            // Not known yet, or the phase is over and the child reaped: never signal a
            // pid that may now belong to another process.
            return;
        }
        // Before the kill: whoever sees the daemon dead then sees this too.
        self.fired.store(true, Ordering::SeqCst);
        // SAFETY: signalling the test's own child: armed means not yet reaped.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }

    /// Holds the current request until released (`true`) or the platform stops.
    fn hold(&self) -> bool {
        self.held.store(true, Ordering::SeqCst);
        let mut released = lock(&self.released);
        while !*released && !self.stop.load(Ordering::SeqCst) {
            released = self
                .release
                .wait_timeout(released, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *released
    }

    /// 1-4 ms, from the seed and the request's index.
    fn delay(&self, index: usize) -> Duration {
        let mut lcg = Lcg::new(self.seed ^ (index as u64).wrapping_mul(0x100_0000_01b3));
        Duration::from_millis(1 + lcg.below(4))
    }

    /// The answer to one request read in full.
    fn reply(self: &Arc<Self>, req: &Req) -> Reply {
        if req.head.method != "POST" {
            return Reply::status(404);
        }
        let index = self.pushes.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        match self.trigger {
            Trigger::KillHolding(n) if n == index => {
                self.kill();
                return Reply::Silence; // never answered
            }
            // Held until released, then answered as any other; never released: never
            // answered.
            Trigger::Hold(n) if n == index && !self.hold() => return Reply::Silence,
            _ => {}
        }
        thread::sleep(self.delay(index));
        // Before the answer: the daemon may send its next request as soon as it has it.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.trigger == Trigger::KillAfterAnswer(index) {
            let control = self.clone();
            return Reply::ok().then(move || control.kill());
        }
        Reply::ok()
    }
}

/// A slow platform on 127.0.0.1 that records pushes and may kill the daemon.
pub struct Platform {
    control: Arc<Control>,
    server: Raw,
}

impl Platform {
    /// Serves with delays from `seed`, acting on `trigger`.
    pub fn start(seed: u64, trigger: Trigger) -> Self {
        let control = Arc::new(Control {
            trigger,
            seed,
            pushes: AtomicUsize::new(0),
            pid: Mutex::new(0),
            fired: AtomicBool::new(false),
            held: AtomicBool::new(false),
            released: Mutex::new(false),
            release: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let hook = control.clone();
        let server = Raw::start(move |_, req| hook.reply(req));
        Platform { control, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Arms the kill triggers at the daemon `pid`.
    pub fn set_pid(&self, pid: u32) {
        *lock(&self.control.pid) = i32::try_from(pid).expect("a pid");
    }

    /// Called before the child is reaped: from here on no trigger signals anything.
    pub fn disarm(&self) {
        *lock(&self.control.pid) = 0;
    }

    /// A kill trigger fired.
    pub fn fired(&self) -> bool {
        self.control.fired.load(Ordering::SeqCst)
    }

    /// The `Hold` request is being held.
    pub fn held(&self) -> bool {
        self.control.held.load(Ordering::SeqCst)
    }

    /// Lets the held request be answered.
    pub fn release(&self) {
        *lock(&self.control.released) = true;
        self.control.release.notify_all();
    }

    /// The most requests it held at once.
    pub fn max_in_flight(&self) -> usize {
        self.control.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every push read in full, in arrival order.
    pub fn log(&self) -> Vec<Received> {
        self.server
            .log()
            .into_iter()
            .filter(|(req, _)| req.head.method == "POST" && req.complete)
            .map(|(req, status)| Received {
                key: req.key(),
                ids: req.ids(),
                answered: (200..300).contains(&status),
                at: req.at,
            })
            .collect()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // A held request is let go before the server stops.
        self.control.stop.store(true, Ordering::SeqCst);
    }
}
