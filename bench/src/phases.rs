//! The measured phases that run on the bench's own actix System, and what they share.
//!
//! - [`crate::scan`]: walk_floor, scan_cold, scan_ratio, rescan, rescan_ratio.
//! - [`crate::push`]: enqueue, post_loop, drain.
//! - [`crate::coalesce`]: drain_coalesced, drain_coalesced_20ms.
//! - [`crate::hung`]: durable_while_hung, a push made durable while a drain hangs.
//! - [`crate::scale`]: the 100,000-workspace figures and their growth from 10,000.
//!
//! After this System: peak_rss ([`crate::rss`]) and the kill points ([`crate::kill`])
//! in child processes, then the fleets ([`crate::fleet`]) on a System of their own.
//!
//! Each phase starts its own actors on a fresh state dir, so no phase measures
//! another's leftovers.

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use agent_sync_actors::platform::{HttpPlatform, PlatformConfig, Token, TokenSource};
use agent_sync_actors::queue::QueueConfig;
use agent_sync_actors::time::Clock;
use agent_sync_actors::{ActorsConfig, Store, SyncActors};

use crate::figures::Figure;
use crate::platform::Loopback;
use crate::{coalesce, hung, push, scale, scan, BenchResult, Options};

/// Agent id of every push.
pub const AGENT_ID: &str = "bench-agent";
/// The token the loopback platform is sent.
pub const TOKEN: &str = "bench-token";

/// Starts the six actors on the current arbiter over a fresh store in `state`.
pub fn start_actors(
    state: &Path,
    workspace_root: &Path,
    url: &str,
    tokens: TokenSource,
    max_batch: usize,
) -> BenchResult<SyncActors> {
    let platform = PlatformConfig {
        base_url: url.to_string(),
        ..Default::default()
    };
    let queue = QueueConfig {
        max_batch,
        ..Default::default()
    };
    start_actors_with(state, workspace_root, platform, tokens, queue)
}

/// [`start_actors`] with a platform and queue configuration of the caller's.
pub fn start_actors_with(
    state: &Path,
    workspace_root: &Path,
    platform: PlatformConfig,
    tokens: TokenSource,
    queue: QueueConfig,
) -> BenchResult<SyncActors> {
    start_actors_over(Store::open(state)?, workspace_root, platform, tokens, queue)
}

/// [`start_actors_with`] over a store the caller opened (e.g. over a counting backend).
pub fn start_actors_over(
    store: Store,
    workspace_root: &Path,
    platform: PlatformConfig,
    tokens: TokenSource,
    queue: QueueConfig,
) -> BenchResult<SyncActors> {
    platform.validate()?;
    let config = ActorsConfig {
        workspace_root: workspace_root.to_path_buf(),
        agent_id: AGENT_ID.into(),
        fleet_node_id: None,
        tokens,
        queue,
        history_limit: agent_sync_actors::history::DEFAULT_HISTORY_LIMIT,
        max_context_items: agent_sync_actors::puller::DEFAULT_MAX_CONTEXT_ITEMS,
        flush_interval: None,
        // Only the bench decides when a drain runs.
        drain_on_start: false,
    };
    Ok(SyncActors::start(
        store,
        config,
        Rc::new(HttpPlatform::new(platform)),
        Clock::system(),
    ))
}

/// `TokenSource::Fixed(bench-token)`: online from the start.
pub fn fixed_token() -> TokenSource {
    TokenSource::Fixed(Token::new(TOKEN))
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

/// Every phase of this System, in order; figures are printed as they are measured.
pub async fn run(opts: &Options, work: &Path, server: &Loopback) -> BenchResult<Vec<Figure>> {
    let mut figures = Vec::new();
    if opts.runs("scan") {
        scan::scan(opts, work, &server.url, &mut figures).await?;
    }
    if opts.runs("enqueue") {
        push::enqueue(opts, work, &server.url, &mut figures).await?;
    }
    if opts.runs("drain") {
        push::drain(opts, work, server, &mut figures).await?;
    }
    if opts.runs("coalesced") {
        coalesce::coalesced(opts, work, &mut figures).await?;
    }
    if opts.runs("hung") {
        hung::durable_while_hung(work, &mut figures).await?;
    }
    if opts.runs("scale") {
        scale::scale(opts, work, server, &mut figures).await?;
    }
    Ok(figures)
}
