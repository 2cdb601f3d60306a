//! The control API of a running agent-sync (design.md §13): how other processes reach
//! the one that holds a state.
//!
//! A running [`SyncService`](crate::SyncService), embedded in a host or started by
//! `agent-sync run`, serves HTTP/1.1 + JSON on the Unix socket
//! `<state-dir>/agent-sync.sock` (mode 0600; [`SyncConfig::control_socket`](crate::SyncConfig::control_socket)
//! turns it off). The CLI's `status`, `queue`, `dead-letters`, `requeue`, `history`,
//! `push` and `pull` find it there and are carried out by that process, with the same
//! output and exit codes as against a stopped state. The token never crosses it.
//!
//! - [`socket`]: the socket file (stale replaced, live kept) and who holds a state;
//! - [`wire`]: the routes, and the JSON bodies only the socket has (the answers are
//!   the actors' replies and the status, serialised as they are);
//! - `server`: the actix-web app on the socket, and `/metrics` + `/health` on TCP;
//! - `health`: what `/health` checks;
//! - [`client`]: [`ControlClient`], the awc client over the socket.

pub mod client;
mod health;
mod server;
pub mod socket;
pub mod wire;

pub use client::{ClientError, ControlClient};
pub use socket::{holder_pid, socket_path, BindError, SOCKET_FILE};

pub(crate) use health::HealthWriter;
pub(crate) use server::{start as start_servers, ControlServers, ControlState, Listeners};
