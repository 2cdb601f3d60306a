//! Answers that keep the entry and back off: 5xx, 408 and 429 (501 is refused),
//! `Retry-After` in seconds and as a date, a request timeout, and 401/403, which also
//! set `auth_failed` until a push succeeds.

use std::time::SystemTime;

use actix_web::http::header::HttpDate;

use agent_sync_actors::sync_record::Direction;
use agent_sync_testkit::*;

use crate::one_push_answered_with;

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
