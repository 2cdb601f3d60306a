//! The syscall layer of the walk: the only place in the walk with `unsafe`.
//!
//! Everything below the root is reached relative to an open directory: `openat` and
//! `fstatat` on a descriptor, never a path from `/`, so the kernel resolves one or two
//! components per call, and a directory swapped for a symlink after it was listed is
//! never followed. Two ways to open a path of several components (`o/r/t/status.json`
//! below the root, `t/.meta/report.json` below a listed directory), chosen by
//! [`Resolver`]:
//!
//! - **Native** on Linux: one `openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`,
//!   which refuses a symlink in any component and any escape from the directory.
//!   Kernels before 5.6 answer `ENOSYS`; the walk then switches to the portable way
//!   for the rest of the process. On every other unix Native *is* Portable.
//! - **Portable** on any unix: one `openat(O_NOFOLLOW)` per component, directories
//!   with `O_DIRECTORY`, the file last; `O_NOFOLLOW` makes a symlink fail with
//!   `ELOOP`, so no component is ever resolved through a link either.
//!
//! Both open files with `O_NONBLOCK` (a FIFO planted as `status.json` must not hang the
//! walk) and `O_NOCTTY`; what was opened is then checked with `fstat` by the capped
//! reader (a regular file, under its cap), so the two ways refuse exactly the same
//! things. Stats (`fstatat(AT_SYMLINK_NOFOLLOW)`) are the same on both ways.
//!
//! Only `openat2`, `open_how`, `SYS_openat2` and `RESOLVE_*` are Linux items, and they
//! are all behind `cfg(target_os = "linux")`; the rest is POSIX (and `d_type`, which
//! Linux, macOS and the BSDs have).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How paths of several components are opened (see the module docs). Both ways apply
/// the same rules; the choice exists so the portable way can be tested on Linux, and
/// used where `openat2` is filtered out (some sandboxes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Resolver {
    /// `openat2` on Linux (5.6 and later, else Portable); Portable elsewhere.
    #[default]
    Native,
    /// One `openat(O_NOFOLLOW)` per component, on any unix.
    Portable,
}

/// What a `stat` says about a file, as far as the walk cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStat {
    /// Regular file, directory, or anything else (symlink, FIFO, device, socket).
    pub kind: Kind,
    /// The cheap identity of this version of the file.
    pub signature: Signature,
}

/// The kinds of file the walk tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file: the only kind ever read.
    File,
    /// A directory: the only kind ever walked into.
    Dir,
    /// Anything else, never opened for reading nor walked.
    Other,
}

/// Size, modification and change time: what the rescan cache compares to decide that a
/// file or directory is unchanged. The change time catches what the modification time
/// cannot (a rewrite whose mtime was set back, a `chmod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Signature {
    /// Bytes (for a directory, whatever the file system reports).
    pub len: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i128,
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

impl FileStat {
    fn of_stat(st: &libc::stat) -> FileStat {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        };
        #[allow(clippy::unnecessary_cast)] // the field types differ between unixes
        let signature = Signature {
            len: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: nanos(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: nanos(st.st_ctime as i64, st.st_ctime_nsec as i64),
        };
        FileStat { kind, signature }
    }

    /// From `File::metadata` (an `fstat` of the descriptor).
    pub(crate) fn of_metadata(meta: &Metadata) -> FileStat {
        let kind = if meta.is_file() {
            Kind::File
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        };
        FileStat {
            kind,
            signature: Signature {
                len: meta.len(),
                mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
                ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            },
        }
    }

    /// True for a regular file.
    pub(crate) fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    /// True for a directory.
    pub(crate) fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// Flags of every file the walk opens for reading.
const READ_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
/// Flags of every directory the walk opens below the root.
const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_DIRECTORY;

/// An open directory: every lookup below it is relative to it.
#[derive(Debug)]
pub(crate) struct Dir {
    /// The descriptor, owned.
    fd: OwnedFd,
}

impl Dir {
    /// Opens the workspace root. The root is the operator's choice: a symlink to it
    /// (`~/Lethean/workspace -> /data/ws`) is followed; nothing below it ever is.
    pub(crate) fn open_root(path: &Path) -> io::Result<Dir> {
        let path = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned from here on.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        Ok(Dir { fd: owned(fd)? })
    }

    /// Opens the child directory `name` (one component), refusing a symlink.
    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let name = CString::new(name.as_bytes())?;
        Ok(Dir {
            fd: self.openat(&name, DIR_FLAGS)?,
        })
    }

