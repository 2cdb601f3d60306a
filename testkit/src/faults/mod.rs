//! Storage faults under redb, in process: [`FaultyBackend`] is redb's own
//! `FileBackend` over the real database file, with a [`Faults`] handle shared by the
//! test and every backend built for that file (a [`Store`] reopens the file after an
//! I/O error through the same factory, so the handle survives the reopen).
//!
//! What it simulates:
//!
//! - **Counting**: every `sync_data` (an fsync: one per durable commit, plus one
//!   whenever a commit, durable or not, grows the file: [`Faults::grows`]) and every
//!   `write` redb makes. A benchmark divides [`Faults::syncs`] by the requests
//!   delivered.
//! - **A full disk**: [`Faults::fail_writes`] and [`Faults::fail_syncs`] make those
//!   calls fail with `ENOSPC` ("No space left on device") without touching the file,
//!   until turned off; [`Faults::fail_syncs_from`] arms it from the n-th sync on.
//!   redb then refuses the handle until it is reopened; the [`Store`] reopens it on
//!   next use (and fails again while the fault lasts). A failed sync does not undo
//!   the writes before it, as on Linux: they stay in the page cache, so a commit whose
//!   sync failed can still be seen after the reopen.
//! - **A power cut** (needs [`Faults::with_power_cuts`]): the pre-image of every
//!   region written (or cut off by a shrink) since the last successful sync is kept,
//!   with the file's length at that sync. [`Faults::power_cut`] then makes every later
//!   call of every backend of the handle fail (`EIO`, as from a dead machine),
//!   releases their file locks (the process is gone), and puts the file back as it was
//!   at the last sync: pre-images applied newest first, then that length. Opening the
//!   file afterwards with the plain [`Store::open`] sees what a machine that lost
//!   power would. [`Faults::cut_at_sync`] arms the cut at the k-th sync from now,
//!   losing that sync ([`Cut::BeforeSync`]) or keeping it ([`Cut::AfterSync`]).
//!
//! What it does not simulate: torn or reordered writes (a cut keeps every synced
//! byte and no unsynced one, while a real disk may keep any subset of the unsynced
//! writes, down to sectors); a sync that fails and also loses the pages it could not
//! write; a disk filling part-way through a write (a failing write writes nothing);
//! faults of the state directory itself (creating the file, `fsync` of the directory);
//! reads that fail while writes work. The file as found when the first backend is
//! built counts as synced.
//!
//! Use: `let faults = Faults::with_power_cuts();` then `faults.open_store(state_dir)`
//! (or `Store::open_with_backend(state_dir, faults.factory())`) and start the actors
//! over that store (`start_actors_over`). Sync numbers given to [`Faults::cut_at_sync`]
//! and [`Faults::fail_syncs_from`] count from the call (1: the next sync), so arm
//! them right before the step under test. After a cut, read the state back with
//! `reopen(root, state_dir)`: the plain store, as a restarted process would.
//!
//! This file holds the handle ([`Faults`]) and what it keeps; `backend.rs` the
//! backend redb calls, which asks the handle before each call.

mod backend;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use agent_sync_actors::error::OpenError;
use agent_sync_actors::Store;
use redb::backends::FileBackend;
use redb::{DatabaseError, StorageBackend};

pub use backend::FaultyBackend;

/// Where a power cut armed with [`Faults::cut_at_sync`] falls, relative to its sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The power goes as the sync is called: it never reaches the disk, the call
    /// fails, and the file is left as the previous sync made it (the commit the sync
    /// belonged to is lost, and its caller gets an error).
    BeforeSync,
    /// The sync completes and returns `Ok`, then the power goes: what it made durable
    /// is kept (a commit it ended is acknowledged and survives), every later call
    /// fails.
    AfterSync,
}

/// The control handle of one database file's [`FaultyBackend`]s: counters, armed
/// faults and the power-cut journal, shared by the test and every backend built for
/// the file (first open and reopens).
pub struct Faults {
    /// Faults, the cut plan and the journal. Held across every write, `set_len` and
    /// sync, so a power cut can never interleave with one of them.
    state: Mutex<State>,
    /// `sync_data` calls made before the power was cut, failed ones included.
    syncs: AtomicU64,
    /// `write` calls made before the power was cut, failed ones included.
    writes: AtomicU64,
    /// Bytes of those `write` calls.
    written_bytes: AtomicU64,
    /// `set_len` calls that lengthened the file: redb syncs after each, so a commit
    /// that grows the file costs one sync more.
    grows: AtomicU64,
    /// Set by the power cut: from then on every call fails. Atomic so reads check it
    /// without the lock.
    cut: AtomicBool,
}

/// What [`Faults`] keeps under its lock.
#[derive(Default)]
struct State {
    /// The database file, learnt when the first backend is built: a power cut
    /// restores it through a handle of its own.
    path: Option<PathBuf>,
    /// Backends built so far, to release their file locks at a power cut (a dead
    /// process holds none). Weak: redb owns them and drops them when it closes.
    open: Vec<Weak<FileBackend>>,
    /// Every write fails with `ENOSPC`.
    fail_writes: bool,
    /// Every sync fails with `ENOSPC`.
    fail_syncs: bool,
    /// Syncs from this (1-based, counting every sync of the handle) on fail.
    fail_syncs_from: Option<u64>,
    /// The sync (1-based, counting every sync of the handle) at which the power goes,
    /// and on which side of it.
    cut_at: Option<(u64, Cut)>,
    /// What a power cut restores; `None` unless made [`Faults::with_power_cuts`].
    journal: Option<Journal>,
}

