//! `/metrics` and `/health` of a running agent-sync (design.md §13), end to end: scraped
//! over the control socket and over `run --metrics-addr`, parsed as a text
//! exposition (not grepped), and checked against `status`; the request counters
//! across a scripted sequence of answers; `/health` across `auth_failed`; and a host
//! registry carrying agent-sync's series.

use std::time::{Duration, Instant};

use agent_sync::actors::platform::{Token, TokenSource};
use agent_sync::messages::SyncPush;
use agent_sync::{SyncConfig, SyncService};
use agent_sync_testkit::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

/// The token of every online process here.
const SECRET: &str = "metrics-secret-0b5e55ed";
/// Bounded waits for what a daemon does on its own.
const DEADLINE: Duration = Duration::from_secs(20);

/// An isolated installation, run as `metrics-agent`.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), "metrics-agent", SECRET)
}

/// Runs to completion on the blocking pool; panics (without the token) unless it
/// exits 0; its stdout.
async fn run(cmd: std::process::Command) -> String {
    run_async(cmd).await.redact(SECRET).ok().stdout
}

/// `push --dispatches` with these ids; panics unless it exits 0.
async fn push(sandbox: &Sandbox, url: &str, name: &str, ids: &[&str]) -> String {
    let file = sandbox.dispatch_file(name, ids);
    run(sandbox.online(url, &["push", "--dispatches", &file])).await
}

/// `--json status`, through the running daemon.
async fn status_of(sandbox: &Sandbox, url: &str) -> Value {
    let out = run(sandbox.online(url, &["--json", "status"])).await;
    serde_json::from_str(out.trim()).expect("status is JSON")
}

/// A started `run` daemon of `sandbox`.
async fn daemon(sandbox: &Sandbox, cmd: std::process::Command) -> Daemon {
    let mut daemon = Daemon::spawn(sandbox, "daemon", None, cmd).deadline(DEADLINE);
    daemon.wait_running().await;
    daemon
}

/// A started draining daemon that also serves `--metrics-addr`, and that address.
async fn daemon_with_metrics_addr(sandbox: &Sandbox, url: &str) -> (Daemon, String) {
    let addr = free_addr();
    let args = ["run", "--scan-interval", "0", "--metrics-addr", &addr];
    (daemon(sandbox, sandbox.online(url, &args)).await, addr)
}

