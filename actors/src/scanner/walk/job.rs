//! One job of the parallel walk: a worker's walk of one top-level entry of the root,
//! answering listings and workspaces from the rescan cache where it is trusted,
//! reading `status.json` where not, and sending the candidates to the caller in
//! batches, in walk order.

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use super::cache::{self, unsettled, Cursor, DirRow, Known, Seek, WorkspaceRow, Writes};
use super::candidate::{Candidate, Counts, RowPlan};
use super::read::{read_status, StatusRead};
use super::rules::{list_children, Visitor, Walk, Workspace};
use super::sys::{Dir, Signature};

/// Candidates a worker sends in one message. One at a time, a caller faster than the
/// workers slept and was woken once per workspace: 10,000 futex calls per 10,000
/// workspaces, a good part of a cold scan's CPU on 2 cores.
pub(super) const BATCH: usize = 64;

/// A job's messages to the caller.
pub(super) enum Item {
    /// Up to [`BATCH`] candidates, in walk order.
    Found(Vec<Candidate>),
    /// The job is over; its counts.
    Done(Counts),
}

/// One job's walk: the cache cursors of its part, its counts, its channel.
pub(super) struct Job<'a> {
    /// `scan_dirs` rows of the part (`None`: no cache).
    pub(super) dirs: Option<Cursor<DirRow>>,
    /// `scan_workspaces` rows of the part.
    pub(super) workspaces: Option<Cursor<WorkspaceRow>>,
    /// The worker's row writes.
    pub(super) writes: &'a mut Writes,
    /// The racy rule's reference.
    pub(super) started: i128,
    /// What this job counted.
    pub(super) counts: Counts,
    /// The worker's read buffer.
    pub(super) buffer: &'a mut Vec<u8>,
    /// Candidates to the caller.
    pub(super) out: &'a SyncSender<Item>,
    /// Candidates not sent yet.
    pub(super) batch: Vec<Candidate>,
    /// Set when the caller stopped.
    pub(super) stop: &'a AtomicBool,
    /// Set when the service stops (`Setup::halt` of the walk).
    pub(super) halt: Option<&'a AtomicBool>,
}

impl Job<'_> {
    /// Whether the caller stopped or the service is stopping: the job ends here.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.halt.is_some_and(|h| h.load(Ordering::SeqCst))
    }

    /// The walk of the part is complete: rows it did not visit are stale.
    pub(super) fn finish(&mut self) {
        if let Some(cursor) = &mut self.dirs {
            cursor.finish(self.writes);
        }
        if let Some(cursor) = &mut self.workspaces {
            cursor.finish(self.writes);
        }
    }

    fn emit(&mut self, candidate: Candidate) -> ControlFlow<()> {
        if self.stopped() {
            return ControlFlow::Break(());
        }
        self.batch.push(candidate);
        if self.batch.len() < BATCH {
            return ControlFlow::Continue(());
        }
        self.send_batch()
    }

    /// Sends the candidates gathered so far.
    pub(super) fn send_batch(&mut self) -> ControlFlow<()> {
        if self.batch.is_empty() {
            return ControlFlow::Continue(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if self.stopped() || self.out.send(Item::Found(batch)).is_err() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Stores `known` for this version of the file when it is settled, else removes
    /// a row that no longer matches.
    fn remember(&mut self, name: &str, existed: bool, signature: Signature, known: Known) {
        if cache::settled(&signature, self.started) {
            self.writes
                .put_workspace(name, &WorkspaceRow { signature, known });
        } else if existed {
            self.writes.delete_workspace(name);
        }
    }
}

impl Visitor for Job<'_> {
    fn children(&mut self, walk: Walk<'_>, prefix: &str, dir: &Dir) -> Option<Vec<OsString>> {
        let signature = dir.stat().ok().map(|s| s.signature);
        let seek = match &mut self.dirs {
            Some(cursor) => cursor.seek(&cache::key(prefix), self.writes),
            None => return list_children(walk, prefix, dir),
        };
        let hit = matches!(
            (&seek.row, signature),
            (Some(row), Some(signature))
                if row.signature == signature && cache::settled(&signature, self.started)
        );
        if hit {
            return seek.row.map(|row| row.children);
        }
        let listed = list_children(walk, prefix, dir);
        match (
            &listed,
            signature.filter(|s| cache::settled(s, self.started)),
        ) {
            (Some(children), Some(signature)) => self.writes.put_dir(
                prefix,
                &DirRow {
                    signature,
                    children: children.clone(),
                },
            ),
            _ if seek.existed => self.writes.delete_dir(prefix),
            _ => {}
        }
        listed
    }

    fn workspace(&mut self, ws: &Workspace<'_>) -> ControlFlow<()> {
        if self.stopped() {
            return ControlFlow::Break(());
        }
        self.counts.workspaces += 1;
        let signature = ws.status.signature;
        let seek = match &mut self.workspaces {
            Some(cursor) => cursor.seek(&cache::key(ws.name), self.writes),
            None => Seek::miss(),
        };
        let trusted = seek
            .row
            .filter(|row| row.signature == signature && cache::settled(&signature, self.started));
        if let Some(row) = trusted {
            return match row.known {
                Known::Corrupt => {
                    self.counts.skipped += 1;
                    ControlFlow::Continue(())
                }
                Known::NotTerminal { .. } | Known::Terminal { synced: true, .. } => {
                    ControlFlow::Continue(())
                }
                Known::Terminal {
                    fingerprint,
                    synced: false,
                } => self.emit(Candidate {
                    name: ws.name.to_string(),
                    fingerprint,
                    status: None,
                    signature,
                    report: true,
                    row: RowPlan::Cached,
                }),
            };
        }
        self.counts.status_reads += 1;
        match read_status(ws, self.buffer) {
            StatusRead::Unreadable => {
                self.counts.skipped += 1;
                if seek.existed {
                    self.writes.delete_workspace(ws.name);
                }
                ControlFlow::Continue(())
            }
            StatusRead::Corrupt => {
                self.counts.skipped += 1;
                self.remember(ws.name, seek.existed, signature, Known::Corrupt);
                ControlFlow::Continue(())
            }
            StatusRead::Parsed(status) if status.is_terminal() => {
                let settled = cache::settled(&signature, self.started);
                if !settled && seek.existed {
                    self.writes.delete_workspace(ws.name);
                }
                self.emit(Candidate::read_afresh(ws, status, signature, settled))
            }
            StatusRead::Parsed(status) => {
                let known = Known::not_terminal(&status);
                match known {
                    // A running workspace is always recorded, so the cheap reap knows
                    // it even while its file is too recent to be trusted.
                    Known::NotTerminal { pid }
                        if pid > 0 && !cache::settled(&signature, self.started) =>
                    {
                        self.writes.put_workspace(
                            ws.name,
                            &WorkspaceRow {
                                signature: unsettled(signature),
                                known,
                            },
                        );
                    }
                    known => self.remember(ws.name, seek.existed, signature, known),
                }
                ControlFlow::Continue(())
            }
        }
    }
}