/// What the file was at the last successful sync, as the undo of what came since.
#[derive(Default)]
struct Journal {
    /// The file's length at the last successful sync; `None` until the first backend
    /// measures the file as found.
    synced_len: Option<u64>,
    /// `(offset, bytes before)` of every region written or cut off since then, within
    /// `synced_len` (beyond it the final `set_len` discards everything), oldest first.
    pre_images: Vec<(u64, Vec<u8>)>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("syncs", &self.syncs())
            .field("writes", &self.writes())
            .field("cut", &self.is_cut())
            .finish_non_exhaustive()
    }
}

/// The error of a full disk.
fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// The error of every call after a power cut.
fn powered_off() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl Faults {
    /// A handle that counts and fails on demand; [`power_cut`](Self::power_cut) is
    /// refused (no journal is kept, so writes cost no extra read).
    pub fn new() -> Arc<Faults> {
        Self::build(None)
    }

    /// [`new`](Self::new), also keeping the journal a power cut restores from: each
    /// write first reads what it overwrites.
    pub fn with_power_cuts() -> Arc<Faults> {
        Self::build(Some(Journal::default()))
    }

    fn build(journal: Option<Journal>) -> Arc<Faults> {
        Arc::new(Faults {
            state: Mutex::new(State {
                journal,
                ..State::default()
            }),
            syncs: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            grows: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A backend over the file at `path` (created if missing), reporting to this
    /// handle. Refused after a power cut.
    pub fn backend(self: &Arc<Self>, path: &Path) -> Result<FaultyBackend, DatabaseError> {
        let mut state = self.lock();
        if self.is_cut() {
            return Err(powered_off().into());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let inner = Arc::new(FileBackend::new(file)?);
        if let Some(journal) = &mut state.journal {
            journal.synced_len.get_or_insert(len);
        }
        state.path = Some(path.to_path_buf());
        state.open.retain(|b| b.strong_count() > 0);
        state.open.push(Arc::downgrade(&inner));
        Ok(FaultyBackend::new(inner, Arc::clone(self)))
    }

    /// The factory [`Store::open_with_backend`] takes: a [`FaultyBackend`] of this
    /// handle for the path it is given.
    pub fn factory(
        self: &Arc<Self>,
    ) -> impl Fn(&Path) -> Result<FaultyBackend, DatabaseError> + Send + Sync + 'static {
        let faults = Arc::clone(self);
        move |path: &Path| faults.backend(path)
    }

    /// Opens the [`Store`] of `state_dir` over backends of this handle.
    pub fn open_store(self: &Arc<Self>, state_dir: &Path) -> Result<Store, OpenError> {
        Store::open_with_backend(state_dir, self.factory())
    }

    /// `sync_data` calls so far (fsyncs), failed ones included; none after a cut.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// `write` calls so far, failed ones included; none after a cut.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Bytes of the `write` calls so far.
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::SeqCst)
    }

    /// `set_len` calls so far that lengthened the file (each followed by a sync of
    /// its own); none after a cut.
    pub fn grows(&self) -> u64 {
        self.grows.load(Ordering::SeqCst)
    }

    /// Every write fails with `ENOSPC` while `on` (a full disk); nothing is written.
    pub fn fail_writes(&self, on: bool) {
        self.lock().fail_writes = on;
    }

    /// Every sync fails with `ENOSPC` while `on` (delayed allocation on a full disk);
    /// the writes before it stay in the file.
    pub fn fail_syncs(&self, on: bool) {
        self.lock().fail_syncs = on;
    }

    /// The `n`-th sync from now (1: the next) and every later one fail with `ENOSPC`,
    /// until [`heal`](Self::heal).
    pub fn fail_syncs_from(&self, n: u64) {
        // Under the lock, which every sync takes to count itself.
        let mut state = self.lock();
        state.fail_syncs_from = Some(self.syncs().saturating_add(n.max(1)));
    }

    /// Turns every failure off (a disk with room again); a power cut stays cut.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.fail_writes = false;
        state.fail_syncs = false;
        state.fail_syncs_from = None;
    }

    /// Arms a power cut at the `k`-th sync from now (1: the next), on the `side` of it
    /// given. Needs [`with_power_cuts`](Self::with_power_cuts).
    pub fn cut_at_sync(&self, k: u64, side: Cut) {
        let mut state = self.lock();
        state.cut_at = Some((self.syncs().saturating_add(k.max(1)), side));
    }

    /// Whether the power was cut.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Cuts the power now: every later call of every backend of this handle fails,
    /// their locks are released, and the file is put back as it was at the last
    /// successful sync. Refused without the journal (see
    /// [`with_power_cuts`](Self::with_power_cuts)) or before any backend was built; a
    /// second cut does nothing.
    pub fn power_cut(&self) -> io::Result<()> {
        let mut state = self.lock();
        self.cut_locked(&mut state)
    }

    /// [`power_cut`](Self::power_cut) with the lock held (also from inside a sync).
    fn cut_locked(&self, state: &mut State) -> io::Result<()> {
        if self.is_cut() {
            return Ok(());
        }
        let (Some(journal), Some(path)) = (state.journal.as_mut(), state.path.clone()) else {
            return Err(io::Error::other(
                "a power cut needs Faults::with_power_cuts and a backend built",
            ));
        };
        self.cut.store(true, Ordering::SeqCst);
        let mut released = Ok(());
        for backend in state.open.drain(..).filter_map(|b| b.upgrade()) {
            released = released.and(backend.close());
        }
        let file = OpenOptions::new().write(true).open(&path)?;
        if let Some(len) = journal.synced_len {
            file.set_len(len)?;
        }
        for (offset, bytes) in journal.pre_images.drain(..).rev() {
            file.write_all_at(&bytes, offset)?;
        }
        file.sync_all()?;
        released
    }
}
