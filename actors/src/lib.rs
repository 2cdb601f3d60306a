//! The actors of agent-sync: the sync subsystem of an AI-agent host.
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
//! - [`model`]: workspace status, queue entries, sync records.
//! - [`dispatch`]: a dispatch as its JSON text, and the record a scan builds.
//! - [`lenient`]: tolerant reading of host-written JSON.
//! - [`walk`]: the workspace walk (Linux `openat2` or portable `openat`), its persisted
//!   rescan cache, the parallel walk and the chunk pipeline of a streaming scan.
//! - [`store`]: the one redb file, its layout and crash semantics.
//! - [`platform`]: the token, the URL policy and the awc client (design.md §5).
//! - [`proxy`]: `HTTPS_PROXY`/`NO_PROXY` routing and the `CONNECT` tunnel in awc's
//!   connector.
//! - [`private_state`]: the state dir and its files, private to their user.
//! - [`backoff`]: the seed retry schedule and `Retry-After` (the Queue's policy adds
//!   jitter).
//! - [`time`]: timestamps and the clock that tests can pause.
//! - [`error`]: one error type per kind of operation.
//! - [`reap`]: the ghost reap, of the whole tree or of the workspaces known running.
//! - [`watch`]: event-driven pickup: what is watched, bursts into targeted scans.
//! - [`system`]: starts and connects the six actors.
//! - [`metrics`]: the Prometheus series the Pusher and Puller move.
//! - [`diagnose`]: read-only checks of the state and the platform, for a doctor.
//!
//! A push: host -> [`messages::SyncPush`] -> Pusher -> Scanner (`ScanToQueue`), which per
//! chunk of the walk asks the Ledger (`Unsynced`) and the Queue (`NotQueued`) and sends
//! the Queue what is new (`Enqueue`, coalescing into the tail entry), then the Pusher
//! drains, one request at a time: Queue `LeaseNext` -> POST -> Queue `Report(outcome)`,
//! which writes everything the outcome changes (queue, ledger, history) in one durable
//! commit before the next lease. The Queue alone decides what an outcome means
//! (backoff with jitter, split, dead letter).
//!
//! The `agent-sync` crate wires these into a `SyncService` and a CLI.

pub mod backoff;
pub mod diagnose;
pub mod dispatch;
pub mod error;
pub mod history;
pub mod ledger;
pub mod lenient;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod platform;
pub mod private_state;
pub mod proxy;
pub mod puller;
pub mod pusher;
pub mod queue;
pub mod reap;
pub mod scanner;
pub mod store;
pub mod system;
pub mod time;
pub mod walk;
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
