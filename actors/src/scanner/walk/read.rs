//! Capped reads: the one reader of `status.json` and `.meta/report.json`.
//!
//! A file is read only when it is a regular file (checked with `fstat` on the
//! descriptor that was opened, so a FIFO or a directory swapped in is refused) and no
//! larger than its cap (design.md §7.4: `status.json` 1 MiB, `report.json` 8 MiB); the
//! read itself stops one byte past the cap, so a file that grows meanwhile is refused
//! too and never read whole. Every refusal is a `warn!` naming the file, except a file
//! that does not exist. The walk, the rebuild of a cached dispatch and the ghost reap
//! all read `status.json` through [`status_bytes`] and parse it with
//! [`WorkspaceStatus::parse`].

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::rules::{Workspace, STATUS_FILE};
use super::sys::{Dir, FileStat, Resolver};
use crate::status::WorkspaceStatus;

/// Largest `status.json` read.
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Largest `.meta/report.json` read.
pub const MAX_REPORT_BYTES: u64 = 8 * 1024 * 1024;
/// Where the report lives below a workspace.
pub(crate) const REPORT_FILE: &str = ".meta/report.json";

/// The outcome of a capped read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capped {
    /// The bytes are in the buffer.
    Read,
    /// There is no such file (not a warning).
    Missing,
    /// Refused for what this version of the file is: over the cap. The same size and
    /// times give the same answer, so the rescan cache may remember it.
    Refused,
    /// Could not be read now (permissions, I/O, not a regular file any more): never
    /// remembered, tried again on the next scan.
    Failed,
}

/// Reads the file `opened` into `buffer` under `cap` (see the module docs). `known` is
/// the stat of that very descriptor when the caller already has it; `what` names the
/// file for messages (`status file /ws/o/r/t/status.json`).
pub(crate) fn read_capped(
    opened: io::Result<File>,
    known: Option<FileStat>,
    cap: u64,
    what: &dyn Fn() -> String,
    buffer: &mut Vec<u8>,
) -> Capped {
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Capped::Missing,
        Err(e) => {
            log::warn!("cannot read {}: {e}; skipped", what());
            return Capped::Failed;
        }
    };
    let stat = match known {
        Some(stat) => stat,
        None => match file.metadata() {
            Ok(meta) => FileStat::of_metadata(&meta),
            Err(e) => {
                log::warn!("cannot stat {}: {e}; skipped", what());
                return Capped::Failed;
            }
        },
    };
    if !stat.is_file() {
        log::warn!("{} is not a regular file; skipped", what());
        return Capped::Failed;
    }
    if stat.signature.len > cap {
        log::warn!(
            "{} is {} bytes, over the {cap}-byte cap; skipped",
            what(),
            stat.signature.len
        );
        return Capped::Refused;
    }
    buffer.clear();
    // One read of the size fstat gave, plus a byte: a regular file that returns exactly
    // that size is at its end, so the read that would return 0 is not made (one
    // syscall in five per workspace). Anything else (shorter, longer, interrupted)
    // reads on to the end as usual, still stopped one byte past the cap.
    let expected = stat.signature.len as usize;
    buffer.resize(expected + 1, 0);
    // A failed read here fails again, and is reported, in the read below.
    let first = file.read(buffer).unwrap_or(0);
    buffer.truncate(first);
    if first == expected {
        return Capped::Read;
    }
    match file.take(cap + 1 - first as u64).read_to_end(buffer) {
        Ok(n) if (first + n) as u64 > cap => {
            log::warn!("{} grew over the {cap}-byte cap; skipped", what());
            Capped::Failed
        }
        Ok(_) => Capped::Read,
        Err(e) => {
            log::warn!("cannot read {}: {e}; skipped", what());
            Capped::Failed
        }
    }
}

/// What a `status.json` held, as the walk sees it.
// Nearly every read is `Parsed`: boxing it would cost an allocation per workspace.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum StatusRead {
    /// Parsed.
    Parsed(WorkspaceStatus),
    /// Not a status (not JSON, not an object, over the cap): skipped with a warning;
    /// this version of the file will never be anything else.
    Corrupt,
    /// Not readable now: skipped with a warning, tried again next time.
    Unreadable,
}

/// Why a `status.json` was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Over the cap: [`StatusRead::Corrupt`].
    Corrupt,
    /// Anything else: [`StatusRead::Unreadable`].
    Unreadable,
}

impl From<Refused> for StatusRead {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Corrupt => StatusRead::Corrupt,
            Refused::Unreadable => StatusRead::Unreadable,
        }
    }
}

/// Reads a `status.json` into `buffer`: `Ok` when the bytes are there.
fn status_bytes(
    opened: io::Result<File>,
    known: Option<FileStat>,
    dir: &Path,
    buffer: &mut Vec<u8>,
) -> Result<(), Refused> {
    let what = || format!("status file {}", dir.join(STATUS_FILE).display());
    match read_capped(opened, known, MAX_STATUS_BYTES, &what, buffer) {
        Capped::Read => Ok(()),
        Capped::Refused => Err(Refused::Corrupt),
        // Gone since the walk saw it: as unreadable as it gets, and not remembered.
        Capped::Missing | Capped::Failed => Err(Refused::Unreadable),
    }
}

