//! Response classes (design.md §5, §6 P10): what the Queue decides for each answer of
//! the platform (delivered, transient with backoff and `Retry-After`, unauthorized,
//! too large and split, refused and dead-lettered), the idempotency key across
//! retries and restarts, and the backoff timers with their jitter.
//!
//! Wall-clock checks use windows around the call (`before`/`after`); backoff
//! schedules are checked under paused tokio time with the in-process
//! [`ScriptedPlatform`], never with real sockets (design.md §11).

use std::time::{Duration, SystemTime};

use actix_web::http::header::HttpDate;
use serde_json::json;

use agent_sync_actors::dispatch::Dispatch;
use agent_sync_actors::entry::{DeadLetter, QueueEntry};
use agent_sync_actors::messages::*;
use agent_sync_actors::queue::Jitter;
use agent_sync_actors::sync_record::{Direction, SyncRecord};
use agent_sync_actors::time::Timestamp;
use agent_sync_testkit::*;

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
async fn p10_429_retry_after_120_sets_next_attempt() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(429).header("Retry-After", "120"));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    let before = now();
    let report = push_host(&actors, vec![host("a")]).await;
    let after = now();

    assert_eq!(report, pushed(0, 1));
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert_next_attempt(entry.next_attempt, before, after, secs(120));
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("429")),
        "{entry:?}"
    );
    assert_eq!(dead_letters(&actors).await.len(), 0);
    assert_eq!(drain(&actors).await, pushed(0, 1));
    assert_eq!(server.pushes().len(), 1);
    server.stop().await;
}

#[actix::test]
async fn p10_retry_after_http_date_is_honoured() {
    let server = LoopbackPlatform::start().await;

    // A date 90 s ahead wins over the 1 s backoff.
    let date = HttpDate::from(SystemTime::now() + secs(90)).to_string();
    server.respond(Scripted::status(503).header("Retry-After", &date));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    let before = now();
    assert_eq!(push_host(&actors, vec![host("a")]).await.queued, 1);
    let after = now();
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    // The date has whole seconds: up to 1 s earlier than now + 90 s.
    let next = entry.next_attempt.expect("next_attempt");
    assert_between(
        "next_attempt",
        next,
        before.saturating_add(secs(88)),
        after.saturating_add(secs(91)),
    );

    // A date in the past asks for nothing: the backoff (1 s) applies.
    server.respond(Scripted::status(503).header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"));
    let dirs2 = Dirs::new();
    let (actors2, _store2) = start_actors(dirs2.root(), dirs2.state(), &server.url(), Some(TOKEN));
    let before = now();
    assert_eq!(push_host(&actors2, vec![host("b")]).await.queued, 1);
    let after = now();
    let entry = queue(&actors2).await.remove(0);
    assert_backoff(entry.next_attempt, before, after, secs(1));
    assert_eq!(server.pushes().len(), 2);
    server.stop().await;
}

#[actix::test]
async fn p10_401_keeps_entry_and_sets_auth_failed_until_success() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(401).body("bad credentials"));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));

    let before = now();
    assert_eq!(push_host(&actors, vec![host("a")]).await, pushed(0, 1));
    let after = now();
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert_backoff(entry.next_attempt, before, after, secs(1));
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("401")),
        "{entry:?}"
    );
    assert!(
        dead_letters(&actors).await.is_empty(),
        "401 is never dropped"
    );
    let state = sync_state(&actors).await;
    assert!(state.auth_failed);
    assert_eq!(state.last_push_at, None);

    // The Pusher retries on its own timer; the success clears the flag, in the
    // commit that removes the entry: wait for that state in the Queue that owns it.
    eventually_empty(&actors).await;
    let state = sync_state(&actors).await;
    assert!(!state.auth_failed);
    assert!(state.last_push_at.is_some());
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].idempotency_key(), pushes[0].idempotency_key());

    // 403 is the same class.
    server.respond(Scripted::status(403));
    let dirs2 = Dirs::new();
    let (actors2, _store2) = start_actors(dirs2.root(), dirs2.state(), &server.url(), Some(TOKEN));
    assert_eq!(push_host(&actors2, vec![host("b")]).await.queued, 1);
    assert_eq!(queue(&actors2).await[0].attempts, 1);
    assert!(dead_letters(&actors2).await.is_empty());
    assert!(sync_state(&actors2).await.auth_failed);
    server.stop().await;
}

