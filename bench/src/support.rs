//! What the phases share, and nothing that measures: the bench's identity on the
//! platform, starting the actors (through `agent-sync-testkit`), queueing and draining
//! host dispatches, a reproducible random source, figure arithmetic, and where the
//! `agent-sync` binary is. It imports no phase, so no phase imports another.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_sync::messages::{Drain, Enqueue, EnqueueBatch, EnqueueReceipt, PushReport, ScanToQueue};
use agent_sync_actors::dispatch::Dispatch;
use agent_sync_actors::platform::PlatformConfig;
use agent_sync_actors::queue::QueueConfig;
use agent_sync_actors::{Store, SyncActors};
use agent_sync_testkit as testkit;
use agent_sync_testkit::LoopbackPlatform;
use futures_util::future::join_all;

use crate::figures::Figure;
use crate::fixture;
use crate::options::Options;

/// Every fallible step of the harness.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Agent id of every push.
pub const AGENT_ID: &str = "bench-agent";
/// The token the loopback platform is sent.
pub const TOKEN: &str = "bench-token";

/// The actors as the bench runs them: production's timeouts, jitter and history
/// limit, the bench's agent id, `max_batch`, and no drain at start (only the bench
/// decides when a drain runs). A phase changes what it measures on top.
pub fn actor_options(max_batch: usize) -> testkit::Options {
    let queue = QueueConfig::default();
    testkit::Options {
        agent_id: AGENT_ID.into(),
        max_batch,
        history_limit: agent_sync_actors::history::DEFAULT_HISTORY_LIMIT,
        request_timeout: PlatformConfig::default().request_timeout,
        jitter: queue.jitter,
        lease_timeout: queue.lease_timeout,
        drain_on_start: false,
        ..testkit::Options::default()
    }
}

/// [`actor_options`] whose token is read from `key_file` before every request
/// (missing: offline), so a phase can queue first and go online when it chooses.
pub fn key_file_options(max_batch: usize, key_file: &Path) -> testkit::Options {
    testkit::Options {
        key_file: Some(key_file.to_path_buf()),
        ..actor_options(max_batch)
    }
}

/// Starts the six actors on the current arbiter over a fresh store in `state`,
/// against the platform at `url`; `token` `None` is offline (unless `opts` names a
/// key file).
pub fn start_actors(
    state: &Path,
    workspace_root: &Path,
    url: &str,
    token: Option<&str>,
    opts: &testkit::Options,
) -> BenchResult<SyncActors> {
    let store = Store::open(state)?;
    Ok(testkit::start_actors_over(
        &store,
        workspace_root,
        url,
        token,
        opts,
    ))
}

/// A loopback platform on a thread of its own that answers `200 {"ok":true}` at
/// once and counts what it gets without keeping it (a phase that reads the requests
/// switches recording on).
pub fn platform() -> BenchResult<LoopbackPlatform> {
    let server = LoopbackPlatform::start_on_thread()?;
    server.set_recording(false);
    Ok(server)
}

/// Runs `measure` against a [`platform`] of its own and stops it whatever `measure`
/// answered (its error first, then the server's).
pub fn serve<T>(measure: impl FnOnce(&LoopbackPlatform) -> BenchResult<T>) -> BenchResult<T> {
    let server = platform()?;
    let result = measure(&server);
    let stopped = server.stop_thread();
    let value = result?;
    stopped?;
    Ok(value)
}

/// Writes the token to `path` with mode 0600, as an operator's key file is kept (the
/// platform client warns about a key file others can read).
pub fn write_key_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(TOKEN.as_bytes())
}

/// An `Enqueue` of host dispatches as the bench's agent.
pub fn host_enqueue(dispatches: Vec<Dispatch>) -> Enqueue {
    Enqueue {
        agent_id: AGENT_ID.into(),
        fleet_node_id: None,
        batch: EnqueueBatch::Host(dispatches),
    }
}

/// Fixture dispatches `0..n`, one `Enqueue` each: a host handing over every
/// dispatch as it finishes, the load the enqueue and coalescing figures measure.
pub fn one_dispatch_enqueues(n: usize) -> Vec<Enqueue> {
    (0..n)
        .map(|i| host_enqueue(vec![fixture::dispatch(i)]))
        .collect()
}

