//! Every message the actors exchange, in one place, so the protocol reads top to bottom.
//!
//! Which actor sends which, step by step, is design.md §3.1 (a push) and
//! `architecture.md` (a pull); each message below says who answers it.

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::backoff::RetryAfter;
use crate::dispatch::{Dispatch, DispatchKey, ScannedDispatch};
use crate::entry::{DeadLetter, QueueEntry};
use crate::error::{StoreError, SyncError};
use crate::sync_record::SyncRecord;
use crate::time::Timestamp;

// ----------------------------------------------------------------------------- host

/// Push finished work: scan (unless `queue_only` or `dispatches` is given), enqueue,
/// drain once. The scan and the durable enqueue never wait for a drain already in
/// flight; the reply waits for the drain that follows them.
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "Result<PushReport, SyncError>")]
pub struct SyncPush {
    /// Agent to push as; the service's agent id when `None`.
    pub agent_id: Option<String>,
    /// Fleet node to push as; the service's when `None`.
    pub fleet_node_id: Option<i64>,
    /// Host-provided dispatches, pushed verbatim (no scan then).
    pub dispatches: Option<Vec<Value>>,
    /// Only drain what is already queued; never scan (P6).
    pub queue_only: bool,
}

/// Reply to [`SyncPush`] and [`Drain`]; also the control socket's answer to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PushReport {
    /// Dispatches delivered while this call ran: by the drain it waited for, and by a
    /// drain already in flight when it came (which may have taken its dispatches).
    pub count: usize,
    /// Dispatches still queued afterwards.
    pub queued: u64,
}

/// Drain the queue now: replies once a drain that started after this message has
/// ended (the queue is empty, the head backs off, or the service stops).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<PushReport, SyncError>")]
pub struct Drain;

/// Graceful stop of the Pusher: no new request starts; the one in flight may run
/// until `deadline`, then counts as timed out. Replies once its outcome is committed.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopPushing {
    /// How long the request in flight may still take.
    pub deadline: std::time::Duration,
}

/// Pull fleet context (L1, L2).
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "Result<PullReport, SyncError>")]
pub struct SyncPull {
    /// Agent to pull for; the service's agent id when `None`.
    pub agent_id: Option<String>,
    /// Only context since this point (merged into the cache by `id`).
    pub since: Option<String>,
}

/// Reply to [`SyncPull`]; also the control socket's answer to a pull.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PullReport {
    /// Items in `context`.
    pub count: usize,
    /// What was received, or the cache when the pull failed (L2).
    pub context: Vec<Value>,
    /// True when the platform was not (successfully) asked and this is the cache.
    pub from_cache: bool,
}

/// The cached context, without asking the platform.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Vec<Value>, StoreError>")]
pub struct CachedContext;

// -------------------------------------------------------------------------- scanner

/// Scan the workspace root and queue every terminal dispatch that is neither synced
/// nor queued yet, in walk order, chunk by chunk: the Queue ([`NotQueued`]), then the
/// Ledger ([`Unsynced`]) are asked about a chunk at a time, and what is new goes through
/// the Queue's ordinary [`Enqueue`]. What was queued before a failure stays queued; the
/// rest is found again by the next scan.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<ScanSummary, SyncError>")]
pub struct ScanToQueue {
    /// Agent the entries are pushed as.
    pub agent_id: String,
    /// Fleet node the entries are pushed as.
    pub fleet_node_id: Option<i64>,
}

/// Reply to [`ScanToQueue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Workspaces found (any status).
    pub workspaces: usize,
    /// Workspaces skipped with a warning (unreadable or corrupt `status.json`).
    pub skipped: usize,
    /// `status.json` files read: none on a rescan of an unchanged, synced tree.
    pub status_reads: usize,
    /// Dispatches built and handed to the Queue.
    pub found: usize,
    /// What the Queue did with them, summed over the chunks (dispatches queued,
    /// entries started, duplicates a concurrent scan had queued first).
    pub receipt: EnqueueReceipt,
}

/// Rewrite ghost workspaces (`running` with a dead `pid`) to `failed` (design.md §7.3).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ReapReport")]
pub struct ReapGhosts;

/// Reap only the workspaces the rescan cache knows to be running whose pid is gone
/// (design.md §7.3): pid liveness first, a `status.json` read only for a dead pid.
/// What the watcher's events and the daemon's fallback rescan trigger.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ReapReport")]
pub struct ReapRunning;

