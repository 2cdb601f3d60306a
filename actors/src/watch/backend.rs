//! What the watcher asks of the platform, behind a small trait so tests can inject
//! failures: add or remove a watch on one directory, and signals back (a path changed,
//! the event queue overflowed, the watcher failed).
//!
//! The real one is `notify`'s recommended watcher (inotify on Linux, FSEvents or
//! kqueue elsewhere), always non-recursive: what is watched is decided directory by
//! directory by [`super::plan`], never by the backend walking a tree itself (a
//! recursive inotify watch would descend into every clone under `repo/`).

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

/// What the watcher's thread is told: the backend's signals, and the service's
/// orders on the same channel (so the thread blocks on one channel and costs nothing
/// while nothing happens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Something changed at this path (a file or directory, absolute).
    Changed(PathBuf),
    /// Events were lost (the kernel's queue overflowed): only a rescan is safe.
    Overflow,
    /// The watcher failed (a watch limit hit while it added one itself, an I/O
    /// error): only a rescan is safe.
    Failed(String),
    /// The service: plan the watches again (after a scan of the whole tree).
    Replan,
    /// The service: a periodic rescan of the whole tree ended; plan again only when
    /// the plan is partial or older than [`super::WatchConfig::max_plan_age`].
    Refresh,
    /// The service: stop watching.
    Stop,
}

/// Why a watch could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// The directory is gone (removed since it was listed): nothing to watch.
    Gone,
    /// The per-user limit of kernel watches is reached.
    Limit,
    /// Anything else, with the reason.
    Other(String),
}

/// Adds and removes watches on single directories.
pub trait Backend: Send {
    /// Watches the entries of `dir` (created, removed, renamed, written).
    fn add(&mut self, dir: &Path) -> Result<(), AddError>;
    /// Stops watching `dir` (a no-op when it is not watched).
    fn remove(&mut self, dir: &Path);
}

/// `notify`'s recommended watcher, non-recursive.
pub struct NotifyBackend {
    /// The platform's watcher; dropping it ends its thread.
    watcher: notify::RecommendedWatcher,
}

impl NotifyBackend {
    /// A watcher whose signals go to `signals`; `Err` where the platform has none
    /// (or it cannot start: inotify instances exhausted).
    pub fn start(signals: Sender<Signal>) -> Result<NotifyBackend, String> {
        let handler = move |event: notify::Result<notify::Event>| {
            let signal = match event {
                Ok(event) if event.need_rescan() => Some(Signal::Overflow),
                Ok(event) if ignored(&event.kind) => None,
                Ok(event) => {
                    for path in event.paths {
                        let _ = signals.send(Signal::Changed(path));
                    }
                    None
                }
                Err(e) => Some(Signal::Failed(e.to_string())),
            };
            if let Some(signal) = signal {
                let _ = signals.send(signal);
            }
        };
        let watcher = notify::recommended_watcher(handler).map_err(|e| e.to_string())?;
        Ok(NotifyBackend { watcher })
    }
}

/// Opens and reads, the scan's own included, change nothing: only a close after a
/// write is a change among the accesses.
fn ignored(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => true,
        _ => false,
    }
}

impl Backend for NotifyBackend {
    fn add(&mut self, dir: &Path) -> Result<(), AddError> {
        self.watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| match e.kind {
                notify::ErrorKind::MaxFilesWatch => AddError::Limit,
                notify::ErrorKind::PathNotFound => AddError::Gone,
                notify::ErrorKind::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound => {
                    AddError::Gone
                }
                _ => AddError::Other(e.to_string()),
            })
    }

    fn remove(&mut self, dir: &Path) {
        let _ = self.watcher.unwatch(dir);
    }
}

/// The per-user cap on kernel watches (`/proc/sys/fs/inotify/max_user_watches`),
/// when the platform has one.
pub fn kernel_watch_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether this platform has a native watcher (`auto` turns watching on there).
pub fn supported() -> bool {
    cfg!(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_reads_are_not_changes_but_a_close_after_a_write_is() {
        assert!(ignored(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(ignored(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!ignored(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!ignored(&EventKind::Create(
            notify::event::CreateKind::Folder
        )));
    }
}
