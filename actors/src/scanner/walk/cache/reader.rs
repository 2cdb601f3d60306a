//! Reading the rescan cache: each worker holds a snapshot for its whole walk and reads
//! the rows below its part of the root with one range scan, in step with the walk
//! (see the module docs of `cache`).

use redb::{AccessGuard, Range, ReadOnlyTable};

use super::row::{DirRow, WorkspaceRow};
use super::writer::Writes;
use super::Which;
use crate::store::schema::{SCAN_DIRS, SCAN_WORKSPACES};
use crate::store::Store;

/// A read-only table of the cache.
type CacheTable = ReadOnlyTable<&'static str, &'static [u8]>;
/// One row as a range scan yields it.
type RawRow = (
    AccessGuard<'static, &'static str>,
    AccessGuard<'static, &'static [u8]>,
);

/// The cache as one worker reads it: a consistent snapshot for its whole walk.
pub(crate) struct Snapshot {
    /// `scan_dirs`.
    dirs: CacheTable,
    /// `scan_workspaces`.
    workspaces: CacheTable,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) struct Seek<R> {
    /// A row was stored under the key (decodable or not).
    pub existed: bool,
    /// The row, when it decodes.
    pub row: Option<R>,
}

impl<R> Seek<R> {
    /// Nothing stored under the key.
    pub(crate) fn miss() -> Self {
        Seek {
            existed: false,
            row: None,
        }
    }
}

impl Snapshot {
    /// A snapshot of the cache in `store`; `None` (the walk then reads everything)
    /// when it cannot be read.
    pub(crate) fn open(store: &Store) -> Option<Snapshot> {
        store
            .read("read the rescan cache", |txn| {
                Ok(Snapshot {
                    dirs: txn.open_table(SCAN_DIRS)?,
                    workspaces: txn.open_table(SCAN_WORKSPACES)?,
                })
            })
            .map_err(|e| log::debug!("walking without the rescan cache: {e}"))
            .ok()
    }

    /// The root's row.
    pub(crate) fn root(&self) -> Seek<DirRow> {
        match self.dirs.get("") {
            Ok(Some(bytes)) => Seek {
                existed: true,
                row: DirRow::decode(bytes.value()),
            },
            Ok(None) => Seek::miss(),
            Err(e) => {
                log::debug!("rescan cache: {e}");
                Seek::miss()
            }
        }
    }

    /// Cursors over the rows below the top-level entry `top`.
    pub(crate) fn part(&self, top: &str) -> (Cursor<DirRow>, Cursor<WorkspaceRow>) {
        (
            Cursor::new(&self.dirs, Which::Dirs, top, DirRow::decode),
            Cursor::new(
                &self.workspaces,
                Which::Workspaces,
                top,
                WorkspaceRow::decode,
            ),
        )
    }
}

/// The rows below one top-level entry, read in key order in step with the walk (see
/// the module docs): a lookup skips, and deletes, every row before its key.
pub(crate) struct Cursor<R> {
    /// Which table the rows come from (for deletes).
    which: Which,
    /// The range scan; `None` once it ended or failed.
    rows: Option<Range<'static, &'static str, &'static [u8]>>,
    /// The next row, not yet looked up.
    current: Option<RawRow>,
    /// Decodes a value.
    decode: fn(&[u8]) -> Option<R>,
}

impl<R> Cursor<R> {
    fn new(table: &CacheTable, which: Which, top: &str, decode: fn(&[u8]) -> Option<R>) -> Self {
        // Every key of the part is `top` or starts with `top\0`; `top\x01` is past them
        // all and before any other top-level entry.
        let end = format!("{top}\u{1}");
        let rows = match table.range::<&str>(top..end.as_str()) {
            Ok(rows) => Some(rows),
            Err(e) => {
                log::debug!("rescan cache: {e}");
                None
            }
        };
        let mut cursor = Cursor {
            which,
            rows,
            current: None,
            decode,
        };
        cursor.advance();
        cursor
    }

    fn advance(&mut self) {
        self.current = match self.rows.as_mut().and_then(Iterator::next) {
            Some(Ok(row)) => Some(row),
            Some(Err(e)) => {
                log::debug!("rescan cache: {e}");
                self.rows = None;
                None
            }
            None => {
                self.rows = None;
                None
            }
        };
    }

    /// True when no row is left: a part never cached before.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.current.is_none()
    }

    /// The row stored under `key`, which must be greater than every key looked up
    /// before; rows passed on the way are deleted through `writes`.
    pub(crate) fn seek(&mut self, key: &str, writes: &mut Writes) -> Seek<R> {
        loop {
            let order = match &self.current {
                None => return Seek::miss(),
                Some((k, _)) => k.value().cmp(key),
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some((k, _)) = &self.current {
                        writes.delete(self.which, k.value().to_string());
                    }
                    self.advance();
                }
                std::cmp::Ordering::Equal => {
                    let row = self
                        .current
                        .as_ref()
                        .and_then(|(_, v)| (self.decode)(v.value()));
                    self.advance();
                    return Seek { existed: true, row };
                }
                std::cmp::Ordering::Greater => return Seek::miss(),
            }
        }
    }

    /// Deletes every row not looked up: what the walk did not find any more.
    pub(crate) fn finish(&mut self, writes: &mut Writes) {
        while let Some((k, _)) = &self.current {
            writes.delete(self.which, k.value().to_string());
            self.advance();
        }
    }
}
