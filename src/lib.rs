//! agent-sync keeps an AI-agent host in sync with its platform.
//!
//! It finds finished dispatches on disk, pushes them to the platform, keeps a durable
//! offline queue with backoff, pulls fleet context back, and records every sync. A
//! host embeds it as a [`SyncService`] started inside its actix `System` (the actors
//! run on their own thread, so redb's commits never stall the host), talks to it with
//! async methods or messages ([`SyncPush`], [`SyncPull`], [`Drain`]), and merges its
//! Prometheus series into its own registry; the `agent-sync` binary runs the same
//! service as a CLI and a daemon.
//!
//! Everything a host needs is at the crate root and in [`prelude`]
//! (`use agent_sync::prelude::*;`), including the [`prometheus_client`] this crate
//! is built with, so the host's registry is of the same version.
//!
//! # Layout
//!
//! - [`config`]: [`SyncConfig`], and its resolution from the environment.
//! - [`service`]: [`SyncService`], the actors on their own arbiter behind async
//!   methods; what a host embeds.
//! - [`status`]: [`SyncStatus`], what `status` shows, read from the actors.
//! - [`paging`]: listings of the queue and the dead letters, a page at a time.
//! - [`control`]: the control API a running service serves on
//!   `<state-dir>/agent-sync.sock` (and `/metrics`, `/health`), and its client.
//! - `main.rs` and `cli/`: the `agent-sync` command line, on top of `SyncService`.
//! - The actors themselves (Scanner, Ledger, Queue, Pusher, Puller, History), their
//!   messages, the redb store and the platform client live in the
//!   [`agent_sync_actors`] crate (`actors/`), re-exported here as [`actors`].
//!
//! # Embedding
//!
//! ```
//! use agent_sync::prelude::*;
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let dir = tempfile::tempdir()?;
//!     let config = SyncConfig::builder()
//!         .api_url("https://api.example.com")
//!         // No `.token(..)`: offline, so this example needs no network. Host
//!         // dispatches are queued durably and sent once a token is configured.
//!         .workspace_root(dir.path().join("workspace"))
//!         .state_dir(dir.path().join("sync"))
//!         .build()?;
//!     let service = SyncService::start(config)?;
//!     let mut registry = Registry::default();
//!     service.register_metrics(&mut registry);
//!
//!     let done = serde_json::json!({"id": "core/go-io/task-5", "status": "completed"});
//!     let push = SyncPush {
//!         dispatches: Some(vec![done]),
//!         ..SyncPush::default()
//!     };
//!     let report: PushReport = service.push(push).await?;
//!     assert_eq!((report.count, report.queued), (0, 1)); // offline: queued, not sent
//!
//!     let mut text = String::new();
//!     prometheus_client::encoding::text::encode(&mut text, &registry)?;
//!     assert!(text.contains("agent_sync_queue_dispatches 1"));
//!     service.stop().await; // lets the request in flight finish
//!     Ok(())
//! }
//! ```
//!
//! `examples/embed.rs` (the README's embedding section) does the same online.

pub mod config;
pub mod control;
pub mod legacy;
pub mod paging;
pub mod service;
pub mod status;
pub mod watching;

pub use agent_sync_actors as actors;
pub use agent_sync_actors::entry::{DeadLetter, QueueEntry};
pub use agent_sync_actors::messages;
pub use agent_sync_actors::messages::{
    Drain, NamedScanSummary, PullReport, PushReport, ReapReport, RequeueReport, SyncPull, SyncPush,
};
pub use agent_sync_actors::metrics::Metrics;
pub use agent_sync_actors::platform::{PlatformConfig, Token, TokenSource};
pub use agent_sync_actors::proxy::ProxyConfig;
pub use agent_sync_actors::sync_record::SyncRecord;
pub use agent_sync_actors::{PlatformConfigError, SyncError};
pub use config::{ConfigError, SyncConfig, SyncConfigBuilder};
/// The `prometheus-client` crate agent-sync is built with: register its series into
/// a [`Registry`](prometheus_client::registry::Registry) of this very version.
pub use prometheus_client;
pub use service::{StartError, SyncService};
pub use status::SyncStatus;
pub use watching::WatchOptions;

/// Every type a host needs, in one import: `use agent_sync::prelude::*;`.
///
/// The service and its config ([`SyncService`], [`SyncConfig`] and its builder), the
/// errors ([`StartError`], [`ConfigError`], [`SyncError`]), the token and platform
/// settings, the messages a host sends ([`SyncPush`], [`SyncPull`], [`Drain`]) with
/// their replies, what the listing methods return, the status, and the
/// `prometheus_client` registry to merge the metrics into. Also actix's
/// [`Recipient`](actix::Recipient), for hosts that hand the service's recipients to
/// their own actors.
pub mod prelude {
    pub use crate::prometheus_client;
    pub use crate::prometheus_client::registry::Registry;
    pub use crate::{
        ConfigError, DeadLetter, Drain, Metrics, NamedScanSummary, PlatformConfig,
        PlatformConfigError, ProxyConfig, PullReport, PushReport, QueueEntry, ReapReport,
        RequeueReport, StartError, SyncConfig, SyncConfigBuilder, SyncError, SyncPull, SyncPush,
        SyncRecord, SyncService, SyncStatus, Token, TokenSource, WatchOptions,
    };
    pub use actix::Recipient;
}
