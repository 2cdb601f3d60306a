//! The workspace walk behind the Scanner, with a cache that makes a rescan cheap.
//!
//! Walk rules (DESIGN 4.1): a directory is a workspace when it holds a regular
//! `status.json` and it is at depth 1 or 3, or it has both `repo/` and `.meta/`. The
//! walk does not descend into a workspace, never follows a symlink, and reads
//! `status.json` (1 MiB) and `.meta/report.json` (8 MiB) only below a size cap.
//! Anything unreadable or corrupt is skipped with a `warn!` and the walk goes on (R4).
//!
//! # The rescan cache
//!
//! A fleet host has tens of thousands of finished workspaces that never change. The
//! [`WalkCache`] remembers, per directory, its mtime and child directories, and per
//! workspace the size and mtime of its `status.json` and what it held (not terminal,
//! corrupt, or terminal with a fingerprint the Ledger already has). On a rescan:
//!
//! - a directory whose mtime is unchanged is not listed again (creating, removing or
//!   renaming an entry changes a directory's mtime);
//! - a `status.json` whose size and mtime are unchanged is not read again; a dispatch
//!   the Ledger reported as synced is not even looked up again (the Ledger only grows,
//!   and a new fingerprint means a new `status.json`);
//! - **racy entries are never trusted**: anything whose mtime is within
//!   [`RACY_WINDOW`] of the scan that cached it may have changed again in the same
//!   clock tick, so it is read again next time (git's "racily clean" rule).
//!
//! Report files are only read for dispatches that are about to be queued, so an
//! unchanged, synced workspace costs one `stat` per rescan.
//!
//! # Parallel walk
//!
//! The entries of the root (organisations, typically) are walked on up to four scoped
//! threads, one per core. The cache is stored split by those entries, so each worker
//! takes its part whole and hands it back; results are merged in lexical order, so the
//! queue sees exactly what a sequential walk would produce.
//!
//! # Syscalls
//!
//! Each listed directory is opened once ([`DirHandle`]); its children are looked up
//! relative to it (`task-5/status.json`), so the kernel resolves two path components
//! instead of the whole path from `/` on every call. `O_NOFOLLOW` and
//! `AT_SYMLINK_NOFOLLOW` keep the no-symlink rule for the files themselves, and only
//! entries listed as real directories are ever looked into.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::model::{attach_report, ScannedDispatch, WorkspaceStatus};

/// Largest `status.json` read.
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Largest `.meta/report.json` read.
pub const MAX_REPORT_BYTES: u64 = 8 * 1024 * 1024;
/// Deepest directory looked at (branch-named tasks nest a few levels).
const MAX_DEPTH: usize = 8;
/// An mtime this close to the caching scan's start is not trusted (coarse clocks).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What a walk found, before the Ledger filters it.
#[derive(Debug, Default)]
pub struct TreeScan {
    /// Terminal dispatches not known to be synced, in walk order.
    pub terminal: Vec<ScannedDispatch>,
    /// Workspaces found.
    pub workspaces: usize,
    /// Workspaces skipped with a warning.
    pub skipped: usize,
}

/// What a `stat` says about a file, as far as the walk cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStat {
    is_file: bool,
    is_dir: bool,
    /// Size and modification time: the cheap identity of a file version.
    signature: Signature,
}

impl FileStat {
    fn of_stat(st: &libc::stat) -> FileStat {
        let kind = st.st_mode & libc::S_IFMT;
        FileStat {
            is_file: kind == libc::S_IFREG,
            is_dir: kind == libc::S_IFDIR,
            signature: Signature {
                len: u64::try_from(st.st_size).unwrap_or(0),
                mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
            },
        }
    }

    fn of_metadata(meta: &Metadata) -> FileStat {
        FileStat {
            is_file: meta.is_file(),
            is_dir: meta.is_dir(),
            signature: Signature {
                len: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            },
        }
    }
}

/// Size and modification time (ns since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Signature {
    len: u64,
    mtime_ns: i128,
}

