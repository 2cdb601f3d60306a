//! The rows of the rescan cache and their binary encoding: a version byte, the
//! signature, then what the row says. The bytes are the on-disk format: a change is a
//! new [`ROW_VERSION`], never a reinterpretation of an old one.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::scanner::walk::sys::Signature;
use crate::status::WorkspaceStatus;

/// First byte of every row; a row of another version is ignored (version 1 rows,
/// without the pid of a running workspace, are misses and rebuilt).
pub(super) const ROW_VERSION: u8 = 2;

/// What an unchanged `status.json` held last time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// Not a status (not JSON, not an object, over its cap): skipped and counted,
    /// without a new warning.
    Corrupt,
    /// Not a terminal status: nothing to push. `pid` is the worker's when the status
    /// is `running` with a pid (0 otherwise): the cheap ghost reap checks only these
    /// pids and reads no file of a workspace whose worker is alive.
    NotTerminal {
        /// The worker's pid while `running`, else 0.
        pid: i64,
    },
    /// Terminal with this fingerprint; `synced` once the Ledger holds it.
    Terminal {
        /// `updated_at#runs`, as computed when it was read.
        fingerprint: String,
        /// The Ledger said it holds this fingerprint.
        synced: bool,
    },
}

/// One row of `scan_workspaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkspaceRow {
    /// The `status.json` this row describes.
    pub signature: Signature,
    /// What it held.
    pub known: Known,
}

/// One row of `scan_dirs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirRow {
    /// The directory this row describes.
    pub signature: Signature,
    /// Its child directories, sorted bytewise.
    pub children: Vec<OsString>,
}

fn put_signature(out: &mut Vec<u8>, signature: &Signature) {
    out.push(ROW_VERSION);
    out.extend_from_slice(&signature.len.to_le_bytes());
    out.extend_from_slice(&signature.mtime_ns.to_le_bytes());
    out.extend_from_slice(&signature.ctime_ns.to_le_bytes());
}

/// Bytes of the version and signature prefix.
const SIGNATURE_BYTES: usize = 1 + 8 + 16 + 16;

fn take_signature(bytes: &[u8]) -> Option<(Signature, &[u8])> {
    if bytes.len() < SIGNATURE_BYTES || bytes[0] != ROW_VERSION {
        return None;
    }
    let len = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
    let mtime_ns = i128::from_le_bytes(bytes[9..25].try_into().ok()?);
    let ctime_ns = i128::from_le_bytes(bytes[25..41].try_into().ok()?);
    Some((
        Signature {
            len,
            mtime_ns,
            ctime_ns,
        },
        &bytes[SIGNATURE_BYTES..],
    ))
}

impl WorkspaceRow {
    /// `version, len u64, mtime i128, ctime i128, kind u8, fingerprint` (little endian).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNATURE_BYTES + 1 + 24);
        put_signature(&mut out, &self.signature);
        match &self.known {
            Known::Corrupt => out.push(0),
            Known::NotTerminal { pid } => {
                out.push(1);
                out.extend_from_slice(&pid.to_le_bytes());
            }
            Known::Terminal {
                fingerprint,
                synced,
            } => {
                out.push(if *synced { 3 } else { 2 });
                out.extend_from_slice(fingerprint.as_bytes());
            }
        }
        out
    }

    /// The row, or `None` for anything this version did not write.
    pub(crate) fn decode(bytes: &[u8]) -> Option<WorkspaceRow> {
        let (signature, rest) = take_signature(bytes)?;
        let (&kind, fingerprint) = rest.split_first()?;
        let known = match kind {
            0 if !fingerprint.is_empty() => return None,
            0 => Known::Corrupt,
            1 => Known::NotTerminal {
                pid: i64::from_le_bytes(fingerprint.try_into().ok()?),
            },
            2 | 3 => Known::Terminal {
                fingerprint: std::str::from_utf8(fingerprint)
                    .ok()
                    .filter(|f| !f.is_empty())?
                    .to_string(),
                synced: kind == 3,
            },
            _ => return None,
        };
        Some(WorkspaceRow { signature, known })
    }
}

impl DirRow {
    /// `version, len u64, mtime i128, ctime i128, count u32, (len u32, name)*`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let names: usize = self.children.iter().map(|c| c.len() + 4).sum();
        let mut out = Vec::with_capacity(SIGNATURE_BYTES + 4 + names);
        put_signature(&mut out, &self.signature);
        out.extend_from_slice(&(self.children.len() as u32).to_le_bytes());
        for child in &self.children {
            out.extend_from_slice(&(child.len() as u32).to_le_bytes());
            out.extend_from_slice(child.as_bytes());
        }
        out
    }

    /// The row, or `None` for anything this version did not write.
    pub(crate) fn decode(bytes: &[u8]) -> Option<DirRow> {
        let (signature, mut rest) = take_signature(bytes)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            rest = tail;
            Some(head)
        };
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut children = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let name = take(len)?;
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                return None;
            }
            children.push(OsString::from_vec(name.to_vec()));
        }
        if !rest.is_empty() || !children.windows(2).all(|w| w[0] < w[1]) {
            return None;
        }
        Some(DirRow {
            signature,
            children,
        })
    }
}

impl Known {
    /// What the cache records of a status that is not terminal.
    pub(crate) fn not_terminal(status: &WorkspaceStatus) -> Known {
        let running = status.status == "running" && status.pid > 0;
        Known::NotTerminal {
            pid: if running { status.pid } else { 0 },
        }
    }
}

/// `signature` marked as not to be trusted: no `stat` ever has this change time, so
/// the row is a miss for every scan (the file is read again) but still lists the
/// workspace for the reap.
pub(crate) fn unsettled(signature: Signature) -> Signature {
    Signature {
        ctime_ns: i128::MIN,
        ..signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::walk::testing::signature;

    #[test]
    fn rows_round_trip_and_anything_else_is_ignored() {
        for known in [
            Known::Corrupt,
            Known::NotTerminal { pid: 0 },
            Known::NotTerminal { pid: 4242 },
            Known::Terminal {
                fingerprint: "2026-01-01T00:00:00Z#1".into(),
                synced: false,
            },
            Known::Terminal {
                fingerprint: "2026-01-01T00:00:00Z#2".into(),
                synced: true,
            },
        ] {
            let row = WorkspaceRow {
                signature: signature(-5),
                known,
            };
            let bytes = row.encode();
            assert_eq!(WorkspaceRow::decode(&bytes), Some(row));
            for cut in 0..bytes.len().min(SIGNATURE_BYTES + 1) {
                assert_eq!(WorkspaceRow::decode(&bytes[..cut]), None, "cut at {cut}");
            }
        }
        let dir = DirRow {
            signature: signature(7),
            children: vec!["a".into(), "a-b".into(), OsString::from_vec(vec![0xff])],
        };
        let bytes = dir.encode();
        assert_eq!(DirRow::decode(&bytes), Some(dir));
        for cut in 0..bytes.len() {
            assert_eq!(DirRow::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut newer = bytes.clone();
        newer[0] = ROW_VERSION + 1;
        assert_eq!(DirRow::decode(&newer), None);
        assert_eq!(
            WorkspaceRow::decode(b"garbage that is long enough to pass the length"),
            None
        );
        assert_eq!(WorkspaceRow::decode(&[]), None);
    }
}