/// Scan exactly these workspaces (the host knows which finished), with the walk's
/// rules (no symlink followed, the size caps) and the same path into the Queue as
/// [`ScanToQueue`]: an embedding host gets its pickup without any watcher. A name is
/// relative to the workspace root (`core/go-io/task-5`) or an absolute path below it;
/// anything else (outside the root, `..`) is refused and reported, never read.
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "Result<NamedScanSummary, SyncError>")]
pub struct ScanWorkspaces {
    /// The workspaces to scan.
    pub names: Vec<String>,
    /// Agent the entries are pushed as.
    pub agent_id: String,
    /// Fleet node the entries are pushed as.
    pub fleet_node_id: Option<i64>,
}

/// Reply to [`ScanWorkspaces`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedScanSummary {
    /// What the scan of the accepted names did.
    pub summary: ScanSummary,
    /// Names refused, each with why (outside the root, not a plain relative name).
    pub refused: Vec<String>,
}

/// Reply to [`ReapGhosts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Names of the workspaces rewritten.
    pub reaped: Vec<String>,
}

// --------------------------------------------------------------------------- ledger

/// Keep only the (id, fingerprint) keys the Ledger has not marked, in order.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<DispatchKey>, StoreError>")]
pub struct Unsynced {
    /// Candidates from a scan.
    pub candidates: Vec<DispatchKey>,
}

/// How many dispatch ids the Ledger knows.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct LedgerSize;

// ---------------------------------------------------------------------------- queue

/// Queue dispatches durably: replies only after the commit is on disk.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<EnqueueReceipt, StoreError>")]
pub struct Enqueue {
    /// Agent the entries are pushed as.
    pub agent_id: String,
    /// Fleet node the entries are pushed as.
    pub fleet_node_id: Option<i64>,
    /// What to queue.
    pub batch: EnqueueBatch,
}

/// The two sources of queued work.
#[derive(Debug, Clone)]
pub enum EnqueueBatch {
    /// From a scan: deduplicated by (id, fingerprint) against everything queued (P8).
    Scanned(Vec<ScannedDispatch>),
    /// From the host: queued as given, the host owns their identity.
    Host(Vec<Dispatch>),
}

impl EnqueueBatch {
    /// True when there is nothing to queue.
    pub fn is_empty(&self) -> bool {
        match self {
            EnqueueBatch::Scanned(d) => d.is_empty(),
            EnqueueBatch::Host(d) => d.is_empty(),
        }
    }
}

/// Reply to [`Enqueue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueReceipt {
    /// Entries started; a dispatch that joined the tail entry starts none.
    pub entries: usize,
    /// Dispatches queued.
    pub dispatches: usize,
    /// Scanned dispatches dropped because the same (id, fingerprint) is already held.
    pub duplicates: usize,
}

/// Of these scanned candidates, the ones the Queue does not hold yet under the same
/// (id, fingerprint), queued or dead-lettered, in order: a scan builds records only
/// for those. Enqueues waiting for their group commit are committed first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<DispatchKey>, StoreError>")]
pub struct NotQueued {
    /// Candidates, before their records are built.
    pub candidates: Vec<DispatchKey>,
}

/// The size of the sync database file in bytes, for status (`db_bytes`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct DatabaseSize;

/// Hand the head entry to the Pusher if it is due and no other lease is out: one
/// request in flight, ever.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Lease, StoreError>")]
pub struct LeaseNext;

/// Reply to [`LeaseNext`].
#[derive(Debug, Clone, PartialEq)]
pub enum Lease {
    /// Send this entry's next part, then [`Report`] the outcome. Shared: the Queue
    /// applies the report to the same copy instead of decoding the entry again.
    Ready(std::sync::Arc<QueueEntry>),
    /// The head is backing off until then.
    Waiting {
        /// The head's `next_attempt`.
        until: Timestamp,
    },
    /// The head is already leased and not yet reported.
    InFlight,
    /// Nothing is queued.
    Empty,
}

/// What happened to a leased entry's POST: the Queue decides what follows.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Decision, StoreError>")]
pub struct Report {
    /// The leased entry.
    pub seq: u64,
    /// The platform's answer.
    pub outcome: DeliveryOutcome,
    /// Bytes of the request body, for the history record.
    pub payload_size: u64,
}

/// Gives a lease back without sending it: a stop was asked while it was being leased.
/// The entry stays the head, unsent, for the next start.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ReleaseLease {
    /// The leased entry.
    pub seq: u64,
}

