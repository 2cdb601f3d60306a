//! The shared test support lives in the `agent-sync-testkit` crate (`testkit/`); this
//! shim keeps `mod common; use common::*;` working for test files that have not moved
//! to `use agent_sync_testkit::*;`. Add support there, not here.

pub use agent_sync_testkit::*;
