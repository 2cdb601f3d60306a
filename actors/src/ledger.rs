//! The Ledger: which dispatches the platform already has, by fingerprint.
//!
//! A dispatch is pushed again only when its fingerprint (`updated_at#runs`) changes
//! (P7). Fingerprints are written exactly as the Scanner computed them, never
//! re-derived from pushed JSON, so a queue round trip cannot defeat the match
//! (Go defect 1).
//!
//! The Ledger answers questions; it does not record deliveries. A delivery's ledger
//! marks are written by the Queue, in the same commit that removes the delivered
//! part (`mark`), and the Queue's enqueue reads the ledger in the commit that
//! inserts (`covers`): "delivered" is one fact, changed in one transaction.
//!
//! The ledger never moves backwards: a fingerprint is newer when its `updated_at` is
//! later, or equal with more `runs` ([`fingerprint_order`]). Delivering an older
//! version (a requeued dead letter) leaves the newer mark in place.

use std::cmp::Ordering;

use actix::prelude::*;
use redb::{ReadableTable, ReadableTableMetadata, Table};

use crate::dispatch::DispatchKey;
use crate::error::StoreError;
use crate::messages::{LedgerSize, Unsynced};
use crate::store::schema::LEDGER;
use crate::store::Store;

/// Orders two fingerprints of one dispatch (`<RFC 3339 UTC seconds>#<runs>`): by
/// time (fixed-width UTC text, so text order is time order), then by runs as a
/// number; text order breaks what is left (a malformed fingerprint).
pub fn fingerprint_order(a: &str, b: &str) -> Ordering {
    fn parts(fingerprint: &str) -> (&str, Option<i64>) {
        match fingerprint.rsplit_once('#') {
            Some((time, runs)) => (time, runs.parse().ok()),
            None => (fingerprint, None),
        }
    }
    let (time_a, runs_a) = parts(a);
    let (time_b, runs_b) = parts(b);
    time_a
        .cmp(time_b)
        .then(runs_a.cmp(&runs_b))
        .then_with(|| a.cmp(b))
}

/// Whether the platform already has `id` at `fingerprint` or a newer version of it.
pub(crate) fn covers(
    ledger: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
    fingerprint: &str,
) -> Result<bool, redb::Error> {
    Ok(ledger
        .get(id)?
        .is_some_and(|known| fingerprint_order(known.value(), fingerprint).is_ge()))
}

/// Records `id` at `fingerprint` as delivered, unless a newer version already is.
pub(crate) fn mark(
    ledger: &mut Table<'_, &'static str, &'static str>,
    id: &str,
    fingerprint: &str,
) -> Result<(), redb::Error> {
    if !covers(ledger, id, fingerprint)? {
        ledger.insert(id, fingerprint)?;
    }
    Ok(())
}

/// Owns the `ledger` table.
pub struct Ledger {
    /// The shared database: this actor answers from `ledger` and marks it for tools;
    /// deliveries are marked by the Queue (`mark`), imports by the `import` module.
    store: Store,
}

impl Ledger {
    /// A Ledger over `store`.
    pub fn new(store: Store) -> Self {
        Ledger { store }
    }

    fn unsynced(&self, candidates: Vec<DispatchKey>) -> Result<Vec<DispatchKey>, StoreError> {
        self.store.read("read the ledger", |txn| {
            let ledger = txn.open_table(LEDGER)?;
            let mut fresh = Vec::with_capacity(candidates.len());
            for candidate in candidates {
                if !covers(&ledger, &candidate.id, &candidate.fingerprint)? {
                    fresh.push(candidate);
                }
            }
            Ok(fresh)
        })
    }
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

impl Handler<Unsynced> for Ledger {
    type Result = Result<Vec<DispatchKey>, StoreError>;

    fn handle(&mut self, msg: Unsynced, _: &mut Self::Context) -> Self::Result {
        self.unsynced(msg.candidates)
    }
}

impl Handler<LedgerSize> for Ledger {
    type Result = Result<u64, StoreError>;

    fn handle(&mut self, _: LedgerSize, _: &mut Self::Context) -> Self::Result {
        self.store.read("count the ledger", |txn| {
            Ok(txn.open_table(LEDGER)?.len()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::Durability;

    /// Marks `pairs` delivered in one commit, as a delivery's outcome does.
    fn marked(store: &Store, pairs: &[(&str, &str)]) {
        store
            .write("mark", Durability::Immediate, |txn| {
                let mut ledger = txn.open_table(LEDGER)?;
                for (id, fingerprint) in pairs {
                    mark(&mut ledger, id, fingerprint)?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn candidate(id: &str, fingerprint: &str) -> DispatchKey {
        DispatchKey {
            id: id.into(),
            fingerprint: fingerprint.into(),
        }
    }

    #[actix::test]
    async fn ledger_skips_marked_fingerprints_and_keeps_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        marked(&store, &[("a", "t#1")]);
        let ledger = Ledger::new(store).start();
        let fresh = ledger
            .send(Unsynced {
                candidates: vec![
                    candidate("a", "t#1"),
                    candidate("a2", "t#1"),
                    candidate("a", "t#2"),
                ],
            })
            .await
            .unwrap()
            .unwrap();
        let ids: Vec<_> = fresh
            .iter()
            .map(|c| (c.id.as_str(), c.fingerprint.as_str()))
            .collect();
        assert_eq!(ids, [("a2", "t#1"), ("a", "t#2")]);
        assert_eq!(ledger.send(LedgerSize).await.unwrap().unwrap(), 1);
    }

    #[test]
    fn fingerprints_order_by_time_then_runs_as_numbers() {
        use std::cmp::Ordering::*;
        let table = [
            ("2026-01-01T00:00:00Z#1", "2026-01-01T00:00:00Z#1", Equal),
            ("2026-01-01T00:00:00Z#2", "2026-01-01T00:00:00Z#10", Less),
            ("2026-01-01T00:00:01Z#1", "2026-01-01T00:00:00Z#9", Greater),
            ("0001-01-01T00:00:00Z#3", "2026-01-01T00:00:00Z#0", Less),
        ];
        for (a, b, expected) in table {
            assert_eq!(fingerprint_order(a, b), expected, "{a} vs {b}");
        }
    }

    #[actix::test]
    async fn the_ledger_never_moves_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        marked(&store, &[("a", "2026-01-02T00:00:00Z#1")]);
        marked(&store, &[("a", "2026-01-01T00:00:00Z#5")]);
        let ledger = Ledger::new(store).start();
        let old = candidate("a", "2026-01-01T00:00:00Z#5");
        let unsynced = ledger
            .send(Unsynced {
                candidates: vec![old],
            })
            .await
            .unwrap()
            .unwrap();
        assert!(
            unsynced.is_empty(),
            "an older version is covered: {unsynced:?}"
        );
    }
}
