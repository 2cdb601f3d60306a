//! [`FaultyBackend`]: the `StorageBackend` redb calls, which counts each call on its
//! [`Faults`] handle and fails it, or cuts the power, as the handle says.

use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::{no_space, powered_off, Cut, Faults, Journal};

/// redb's `FileBackend` over the real database file, counting calls and failing them
/// as its [`Faults`] handle says (see the docs of [`faults`](super)).
pub struct FaultyBackend {
    /// The real backend: the file, its locks. Shared with the handle only weakly, to
    /// release the locks at a power cut.
    inner: Arc<FileBackend>,
    /// The handle: counters, faults, journal.
    faults: Arc<Faults>,
}

impl fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .field("faults", &self.faults)
            .finish()
    }
}

impl FaultyBackend {
    /// A backend over `inner` reporting to `faults`; built by [`Faults::backend`].
    pub(super) fn new(inner: Arc<FileBackend>, faults: Arc<Faults>) -> Self {
        FaultyBackend { inner, faults }
    }

    /// Fails once the power is cut.
    fn alive(&self) -> io::Result<()> {
        if self.faults.is_cut() {
            Err(powered_off())
        } else {
            Ok(())
        }
    }

    /// [`alive`](Self::alive) for the lock methods.
    fn alive_for_lock(&self) -> Result<(), BackendError> {
        self.alive().map_err(BackendError::Io)
    }

    /// Keeps what `[from, to)` holds now, where it matters to a power cut: within the
    /// synced length and the file's current length.
    fn keep_pre_image(&self, journal: &mut Journal, from: u64, to: u64) -> io::Result<()> {
        let synced = journal.synced_len.unwrap_or(0);
        let to = to.min(synced).min(self.inner.len()?);
        if from >= to {
            return Ok(());
        }
        let len = usize::try_from(to - from).map_err(io::Error::other)?;
        let mut bytes = vec![0; len];
        self.inner.read(from, &mut bytes)?;
        journal.pre_images.push((from, bytes));
        Ok(())
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.alive()?;
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.alive()?;
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.faults.lock();
        self.alive()?;
        let current = self.inner.len()?;
        if len > current {
            self.faults.grows.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(journal) = &mut state.journal {
            if len < current {
                self.keep_pre_image(journal, len, current)?;
            }
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.faults.lock();
        self.alive()?;
        let n = self.faults.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        match state.cut_at {
            Some((at, Cut::BeforeSync)) if at == n => {
                self.faults.cut_locked(&mut state)?;
                return Err(powered_off());
            }
            Some((at, Cut::AfterSync)) if at == n => {
                self.inner.sync_data()?;
                if let Some(journal) = &mut state.journal {
                    journal.synced_len = Some(self.inner.len()?);
                    journal.pre_images.clear();
                }
                return self.faults.cut_locked(&mut state);
            }
            _ => {}
        }
        if state.fail_syncs || state.fail_syncs_from.is_some_and(|from| n >= from) {
            return Err(no_space());
        }
        self.inner.sync_data()?;
        if let Some(journal) = &mut state.journal {
            journal.synced_len = Some(self.inner.len()?);
            journal.pre_images.clear();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.faults.lock();
        self.alive()?;
        self.faults.writes.fetch_add(1, Ordering::SeqCst);
        self.faults
            .written_bytes
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        if state.fail_writes {
            return Err(no_space());
        }
        if let Some(journal) = &mut state.journal {
            let end = offset.saturating_add(data.len() as u64);
            self.keep_pre_image(journal, offset, end)?;
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        // Always: releasing locks is what a dead process does too.
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.alive_for_lock()?;
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.alive_for_lock()?;
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.alive_for_lock()?;
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.alive_for_lock()?;
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.alive_for_lock()?;
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.alive_for_lock()?;
        self.inner.query_lock_range(start, end)
    }
}
