//! What a supervisor sees of `run`: logs at info without `RUST_LOG`, JSON lines that
//! parse, the token in neither; under `Type=notify`, READY once serving, then WATCHDOG,
//! then STOPPING.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use agent_sync_testkit::*;
use serde_json::{json, Value};

use crate::{sandbox, SECRET};

#[actix_rt::test]
async fn run_logs_at_info_without_rust_log_json_lines_parse_and_neither_holds_the_token() {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::ok().json(json!({"context": [{"id": "m"}]})));
    let url = platform.url();

    for format in ["text", "json"] {
        let mut daemon = Daemon::spawn(
            &sandbox,
            format,
            None,
            sandbox.online(
                &url,
                &["--log-format", format, "run", "--scan-interval", "0"],
            ),
        );
        daemon.wait_running().await;
        // A delivery, a backoff (503, retried in about a second), a dead letter (400),
        // a pull.
        let ok = sandbox.dispatch_file(&format!("{format}-ok"), &["log/ok"]);
        assert_eq!(
            run_async(sandbox.online(&url, &["push", "--dispatches", &ok]))
                .await
                .ok()
                .stdout
                .trim(),
            "synced: 1"
        );
        platform.respond(Scripted::status(503).body(SECRET));
        platform.respond(Scripted::status(400).body(format!("refused {SECRET}")));
        let later = sandbox.dispatch_file(&format!("{format}-later"), &["log/later"]);
        run_async(sandbox.online(&url, &["push", "--dispatches", &later]))
            .await
            .ok();
        daemon.wait_log("the dead letter", "dead letters").await;
        run_async(sandbox.online(&url, &["pull"])).await.ok();
        daemon.wait_log("the pull", "pulled 1 context item").await;
        daemon.stop().await;
        let log = daemon.log();
        assert!(
            !log.contains(SECRET),
            "the token leaked into the {format} log"
        );

        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let messages: Vec<(String, String)> = if format == "json" {
            lines
                .iter()
                .map(|line| {
                    let value: Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                    for key in ["ts", "level", "target", "message"] {
                        assert!(value[key].is_string(), "{key} missing: {line}");
                    }
                    (
                        value["level"].as_str().unwrap().to_string(),
                        value["message"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        } else {
            lines
                .iter()
                .map(|line| {
                    let level = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    (level, line.to_string())
                })
                .collect()
        };
        let has = |level: &str, needle: &str| {
            messages
                .iter()
                .any(|(l, m)| l == level && m.contains(needle))
        };
        assert!(has("INFO", "agent-sync running: pid"), "start:\n{log}");
        assert!(has("INFO", "platform http://127.0.0.1"), "settings:\n{log}");
        assert!(has("INFO", "pushed entry"), "a delivered request:\n{log}");
        assert!(has("INFO", "retry at"), "a backoff decision:\n{log}");
        assert!(
            has("WARN", "moved to dead letters"),
            "a dead letter:\n{log}"
        );
        assert!(has("INFO", "pulled 1 context item"), "a pull:\n{log}");
        assert!(has("INFO", "stopped"), "the stop:\n{log}");
    }

    // One-shot commands stay quiet (warn): nothing on stderr for a delivered push.
    let quiet = sandbox.dispatch_file("quiet", &["log/quiet"]);
    let out = run_async(sandbox.online(&url, &["push", "--dispatches", &quiet]))
        .await
        .ok();
    assert_eq!(out.stderr, "", "a one-shot push logged at info");
    platform.stop().await;
}

#[actix_rt::test]
async fn under_type_notify_it_sends_ready_once_serving_then_watchdog_then_stopping() {
    let sandbox = sandbox();
    let notify_path = sandbox.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind a notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = sandbox.cmd(&["run"]);
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Daemon::spawn(&sandbox, "daemon", None, cmd);

    let socket = sandbox.socket();
    let receive = move || -> Vec<String> {
        let mut datagrams = Vec::new();
        let mut buffer = [0u8; 4096];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            let Ok(n) = notify.recv(&mut buffer) else {
                break;
            };
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if text.contains("READY=1") {
                // The store is open and the socket serves when READY arrives.
                assert!(socket.exists(), "READY before the control socket");
                let (status, _) = http_get_unix(&socket, "/health");
                assert_eq!(status, 200);
            }
            let stopping = text.contains("STOPPING=1");
            datagrams.push(text);
            if stopping {
                break;
            }
        }
        datagrams
    };
    let listener = actix_rt::task::spawn_blocking(receive);
    daemon.wait_running().await;
    // Half of WatchdogSec: a ping every 200 ms; wait for a few.
    actix_rt::time::sleep(Duration::from_millis(1200)).await;
    daemon.stop().await;
    let datagrams = listener.await.unwrap();
    let ready = datagrams.iter().position(|d| d.contains("READY=1"));
    let stopping = datagrams.iter().position(|d| d.contains("STOPPING=1"));
    let pings = datagrams
        .iter()
        .filter(|d| d.contains("WATCHDOG=1"))
        .count();
    assert!(ready.is_some(), "{datagrams:?}");
    assert!(stopping > ready, "STOPPING after READY: {datagrams:?}");
    assert!(pings >= 2, "watchdog pings: {datagrams:?}");
    assert_eq!(
        datagrams.iter().filter(|d| d.contains("READY=1")).count(),
        1,
        "READY once"
    );
}