/// Scrapes `/metrics` on the socket (and checks it parses).
async fn scrape(socket: &std::path::Path) -> Vec<Sample> {
    let (status, body) = get_unix(socket, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse_exposition(&body)
}

/// Scrapes every 100 ms until `done` holds of the samples; panics with `what` (and
/// the last scrape) after [`DEADLINE`].
async fn scrape_until(
    socket: &std::path::Path,
    what: &str,
    mut done: impl FnMut(&[Sample]) -> bool,
) -> Vec<Sample> {
    let started = Instant::now();
    let mut now = scrape(socket).await;
    while !done(&now) {
        assert!(started.elapsed() < DEADLINE, "{what}: {now:?}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        now = scrape(socket).await;
    }
    now
}

async fn health(socket: &std::path::Path) -> (u16, Value) {
    let (status, body) = get_unix(socket, "/health").await;
    (status, serde_json::from_str(&body).expect("health is JSON"))
}

fn requests(samples: &[Sample], outcome: &str) -> f64 {
    sample(
        samples,
        "agent_sync_requests_total",
        &[("outcome", outcome)],
    )
}

/// Unix seconds of an RFC 3339 `status` time (`null` -> 0, as the gauge says).
fn unix_seconds(value: &Value) -> f64 {
    match value.as_str() {
        None => 0.0,
        Some(text) => {
            agent_sync::actors::time::Timestamp::parse_rfc3339(text)
                .expect("an RFC 3339 time")
                .unix_millis() as f64
                / 1000.0
        }
    }
}

/// The gauges agree with `status`: the same counts, flags and times.
fn assert_agrees(samples: &[Sample], status: &Value, label: &str) {
    let gauge = |name: &str| sample(samples, name, &[]);
    let number = |field: &str| status[field].as_f64().unwrap_or_else(|| panic!("{field}"));
    assert_eq!(
        gauge("agent_sync_queue_entries"),
        number("queued_entries"),
        "{label}"
    );
    assert_eq!(
        gauge("agent_sync_queue_dispatches"),
        number("queued_dispatches"),
        "{label}"
    );
    assert_eq!(
        gauge("agent_sync_dead_letters"),
        number("dead_letters"),
        "{label}"
    );
    assert_eq!(
        gauge("agent_sync_auth_failed"),
        if status["auth_failed"] == true {
            1.0
        } else {
            0.0
        },
        "{label}"
    );
    assert_eq!(
        gauge("agent_sync_last_push_timestamp_seconds"),
        unix_seconds(&status["last_push_at"]),
        "{label}"
    );
    assert_eq!(
        gauge("agent_sync_last_pull_timestamp_seconds"),
        unix_seconds(&status["last_pull_at"]),
        "{label}"
    );
    let age = gauge("agent_sync_queue_oldest_age_seconds");
    match status["head"]["queued_at"].as_str() {
        None => assert_eq!(age, 0.0, "{label}: an empty queue has no age"),
        Some(_) => {
            let queued = unix_seconds(&status["head"]["queued_at"]);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(age > 0.0 && age <= now - queued + 0.5, "{label}: age {age}");
        }
    }
}

#[actix_rt::test]
async fn metrics_over_the_socket_and_over_metrics_addr_parse_and_agree_with_status() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().json(json!({"context": [{"id": "c1"}, {"id": "c2"}]})));
    let url = platform.url();
    let (mut daemon, addr) = daemon_with_metrics_addr(&sandbox, &url).await;

    // Fresh: every series is there, at zero, and agrees with status.
    let fresh = scrape(&sandbox.socket()).await;
    assert_agrees(&fresh, &status_of(&sandbox, &url).await, "fresh");
    for name in [
        "agent_sync_dispatches_delivered_total",
        "agent_sync_request_duration_seconds_count",
        "agent_sync_scan_duration_seconds_count",
    ] {
        assert_eq!(sample(&fresh, name, &[]), 0.0, "{name}");
    }

    // A delivery, a pull, a dead letter, a scan, then entries the platform keeps
    // refusing with 503 (so they stay queued while we look).
    push(&sandbox, &url, "ok", &["m/ok"]).await;
    run(sandbox.online(&url, &["pull"])).await;
    platform.respond(Scripted::status(400));
    push(&sandbox, &url, "refused", &["m/refused"]).await;
    run(sandbox.online(&url, &["push"])).await;
    platform.set_default(Scripted::status(503));
    push(&sandbox, &url, "kept", &["m/kept-1", "m/kept-2"]).await;

    let status = status_of(&sandbox, &url).await;
    assert_eq!(status["dead_letters"], 1, "{status}");
    assert_eq!(status["queued_dispatches"], 2, "{status}");
    let over_socket = scrape(&sandbox.socket()).await;
    let (code, body) = get_tcp(&addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    let over_tcp = parse_exposition(&body);
    assert_agrees(&over_socket, &status, "socket");
    assert_agrees(&over_tcp, &status, "tcp");
    for samples in [&over_socket, &over_tcp] {
        assert_eq!(requests(samples, "delivered"), 1.0);
        assert_eq!(requests(samples, "rejected"), 1.0);
        assert!(requests(samples, "transient") >= 1.0);
        assert_eq!(
            sample(samples, "agent_sync_dispatches_delivered_total", &[]),
            1.0
        );
        assert_eq!(
            sample(samples, "agent_sync_pull_total", &[("outcome", "ok")]),
            1.0
        );
        assert_eq!(
            sample(samples, "agent_sync_scan_duration_seconds_count", &[]),
            1.0
        );
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == "agent_sync_request_duration_seconds_bucket")
            .collect();
        assert!(
            buckets.iter().any(|b| b.labels["le"] == "+Inf"),
            "{buckets:?}"
        );
    }

    // Over TCP only /metrics and /health: the control routes stay on the socket.
    let (health_code, _) = get_tcp(&addr, "/health").await;
    assert_eq!(health_code, 200);
    let (status_code, _) = get_tcp(&addr, "/v1/status").await;
    assert_eq!(status_code, 404);
    assert!(!body.contains(SECRET));
    daemon.stop().await;
    platform.stop().await;
}