/// The scan a push runs (scan, then enqueue what is new), as the bench's agent.
pub fn scan_to_queue() -> ScanToQueue {
    ScanToQueue {
        agent_id: AGENT_ID.into(),
        fleet_node_id: None,
    }
}

/// Sends every message at once, awaits them all, and sums the receipts.
pub async fn enqueue_all(
    actors: &SyncActors,
    messages: Vec<Enqueue>,
) -> BenchResult<EnqueueReceipt> {
    let sends: Vec<_> = messages
        .into_iter()
        .map(|msg| actors.queue.send(msg))
        .collect();
    let mut sum = EnqueueReceipt::default();
    for receipt in join_all(sends).await {
        add_receipt(&mut sum, &receipt??);
    }
    Ok(sum)
}

/// Adds `receipt`'s counts to `sum`: what many `Enqueue` messages did together.
fn add_receipt(sum: &mut EnqueueReceipt, receipt: &EnqueueReceipt) {
    sum.entries += receipt.entries;
    sum.dispatches += receipt.dispatches;
    sum.duplicates += receipt.duplicates;
}

/// Queues host dispatches `0..n` as `Enqueue` messages of `per_message`, `in_flight`
/// messages at once (the way a busy host sends them), and sums the receipts.
pub async fn enqueue_in_rounds(
    actors: &SyncActors,
    n: usize,
    per_message: usize,
    in_flight: usize,
) -> BenchResult<EnqueueReceipt> {
    let mut sum = EnqueueReceipt::default();
    let mut next = 0;
    while next < n {
        let end = n.min(next + per_message * in_flight);
        let messages = (next..end)
            .step_by(per_message)
            .map(|first| {
                host_enqueue(
                    (first..end.min(first + per_message))
                        .map(fixture::dispatch)
                        .collect(),
                )
            })
            .collect();
        add_receipt(&mut sum, &enqueue_all(actors, messages).await?);
        next = end;
    }
    Ok(sum)
}

/// Waits until the wake-ups of earlier enqueues have been handled (offline, they
/// send nothing), then provides the key file and drains once. Checks the reply.
pub async fn drain_all(
    actors: &SyncActors,
    key_file: &Path,
    expected: usize,
) -> BenchResult<(Duration, PushReport)> {
    for _ in 0..2 {
        let idle = actors.pusher.send(Drain).await??;
        if idle.count != 0 || idle.queued != expected as u64 {
            return Err(format!(
                "before the drain: {} delivered offline, {} queued; expected 0 and {expected}",
                idle.count, idle.queued
            )
            .into());
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    write_key_file(key_file)?;
    let t = Instant::now();
    let report = actors.pusher.send(Drain).await??;
    let elapsed = t.elapsed();
    if report.count != expected || report.queued != 0 {
        return Err(format!(
            "the drain delivered {} and left {} queued; expected {expected} and 0",
            report.count, report.queued
        )
        .into());
    }
    Ok((elapsed, report))
}

/// Where the `agent-sync` binary is: `--agent-sync`, else next to this binary. The
/// inner error says how to get it when it is not there (the phase then reports
/// itself not measured).
pub fn binary(opts: &Options) -> BenchResult<Result<PathBuf, String>> {
    let bin = match &opts.agent_sync {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("agent-sync"),
    };
    Ok(if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no agent-sync binary at {}: run `cargo build --release --workspace` first (or \
             pass --agent-sync PATH)",
            bin.display()
        ))
    })
}

/// The `synced: N` an `agent-sync push` printed: dispatches that process delivered.
pub fn synced(stdout: &str) -> Option<usize> {
    (stdout.lines())
        .find_map(|l| l.strip_prefix("synced: "))
        .and_then(|n| n.trim().parse().ok())
}

/// A small xorshift64 generator: reproducible from its printed seed, no dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced, xorshift never leaves it).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// A generator seeded from the clock; its seed is [`Rng::seed`].
    pub fn from_clock() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Rng::new(nanos | 1)
    }

    /// The current state, from which [`Rng::new`] repeats the sequence.
    pub fn seed(&self) -> u64 {
        self.0
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A duration in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// `count` per second over `d`.
pub fn rate(count: usize, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64().max(1e-9)
}

/// Prints a figure now and keeps it for the summary.
pub fn emit(figures: &mut Vec<Figure>, figure: Figure) {
    figure.print();
    figures.push(figure);
}
