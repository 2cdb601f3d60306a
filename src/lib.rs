//! agent-sync keeps an AI-agent host in sync with its platform.
//!
//! It finds finished dispatches on disk, pushes them to the platform, keeps a durable
//! offline queue with backoff, pulls fleet context back, and records every sync.
//!
//! # Layout
//!
//! - [`config`]: [`SyncConfig`], and its resolution from the environment.
//! - [`service`]: [`SyncService`], the actors on their own arbiter behind async
//!   methods; what a host embeds.
//! - [`control`]: the control API a running service serves on
//!   `<state-dir>/agent-sync.sock` (and `/metrics`, `/health`), and its client.
//! - `main.rs` and `cli/`: the `agent-sync` command line, on top of `SyncService`.
//! - The actors themselves (Scanner, Ledger, Queue, Pusher, Puller, History), their
//!   messages, the redb store and the platform client live in the
//!   [`agent_sync_actors`] crate (`actors/`), re-exported here as [`actors`].
//!
//! # Embedding
//!
//! ```no_run
//! use agent_sync::{SyncConfig, SyncService, messages::SyncPush};
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let service = SyncService::start(SyncConfig::from_env())?;
//!     let report = service.push(SyncPush::default()).await?;
//!     println!("synced: {}", report.count);
//!     service.stop().await; // lets the request in flight finish
//!     Ok(())
//! }
//! ```

pub mod config;
pub mod control;
pub mod legacy;
pub mod service;
pub mod watching;

pub use agent_sync_actors as actors;
pub use agent_sync_actors::messages;
pub use agent_sync_actors::metrics::Metrics;
pub use config::SyncConfig;
pub use service::{StartError, SyncService, SyncStatus};