fn parse_status(dir: &Path, buffer: &[u8]) -> StatusRead {
    match WorkspaceStatus::parse(buffer) {
        Ok(status) => StatusRead::Parsed(status),
        Err(e) => {
            log::warn!(
                "corrupt status file {}/{STATUS_FILE}: {e}; skipped",
                dir.display()
            );
            StatusRead::Corrupt
        }
    }
}

/// Parses the workspace's `status.json` as the walk reaches it.
pub(crate) fn read_status(ws: &Workspace<'_>, buffer: &mut Vec<u8>) -> StatusRead {
    let (opened, known) = ws.open_status();
    let dir = ws.path();
    match status_bytes(opened, known, &dir, buffer) {
        Ok(()) => parse_status(&dir, buffer),
        Err(refused) => refused.into(),
    }
}

/// Parses `<name>/status.json` below the root again (a cached dispatch about to be
/// queued), with no symlink in any component.
pub(crate) fn read_status_below(
    root: &Dir,
    root_path: &Path,
    name: &str,
    resolver: Resolver,
    buffer: &mut Vec<u8>,
) -> StatusRead {
    let opened = root.open_beneath(format!("{name}/{STATUS_FILE}").as_bytes(), resolver);
    let dir = root_path.join(name);
    match status_bytes(opened, None, &dir, buffer) {
        Ok(()) => parse_status(&dir, buffer),
        Err(refused) => refused.into(),
    }
}

/// Parses the workspace's `status.json` (the one parser, as the walk does), and
/// hands back its bytes too, for a rewrite that keeps every field (the reap).
pub(crate) fn read_status_bytes(ws: &Workspace<'_>) -> Option<(WorkspaceStatus, Vec<u8>)> {
    let mut buffer = Vec::new();
    match read_status(ws, &mut buffer) {
        StatusRead::Parsed(status) => Some((status, buffer)),
        StatusRead::Corrupt | StatusRead::Unreadable => None,
    }
}

/// Parses `<name>/.meta/report.json` below the root, when it is there and a JSON
/// object; a bad one is a warning and the dispatch is pushed without it. The bytes
/// read stay in `buffer` (their length sizes the chunk).
pub(crate) fn read_report_below(
    root: &Dir,
    root_path: &Path,
    name: &str,
    resolver: Resolver,
    buffer: &mut Vec<u8>,
) -> Option<Map<String, Value>> {
    let opened = root.open_beneath(format!("{name}/{REPORT_FILE}").as_bytes(), resolver);
    let dir = root_path.join(name);
    let what = || format!("report file {}", dir.join(REPORT_FILE).display());
    if read_capped(opened, None, MAX_REPORT_BYTES, &what, buffer) != Capped::Read {
        return None;
    }
    match serde_json::from_slice::<Map<String, Value>>(buffer) {
        Ok(report) => Some(report),
        Err(e) => {
            log::warn!(
                "corrupt report file {}/{REPORT_FILE}: {e}; dispatch pushed without it",
                dir.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::walk::sys::Kind;

    /// `read_capped` of `body` when fstat said the file was `said` bytes long.
    fn read_as_if(body: &[u8], said: u64, cap: u64) -> (Capped, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, body).unwrap();
        let mut stat = FileStat::of_metadata(&std::fs::metadata(&path).unwrap());
        assert_eq!(stat.kind, Kind::File);
        stat.signature.len = said;
        let mut buffer = vec![b'x'; 3];
        let read = read_capped(
            File::open(&path),
            Some(stat),
            cap,
            &|| "f".into(),
            &mut buffer,
        );
        (read, buffer)
    }

    #[test]
    fn a_file_of_the_size_fstat_gave_is_read_whole() {
        assert_eq!(
            read_as_if(b"{\"a\":1}", 7, 64),
            (Capped::Read, b"{\"a\":1}".to_vec())
        );
        assert_eq!(read_as_if(b"", 0, 64), (Capped::Read, Vec::new()));
    }

    #[test]
    fn a_file_that_grew_or_shrank_after_its_fstat_is_still_read_to_its_end() {
        let body = b"{\"grown\":\"after the stat\"}";
        assert_eq!(read_as_if(body, 3, 64), (Capped::Read, body.to_vec()));
        assert_eq!(read_as_if(body, 200, 1024), (Capped::Read, body.to_vec()));
    }

    #[test]
    fn a_file_that_grew_past_the_cap_after_its_fstat_is_refused() {
        let body = vec![b' '; 100];
        assert_eq!(read_as_if(&body, 10, 50).0, Capped::Failed);
        assert_eq!(read_as_if(&body, 49, 50).0, Capped::Failed);
        assert_eq!(read_as_if(&body, 100, 100).0, Capped::Read);
    }
}
