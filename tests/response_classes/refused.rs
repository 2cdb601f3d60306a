//! Answers that refuse for good: the entry is dead-lettered, the next one still
//! goes, and dead letters can be listed and requeued.

use serde_json::json;

use agent_sync_actors::dispatch::Dispatch;
use agent_sync_actors::messages::*;
use agent_sync_actors::sync_record::Direction;
use agent_sync_testkit::*;

use crate::one_push_answered_with;

#[actix::test]
async fn p10_400_dead_letters_head_and_next_entry_still_delivered() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(400).json(json!({"error": "schema: id missing"})));
    let dirs = Dirs::new();
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::max_batch(1));

    let before = now();
    let report = push_host(&actors, vec![host("bad"), host("good")]).await;
    let after = now();

    assert_eq!(report, pushed(1, 0));
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert_eq!(
        (pushes[0].status, pushes[0].dispatch_ids()),
        (400, vec!["bad".to_string()])
    );
    assert_eq!(
        (pushes[1].status, pushes[1].dispatch_ids()),
        (200, vec!["good".to_string()])
    );
    assert_ne!(pushes[0].idempotency_key(), pushes[1].idempotency_key());

    let letters = dead_letters(&actors).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.status, 400);
    assert!(letter.reason.contains("400"), "{}", letter.reason);
    assert!(
        letter.reason.contains("schema: id missing"),
        "{}",
        letter.reason
    );
    assert_eq!(
        letter.entry.dispatches,
        [Dispatch::from(host("bad").as_object().unwrap().clone())]
    );
    assert_eq!(letter.entry.idempotency_key, pushes[0].idempotency_key());
    assert_between("dead_at", letter.dead_at, before, after);

    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dispatches, s.dead_letters), (0, 0, 1));
    let history = records(&actors, None).await;
    assert_eq!(
        directions(&history),
        [(Direction::DeadLetter, 1), (Direction::Push, 1)]
    );
    assert_eq!(history[0].payload_size, pushes[0].body.len() as u64);
    server.stop().await;
}

#[actix::test]
async fn p10_dead_letters_can_be_listed_and_requeued() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(400).body("schema error"));
    server.respond(Scripted::status(422).body("unprocessable"));
    let dirs = Dirs::new();
    for task in ["a", "b", "c"] {
        write_done(dirs.root(), &format!("o/r/{task}"));
    }
    let (actors, _store) = start_online(&dirs, &server.url(), &Options::max_batch(1));
    assert_eq!(push_default(&actors).await, pushed(1, 0));

    let letters = dead_letters(&actors).await;
    let listed: Vec<(u64, u16, Vec<String>)> = letters
        .iter()
        .map(|l| (l.entry.seq, l.status, entry_ids(&l.entry)))
        .collect();
    assert_eq!(
        listed,
        [
            (1, 400, vec!["o/r/a".to_string()]),
            (2, 422, vec!["o/r/b".to_string()])
        ]
    );
    assert!(
        letters[0].reason.contains("schema error"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1].reason.contains("unprocessable"),
        "{}",
        letters[1].reason
    );
    assert_eq!(summary(&actors).await.dead_letters, 2);
    // Dead letters are not queued again by a scan.
    assert_eq!(push_default(&actors).await, pushed(0, 0));
    assert_eq!(server.pushes().len(), 3);

    // Requeue one by seq (and one that does not exist): the Queue wakes the Pusher,
    // which delivers it without being asked.
    let report = actors
        .queue
        .send(Requeue {
            seqs: Some(vec![1, 99]),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.missing, [99]);
    assert_eq!(report.requeued.len(), 1);
    let (old, new) = report.requeued[0];
    assert_eq!(old, 1);
    assert!(new > 3, "requeued at the tail, got seq {new}");
    wait_until("the requeued entry is delivered", secs(10), || {
        server.delivered().len() == 2
    })
    .await;
    assert_eq!(server.pushes()[3].dispatch_ids(), ["o/r/a"]);
    let left: Vec<u64> = dead_letters(&actors)
        .await
        .iter()
        .map(|l| l.entry.seq)
        .collect();
    assert_eq!(left, [2]);

    // Requeue all.
    let report = actors
        .queue
        .send(Requeue { seqs: None })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.requeued.iter().map(|r| r.0).collect::<Vec<_>>(), [2]);
    wait_until("every requeued entry is delivered", secs(10), || {
        server.delivered().len() == 3
    })
    .await;
    assert_eq!(server.pushes()[4].dispatch_ids(), ["o/r/b"]);
    assert!(dead_letters(&actors).await.is_empty());
    // The platform has answered, but the Pusher's own drain may still be committing
    // that answer: a drain counts what was delivered while it ran, so the first one
    // may count it. It replies only once every drain in flight has ended; the next
    // one has nothing to do.
    let first = drain(&actors).await;
    assert!(first.count <= 1 && first.queued == 0, "{first:?}");
    assert_eq!(drain(&actors).await, pushed(0, 0));
    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dead_letters), (0, 0));
    assert_eq!(ledger_size(&actors).await, 3);
    assert_eq!(push_default(&actors).await.count, 0);
    assert_eq!(server.pushes().len(), 5);
    server.stop().await;
}

#[actix::test]
async fn p10_other_4xx_are_dead_lettered() {
    // 413 with a single dispatch cannot be split: refused too.
    for status in [400, 404, 405, 409, 410, 413, 422] {
        let (report, queued, dead, history, sent, _) = one_push_answered_with(status).await;
        assert_eq!(sent, 1, "{status}");
        assert_eq!(report, pushed(0, 0), "{status}");
        assert!(queued.is_empty(), "{status}: {queued:?}");
        assert_eq!(dead.len(), 1, "{status}");
        assert_eq!(dead[0].status, status);
        assert_eq!(entry_ids(&dead[0].entry), ["x"]);
        assert_eq!(
            directions(&history),
            [(Direction::DeadLetter, 1)],
            "{status}"
        );
    }
}
