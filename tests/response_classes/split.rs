//! 413, too large: an entry is split in halves, in order, under keys derived from
//! its own; a single dispatch that is still too large is dead-lettered alone; a part that
//! fails transiently keeps its own key.

use agent_sync_actors::sync_record::Direction;
use agent_sync_testkit::*;

#[actix::test]
async fn p10_413_splits_entry_in_order_with_derived_keys() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(413));
    let dirs = Dirs::new();
    for task in ["t1", "t2", "t3", "t4"] {
        write_done(dirs.root(), &format!("o/r/{task}"));
    }
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::max_batch(3));

    // Entries: A = [t1, t2, t3], B = [t4]. A is too large: halves of 2 and 1, sent
    // before B.
    assert_eq!(push_default(&actors).await, pushed(4, 0));
    let pushes = server.pushes();
    let seen: Vec<(u16, Vec<String>)> = pushes
        .iter()
        .map(|p| (p.status, p.dispatch_ids()))
        .collect();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        [
            (413, ids(&["o/r/t1", "o/r/t2", "o/r/t3"])),
            (200, ids(&["o/r/t1", "o/r/t2"])),
            (200, ids(&["o/r/t3"])),
            (200, ids(&["o/r/t4"])),
        ]
    );
    let key = pushes[0].idempotency_key();
    assert_eq!(pushes[1].idempotency_key(), format!("{key}.1"));
    assert_eq!(pushes[2].idempotency_key(), format!("{key}.2"));
    let other = pushes[3].idempotency_key();
    assert!(
        other != key && !other.starts_with(&format!("{key}.")),
        "{other}"
    );

    // Both halves marked the ledger; nothing dead-lettered.
    assert_eq!(ledger_size(&actors).await, 4);
    assert!(dead_letters(&actors).await.is_empty());
    assert_eq!(
        directions(&records(&actors, None).await),
        [
            (Direction::Push, 2),
            (Direction::Push, 1),
            (Direction::Push, 1)
        ]
    );
    assert_eq!(push_default(&actors).await.count, 0);
    assert_eq!(server.pushes().len(), 4);
    server.stop().await;
}

#[actix::test]
async fn p10_413_on_a_single_dispatch_part_dead_letters_only_that_part() {
    let server = LoopbackPlatform::start().await;
    for _ in 0..3 {
        server.respond(Scripted::status(413));
    }
    let dirs = Dirs::new();
    for task in ["t1", "t2", "t3"] {
        write_done(dirs.root(), &format!("o/r/{task}"));
    }
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    // [t1 t2 t3] 413 -> [t1 t2] 413 -> [t1] 413: refused for good; [t2], [t3] go.
    assert_eq!(push_default(&actors).await, pushed(2, 0));
    let pushes = server.pushes();
    let key = pushes[0].idempotency_key();
    let seen: Vec<(u16, String, Vec<String>)> = pushes
        .iter()
        .map(|p| {
            let k = p.idempotency_key();
            let suffix = k.strip_prefix(&key).expect("a derived key").to_string();
            (p.status, suffix, p.dispatch_ids())
        })
        .collect();
    let row = |status, suffix: &str, ids: &[&str]| {
        (
            status,
            suffix.to_string(),
            ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        seen,
        [
            row(413, "", &["o/r/t1", "o/r/t2", "o/r/t3"]),
            row(413, ".1", &["o/r/t1", "o/r/t2"]),
            row(413, ".1.1", &["o/r/t1"]),
            row(200, ".1.2", &["o/r/t2"]),
            row(200, ".2", &["o/r/t3"]),
        ]
    );
    let letters = dead_letters(&actors).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].status, 413);
    assert_eq!(entry_ids(&letters[0].entry), ["o/r/t1"]);
    assert_eq!(letters[0].entry.idempotency_key, format!("{key}.1.1"));
    assert_eq!(
        letters[0]
            .entry
            .fingerprints
            .iter()
            .map(|k| (k.index, k.id.as_str()))
            .collect::<Vec<_>>(),
        [(0, "o/r/t1")]
    );
    assert_eq!(
        directions(&records(&actors, None).await),
        [
            (Direction::DeadLetter, 1),
            (Direction::Push, 1),
            (Direction::Push, 1)
        ]
    );
    // A rescan does not queue the dead-lettered dispatch again.
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.pushes().len(), 5);
    server.stop().await;
}

#[actix::test]
async fn p10_split_part_is_retried_under_its_own_key_after_a_transient_failure() {
    tokio::time::pause();
    let platform = ScriptedPlatform::delivering();
    platform.respond(status_outcome(413));
    platform.respond(status_outcome(503));
    let dirs = Dirs::new();
    let (actors, _store) = platform.start_actors(&dirs, &Options::default());
    let report = push_host(&actors, vec![host("a"), host("b"), host("c")]).await;
    assert_eq!(report, pushed(0, 3));
    // The first half failed transiently: the entry keeps its split and backs off.
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry_ids(&entry), ["a", "b", "c"]);

    tokio::time::sleep(secs(2)).await;
    let requests = platform.push_requests();
    let seen: Vec<(String, usize)> = requests
        .iter()
        .map(|r| {
            let body = parse_push_body(&r.body);
            let n = body["dispatches"].as_array().map_or(0, Vec::len);
            (r.idempotency_key.clone(), n)
        })
        .collect();
    let key = &seen[0].0;
    assert_eq!(
        seen,
        [
            (key.clone(), 3),
            (format!("{key}.1"), 2),
            (format!("{key}.1"), 2),
            (format!("{key}.2"), 1),
        ]
    );
    assert!(queue(&actors).await.is_empty());
}
