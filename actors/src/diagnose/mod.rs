//! Read-only diagnostics for a command such as `agent-sync doctor`: nothing here
//! writes the state, sends a push or changes anything on the platform.
//!
//! - [`inspect`]: `sync.redb` opened read-only, every JSON row decoded, the queue
//!   summed up;
//! - [`probe`]: one `GET /v1/agent/status` over the client a push uses (proxy, TLS
//!   roots, timeouts), for the connection, the token and the platform's clock.

pub mod inspect;
pub mod probe;

pub use inspect::{inspect, InspectError, Inspection};
pub use probe::{probe_status, ProbeAnswer, ProbeError};
