//! The handle and its backend under redb itself, and under raw calls for the journal.

use super::*;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
};

/// The table of these tests.
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

fn put(db: &Database, key: u64, len: usize, durability: Durability) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    txn.open_table(TABLE)?
        .insert(key, vec![key as u8; len].as_slice())?;
    txn.commit()?;
    Ok(())
}

fn over(faults: &Arc<Faults>, path: &Path) -> Database {
    Database::builder()
        .create_with_backend(faults.backend(path).unwrap())
        .unwrap()
}

/// The keys of the file, opened with redb's own file backend.
fn keys(path: &Path) -> Vec<u64> {
    let db = Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(TABLE).unwrap();
    table
        .iter()
        .unwrap()
        .map(|r| r.unwrap().0.value())
        .collect()
}

#[test]
fn a_power_cut_keeps_what_was_synced_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let faults = Faults::with_power_cuts();
    let db = over(&faults, &path);
    put(&db, 1, 10, Durability::Immediate).unwrap();
    put(&db, 2, 300_000, Durability::Immediate).unwrap();
    let (synced, grown) = (faults.syncs(), faults.grows());
    put(&db, 3, 10, Durability::None).unwrap();
    put(&db, 4, 3_000_000, Durability::None).unwrap();
    assert!(faults.grows() > grown, "the large commit grows the file");
    assert_eq!(
        faults.syncs() - synced,
        faults.grows() - grown,
        "a commit without durability syncs only when it grows the file"
    );
    faults.power_cut().unwrap();
    assert!(put(&db, 5, 10, Durability::Immediate).is_err());
    assert!(
        faults.backend(&path).is_err(),
        "a dead machine opens nothing"
    );
    // The dead handle's locks are gone: the file opens while it still exists.
    assert_eq!(keys(&path), [1, 2]);
    drop(db);
    assert_eq!(keys(&path), [1, 2]);
}

#[test]
fn a_cut_at_a_sync_loses_it_before_and_keeps_it_after() {
    for (side, kept) in [(Cut::BeforeSync, vec![1]), (Cut::AfterSync, vec![1, 2])] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let faults = Faults::with_power_cuts();
        let db = over(&faults, &path);
        put(&db, 1, 10, Durability::Immediate).unwrap();
        faults.cut_at_sync(1, side);
        let second = put(&db, 2, 10, Durability::Immediate);
        assert_eq!(
            second.is_ok(),
            side == Cut::AfterSync,
            "{side:?}: {second:?}"
        );
        assert!(faults.is_cut());
        assert!(put(&db, 3, 10, Durability::Immediate).is_err());
        drop(db);
        assert_eq!(keys(&path), kept, "{side:?}");
    }
}

#[test]
fn a_full_disk_fails_commits_until_healed_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let faults = Faults::new();
    let db = over(&faults, &path);
    put(&db, 1, 10, Durability::Immediate).unwrap();
    faults.fail_writes(true);
    let err = put(&db, 2, 10, Durability::Immediate).unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    faults.heal();
    // redb refuses the handle after an I/O error until it is reopened.
    assert!(put(&db, 3, 10, Durability::Immediate).is_err());
    drop(db);
    let db = over(&faults, &path);
    put(&db, 4, 10, Durability::Immediate).unwrap();
    faults.fail_syncs_from(2);
    put(&db, 5, 10, Durability::Immediate).unwrap();
    assert!(put(&db, 6, 10, Durability::Immediate).is_err());
    drop(db);
    faults.heal();
    // The failed sync did not undo the writes before it: commit 6 is whole.
    assert_eq!(keys(&path), [1, 4, 5, 6]);
}

#[test]
fn the_journal_undoes_writes_shrinks_and_regrowth_since_the_last_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw");
    let faults = Faults::with_power_cuts();
    let backend = faults.backend(&path).unwrap();
    backend.write(0, &[1; 100]).unwrap();
    backend.sync_data().unwrap();
    backend.write(10, &[2; 10]).unwrap();
    backend.set_len(50).unwrap();
    backend.set_len(200).unwrap();
    backend.write(60, &[3; 10]).unwrap();
    backend.write(150, &[4; 10]).unwrap();
    assert_eq!((faults.syncs(), faults.writes(), faults.grows()), (1, 4, 1));
    faults.power_cut().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), [1; 100]);
    assert!(backend.read(0, &mut [0; 1]).is_err());
}