    /// `fstat` of the directory itself.
    pub(crate) fn stat(&self) -> io::Result<FileStat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid descriptor; `st` is written by the kernel on success only.
        let rc = unsafe { libc::fstat(self.fd.as_raw_fd(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded, so `st` is initialised.
        Ok(FileStat::of_stat(unsafe { &st.assume_init() }))
    }

    /// `lstat` of `path` below this directory (`t/status.json`): the last component is
    /// never followed. The walk only passes names it listed as directories for the
    /// first component, and no content is ever read through a stat.
    pub(crate) fn stat_at(&self, path: &[u8]) -> io::Result<FileStat> {
        let path = CString::new(path)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid descriptor and NUL-terminated path; `st` is written by the
        // kernel on success only.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                path.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so `st` is initialised.
        Ok(FileStat::of_stat(unsafe { &st.assume_init() }))
    }

    /// Opens `path` below this directory for reading (`t/.meta/report.json`): no
    /// component may be a symlink, `..` or empty. The caller `fstat`s what it got.
    pub(crate) fn open_beneath(&self, path: &[u8], resolver: Resolver) -> io::Result<File> {
        if path
            .split(|b| *b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            ));
        }
        #[cfg(target_os = "linux")]
        if resolver == Resolver::Native {
            match self.openat2(path) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    OPENAT2_MISSING.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let _ = resolver;
        self.open_components(path)
    }

    /// The portable way: one `openat(O_NOFOLLOW)` per component.
    fn open_components(&self, path: &[u8]) -> io::Result<File> {
        let mut components = path.split(|b| *b == b'/');
        let last = components.next_back().unwrap_or_default();
        let mut parent: Option<OwnedFd> = None;
        for dir in components {
            let name = CString::new(dir)?;
            let at = parent
                .as_ref()
                .map_or(self.fd.as_raw_fd(), |fd| fd.as_raw_fd());
            parent = Some(openat(at, &name, DIR_FLAGS)?);
        }
        let name = CString::new(last)?;
        let at = parent
            .as_ref()
            .map_or(self.fd.as_raw_fd(), |fd| fd.as_raw_fd());
        Ok(File::from(openat(at, &name, READ_FLAGS)?))
    }

    /// The native way on Linux: one `openat2` that refuses any symlink and any escape.
    #[cfg(target_os = "linux")]
    fn openat2(&self, path: &[u8]) -> io::Result<File> {
        if OPENAT2_MISSING.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let path = CString::new(path)?;
        // SAFETY: `open_how` is plain integers; all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = READ_FLAGS as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;
        // SAFETY: a valid descriptor, a NUL-terminated path and a properly sized
        // `open_how`; the returned descriptor is owned by the File.
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
            // A symlink anywhere is ELOOP, as O_NOFOLLOW makes it on the portable way.
            return Err(io::Error::last_os_error());
        }
        let fd = libc::c_int::try_from(fd).map_err(io::Error::other)?;
        Ok(File::from(owned(fd)?))
    }

    fn openat(&self, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        openat(self.fd.as_raw_fd(), name, flags)
    }

    /// The names of the child directories, sorted bytewise; symlinks, `.` and `..`
    /// excluded. Read from a duplicate of the descriptor, so a directory swapped
    /// after it was opened is never the one listed.
    pub(crate) fn list_dirs(&self) -> io::Result<Vec<OsString>> {
        // SAFETY: a valid descriptor; the duplicate is owned below.
        let dup = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        let dup = owned(dup)?;
        let raw = dup.as_raw_fd();
        // SAFETY: a valid directory descriptor; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        // The stream owns the descriptor now; closedir closes it.
        std::mem::forget(dup);
        let stream = DirStream(stream);
        // SAFETY: a valid stream; the duplicate shares its offset with `self.fd`.
        unsafe { libc::rewinddir(stream.0) };
        let mut names = Vec::new();
        loop {
            let errors_known = clear_errno();
            // SAFETY: a valid stream, read by this thread only; the entry it returns
            // stays valid until the next readdir on it, and is copied before that.
            let entry = unsafe { readdir(stream.0) };
            if entry.is_null() {
                let error = io::Error::last_os_error();
                if errors_known && error.raw_os_error().is_some_and(|e| e != 0) {
                    return Err(error);
                }
                break;
            }
            // SAFETY: a non-null entry from readdir; d_name is NUL-terminated.
            let (name, kind) = unsafe { (CStr::from_ptr((*entry).d_name.as_ptr()), d_type(entry)) };
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let is_dir = match kind {
                Some(libc::DT_DIR) => true,
                Some(libc::DT_UNKNOWN) | None => self.stat_at(bytes).is_ok_and(|s| s.is_dir()),
                Some(_) => false,
            };
            if is_dir {
                names.push(OsString::from_vec(bytes.to_vec()));
            }
        }
        names.sort_unstable();
        Ok(names)
    }
}

/// A directory stream, closed (with its descriptor) on drop.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: a stream from fdopendir, closed exactly once.
        unsafe { libc::closedir(self.0) };
    }
}

/// Set once `openat2` answered `ENOSYS`: the portable way is used from then on.
#[cfg(target_os = "linux")]
static OPENAT2_MISSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn openat(at: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a valid descriptor and NUL-terminated name; the result is owned below.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
    owned(fd)
}

/// Takes ownership of a descriptor a syscall just returned, or its error.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// `readdir64` where std uses it (glibc Linux: 64-bit inode numbers on 32-bit
// targets), plain `readdir` everywhere else.
#[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
use libc::{dirent, readdir};
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
use libc::{dirent64 as dirent, readdir64 as readdir};

