//! The measured phases that run on the bench's own actix System, and what they share.
//!
//! - [`crate::scan`]: walk_floor, scan_cold, scan_ratio, rescan, rescan_ratio.
//! - [`crate::push`]: enqueue, post_loop, drain, drain_ratio.
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
use crate::{push, scan, BenchResult, Options};

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
    let store = Store::open(state)?;
    let platform = PlatformConfig {
        base_url: url.to_string(),
        ..Default::default()
    };
    platform.validate()?;
    let config = ActorsConfig {
        workspace_root: workspace_root.to_path_buf(),
        agent_id: AGENT_ID.into(),
        fleet_node_id: None,
        tokens,
        queue: QueueConfig {
            max_batch,
            ..Default::default()
        },
        history_limit: agent_sync_actors::history::DEFAULT_HISTORY_LIMIT,
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
    scan::scan(opts, work, &server.url, &mut figures).await?;
    push::enqueue(opts, work, &server.url, &mut figures).await?;
    push::drain(opts, work, server, &mut figures).await?;
    Ok(figures)
}
