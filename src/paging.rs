//! Listings a page at a time: the queue and the dead letters, asked of the Queue
//! locally ([`SyncService`](crate::SyncService)) or of a running process over the
//! control socket ([`ControlClient`](crate::control::ControlClient)), and printed by
//! the CLI as each page comes.
//!
//! A listing decodes one page at a time, so a backlog of any size is listed in
//! bounded memory and never holds the Queue's mailbox for long.

use agent_sync_actors::entry::{DeadLetter, QueueEntry};

/// Entries (or dead letters) per listing page: the socket's default and largest
/// `limit`, and what the CLI and [`SyncService`](crate::SyncService) ask for per
/// message.
pub const LIST_PAGE: usize = 1_000;

/// An item of a paged listing. Why a trait: a listing pages by the `seq` of its
/// last item, and that key is found in a different place in a queue entry and in a
/// dead letter; saying it once here keeps the service, the client and the CLI from
/// each spelling it.
pub trait Paged {
    /// The item's `seq`: the next page starts after the last one's.
    fn seq(&self) -> u64;
}

impl Paged for QueueEntry {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Paged for DeadLetter {
    /// The seq the entry had in the queue, which it keeps while dead.
    fn seq(&self) -> u64 {
        self.entry.seq
    }
}

/// The size of the next page of a listing that wants `limit` items (all when
/// `None`) and has `listed` so far; `None` once it has them all. The listing ends
/// earlier at the first empty page (not at a short one: rows that do not decode are
/// skipped, so a page may be short before the end).
pub fn next_page(limit: Option<usize>, listed: usize) -> Option<usize> {
    let left = limit.map_or(LIST_PAGE, |limit| limit.saturating_sub(listed));
    (left > 0).then_some(left.min(LIST_PAGE))
}

/// Lists the first `limit` items (all when `None`), oldest first, asking `page(after,
/// want)` for one page at a time: `after` is the [`seq`](Paged::seq) of the last item
/// so far, `want` at most [`LIST_PAGE`]. Used locally (Queue messages) and over the
/// socket alike.
pub async fn collect_pages<T: Paged, E, Fut>(
    limit: Option<usize>,
    mut page: impl FnMut(Option<u64>, usize) -> Fut,
) -> Result<Vec<T>, E>
where
    Fut: std::future::Future<Output = Result<Vec<T>, E>>,
{
    let mut items: Vec<T> = Vec::new();
    while let Some(want) = next_page(limit, items.len()) {
        let got = page(items.last().map(Paged::seq), want).await?;
        if got.is_empty() {
            break;
        }
        items.extend(got);
    }
    Ok(items)
}