impl Signature {
    /// Safe to trust on a later scan: old enough that no same-tick rewrite can hide.
    fn settled_before(&self, scan_started_ns: i128) -> bool {
        self.mtime_ns + (RACY_WINDOW.as_nanos() as i128) < scan_started_ns
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A directory opened once, so lookups below it are relative (see the module docs).
pub(crate) struct DirHandle {
    fd: OwnedFd,
}

impl DirHandle {
    fn open(path: &Path) -> std::io::Result<DirHandle> {
        let path = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: a valid NUL-terminated path; the fd is owned from here on.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(DirHandle {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// `lstat` of `child/rest` below this directory.
    fn lstat(&self, child: &OsStr, rest: &str) -> std::io::Result<FileStat> {
        let path = relative(child, rest)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid fd and path; `st` is written by the kernel on success only.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                path.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so `st` is initialised.
        Ok(FileStat::of_stat(unsafe { &st.assume_init() }))
    }

    /// Opens `child/rest` below this directory for reading. The last component is
    /// never a symlink (`O_NOFOLLOW`); `child` is a listed directory, and `rest` must be
    /// a single name (see [`Workspace::open`] for deeper paths).
    fn open_file(&self, child: &OsStr, rest: &str) -> std::io::Result<File> {
        self.open_at(&relative(child, rest)?, 0)
    }

    /// Opens `child/dir` as a directory, refusing a symlink.
    fn open_dir(&self, child: &OsStr, dir: &str) -> std::io::Result<DirHandle> {
        let file = self.open_at(&relative(child, dir)?, libc::O_DIRECTORY)?;
        Ok(DirHandle {
            fd: OwnedFd::from(file),
        })
    }

    /// Opens `path` below this directory in one `openat2` call that refuses a symlink in
    /// any component and any escape from the directory. `ENOSYS` before Linux 5.6.
    fn open_no_symlinks(&self, path: &CString) -> std::io::Result<File> {
        // SAFETY: `open_how` is plain integers; all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOFOLLOW) as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;
        // SAFETY: valid fd, NUL-terminated path and a properly sized `open_how`; the
        // returned fd is owned by the File.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            // A symlink anywhere is ELOOP, like O_NOFOLLOW on the last component.
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::c_int::try_from(fd).map_err(std::io::Error::other)?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn open_at(&self, path: &CString, extra: libc::c_int) -> std::io::Result<File> {
        // SAFETY: valid fd and path; the returned fd is owned by the File.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                path.as_ptr(),
                // O_NONBLOCK: a FIFO planted as status.json must not hang the walk (it
                // is then refused as not a regular file); regular files ignore it.
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | extra,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

fn relative(child: &OsStr, rest: &str) -> std::io::Result<CString> {
    let mut bytes = Vec::with_capacity(child.len() + rest.len() + 2);
    bytes.extend_from_slice(child.as_bytes());
    bytes.push(b'/');
    bytes.extend_from_slice(rest.as_bytes());
    Ok(CString::new(bytes)?)
}

/// One workspace as the walk hands it to a visitor.
pub(crate) struct Workspace<'a> {
    /// Its directory (for messages and rewrites).
    pub dir: &'a Path,
    /// Its name relative to the root: the dispatch id.
    pub name: &'a str,
    /// The stat of its `status.json`.
    pub status: FileStat,
    /// `status.json` already open (a cold walk opens instead of stat-ing), taken by the
    /// first read.
    status_file: std::cell::RefCell<Option<File>>,
    /// The directory it was listed in.
    parent: &'a DirHandle,
    /// Its entry name in `parent`.
    entry: &'a OsStr,
}

impl Workspace<'_> {
    /// Opens `status.json` or `.meta/report.json`; no component may be a symlink (a
    /// `.meta` linked out of the root must not be read through).
    fn open(&self, rest: &str) -> std::io::Result<File> {
        if rest == "status.json" {
            if let Some(file) = self.status_file.borrow_mut().take() {
                return Ok(file);
            }
        }
        match self.parent.open_no_symlinks(&relative(self.entry, rest)?) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            other => return other,
        }
        // Kernels before 5.6: one component at a time, each with O_NOFOLLOW.
        match rest.split_once('/') {
            None => self.parent.open_file(self.entry, rest),
            Some((dir, name)) => {
                let dir = self.parent.open_dir(self.entry, dir)?;
                dir.open_at(&CString::new(name)?, 0)
            }
        }
    }
}

/// How a walk looks at `status.json`: a cold walk reads almost every one, so it opens
/// and `fstat`s it (no second path lookup); a warm rescan usually only compares, so a
/// plain `lstat` is cheaper.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Open, then `fstat` the descriptor.
    Open,
    /// `lstat` only.
    Stat,
}

/// What an unchanged `status.json` held last time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    /// Not JSON, or unreadable: skipped (and counted) without a new warning.
    Corrupt,
    /// Not a terminal status: nothing to push.
    NotTerminal,
    /// Terminal; `synced` once the Ledger has this fingerprint.
    Terminal { fingerprint: String, synced: bool },
}

/// The cached view of one directory.
#[derive(Debug)]
struct DirState {
    /// The directory's own signature when listed.
    signature: Signature,
    /// Its child directories, sorted.
    children: Vec<PathBuf>,
}

/// The cached view of one workspace's `status.json`.
#[derive(Debug)]
struct WorkspaceState {
    signature: Signature,
    known: Known,
}

/// Remembers the last walk (see the module docs). Owned by the Scanner.
///
/// Kept split by top-level entry of the root, the unit the walk runs in parallel, so a
/// scan hands each worker its part without regrouping anything.
#[derive(Debug, Default)]
pub struct WalkCache {
    /// The root directory itself.
    root: Option<DirState>,
    /// Everything below each top-level entry.
    tops: HashMap<std::ffi::OsString, TopCache>,
}

/// The cache below one top-level entry of the root.
#[derive(Debug, Default)]
struct TopCache {
    /// Listed directories by path.
    dirs: HashMap<PathBuf, DirState>,
    /// Workspaces by name (= dispatch id).
    workspaces: HashMap<String, WorkspaceState>,
}

impl WalkCache {
    /// Records that the Ledger has these dispatches at these fingerprints.
    pub fn mark_synced<'a>(&mut self, synced: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (id, fingerprint) in synced {
            let top = id.split('/').next().unwrap_or_default();
            let state = self
                .tops
                .get_mut(OsStr::new(top))
                .and_then(|part| part.workspaces.get_mut(id));
            if let Some(Known::Terminal {
                fingerprint: known,
                synced,
            }) = state.map(|s| &mut s.known)
            {
                if known == fingerprint {
                    *synced = true;
                }
            }
        }
    }

    /// Workspaces remembered.
    pub fn len(&self) -> usize {
        self.tops.values().map(|t| t.workspaces.len()).sum()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn knows(&self, name: &str) -> bool {
        let top = name.split('/').next().unwrap_or_default();
        self.tops
            .get(OsStr::new(top))
            .is_some_and(|t| t.workspaces.contains_key(name))
    }
}

/// Walks `root` without a cache.
pub fn scan_tree(root: &Path) -> TreeScan {
    scan_tree_cached(root, &mut WalkCache::default())
}

/// Walks `root`, reusing and refreshing `cache`.
///
/// The entries of `root` are walked in parallel (one thread per core, at most four):
/// each takes the part of the cache below it, and the parts are merged back in
/// lexical order, so the result is exactly that of a sequential walk.
pub fn scan_tree_cached(root: &Path, cache: &mut WalkCache) -> TreeScan {
    let started = now_ns();
    let mut root_state = HashMap::with_capacity(1);
    let mut old_root = HashMap::new();
    if let Some(state) = cache.root.take() {
        old_root.insert(root.to_path_buf(), state);
    }
    let listed = cache_listing(
        &mut old_root,
        &mut root_state,
        root,
        &mut || list_dirs(root, 0),
        started,
    );
    cache.root = root_state.remove(root);
    let handle = listed.and_then(|children| match DirHandle::open(root) {
        Ok(handle) => Some((children, handle)),
        Err(e) => {
            log::warn!("cannot open {}: {e}; skipped", root.display());
            None
        }
    });
    let Some((children, handle)) = handle else {
        cache.tops.clear();
        return TreeScan::default();
    };
    // One job per top-level entry, with its part of the cache; entries gone from disk
    // are not listed, so their part is dropped with the old map.
    let mut old_tops = std::mem::take(&mut cache.tops);
    let jobs: Vec<Mutex<Option<Job>>> = children
        .into_iter()
        .map(|child| {
            let entry = child.file_name().unwrap_or_default().to_owned();
            let old = old_tops.remove(&entry).unwrap_or_default();
            Mutex::new(Some(Job { child, entry, old }))
        })
        .collect();
    let parts: Vec<Mutex<Option<Part>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = jobs.get(index) else { break };
        if let Some(job) = lock(slot).take() {
            *lock(&parts[index]) = Some(walk_top(&handle, job, started));
        }
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|scope| {
        for _ in 1..workers.min(jobs.len()) {
            scope.spawn(work);
        }
        work();
    });
    let mut scan = TreeScan::default();
    for part in parts
        .into_iter()
        .filter_map(|p| p.into_inner().unwrap_or_else(|e| e.into_inner()))
    {
        scan.terminal.extend(part.scan.terminal);
        scan.workspaces += part.scan.workspaces;
        scan.skipped += part.scan.skipped;
        cache.tops.insert(part.entry, part.cache);
    }
    scan
}

/// One top-level entry of the root and the part of the cache below it.
struct Job {
    child: PathBuf,
    entry: std::ffi::OsString,
    old: TopCache,
}

/// What walking one top-level entry found, and its new part of the cache.
struct Part {
    entry: std::ffi::OsString,
    scan: TreeScan,
    cache: TopCache,
}

fn walk_top(root: &DirHandle, job: Job, started: i128) -> Part {
    let Job {
        child,
        entry,
        old: TopCache {
            dirs: mut old_dirs,
            workspaces: mut old,
        },
    } = job;
    // A part seen for the first time is read in full: open beats stat then.
    let probe = if old.is_empty() {
        Probe::Open
    } else {
        Probe::Stat
    };
    let mut scan = TreeScan::default();
    let mut cache = TopCache {
        dirs: HashMap::with_capacity(old_dirs.len()),
        workspaces: HashMap::with_capacity(old.len()),
    };
    let mut buffer = Vec::with_capacity(4096);
    visit_child(
        root,
        &child,
        "",
        1,
        probe,
        &mut |ws| {
            scan.workspaces += 1;
            // Reuse the remembered key: a rescan allocates nothing per workspace.
            let (name, previous) = match old.remove_entry(ws.name) {
                Some((name, state)) => (name, Some(state)),
                None => (ws.name.to_string(), None),
            };
            if let Some(state) = visit_workspace(ws, previous, started, &mut scan, &mut buffer) {
                cache.workspaces.insert(name, state);
            }
        },
        &mut |path, list| cache_listing(&mut old_dirs, &mut cache.dirs, path, list, started),
    );
    Part { entry, scan, cache }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decides what one workspace contributes; returns what to remember about it.
fn visit_workspace(
    ws: &Workspace<'_>,
    previous: Option<WorkspaceState>,
    started: i128,
    scan: &mut TreeScan,
    buffer: &mut Vec<u8>,
) -> Option<WorkspaceState> {
    let signature = ws.status.signature;
    if let Some(previous) =
        previous.filter(|p| p.signature == signature && signature.settled_before(started))
    {
        match &previous.known {
            Known::Corrupt => scan.skipped += 1,
            Known::NotTerminal | Known::Terminal { synced: true, .. } => {}
            Known::Terminal { synced: false, .. } => {
                // Still unsynced (or queued): rebuild the record, which needs the report.
                if let Some(status) = read_status(ws, buffer) {
                    scan.terminal.push(dispatch_of(ws, status, buffer));
                }
            }
        }
        return Some(previous);
    }
    let known = match read_status(ws, buffer) {
        None => {
            scan.skipped += 1;
            Known::Corrupt
        }
        Some(status) if status.is_terminal() => {
            let dispatch = dispatch_of(ws, status, buffer);
            let fingerprint = dispatch.fingerprint.clone();
            scan.terminal.push(dispatch);
            Known::Terminal {
                fingerprint,
                synced: false,
            }
        }
        Some(_) => Known::NotTerminal,
    };
    Some(WorkspaceState { signature, known })
}

fn dispatch_of(
    ws: &Workspace<'_>,
    status: WorkspaceStatus,
    buffer: &mut Vec<u8>,
) -> ScannedDispatch {
    let fingerprint = status.fingerprint();
    let mut record = status.into_dispatch(ws.name);
    if let Some(report) = read_report(ws, buffer) {
        attach_report(&mut record, report);
    }
    ScannedDispatch {
        id: ws.name.to_string(),
        fingerprint,
        record,
    }
}

/// The child directories of `path`: from the cache when `path` is unchanged, else
/// listed (and cached when settled).
fn cache_listing(
    old: &mut HashMap<PathBuf, DirState>,
    new: &mut HashMap<PathBuf, DirState>,
    path: &Path,
    list: &mut dyn FnMut() -> Option<Vec<PathBuf>>,
    started: i128,
) -> Option<Vec<PathBuf>> {
    let signature = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| FileStat::of_metadata(&m).signature);
    let cached = old.remove(path).filter(|d| Some(d.signature) == signature);
    let children = match cached {
        Some(state) => state.children,
        None => list()?,
    };
    if let Some(signature) = signature.filter(|s| s.settled_before(started)) {
        new.insert(
            path.to_path_buf(),
            DirState {
                signature,
                children: children.clone(),
            },
        );
    }
    Some(children)
}

/// A workspace visitor.
pub(crate) type Visit<'a> = dyn FnMut(&Workspace<'_>) + 'a;
/// Returns a directory's children; the closure it is given lists them from disk.
pub(crate) type Listing<'a> =
    dyn FnMut(&Path, &mut dyn FnMut() -> Option<Vec<PathBuf>>) -> Option<Vec<PathBuf>> + 'a;

