//! The built binary against a platform that misbehaves: a daemon that outlasts a
//! refused connection, and a trace log without the token when the platform echoes it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agent_sync_testkit::*;
use serde_json::json;

/// The token of the binary's tests: distinctive enough that finding it is a leak.
const SECRET: &str = "faults-secret-5c7e21";
/// The agent the binary runs as.
const AGENT: &str = "faults-agent";

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

#[test]
fn the_daemon_outlasts_a_refused_connection_and_delivers_once_the_platform_is_up() {
    let sandbox = sandbox();
    let (file, ids) = sandbox.padded_dispatches("offline", 3, 10);
    let out = run(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A port where nothing listens yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.online(&url, &["run", "--scan-interval", "0"]),
    );
    daemon.wait_for("the refused attempt", |log| {
        log.contains("push of entry 1 failed")
    });
    // The platform comes up on that port; the backoff timer (1 s) finds it.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    let server = Raw::on(listener, |_, _| Early::ReadBody, |_, _| Reply::ok());
    wait_for("delivery after the refusal", secs(15), || {
        server.delivered().len() == 1
    });
    assert_eq!(server.delivered()[0].ids(), ids);
    daemon.wait_for("the delivery to be recorded", |log| {
        log.contains("pushed entry 1: 3 dispatch(es)")
    });
    assert_eq!(daemon.terminate_blocking().code(), Some(0));
    assert_eq!(sandbox.status()["queued_entries"], 0);
}

#[test]
fn the_token_never_appears_in_the_daemon_log_at_trace_level() {
    let sandbox = sandbox();
    let pushes = Arc::new(AtomicUsize::new(0));
    let counter = pushes.clone();
    let server = Raw::start(move |_, req| {
        if req.head.method == "GET" {
            return Reply::json(200, json!({"data": {"context": [{"id": "m1"}]}}));
        }
        // The first push is refused with the credentials echoed back, the worst case.
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            let echoed = req.authorization();
            return Reply::Answer {
                status: 401,
                headers: vec![("www-authenticate", format!("Bearer error=\"{echoed}\""))],
                body: format!("rejected credentials: {echoed}").into_bytes(),
            };
        }
        Reply::ok()
    });
    write_done_with_report(&sandbox.root(), "core/go-io/one", 100);
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("trace"),
        sandbox.online(
            &server.url(),
            &["run", "--scan-interval", "1s", "--pull-interval", "1s"],
        ),
    );
    wait_for("the 401 and its retry", secs(20), || {
        server.delivered().len() == 1
    });
    write_done_with_report(&sandbox.root(), "core/go-io/two", 100);
    wait_for("a second workspace and two pulls", secs(20), || {
        server.delivered().len() == 2
            && server
                .log()
                .iter()
                .filter(|(r, _)| {
                    r.head.method == "GET" && r.head.path.starts_with("/v1/agent/context?")
                })
                .count()
                >= 2
    });
    wait_for("the daemon to record both deliveries", secs(20), || {
        recorded_dispatches(&daemon.log()) == 2
    });
    let status = daemon.terminate_blocking();
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "{}", log.replace(SECRET, "<TOKEN>"));
    assert!(log.contains("TRACE"), "trace logging was on");
    assert!(log.contains("401"), "the refusal is logged");
    assert!(
        !log.contains(SECRET),
        "the token leaked into the daemon's log:\n{}",
        log.lines()
            .filter(|l| l.contains(SECRET))
            .take(5)
            .map(|l| l.replace(SECRET, "<TOKEN>"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = run(sandbox.cmd(&["--json", "queue"]));
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
    let status = sandbox.status();
    assert_eq!(status["auth_failed"], false, "{status}");
    assert_eq!(status["ledger_entries"], 2, "{status}");
    assert!(pushes.load(Ordering::SeqCst) >= 3);
}
