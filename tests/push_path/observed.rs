//! What a host reads back: the history records, newest N oldest first (H1), and the
//! `Debug` output of every type, which never holds the token.

use serde_json::json;

use agent_sync_actors::messages::*;
use agent_sync_actors::sync_record::Direction;
use agent_sync_testkit::*;

// ------------------------------------------------------------------------- H1

#[actix::test]
async fn h1_history_keeps_order_fields_and_only_newest_n() {
    let server = LoopbackPlatform::start().await;
    let dirs = Dirs::new();
    let opts = Options {
        history_limit: 3,
        fleet_node_id: Some(11),
        ..Options::default()
    };
    let (actors, _store) = start_online(&dirs, &server.url(), &opts);

    let before = now();
    for n in 1..=4usize {
        if n == 2 {
            server.respond(Scripted::status(400));
        }
        let dispatches = (0..n).map(|i| host(&format!("d{n}-{i}"))).collect();
        push_host(&actors, dispatches).await;
    }
    let after = now();
    let pushes = server.pushes();
    assert_eq!(pushes.len(), 4);

    // Four records were written; the newest three are kept, oldest first.
    let kept = records(&actors, None).await;
    assert_eq!(
        directions(&kept),
        [
            (Direction::DeadLetter, 2),
            (Direction::Push, 3),
            (Direction::Push, 4)
        ]
    );
    for (record, push) in kept.iter().zip(&pushes[1..]) {
        assert_eq!(record.agent_id, AGENT_ID);
        assert_eq!(record.fleet_node_id, Some(11));
        assert_eq!(record.payload_size, push.body.len() as u64);
        assert_eq!(record.synced_at.unix_millis() % 1000, 0, "whole seconds");
        assert_between("synced_at", record.synced_at, before.whole_seconds(), after);
    }
    assert!(kept.windows(2).all(|w| w[0].synced_at <= w[1].synced_at));

    // A limit returns the newest, still oldest first.
    let newest = records(&actors, Some(2)).await;
    assert_eq!(newest, kept[1..]);
    assert_eq!(records(&actors, Some(10)).await, kept);
    server.stop().await;
}

// --------------------------------------------------------------------- secrets

#[actix::test]
async fn token_never_appears_in_debug_output() {
    let server = LoopbackPlatform::start().await;
    server.respond(Scripted::status(401).body("token rejected"));
    let dirs = Dirs::new();
    let config = actors_config(dirs.root(), Some(TOKEN), &Options::default());
    let mut shown = vec![
        format!("{config:?}"),
        format!("{:?}", token_source(Some(TOKEN))),
    ];

    let (actors, store) = start_actors(dirs.root(), dirs.state(), &server.url(), Some(TOKEN));
    shown.push(format!("{:?}", push_host(&actors, vec![host("a")]).await));
    shown.push(format!("{:?}", queue(&actors).await));
    shown.push(format!("{:?}", summary(&actors).await));
    shown.push(format!("{:?}", sync_state(&actors).await));
    shown.push(format!("{store:?}"));
    let refused = actors
        .pusher
        .send(SyncPush {
            dispatches: Some(vec![json!("not an object")]),
            ..SyncPush::default()
        })
        .await
        .unwrap();
    shown.push(format!("{refused:?}"));
    let pushes = server.pushes();
    // The token did travel, in the header only...
    assert_eq!(pushes[0].header("authorization"), Some("Bearer test-token"));
    // ...and the recorded request prints redacted.
    shown.push(format!("{pushes:?}"));
    for text in &shown {
        assert_no_token(text);
    }
    server.stop().await;
}