#[actix::test]
async fn p10_auth_failed_survives_transient_failures_until_a_push_succeeds_under_paused_time() {
    tokio::time::pause();
    let platform = ScriptedPlatform::delivering();
    platform.respond(status_outcome(401));
    platform.respond(status_outcome(503));
    let dirs = Dirs::new();
    let (actors, _store) = platform.start_actors(&dirs, &Options::default());
    assert_eq!(push_host(&actors, vec![host("a")]).await.count, 0);
    assert!(sync_state(&actors).await.auth_failed);

    tokio::time::sleep(millis(1500)).await; // the 1 s retry: a 503
    assert_eq!(platform.push_times().len(), 2);
    assert_eq!(queue(&actors).await[0].attempts, 2);
    assert!(sync_state(&actors).await.auth_failed, "a 503 is no success");

    tokio::time::sleep(secs(5)).await; // the 5 s retry: delivered
    assert_eq!(platform.push_times().len(), 3);
    assert!(queue(&actors).await.is_empty());
    let state = sync_state(&actors).await;
    assert!(!state.auth_failed);
    assert!(state.last_push_at.is_some());
}

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
    assert_eq!(drain(&actors).await, pushed(0, 0));
    let s = summary(&actors).await;
    assert_eq!((s.entries, s.dead_letters), (0, 0));
    assert_eq!(ledger_size(&actors).await, 3);
    assert_eq!(push_default(&actors).await.count, 0);
    assert_eq!(server.pushes().len(), 5);
    server.stop().await;
}

/// Starts fresh actors against a fresh server answering `status` once; pushes one
/// host dispatch; returns what is left queued and dead-lettered and the requests.
async fn one_push_answered_with(
    status: u16,
) -> (
    PushReport,
    Vec<QueueEntry>,
    Vec<DeadLetter>,
    Vec<SyncRecord>,
    usize,
    (Timestamp, Timestamp),
) {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(status).body(format!("answer {status}")));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    let before = now();
    let report = push_host(&actors, vec![host("x")]).await;
    let after = now();
    let result = (
        report,
        queue(&actors).await,
        dead_letters(&actors).await,
        records(&actors, None).await,
        server.pushes().len(),
        (before, after),
    );
    server.stop().await;
    result
}

#[actix::test]
async fn p10_5xx_and_501_classes() {
    for status in [500, 502, 503, 504, 599, 408, 429] {
        let (report, queued, dead, history, sent, (before, after)) =
            one_push_answered_with(status).await;
        assert_eq!(sent, 1, "{status}");
        assert_eq!(report, pushed(0, 1), "{status}");
        assert_eq!(queued.len(), 1, "{status}: {queued:?}");
        assert_eq!(queued[0].attempts, 1, "{status}");
        assert_backoff(queued[0].next_attempt, before, after, secs(1));
        let error = queued[0].last_error.clone().unwrap_or_default();
        assert!(error.contains(&status.to_string()), "{status}: {error}");
        assert!(dead.is_empty(), "{status} is transient: {dead:?}");
        assert!(history.is_empty(), "{status}: {history:?}");
    }
    let (report, queued, dead, history, sent, _) = one_push_answered_with(501).await;
    assert_eq!(sent, 1);
    assert_eq!(report, pushed(0, 0));
    assert!(queued.is_empty(), "501 is not retried: {queued:?}");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].status, 501);
    assert!(dead[0].reason.contains("answer 501"), "{}", dead[0].reason);
    assert_eq!(directions(&history), [(Direction::DeadLetter, 1)]);
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

#[actix::test]
async fn p10_network_timeout_is_transient() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::ok().delay(secs(3)));
    let dirs = Dirs::new();
    let opts = Options {
        request_timeout: secs(1),
        ..Options::default()
    };
    let (actors, _store) = start_online(&dirs, &server.url(), &opts);
    let before = now();
    let report = push_host(&actors, vec![host("a")]).await;
    let after = now();
    assert_eq!(report, pushed(0, 1));
    assert!(
        after.duration_since(before) < secs(3),
        "the timeout did not cut in"
    );
    let entry = queue(&actors).await.remove(0);
    assert_eq!(entry.attempts, 1);
    assert!(entry.last_error.is_some());
    assert!(dead_letters(&actors).await.is_empty());
    // Retried with the same key (the platform may drop the duplicate).
    wait_until("the retry", secs(10), || server.pushes().len() == 2).await;
    let pushes = server.pushes();
    assert_eq!(pushes[1].idempotency_key(), pushes[0].idempotency_key());
    server.stop().await;
}

#[actix::test]
async fn p10_idempotency_key_is_stable_across_retries() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(503));
    let dirs = Dirs::new();
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    assert_eq!(push_host(&actors, vec![host("a")]).await.queued, 1);
    assert_eq!(push_host(&actors, vec![host("b")]).await.queued, 2);
    let entries = queue(&actors).await;
    assert_eq!(entries.len(), 2);
    let (key_a, key_b) = (
        entries[0].idempotency_key.clone(),
        entries[1].idempotency_key.clone(),
    );
    assert_ne!(key_a, key_b);
    assert_eq!(server.pushes()[0].idempotency_key(), key_a);

    wait_until("the retry delivers both", secs(10), || {
        server.delivered().len() == 2
    })
    .await;
    let keys: Vec<String> = server
        .pushes()
        .iter()
        .map(|p| p.idempotency_key())
        .collect();
    assert_eq!(keys, [key_a.clone(), key_a, key_b]);
    server.stop().await;
}