/// Calls `visit` for every workspace under `root`, in lexical order, listing
/// directories through `listing` (which may answer from a cache).
pub(crate) fn visit_workspaces(
    root: &Path,
    probe: Probe,
    visit: &mut Visit<'_>,
    listing: &mut Listing<'_>,
) {
    visit_dir(root, "", 0, probe, visit, listing);
}

/// Lists `dir` from disk: child directories only, sorted, symlinks excluded.
pub(crate) fn list_dirs(dir: &Path, depth: usize) -> Option<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            if depth > 0 || e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot read {}: {e}; skipped", dir.display());
            }
            return None;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        // `file_type` does not follow symlinks: a link is never walked.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort_unstable();
    Some(children)
}

/// Visits the children of `dir`, whose name relative to the root is `prefix`.
fn visit_dir(
    dir: &Path,
    prefix: &str,
    depth: usize,
    probe: Probe,
    visit: &mut Visit<'_>,
    listing: &mut Listing<'_>,
) {
    let Some(children) = listing(dir, &mut || list_dirs(dir, depth)) else {
        return;
    };
    let handle = match DirHandle::open(dir) {
        Ok(handle) => handle,
        Err(e) => {
            log::warn!("cannot open {}: {e}; skipped", dir.display());
            return;
        }
    };
    for child in &children {
        visit_child(&handle, child, prefix, depth + 1, probe, visit, listing);
    }
}

