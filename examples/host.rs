//! A small actix host embedding agent-sync, end to end, with no setup, network or token
//! needed: `cargo run --release --example host`.
//!
//! 1. Writes a sample workspace tree into a temp dir.
//! 2. Pushes while the platform is down: the entry is queued with backoff.
//! 3. Brings an in-process platform up on 127.0.0.1: the Queue's backoff timer
//!    delivers the entry without being asked.
//! 4. Pulls fleet context, then prints status and history.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use agent_sync::actors::platform::{Token, TokenSource};
use agent_sync::actors::SyncError;
use agent_sync::messages::{PullReport, PushReport, SyncPull, SyncPush};
use agent_sync::{SyncConfig, SyncService};

/// The host's own actor: it knows agent-sync only through two recipients.
struct Host {
    /// Where finished work goes.
    sync_push: Recipient<SyncPush>,
    /// Where context comes from.
    sync_pull: Recipient<SyncPull>,
}

impl Actor for Host {
    type Context = Context<Self>;
}

/// A worker finished: push whatever is new on disk.
#[derive(Message)]
#[rtype(result = "Result<PushReport, SyncError>")]
struct WorkFinished;

/// The host wants fresh fleet context.
#[derive(Message)]
#[rtype(result = "Result<PullReport, SyncError>")]
struct RefreshContext;

impl Handler<WorkFinished> for Host {
    type Result = ResponseFuture<Result<PushReport, SyncError>>;

    fn handle(&mut self, _: WorkFinished, _: &mut Self::Context) -> Self::Result {
        let push = self.sync_push.send(SyncPush::default());
        Box::pin(async move { push.await? })
    }
}

impl Handler<RefreshContext> for Host {
    type Result = ResponseFuture<Result<PullReport, SyncError>>;

    fn handle(&mut self, _: RefreshContext, _: &mut Self::Context) -> Self::Result {
        let pull = self.sync_pull.send(SyncPull::default());
        Box::pin(async move { pull.await? })
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("workspace");
    write_sample_workspaces(&root)?;

    // A port nobody listens on yet: the platform is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = SyncConfig::new(&root, dir.path().join("sync"));
    config.agent_id = "demo-host".into();
    config.tokens = TokenSource::Fixed(Token::new("demo-token"));
    config.platform.base_url = format!("http://127.0.0.1:{port}");
    config.flush_interval = None;
    let service = SyncService::start(config)?;
    let host = Host {
        sync_push: service.push_recipient(),
        sync_pull: service.pull_recipient(),
    }
    .start();

    println!("== 1. push while the platform is down");
    let report = host.send(WorkFinished).await??;
    println!(
        "synced: {}  (still queued: {})",
        report.count, report.queued
    );
    for entry in service.queue(None).await? {
        println!(
            "queued entry seq {}: {} dispatch(es), attempts {}, next attempt {}, last error: {}",
            entry.seq,
            entry.dispatches.len(),
            entry.attempts,
            entry.next_attempt.map_or("-".into(), |t| t.to_string()),
            entry.last_error.as_deref().unwrap_or("-"),
        );
    }

    println!("\n== 2. the platform comes up on 127.0.0.1:{port}");
    let received = Arc::new(Mutex::new(Vec::<usize>::new()));
    let server = platform(port, received.clone())?;
    let server_handle = server.handle();
    actix_rt::spawn(server);
    // Nobody calls push: the Pusher wakes at the head's next_attempt by itself.
    for _ in 0..100 {
        if service.status().await?.queued_dispatches == 0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let posts = received.lock().map(|r| r.clone()).unwrap_or_default();
    println!(
        "the backoff timer delivered {} POST(s) carrying {:?} dispatch(es)",
        posts.len(),
        posts
    );

    println!("\n== 3. pull fleet context");
    let context = host.send(RefreshContext).await??;
    println!("context items: {}", context.count);
    for item in &context.context {
        println!("  {item}");
    }

    println!("\n== 4. status");
    let status = service.status().await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    println!("\n== history");
    for record in service.history(None).await? {
        println!(
            "{} {} items={} bytes={}",
            record.synced_at,
            record.direction.as_str(),
            record.items_count,
            record.payload_size
        );
    }

    server_handle.stop(true).await;
    service.stop().await;
    Ok(())
}

/// Three workspaces: two finished (one with a report), one still running.
fn write_sample_workspaces(root: &Path) -> std::io::Result<()> {
    let now = "2026-11-23T12:00:00Z";
    let workspaces = [
        ("core/go-io/task-5", "completed", true),
        ("core/go-io/task-6", "blocked", false),
        ("core/agent/task-9", "running", false),
    ];
    for (name, status, with_report) in workspaces {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join(".meta"))?;
        std::fs::create_dir_all(dir.join("repo"))?;
        let body = serde_json::json!({
            "status": status, "agent": "codex", "org": "core", "repo": "go-io",
            "task": name.rsplit('/').next(), "branch": "agent/fix", "issue": 42,
            "runs": 1, "updated_at": now, "started_at": now,
            "question": if status == "blocked" { "which API version?" } else { "" },
        });
        std::fs::write(dir.join("status.json"), serde_json::to_vec_pretty(&body)?)?;
        if with_report {
            let report = serde_json::json!({
                "summary": "fixed the flaky test",
                "findings": [{"file": "io.go", "line": 12, "note": "race"}],
                "changes": {"files": 2, "insertions": 10},
            });
            std::fs::write(dir.join(".meta/report.json"), serde_json::to_vec(&report)?)?;
        }
    }
    Ok(())
}

/// The platform: accepts pushes (recording their sizes) and serves some context.
fn platform(
    port: u16,
    received: Arc<Mutex<Vec<usize>>>,
) -> std::io::Result<actix_web::dev::Server> {
    Ok(HttpServer::new(move || {
        let received = received.clone();
        App::new()
            .route(
                "/v1/agent/sync",
                web::post().to(move |body: web::Json<serde_json::Value>| {
                    let received = received.clone();
                    async move {
                        let count = body["dispatches"].as_array().map_or(0, Vec::len);
                        if let Ok(mut r) = received.lock() {
                            r.push(count);
                        }
                        HttpResponse::Ok().json(serde_json::json!({"ok": true}))
                    }
                }),
            )
            .route(
                "/v1/agent/context",
                web::get().to(|req: HttpRequest| async move {
                    HttpResponse::Ok().json(serde_json::json!({"data": {"context": [
                        {"id": "m1", "text": "prefer small PRs", "for": req.query_string()},
                        {"id": "m2", "text": "core/go-io CI is flaky on arm64"},
                    ]}}))
                }),
            )
    })
    .workers(1)
    .bind(("127.0.0.1", port))?
    .run())
}
