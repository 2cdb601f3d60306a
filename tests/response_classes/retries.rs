//! How a kept entry is tried again: under the same idempotency key, across retries
//! and restarts, at the backoff steps 1 s, 5 s, 15 s, 60 s, 300 s with their jitter.

use std::time::Duration;

use agent_sync_actors::queue::Jitter;
use agent_sync_actors::sync_record::Direction;
use agent_sync_testkit::*;

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