/// The entry's type, where the platform's `dirent` has one.
///
/// # Safety
/// `entry` is a valid entry returned by `readdir`.
#[cfg(not(any(
    target_os = "solaris",
    target_os = "illumos",
    target_os = "aix",
    target_os = "haiku"
)))]
unsafe fn d_type(entry: *const dirent) -> Option<u8> {
    // SAFETY: the caller passes a valid entry.
    Some(unsafe { (*entry).d_type })
}

/// The entry's type, where the platform's `dirent` has one.
///
/// # Safety
/// `entry` is a valid entry returned by `readdir`.
#[cfg(any(
    target_os = "solaris",
    target_os = "illumos",
    target_os = "aix",
    target_os = "haiku"
))]
unsafe fn d_type(_entry: *const dirent) -> Option<u8> {
    None
}

/// Sets `errno` to 0 before a `readdir`, so its end and its errors can be told apart;
/// `false` where this module does not know how (a null entry then ends the listing).
fn clear_errno() -> bool {
    match errno_location() {
        Some(errno) => {
            // SAFETY: the calling thread's errno location, always valid to write.
            unsafe { *errno = 0 };
            true
        }
        None => false,
    }
}

/// The calling thread's `errno`, where this module knows what the libc calls it;
/// `None` elsewhere. One body with a `cfg` per libc, so each list of platforms is
/// written once and the fallback needs no list of its own: it is what the others leave.
#[allow(unreachable_code)] // where a branch applies, the fallback after it is unreachable
fn errno_location() -> Option<*mut libc::c_int> {
    #[cfg(any(
        target_os = "linux",
        target_os = "emscripten",
        target_os = "redox",
        target_os = "hurd"
    ))]
    // SAFETY: no preconditions; returns the calling thread's errno.
    return Some(unsafe { libc::__errno_location() });
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos",
        target_os = "freebsd",
        target_os = "dragonfly"
    ))]
    // SAFETY: no preconditions; returns the calling thread's errno.
    return Some(unsafe { libc::__error() });
    #[cfg(any(target_os = "openbsd", target_os = "netbsd", target_os = "android"))]
    // SAFETY: no preconditions; returns the calling thread's errno.
    return Some(unsafe { libc::__errno() });
    None
}

/// True when a process with this pid exists (ghost reap): `kill(pid, 0)` checks without
/// signalling; `EPERM` means it exists under another user.
pub(crate) fn process_exists(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Creates a FIFO at `path`, for tests of the no-hang rule.
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    if unsafe { libc::mkfifo(path.as_ptr(), 0o644) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_resolvers_refuse_a_symlink_in_any_component_and_open_the_same_files() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("t/.meta")).unwrap();
        std::fs::write(root.path().join("t/.meta/report.json"), "{}").unwrap();
        std::fs::create_dir_all(outside.path().join("m")).unwrap();
        std::fs::write(outside.path().join("m/report.json"), "{}").unwrap();
        std::fs::create_dir_all(root.path().join("u")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("m"), root.path().join("u/.meta")).unwrap();
        std::os::unix::fs::symlink(root.path().join("t"), root.path().join("v")).unwrap();
        let dir = Dir::open_root(root.path()).unwrap();
        for resolver in [Resolver::Native, Resolver::Portable] {
            assert!(dir.open_beneath(b"t/.meta/report.json", resolver).is_ok());
            for refused in [
                &b"u/.meta/report.json"[..],
                b"v/.meta/report.json",
                b"t/../t/.meta/report.json",
                b"/etc/passwd",
                b"t//.meta/report.json",
            ] {
                let e = dir.open_beneath(refused, resolver).unwrap_err();
                assert_ne!(
                    e.kind(),
                    io::ErrorKind::NotFound,
                    "{resolver:?} {refused:?}"
                );
            }
            let missing = dir
                .open_beneath(b"t/.meta/nope.json", resolver)
                .unwrap_err();
            assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        }
    }

    #[test]
    fn a_listing_holds_real_directories_only_sorted_bytewise() {
        let root = tempfile::tempdir().unwrap();
        for name in ["b", "a-b", "a", "Z"] {
            std::fs::create_dir(root.path().join(name)).unwrap();
        }
        std::fs::write(root.path().join("file"), "").unwrap();
        std::os::unix::fs::symlink(root.path().join("a"), root.path().join("link")).unwrap();
        mkfifo(&root.path().join("fifo")).unwrap();
        let dir = Dir::open_root(root.path()).unwrap();
        let names = dir.list_dirs().unwrap();
        assert_eq!(names, ["Z", "a", "a-b", "b"]);
        // A second listing of the same handle starts from the beginning again.
        assert_eq!(dir.list_dirs().unwrap().len(), 4);
        assert!(dir.open_dir(OsStr::new("link")).is_err());
        assert!(dir.open_dir(OsStr::new("file")).is_err());
    }
}