/// The platform's answer to one POST, as the Pusher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx.
    Delivered {
        /// Bytes of the request body (for History).
        payload_size: u64,
    },
    /// A non-2xx response.
    Status {
        /// The HTTP status.
        status: u16,
        /// Its `Retry-After`, if any and parseable.
        retry_after: Option<RetryAfter>,
        /// Status line and a bounded excerpt of the body.
        detail: String,
    },
    /// No response: connect failure, reset, timeout.
    Network {
        /// What failed.
        detail: String,
    },
}

/// What the Queue did with a reported outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The part was removed (and the entry, when it was the last part).
    Delivered {
        /// Dispatches delivered.
        dispatches: usize,
    },
    /// Kept; the drain stops until `at` (the platform is likely down).
    RetryAt {
        /// The new `next_attempt`.
        at: Timestamp,
        /// True for 401/403: reported as `auth_failed`.
        unauthorized: bool,
    },
    /// A 413 on several dispatches: the part was split in two, in place.
    Split,
    /// Refused for good: moved to `dead_letters`; the drain goes on.
    DeadLettered {
        /// Dispatches moved.
        dispatches: usize,
        /// HTTP status of the refusal.
        status: u16,
    },
}

/// A page of queued entries, oldest first. A listing decodes only its page, so a
/// backlog of any size is listed in bounded memory, a page per message.
#[derive(Message, Debug, Clone, Copy, Default)]
#[rtype(result = "Result<Vec<QueueEntry>, StoreError>")]
pub struct ListQueue {
    /// Only entries whose seq is greater (the last seq of the previous page).
    pub after: Option<u64>,
    /// At most this many (the whole rest of the queue when `None`).
    pub limit: Option<usize>,
}

/// A page of dead letters, oldest first (paged like [`ListQueue`]).
#[derive(Message, Debug, Clone, Copy, Default)]
#[rtype(result = "Result<Vec<DeadLetter>, StoreError>")]
pub struct ListDeadLetters {
    /// Only dead letters whose seq is greater.
    pub after: Option<u64>,
    /// At most this many (all the rest when `None`).
    pub limit: Option<usize>,
}

/// Move dead letters back to the tail of the queue, with a fresh start.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RequeueReport, StoreError>")]
pub struct Requeue {
    /// Which dead letters (by seq); every one when `None`.
    pub seqs: Option<Vec<u64>>,
}

/// Reply to [`Requeue`]; also the control socket's answer to a requeue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequeueReport {
    /// (dead letter seq, new queue seq) for each one moved.
    pub requeued: Vec<(u64, u64)>,
    /// Seqs asked for that are not dead letters.
    pub missing: Vec<u64>,
}

/// Counts and the head, for status (H2).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<QueueSummary, StoreError>")]
pub struct QueueStatus;

/// Reply to [`QueueStatus`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueSummary {
    /// Entries queued.
    pub entries: u64,
    /// Dispatches in them.
    pub dispatches: u64,
    /// Entries in `dead_letters`.
    pub dead_letters: u64,
    /// The next entry to send.
    pub head: Option<HeadSummary>,
}

/// The head entry, for status (read back from the control socket's status answer).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HeadSummary {
    /// Its seq.
    pub seq: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not sent before.
    pub next_attempt: Option<Timestamp>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub queued_at: Timestamp,
}

/// Tell `waker` whenever work becomes due (a new enqueue, a requeue).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetWaker(pub Recipient<QueueChanged>);

/// Sent by the Queue to its waker: there is work to drain, now.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct QueueChanged;

// -------------------------------------------------------------------------- history

/// Append a sync record (trimmed to the newest N) and update the last push/pull time.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Record(pub SyncRecord);

/// Set or clear `auth_failed` (a 401/403 sets it; the next success clears it).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StoreError>")]
pub struct SetAuthFailed(pub bool);

/// The newest `limit` records (all kept when `None`), oldest first.
#[derive(Message, Debug, Clone, Copy, Default)]
#[rtype(result = "Result<Vec<SyncRecord>, StoreError>")]
pub struct RecentRecords {
    /// How many of the newest.
    pub limit: Option<usize>,
}

/// Last push/pull times and the auth flag.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<SyncState, StoreError>")]
pub struct ReadSyncState;

/// Reply to [`ReadSyncState`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SyncState {
    /// Last successful push.
    pub last_push_at: Option<Timestamp>,
    /// Last successful pull.
    pub last_pull_at: Option<Timestamp>,
    /// A 401/403 since the last success.
    #[serde(default)]
    pub auth_failed: bool,
}
