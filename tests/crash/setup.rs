//! What every round starts from and reads back: the constants and knobs of the
//! harness, its seeded generator ([`Lcg`]), the sandbox, a seeded queue
//! ([`seed_queue`]) and the queue as `queue --json` lists it ([`queued_entries`]).

use std::path::Path;
use std::time::Duration;

use agent_sync::actors::dispatch::Dispatch;
use agent_sync::actors::entry::QueueEntry;
use agent_sync::actors::import::Import;
use agent_sync::actors::time::Clock;
use agent_sync::actors::Store;
use agent_sync_testkit::{agent_sync_bin, Sandbox};
use serde_json::{json, Value};

/// A token distinctive enough to spot anywhere.
pub const SECRET: &str = "crash-secret-0b1d";
/// The agent every round runs as.
pub const AGENT: &str = "crash-agent";
/// Dispatches per round.
pub const DISPATCHES: usize = 300;
/// Bound on anything the harness waits for.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// `run --shutdown-timeout` of every daemon: long, so a prompt exit is clearly not it.
pub const SHUTDOWN_TIMEOUT: &str = "30s";
/// A second SIGTERM must end the daemon within this (the shutdown timeout is 30 s).
pub const PROMPT_EXIT: Duration = Duration::from_secs(5);

/// Rounds per kind: `AGENT_SYNC_CRASH_ROUNDS`, or 4.
pub fn rounds() -> usize {
    std::env::var("AGENT_SYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// `AGENT_SYNC_CRASH_SEED`, or a fixed seed: every round's seed derives from it.
pub fn base_seed() -> u64 {
    std::env::var("AGENT_SYNC_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234)
}

/// A tiny deterministic generator (Knuth's MMIX LCG, high bits).
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        let mut lcg = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        lcg.next();
        lcg
    }

    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// One isolated installation of the binary, run as [`AGENT`] with [`SECRET`].
pub fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// The queue as `queue --json` lists it; the state must open after every crash.
pub fn queued_entries(sandbox: &Sandbox) -> Vec<Entry> {
    sandbox
        .queue()
        .iter()
        .map(|e| Entry {
            seq: e["seq"].as_u64().expect("seq"),
            key: e["idempotency_key"].as_str().expect("key").to_string(),
            ids: e["dispatches"]
                .as_array()
                .expect("dispatches")
                .iter()
                .map(|d| d["id"].as_str().expect("id").to_string())
                .collect(),
        })
        .collect()
}

/// A queued entry as `queue --json` lists it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its seq.
    pub seq: u64,
    /// Its idempotency key: how the platform's log names it.
    pub key: String,
    /// The ids of its dispatches.
    pub ids: Vec<String>,
}

/// A host dispatch `id`, padded to the size of a small real one.
pub fn dispatch(id: &str) -> Value {
    json!({"id": id, "status": "completed", "agent": "codex", "pad": "p".repeat(48)})
}

/// Queues `entries` into the closed state, each one queue entry (one request)
/// exactly as given, in one import commit: separate `Enqueue`s would coalesce into
/// the tail entry.
pub fn seed_queue(state: &Path, entries: Vec<Vec<Value>>) {
    let store = Store::open(state).expect("open the state");
    let now = Clock::system().now();
    let entries: Vec<QueueEntry> = entries
        .into_iter()
        .map(|dispatches| {
            let dispatches = dispatches
                .into_iter()
                .map(|d| Dispatch::from(d.as_object().expect("an object").clone()))
                .collect();
            QueueEntry::new(AGENT.into(), None, dispatches, now)
        })
        .collect();
    let count = entries.len();
    let imported =
        Import::commit(&store, |import| import.queue_entries(entries)).expect("import the entries");
    assert_eq!(imported.entries, count, "every seeded entry is queued");
}