#[actix::test]
async fn p10_idempotency_key_survives_a_restart_and_leftovers_go_out_at_start() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let (root, state) = (dirs.root().to_path_buf(), dirs.state().to_path_buf());
    let key = in_own_system(move || async move {
        let (actors, _store) = start_actors(&root, &state, &dead_url(), Some(TOKEN));
        assert_eq!(push_host(&actors, vec![host("a")]).await.queued, 1);
        let entries = queue(&actors).await;
        assert_eq!(entries[0].attempts, 1);
        entries[0].idempotency_key.clone()
    })
    .await;

    // No push: the Pusher drains what survived once its backoff is over. The Queue
    // owns the outcome: wait until it has committed the delivery (the platform
    // records the POST before it answers, and the Pusher counts it after the commit).
    let (actors, _store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    let deadline = std::time::Instant::now() + secs(30);
    loop {
        let status = summary(&actors).await;
        if status.entries == 0 {
            assert_eq!(
                (status.dispatches, status.dead_letters),
                (0, 0),
                "{status:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leftover entry was never delivered: {status:?}, {:?}",
            server.pushes()
        );
        actix_rt::time::sleep(millis(20)).await;
    }
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].idempotency_key(), key);
    assert_eq!(pushes[0].dispatches(), [host("a")]);
    // Recorded in the delivery's commit.
    assert_eq!(
        directions(&records(&actors, None).await),
        [(Direction::Push, 1)]
    );
    // Nothing is left to send: a drain now (the start-up one may still be finishing)
    // sends nothing more.
    assert_eq!(drain(&actors).await.queued, 0);
    assert_eq!(server.pushes().len(), 1, "{:?}", server.pushes());
    server.stop().await;
}

// ---------------------------------------------------------------- backoff timers

/// Gaps between the first seven attempts of one entry against a platform that always
/// answers 503, with only the Pusher's own wake timer driving it (paused time).
async fn retry_gaps(jitter: Jitter) -> Vec<Duration> {
    let platform = ScriptedPlatform::new(status_outcome(503));
    let dirs = Dirs::new();
    let opts = Options {
        jitter,
        ..Options::default()
    };
    let (actors, _store) = platform.start_actors(&dirs, &opts);
    assert_eq!(push_host(&actors, vec![host("a")]).await, pushed(0, 1));
    // No Drain from here on: only the Pusher's own wake timer. 1.5x of every step fits.
    tokio::time::sleep(secs((1 + 5 + 15 + 60 + 300 + 300) * 3 / 2 + 1)).await;
    let times = platform.push_times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).take(6).collect();
    let keys: Vec<String> = platform
        .push_requests()
        .iter()
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    gaps
}

#[actix::test]
async fn backoff_steps_1_5_15_60_300_are_jittered_within_half_and_one_and_a_half() {
    tokio::time::pause();
    // From the fifth attempt on, 5 minutes.
    let seed = [1, 5, 15, 60, 300, 300];
    let gaps = retry_gaps(Jitter::Seeded(TEST_SEED)).await;
    assert_eq!(gaps.len(), 6, "{gaps:?}");
    for (gap, step) in gaps.iter().zip(seed) {
        let step = secs(step);
        assert!(
            *gap >= step / 2 && *gap <= step * 3 / 2 + millis(20),
            "gaps {gaps:?} are not within [0.5x, 1.5x] of 1 s, 5 s, 15 s, 60 s, 300 s, 300 s"
        );
    }
    assert!(
        gaps.iter()
            .zip(seed)
            .any(|(gap, step)| gap.abs_diff(secs(step)) > millis(100)),
        "jitter moved no step: {gaps:?}"
    );

    // The same seed gives the same schedule; another gives another.
    let again = retry_gaps(Jitter::Seeded(TEST_SEED)).await;
    for (a, b) in gaps.iter().zip(&again) {
        assert!(a.abs_diff(*b) <= millis(20), "{gaps:?} vs {again:?}");
    }
    let other = retry_gaps(Jitter::Seeded(TEST_SEED + 1)).await;
    assert!(
        gaps.iter()
            .zip(&other)
            .any(|(a, b)| a.abs_diff(*b) > millis(100)),
        "{gaps:?} vs {other:?}"
    );

    // Without jitter, the seed's exact steps.
    let exact = retry_gaps(Jitter::Off).await;
    for (gap, step) in exact.iter().zip(seed) {
        let step = secs(step);
        assert!(
            *gap >= step && *gap <= step + millis(20),
            "gaps {exact:?} are not 1 s, 5 s, 15 s, 60 s, 300 s, 300 s"
        );
    }
}