/// Classifies one listed entry of `parent`: visits it as a workspace, or walks into it.
fn visit_child(
    parent: &DirHandle,
    child: &Path,
    prefix: &str,
    child_depth: usize,
    probe: Probe,
    visit: &mut Visit<'_>,
    listing: &mut Listing<'_>,
) {
    let Some(entry) = child.file_name() else {
        return;
    };
    let Some(entry_name) = entry.to_str() else {
        log::warn!("{} has a name that is not UTF-8; skipped", child.display());
        return;
    };
    let (status, status_file) = match probe {
        Probe::Stat => (parent.lstat(entry, "status.json").ok(), None),
        Probe::Open => match parent.open_file(entry, "status.json") {
            Ok(file) => match file.metadata() {
                Ok(meta) => (Some(FileStat::of_metadata(&meta)), Some(file)),
                Err(_) => (parent.lstat(entry, "status.json").ok(), None),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            // There but not openable (permissions): still a workspace, whose read
            // then fails with a warning instead of vanishing silently.
            Err(_) => (parent.lstat(entry, "status.json").ok(), None),
        },
    };
    let status = status.filter(|s| s.is_file);
    let is_dir = |name: &str| parent.lstat(entry, name).is_ok_and(|s| s.is_dir);
    // Depth 1 and 3 need no more stats; elsewhere the shape decides.
    let accepted = status.is_some() && (child_depth == 1 || child_depth == 3);
    let shaped = !accepted && is_dir("repo") && is_dir(".meta");
    let name = if prefix.is_empty() {
        entry_name.to_string()
    } else {
        format!("{prefix}/{entry_name}")
    };
    if let Some(status) = status.filter(|_| accepted || shaped) {
        visit(&Workspace {
            dir: child,
            name: &name,
            status,
            status_file: std::cell::RefCell::new(status_file),
            parent,
            entry,
        });
    } else if !shaped && child_depth < MAX_DEPTH {
        // A workspace-shaped directory without status.json is still being set up:
        // never walk into its clone.
        visit_dir(child, &name, child_depth, probe, visit, listing);
    }
}

/// Reads a regular file of at most `cap` bytes into `buffer`; `false` (with a
/// warning) otherwise, silently when it does not exist. `known` is the walk's `lstat`
/// of it, which saves an `fstat`.
fn read_capped(
    ws: &Workspace<'_>,
    rest: &str,
    cap: u64,
    known: Option<FileStat>,
    buffer: &mut Vec<u8>,
) -> bool {
    let kind = if rest == "status.json" {
        "status file"
    } else {
        "report file"
    };
    let what = || format!("{kind} {}", ws.dir.join(rest).display());
    let file = match ws.open(rest) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => {
            log::warn!("cannot read {}: {e}; skipped", what());
            return false;
        }
    };
    let stat = match known {
        Some(stat) => stat,
        None => match file.metadata() {
            Ok(meta) => FileStat::of_metadata(&meta),
            Err(e) => {
                log::warn!("cannot stat {}: {e}; skipped", what());
                return false;
            }
        },
    };
    if !stat.is_file {
        return false;
    }
    if stat.signature.len > cap {
        log::warn!(
            "{} is {} bytes, over the {cap}-byte cap; skipped",
            what(),
            stat.signature.len
        );
        return false;
    }
    buffer.clear();
    // `take` guards against a file that grew since the size check.
    match file.take(cap + 1).read_to_end(buffer) {
        Ok(n) if n as u64 > cap => {
            log::warn!("{} grew over the {cap}-byte cap; skipped", what());
            false
        }
        Ok(_) => true,
        Err(e) => {
            log::warn!("cannot read {}: {e}; skipped", what());
            false
        }
    }
}

