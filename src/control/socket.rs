//! The control socket file: `<state-dir>/agent-sync.sock`, and who holds a state.
//!
//! Binding (only ever done by the process that holds the database lock, so two
//! processes never race for it):
//!
//! - no file: bind;
//! - a socket nobody listens on (the process died, e.g. `kill -9`): stale, replaced;
//! - a socket a live process answers on: never replaced; the start fails with the
//!   holder's pid;
//! - anything else (a regular file, a directory): left alone; the service runs
//!   without a socket and says why.
//!
//! The socket is created inside a private directory (mode 0700) of the state dir,
//! set to mode 0600, and only then renamed to its public name: it is never reachable
//! with looser permissions, whatever the umask. (actix-web's own `bind_uds` removes
//! any file at the path first, live or not, so the listener is bound here and handed
//! to `HttpServer::listen_uds`.)

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use agent_sync_actors::store::DATABASE_FILE;

/// File name of the control socket inside the state dir.
pub const SOCKET_FILE: &str = "agent-sync.sock";

/// Longest socket path the kernel takes (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where the control socket of the state in `state_dir` lives.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// Why the control socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// A live process answers on the socket: never replaced.
    Held {
        /// The socket.
        path: PathBuf,
        /// The process listening on it, when the kernel tells.
        pid: Option<u32>,
    },
    /// Something that is not a socket sits at the path; it is left alone.
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The path is longer than a Unix socket address can be.
    TooLong {
        /// The path.
        path: PathBuf,
    },
    /// Creating, binding or renaming failed.
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Held { path, pid } => {
                write!(f, "control socket {} is served by another process", path.display())?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                Ok(())
            }
            BindError::NotASocket { path } => write!(
                f,
                "{} exists and is not a socket; move it away so the control socket can be created there",
                path.display()
            ),
            BindError::TooLong { path } => write!(
                f,
                "control socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter \
                 state dir for the CLI to reach a running agent-sync",
                path.display()
            ),
            BindError::Io { path, source } => write!(
                f,
                "cannot create the control socket {}: {source}; check that the state dir is writable",
                path.display()
            ),
        }
    }
}

impl std::error::Error for BindError {}

/// A bound control socket: the listener, and the file to remove when done.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    /// Handed to `HttpServer::listen_uds`.
    pub(crate) listener: UnixListener,
    /// The file, removed once the server is down.
    pub(crate) file: SocketFile,
}

/// The socket file this process created.
#[derive(Debug, Clone)]
pub(crate) struct SocketFile {
    /// The public path.
    pub(crate) path: PathBuf,
    /// Device and inode of the file we created: only that file is ever removed.
    identity: (u64, u64),
}

impl SocketFile {
    /// Removes the socket file, if it is still the one this process created.
    pub(crate) fn remove(&self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                log::debug!("removing {}: {e}", self.path.display());
            }
        }
    }
}

/// Binds `<state_dir>/agent-sync.sock` (see the module docs for what happens to a
/// file already there). The caller holds the state's database lock.
pub(crate) fn bind(state_dir: &Path) -> Result<BoundSocket, BindError> {
    let path = socket_path(state_dir);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(BindError::TooLong { path });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BindError::Io { path, source }
    };
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket { path }),
        Ok(_) => match UnixStream::connect(&path) {
            Ok(stream) => {
                let pid = peer_pid(&stream);
                return Err(BindError::Held { path, pid });
            }
            Err(e)
                if e.kind() == ErrorKind::ConnectionRefused || e.kind() == ErrorKind::NotFound =>
            {
                log::info!("replacing the stale control socket {}", path.display());
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
            Err(e) => return Err(io(&path)(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }

    // Bind in a private directory, tighten the mode, then rename into place. The
    // private name is no longer than the public one, so it fits where that fits.
    let private = state_dir.join(format!(".ctl-{}", std::process::id()));
    if private.exists() {
        // Left by an earlier process that had our pid and died mid-bind.
        let _ = fs::remove_dir_all(&private);
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io(&private))?;
    let staged = private.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&staged).map_err(io(&staged))?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o600)).map_err(io(&staged))?;
        fs::rename(&staged, &path).map_err(io(&path))?;
        let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
        Ok(BoundSocket {
            listener,
            file: SocketFile {
                path: path.clone(),
                identity: (meta.dev(), meta.ino()),
            },
        })
    })();
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&private);
    result
}

/// The pid of the process at the other end of a connected Unix stream (the one that
/// listens, for a client), when the kernel tells (Linux `SO_PEERCRED`).
pub(crate) fn peer_pid(stream: &UnixStream) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: a valid socket fd, a properly sized and aligned out-buffer and its
        // length; getsockopt writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc == 0 && cred.pid > 0 {
            return u32::try_from(cred.pid).ok();
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        None
    }
}

/// The pid of the process holding the state in `state_dir`: the one answering on its
/// control socket, else (Linux) the owner of the lock on `sync.redb` as
/// `/proc/locks` lists it. `None` when neither says.
pub fn holder_pid(state_dir: &Path) -> Option<u32> {
    if let Ok(stream) = UnixStream::connect(socket_path(state_dir)) {
        if let Some(pid) = peer_pid(&stream) {
            return Some(pid);
        }
    }
    let meta = fs::metadata(state_dir.join(DATABASE_FILE)).ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    lock_holder(&locks, meta.dev(), meta.ino())
}

/// Finds the pid holding a `FLOCK` on the file `(dev, ino)` in `/proc/locks` text
/// (lines like `3: FLOCK  ADVISORY  WRITE 27881 fe:00:10036050 0 EOF`, the device as
/// hex major:minor). Waiters (`->`) and locks without a pid (`-1`) are skipped.
fn lock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // Linux's encoding of a device number (glibc's gnu_dev_major/minor), written out so
    // this parser of a Linux file builds on every unix.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let mut id = fields.get(5)?.split(':');
        let file_major = u64::from_str_radix(id.next()?, 16).ok()?;
        let file_minor = u64::from_str_radix(id.next()?, 16).ok()?;
        let file_ino: u64 = id.next()?.parse().ok()?;
        ((file_major, file_minor, file_ino) == (major, minor, ino) && pid > 0).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_lock_holder_is_found_by_device_and_inode_only() {
        let locks = "1: OFDLCK ADVISORY  WRITE -1 fe:00:10036050 0 4611686018427388799\n\
                     2: FLOCK  ADVISORY  WRITE 27561 fe:00:5415000 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 27881 fe:00:10036050 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 1 fe:00:10036050 0 EOF\n";
        let dev = libc::makedev(0xfe, 0);
        assert_eq!(lock_holder(locks, dev, 10036050), Some(27881));
        assert_eq!(lock_holder(locks, dev, 1), None);
        assert_eq!(lock_holder(locks, libc::makedev(8, 1), 10036050), None);
    }

    #[test]
    fn a_socket_is_private_a_stale_one_replaced_and_a_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let bound = bind(dir.path()).unwrap();
        let mode = fs::metadata(&bound.file.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Live: refused, naming us.
        match bind(dir.path()) {
            Err(BindError::Held { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("a live socket was not kept: {other:?}"),
        }
        // Stale: the listener is gone, the file stays; the next bind replaces it.
        let path = bound.file.path.clone();
        drop(bound);
        assert!(path.exists());
        let again = bind(dir.path()).unwrap();
        again.file.remove();
        assert!(!path.exists());
        // Not a socket: left alone.
        fs::write(&path, b"keep me").unwrap();
        assert!(matches!(
            bind(dir.path()),
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"keep me");
    }
}
