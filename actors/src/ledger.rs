//! The Ledger: which dispatches the platform already has, by fingerprint.
//!
//! A dispatch is pushed again only when its fingerprint (`updated_at#runs`) changes
//! (P7). Fingerprints are written exactly as the Scanner computed them, never
//! re-derived from pushed JSON, so a queue round trip cannot defeat the match
//! (Go defect 1).

use actix::prelude::*;
use redb::{Durability, ReadableTableMetadata, TableDefinition, WriteTransaction};

use crate::error::StoreError;
use crate::messages::{LedgerSize, MarkSynced, Unsynced};
use crate::model::ScannedDispatch;
use crate::store::Store;

/// Dispatch id -> fingerprint last delivered.
pub(crate) const LEDGER: TableDefinition<&str, &str> = TableDefinition::new("ledger");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(LEDGER)?;
    Ok(())
}

/// Owns the `ledger` table.
pub struct Ledger {
    /// The shared database; only this actor touches `ledger`.
    store: Store,
}

impl Ledger {
    /// A Ledger over `store`.
    pub fn new(store: Store) -> Self {
        Ledger { store }
    }

    fn unsynced(
        &self,
        candidates: Vec<ScannedDispatch>,
    ) -> Result<Vec<ScannedDispatch>, StoreError> {
        self.store.read("read the ledger", |txn| {
            let ledger = txn.open_table(LEDGER)?;
            let mut fresh = Vec::with_capacity(candidates.len());
            for candidate in candidates {
                let known = ledger.get(candidate.id.as_str())?;
                if known.is_none_or(|fp| fp.value() != candidate.fingerprint) {
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
    type Result = Result<Vec<ScannedDispatch>, StoreError>;

    fn handle(&mut self, msg: Unsynced, _: &mut Self::Context) -> Self::Result {
        self.unsynced(msg.candidates)
    }
}

impl Handler<MarkSynced> for Ledger {
    type Result = Result<(), StoreError>;

    /// Non-durable on purpose: the Queue's immediate commit that removes the delivered
    /// entry follows and makes this durable with it (see `store` crash semantics).
    fn handle(&mut self, msg: MarkSynced, _: &mut Self::Context) -> Self::Result {
        if msg.fingerprints.is_empty() {
            return Ok(());
        }
        self.store
            .write("mark dispatches synced", Durability::None, |txn| {
                let mut ledger = txn.open_table(LEDGER)?;
                for (id, fingerprint) in &msg.fingerprints {
                    ledger.insert(id.as_str(), fingerprint.as_str())?;
                }
                Ok(())
            })
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
    use crate::model::Dispatch;

    fn candidate(id: &str, fingerprint: &str) -> ScannedDispatch {
        ScannedDispatch {
            id: id.into(),
            fingerprint: fingerprint.into(),
            record: Dispatch::empty(),
        }
    }

    #[actix::test]
    async fn ledger_skips_marked_fingerprints_and_keeps_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(Store::open(dir.path()).unwrap()).start();
        ledger
            .send(MarkSynced {
                fingerprints: vec![("a".into(), "t#1".into())],
            })
            .await
            .unwrap()
            .unwrap();
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
}
