//! The actors of agent-sync: the sync subsystem of an AI-agent host.
//!
//! An AI-agent host dispatches coding agents into workspaces. These [actix] actors
//! find the finished dispatches on disk, push them to the platform API through a
//! durable queue (one [redb] file) with backoff, pull fleet context back, and record
//! every sync. Nothing queued is lost to a crash, an outage or a bad answer: each
//! request's outcome is committed before the next request starts.
//!
//! Most hosts want the `agent-sync` crate, whose `SyncService` runs these actors on
//! their own arbiter behind async methods, with a config builder, a control socket
//! and metrics. Start them yourself ([`SyncActors::start`]) to put them on an arbiter
//! of your own, or to run them against a stand-in [`platform::Platform`].
//!
//! [actix]: https://docs.rs/actix
//! [redb]: https://docs.rs/redb
//!
//! # Example
//!
//! Offline (no token), so it needs no network: the host's dispatch is queued
//! durably and would be delivered once a token is configured.
//!
//! ```
//! use std::rc::Rc;
//!
//! use agent_sync_actors::messages::{QueueStatus, SyncPush};
//! use agent_sync_actors::platform::{HttpPlatform, PlatformConfig, TokenSource};
//! use agent_sync_actors::time::Clock;
//! use agent_sync_actors::{ActorsConfig, QueueConfig, Store, SyncActors};
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let dir = tempfile::tempdir()?;
//!     let store = Store::open(&dir.path().join("sync"))?; // <dir>/sync/sync.redb
//!     let config = ActorsConfig {
//!         workspace_root: dir.path().join("workspace"),
//!         agent_id: "my-host".into(),
//!         fleet_node_id: None,
//!         tokens: TokenSource::Fixed(None), // offline
//!         queue: QueueConfig::default(),
//!         history_limit: 100,
//!         max_context_items: 1000,
//!         flush_interval: None,
//!         drain_on_start: true,
//!     };
//!     let platform = PlatformConfig {
//!         base_url: "https://api.example.com".into(),
//!         ..PlatformConfig::default()
//!     };
//!     let actors = SyncActors::start(
//!         store,
//!         config,
//!         Rc::new(HttpPlatform::new(platform)),
//!         Clock::system(),
//!     );
//!
//!     let done = serde_json::json!({"id": "core/go-io/task-5", "status": "completed"});
//!     let push = SyncPush {
//!         dispatches: Some(vec![done]),
//!         ..SyncPush::default()
//!     };
//!     let report = actors.pusher.send(push).await??; // the mailbox's, then the push's
//!     assert_eq!((report.count, report.queued), (0, 1));
//!     let queue = actors.queue.send(QueueStatus).await??;
//!     assert_eq!(queue.dispatches, 1);
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! Six actors, each owning its state; they talk only through the typed messages of
//! [`messages`], which is the place to read the protocol.
//!
//! | module        | actor     | owns                                   |
//! |---------------|-----------|----------------------------------------|
//! | [`scanner`]   | Scanner   | `scan_dirs`, `scan_workspaces` (the rescan cache) |
//! | [`ledger`]    | Ledger    | table `ledger` (id -> fingerprint)     |
//! | [`queue`]     | Queue     | `queue`, `queue_keys`, `queue_meta`, `dead_letters` |
//! | [`pusher`]    | Pusher    | the awc client for pushes              |
//! | [`puller`]    | Puller    | table `context` and the pull client    |
//! | [`history`]   | History   | `history`, `sync_state`                |
//!
//! Around them:
//!
//! - [`scanner::walk`]: inside the Scanner, the workspace walk (Linux `openat2` or
//!   portable `openat`), its persisted rescan cache, the parallel walk and the chunk
//!   pipeline of a streaming scan; beside it, the ghost reap.
//! - [`status`]: the workspace status, its one parser, the fingerprint.
//! - [`dispatch`]: a dispatch as its JSON text, its key, the record a scan builds,
//!   and the check of a host's dispatches.
//! - [`entry`]: the queue entry and the dead letter.
//! - [`sync_record`]: one line of sync history.
//! - [`lenient`]: tolerant reading of host-written JSON.
//! - [`store`]: the one redb file, its layout and crash semantics.
//! - [`import`]: state brought in from elsewhere (a legacy import), in one commit,
//!   before the actors start.
//! - [`platform`]: the token, the URL policy and the awc client (design.md §5).
//! - [`proxy`]: `HTTPS_PROXY`/`NO_PROXY` routing and the `CONNECT` tunnel in awc's
//!   connector.
//! - [`private_state`]: the state dir and its files, private to their user.
//! - [`redact`]: what stands where a secret was, in text people read.
//! - [`backoff`]: the seed retry schedule and `Retry-After` (the Queue's policy adds
//!   jitter).
//! - [`time`]: timestamps and the clock that tests can pause.
//! - [`error`]: one error type per kind of operation.
//! - [`watch`]: event-driven pickup: what is watched, bursts into targeted scans.
//! - [`system`]: starts and connects the six actors.
//! - [`metrics`]: the Prometheus series the Pusher and Puller move.
//! - [`diagnose`]: read-only checks of the state and the platform, for a doctor.
//!
//! A push, step by step (find, skip, queue, send, commit, next), is told once, in
//! `docs/design.md` §3.1: every outcome is one durable commit by the Queue before the
//! next request, and the Queue alone decides what an outcome means.
//!
//! The `agent-sync` crate wires these into a `SyncService` and a CLI.

pub mod backoff;
pub mod diagnose;
pub mod dispatch;
pub mod entry;
pub mod error;
pub mod history;
pub mod import;
pub mod ledger;
pub mod lenient;
pub mod messages;
pub mod metrics;
pub mod platform;
pub mod private_state;
pub mod proxy;
pub mod puller;
pub mod pusher;
pub mod queue;
pub mod redact;
pub mod scanner;
pub mod status;
pub mod store;
pub mod sync_record;
pub mod system;
pub mod time;
pub mod watch;

pub use error::{
    DispatchError, EncodeError, OpenError, PlatformConfigError, StoreCause, StoreError, SyncError,
};
pub use history::History;
pub use ledger::Ledger;
pub use metrics::Metrics;
pub use puller::Puller;
pub use pusher::{PushPeers, Pusher, PusherConfig};
pub use queue::{Queue, QueueConfig};
pub use scanner::Scanner;
pub use store::Store;
pub use system::{ActorsConfig, SyncActors};