/// Parses the workspace's `status.json` (a corrupt one is skipped with a warning).
fn read_status(ws: &Workspace<'_>, buffer: &mut Vec<u8>) -> Option<WorkspaceStatus> {
    if !read_capped(ws, "status.json", MAX_STATUS_BYTES, Some(ws.status), buffer) {
        return None;
    }
    match WorkspaceStatus::parse(buffer) {
        Ok(status) => Some(status),
        Err(e) => {
            log::warn!(
                "corrupt status file {}/status.json: {e}; skipped",
                ws.dir.display()
            );
            None
        }
    }
}

/// Parses the workspace's `status.json` keeping every field, for a rewrite (reap).
pub(crate) fn read_status_object(
    ws: &Workspace<'_>,
) -> Option<(WorkspaceStatus, Map<String, Value>)> {
    let mut buffer = Vec::new();
    if !read_capped(
        ws,
        "status.json",
        MAX_STATUS_BYTES,
        Some(ws.status),
        &mut buffer,
    ) {
        return None;
    }
    match serde_json::from_slice::<Map<String, Value>>(&buffer) {
        Ok(object) => Some((WorkspaceStatus::from_object(&object), object)),
        Err(e) => {
            log::warn!(
                "corrupt status file {}/status.json: {e}; skipped",
                ws.dir.display()
            );
            None
        }
    }
}

