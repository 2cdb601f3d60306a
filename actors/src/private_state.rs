//! The state is private to its user (design.md §7.4): the queued dispatches, the
//! history and the fleet context in `sync.redb` are no business of other local users.
//!
//! - A state dir agent-sync creates is mode 0700, and a file it creates there 0600,
//!   whatever the umask: created with that mode, then set to it (a umask can only take
//!   bits away, so this also undoes a umask that leaves the owner without access).
//!   Parents it has to create get the usual mode, as `mkdir -p` gives them.
//! - A state dir or file that already exists is never changed: the operator chose it
//!   (a shared dir on purpose, a group-readable backup layout). When it is open to
//!   group or others, agent-sync warns at start, once per path and process, naming
//!   the path and its mode.
//!
//! Opening the store [`prepare`]s the dir, and once the database is open (so that a
//! state that cannot be opened reports just that) [`warn_exposed`] warns.
//! [`exposed`] lists what is open, for a diagnostic command.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::OpenError;

/// Mode of a state dir agent-sync creates.
pub const DIR_MODE: u32 = 0o700;

/// Mode of a file agent-sync creates in the state dir.
pub const FILE_MODE: u32 = 0o600;

/// The permission bits that let group or others in.
const OPEN_BITS: u32 = 0o077;

/// Paths already warned about in this process: the warning is given once per path.
static WARNED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// A state dir, or a file in it, that group or others can get at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The dir or file.
    pub path: PathBuf,
    /// Its permission bits (`0o755`).
    pub mode: u32,
    /// Whether it is the dir (else a file in it).
    pub is_dir: bool,
}

impl std::fmt::Display for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, fix) = if self.is_dir {
            ("state dir", "chmod 700")
        } else {
            ("state file", "chmod 600")
        };
        write!(
            f,
            "{what} {} is open to group or others (mode {:04o}); it is left as it is; \
             to make it private: {fix} {}",
            self.path.display(),
            self.mode,
            self.path.display()
        )
    }
}

/// Makes `dir` ready to hold the state: creates it (mode 0700) when missing, and
/// each of `files` in it (mode 0600) when missing. What already exists is left as it
/// is ([`warn_exposed`] tells).
pub fn prepare(dir: &Path, files: &[&str]) -> Result<(), OpenError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_error(dir))?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(io_error(dir)(e)),
    }
    for name in files {
        let path = dir.join(name);
        create_private_file(&path).map_err(io_error(&path))?;
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 unless something is there already (which is
/// left as it is); true when it created it.
pub fn create_private_file(path: &Path) -> io::Result<bool> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The state dir and the files in it (not symlinks, not subdirectories) that group or
/// others can get at; empty when all is private or the dir cannot be read.
pub fn exposed(dir: &Path) -> Vec<Exposed> {
    let mut found = Vec::new();
    let Ok(meta) = fs::metadata(dir) else {
        return found;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OPEN_BITS != 0 {
        found.push(Exposed {
            path: dir.to_path_buf(),
            mode,
            is_dir: true,
        });
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    let mut files: Vec<Exposed> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let meta = fs::symlink_metadata(entry.path()).ok()?;
            let kind = meta.file_type();
            if kind.is_dir() || kind.is_symlink() {
                return None;
            }
            let mode = meta.permissions().mode() & 0o7777;
            (mode & OPEN_BITS != 0).then(|| Exposed {
                path: entry.path(),
                mode,
                is_dir: false,
            })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    found.extend(files);
    found
}

/// Logs a warning for each of [`exposed`]`(dir)` not warned about yet in this process.
pub fn warn_exposed(dir: &Path) {
    let found = exposed(dir);
    if found.is_empty() {
        return;
    }
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let warned = warned.get_or_insert_with(HashSet::new);
    for exposed in found {
        if warned.insert(exposed.path.clone()) {
            log::warn!("{exposed}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_created_dir_and_file_are_private_and_existing_ones_are_left_and_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("a").join("sync");
        prepare(&state, &["db"]).unwrap();
        assert_eq!(mode(&state), DIR_MODE);
        assert_eq!(mode(&state.join("db")), FILE_MODE);
        assert!(exposed(&state).is_empty());

        // Opened up by someone else: left as it is, and listed.
        fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(state.join("queue.json"), b"[]").unwrap();
        fs::set_permissions(state.join("queue.json"), fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&state, &["db"]).unwrap();
        assert_eq!(mode(&state), 0o755);
        let found = exposed(&state);
        assert_eq!(
            found.iter().map(|e| (e.is_dir, e.mode)).collect::<Vec<_>>(),
            [(true, 0o755), (false, 0o644)]
        );
        let line = found[0].to_string();
        assert!(
            line.contains(&state.display().to_string()) && line.contains("0755"),
            "{line}"
        );
        assert!(!create_private_file(&state.join("db")).unwrap());
    }
}
