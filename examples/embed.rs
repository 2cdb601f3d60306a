//! Embeds agent-sync in an actix host: `sync_once` is what a host does, `main` gives
//! it the platform, the token and the directories.

use std::error::Error;
use std::path::Path;

use agent_sync::prelude::*;

#[actix::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let home = std::env::var("HOME")?;
    let key = std::fs::read_to_string(Path::new(&home).join(".claude/brain.key"))?;
    let lethean = Path::new(&home).join("Lethean");
    sync_once("https://api.lthn.sh", &key, &lethean).await?;
    Ok(())
}

/// Starts agent-sync on `<base>/workspace` with its state in `<base>/data/sync`,
/// pushes what finished, pulls fleet context, stops it, and returns the host's
/// metrics as encoded after the push. Runs inside an actix System.
pub async fn sync_once(api_url: &str, token: &str, base: &Path) -> Result<String, Box<dyn Error>> {
    let config = SyncConfig::builder()
        .api_url(api_url)
        .token(token)? // leave it out to run offline: queue, never send
        .workspace_root(base.join("workspace")) // <org>/<repo>/<task>/status.json
        .state_dir(base.join("data/sync")) // sync.redb and agent-sync.sock
        .agent_id("my-host")
        .build()?;
    let service = SyncService::start(config)?; // fails fast if another process holds the state

    // agent-sync's series join the host's registry (the re-exported prometheus_client).
    let mut registry = Registry::default();
    service.register_metrics(&mut registry);

    // Call it ...
    let pushed: PushReport = service.push(SyncPush::default()).await?; // scan, enqueue, drain
    let pulled: PullReport = service.pull(SyncPull::default()).await?; // context, or the cache
    let status: SyncStatus = service.status().await?; // local, no network
    println!(
        "synced: {}, still queued: {}, context items: {}, last push: {:?}",
        pushed.count, status.queued_dispatches, pulled.count, status.last_push_at
    );

    // ... or hand its recipients to your own actors; replies are Result<_, SyncError>
    // inside the mailbox's Result, hence `??` (a MailboxError converts to SyncError).
    let push: Recipient<SyncPush> = service.push_recipient();
    let queued_only = SyncPush {
        queue_only: true, // deliver what is queued, no scan
        ..SyncPush::default()
    };
    let drained: PushReport = push.send(queued_only).await??;
    println!("delivered from the queue: {}", drained.count);

    // The gauges are computed as the registry is encoded: the push above is in them.
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry)?;

    service.stop().await; // lets the request in flight finish and commits it
    Ok(metrics)
}