fn read_report(ws: &Workspace<'_>, buffer: &mut Vec<u8>) -> Option<Map<String, Value>> {
    if !read_capped(ws, ".meta/report.json", MAX_REPORT_BYTES, None, buffer) {
        return None;
    }
    match serde_json::from_slice::<Map<String, Value>>(buffer) {
        Ok(report) => Some(report),
        Err(e) => {
            log::warn!(
                "corrupt report file {}/.meta/report.json: {e}; dispatch pushed without it",
                ws.dir.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::Duration;

    const DONE: &str = r#"{"status":"completed","updated_at":"2026-01-01T00:00:00Z","runs":1}"#;

    fn write(root: &Path, name: &str, body: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("status.json"), body).unwrap();
        dir
    }

    /// Backdates a file or directory so the cache may trust it.
    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::open(path).unwrap().set_modified(old).unwrap();
    }

    fn age_tree(root: &Path) {
        for entry in walk_all(root) {
            age(&entry);
        }
        age(root);
    }

    fn walk_all(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk_all(&path));
            }
            out.push(path);
        }
        out
    }

    fn ids(scan: &TreeScan) -> Vec<&str> {
        scan.terminal.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn settled_unchanged_status_is_not_read_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/a"]);
        cache.mark_synced([("o/r/a", "2026-01-01T00:00:00Z#1")]);
        // Same size, same mtime, different bytes: only a cache hit can miss this.
        let status = dir.join("status.json");
        let mtime = std::fs::metadata(&status).unwrap().modified().unwrap();
        std::fs::write(&status, "x".repeat(DONE.len())).unwrap();
        File::open(&status).unwrap().set_modified(mtime).unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!(
            (rescan.workspaces, rescan.skipped, rescan.terminal.len()),
            (1, 0, 0)
        );
    }

    #[test]
    fn racy_status_rewritten_in_the_same_tick_is_read_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = write(root.path(), "o/r/a", DONE);
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        cache.mark_synced([("o/r/a", "2026-01-01T00:00:00Z#1")]);
        // Rewritten at once with the same size: its mtime is too fresh to trust.
        std::fs::write(
            dir.join("status.json"),
            DONE.replace("\"runs\":1", "\"runs\":2"),
        )
        .unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!(rescan.terminal.len(), 1);
        assert_eq!(rescan.terminal[0].fingerprint, "2026-01-01T00:00:00Z#2");
    }

    #[test]
    fn changed_status_of_a_synced_dispatch_is_found_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        cache.mark_synced([("o/r/a", "2026-01-01T00:00:00Z#1")]);
        assert!(scan_tree_cached(root.path(), &mut cache)
            .terminal
            .is_empty());
        std::fs::write(
            dir.join("status.json"),
            DONE.replace("\"runs\":1", "\"runs\":3"),
        )
        .unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!(rescan.terminal[0].fingerprint, "2026-01-01T00:00:00Z#3");
    }

    #[test]
    fn unsynced_dispatch_stays_a_candidate_on_every_rescan() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/a"]);
        assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/a"]);
    }

    #[test]
    fn a_fifo_or_a_directory_named_status_json_is_skipped_without_hanging() {
        let root = tempfile::tempdir().unwrap();
        let fifo_dir = root.path().join("o/r/fifo");
        std::fs::create_dir_all(&fifo_dir).unwrap();
        let path = CString::new(fifo_dir.join("status.json").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
        std::fs::create_dir_all(root.path().join("o/r/dir/status.json")).unwrap();
        write(root.path(), "o/r/ok", DONE);
        for mut cache in [WalkCache::default(), WalkCache::default()] {
            // Cold (open) and then warm (stat) probes.
            assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/ok"]);
            assert_eq!(ids(&scan_tree_cached(root.path(), &mut cache)), ["o/r/ok"]);
        }
    }

    #[test]
    fn the_parallel_walk_finds_what_a_sequential_walk_finds_in_the_same_order() {
        let root = tempfile::tempdir().unwrap();
        for org in 0..12 {
            for task in 0..5 {
                write(root.path(), &format!("org-{org:02}/repo/task-{task}"), DONE);
            }
        }
        write(root.path(), "flat-a", DONE);
        write(root.path(), "zz-flat", DONE);
        let mut sequential = Vec::new();
        visit_workspaces(
            root.path(),
            Probe::Stat,
            &mut |ws| sequential.push(ws.name.to_string()),
            &mut |_, list| list(),
        );
        let mut cache = WalkCache::default();
        for _ in 0..2 {
            // Cold, then warm (with the cache split per top-level entry and merged back).
            let scan = scan_tree_cached(root.path(), &mut cache);
            assert_eq!(
                ids(&scan),
                sequential.iter().map(String::as_str).collect::<Vec<_>>()
            );
            assert_eq!(scan.workspaces, 62);
            assert_eq!(cache.len(), 62);
        }
    }

    #[test]
    fn new_and_removed_workspaces_in_cached_directories_are_seen() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "o/r/a", DONE);
        age_tree(root.path());
        let mut cache = WalkCache::default();
        scan_tree_cached(root.path(), &mut cache);
        write(root.path(), "o/r/b", DONE);
        assert_eq!(
            ids(&scan_tree_cached(root.path(), &mut cache)),
            ["o/r/a", "o/r/b"]
        );
        std::fs::remove_dir_all(root.path().join("o/r/a")).unwrap();
        let rescan = scan_tree_cached(root.path(), &mut cache);
        assert_eq!((ids(&rescan), rescan.workspaces), (vec!["o/r/b"], 1));
        assert!(!cache.knows("o/r/a"), "forgotten once gone");
    }
}
