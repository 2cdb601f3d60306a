//! One line of sync history (design.md §4.4): which way a sync went, how much moved,
//! and when. The Queue writes the push and dead-letter lines in the commit that
//! records a delivery's outcome; the History writes the pull lines and keeps the
//! newest.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Which way a sync went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Dispatches delivered to the platform.
    Push,
    /// Context received from the platform.
    Pull,
    /// An entry moved to dead letters.
    DeadLetter,
}

impl Direction {
    /// The wire and display name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
            Direction::DeadLetter => "dead_letter",
        }
    }
}

/// One line of sync history (design.md §4.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// Agent the sync ran for.
    pub agent_id: String,
    /// Fleet node, when known.
    #[serde(default)]
    pub fleet_node_id: Option<i64>,
    /// Push, pull or dead letter.
    pub direction: Direction,
    /// Bytes sent (push) or received (pull).
    pub payload_size: u64,
    /// Dispatches pushed or context items pulled.
    pub items_count: u64,
    /// When, UTC, whole seconds.
    pub synced_at: Timestamp,
}