#[actix_rt::test]
async fn request_counters_move_by_exactly_one_per_outcome_across_200_503_400_413_401() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    let url = platform.url();
    let mut daemon = daemon(
        &sandbox,
        sandbox.online(&url, &["run", "--scan-interval", "0"]),
    )
    .await;
    let socket = sandbox.socket();
    let base = scrape(&socket).await;
    let outcomes = [
        "delivered",
        "transient",
        "unauthorized",
        "too_large",
        "rejected",
    ];
    let delta = |now: &[Sample], outcome: &str| requests(now, outcome) - requests(&base, outcome);

    // 200: delivered.
    platform.respond(Scripted::ok());
    push(&sandbox, &url, "a", &["c/a"]).await;
    let now = scrape(&socket).await;
    let moved: Vec<f64> = outcomes.iter().map(|o| delta(&now, o)).collect();
    assert_eq!(moved, [1.0, 0.0, 0.0, 0.0, 0.0], "after a 200");

    // 503, then (on the backoff timer) 400: transient, then rejected.
    platform.respond(Scripted::status(503));
    platform.respond(Scripted::status(400));
    push(&sandbox, &url, "b", &["c/b"]).await;
    let now = scrape_until(&socket, "the retry never came", |now| {
        delta(now, "rejected") >= 1.0
    })
    .await;
    let moved: Vec<f64> = outcomes.iter().map(|o| delta(&now, o)).collect();
    assert_eq!(moved, [1.0, 1.0, 0.0, 0.0, 1.0], "after 200, 503, 400");

    // 413 on two dispatches (split), each half 200: too_large, then two deliveries.
    platform.respond(Scripted::status(413));
    platform.respond(Scripted::ok());
    platform.respond(Scripted::ok());
    push(&sandbox, &url, "cd", &["c/c", "c/d"]).await;
    // 401, then (on the backoff timer) 200: unauthorized, then delivered.
    platform.respond(Scripted::status(401));
    push(&sandbox, &url, "e", &["c/e"]).await;
    let now = scrape_until(&socket, "the 401 was never retried", |now| {
        delta(now, "delivered") >= 4.0
    })
    .await;
    let moved: Vec<f64> = outcomes.iter().map(|o| delta(&now, o)).collect();
    assert_eq!(moved, [4.0, 1.0, 1.0, 1.0, 1.0], "after the whole script");
    let posts = platform.pushes().len() as f64;
    assert_eq!(posts, 8.0);
    assert_eq!(
        sample(&now, "agent_sync_request_duration_seconds_count", &[])
            - sample(&base, "agent_sync_request_duration_seconds_count", &[]),
        posts,
        "one duration per request"
    );
    assert_eq!(
        sample(&now, "agent_sync_dispatches_delivered_total", &[]),
        4.0
    );
    assert_eq!(sample(&now, "agent_sync_dead_letters", &[]), 1.0);
    assert_eq!(sample(&now, "agent_sync_auth_failed", &[]), 0.0);
    daemon.stop().await;
    platform.stop().await;
}

#[actix_rt::test]
async fn health_is_503_naming_auth_failed_and_200_again_after_the_next_success() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    let url = platform.url();
    let (mut daemon, addr) = daemon_with_metrics_addr(&sandbox, &url).await;
    let socket = sandbox.socket();
    let (code, body) = health(&socket).await;
    assert_eq!((code, &body["status"]), (200, &json!("ok")), "{body}");

    // A 401, then the platform hangs on to the retry for a while: auth_failed holds
    // (at least 0.5 s of backoff plus 3 s) while we look.
    platform.respond(Scripted::status(401));
    platform.respond(Scripted::ok().delay(Duration::from_secs(3)));
    push(&sandbox, &url, "a", &["h/a"]).await;
    let (code, body) = health(&socket).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("auth_failed"),
        "{body}"
    );
    assert_eq!(status_of(&sandbox, &url).await["auth_failed"], true);
    let (tcp_code, _) = get_tcp(&addr, "/health").await;
    assert_eq!(tcp_code, 503, "the same answer over TCP");
    assert_eq!(
        sample(&scrape(&socket).await, "agent_sync_auth_failed", &[]),
        1.0
    );

    // The backoff timer retries; the platform takes it: healthy again.
    let started = Instant::now();
    loop {
        let (code, body) = health(&socket).await;
        if code == 200 {
            assert_eq!(body["status"], "ok");
            assert_eq!(body["auth_failed"], false);
            break;
        }
        assert!(started.elapsed() < DEADLINE, "still unhealthy: {body}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sample(&scrape(&socket).await, "agent_sync_auth_failed", &[]),
        0.0
    );
    assert_eq!(platform.delivered().len(), 1);
    daemon.stop().await;
    platform.stop().await;
}

#[actix::test]
async fn a_host_registry_carries_agent_syncs_series_beside_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SyncConfig::new(dir.path().join("workspace"), dir.path().join("sync"));
    config.tokens = TokenSource::Fixed(None::<Token>);
    config.control_socket = false;
    let service = SyncService::start(config).unwrap();
    service
        .push(SyncPush {
            dispatches: Some(vec![json!({"id": "x"}), json!({"id": "y"})]),
            ..SyncPush::default()
        })
        .await
        .unwrap();

    let mut registry = Registry::default();
    let own: Counter = Counter::default();
    registry.register("host_jobs", "The host's own counter", own.clone());
    own.inc();
    service.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let samples = parse_exposition(&text);
    assert_eq!(sample(&samples, "host_jobs_total", &[]), 1.0);
    assert_eq!(sample(&samples, "agent_sync_queue_dispatches", &[]), 2.0);
    assert_eq!(sample(&samples, "agent_sync_queue_entries", &[]), 1.0);
    // The service's own exposition says the same.
    let own_text = service.encode_metrics();
    let own_samples = parse_exposition(&own_text);
    assert_eq!(
        sample(&own_samples, "agent_sync_queue_dispatches", &[]),
        2.0
    );
    service.stop().await;
}
