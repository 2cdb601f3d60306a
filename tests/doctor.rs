//! `agent-sync doctor` end to end: all ok against the loopback platform; a refused
//! token, a closed port, a platform behind TLS with an unknown CA, an unwritable state
//! dir and a corrupt `sync.redb` each named in their line with exit code 1; beside a
//! running daemon, asked through its socket. Never the token in the output, never a
//! POST to the platform, never a change to the state.

use std::fs;

use actix_web::HttpResponse;
use agent_sync_testkit::*;
use serde_json::Value;

/// The token: distinctive enough that finding it anywhere is a leak.
const SECRET: &str = "doctor-secret-5c81e2";
/// The agent the binary runs as.
const AGENT: &str = "doctor-agent";

fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// The report's line for `check` (text), panicking with the whole report if absent.
fn line<'a>(out: &'a Out, check: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line:\n{}\n{}", out.stdout, out.stderr))
}

/// Neither output holds the token.
fn assert_secret_kept(out: &Out) {
    assert!(
        !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
        "the token leaked: {}",
        out.stdout.replace(SECRET, "<TOKEN>")
    );
}

/// No request to the platform was anything but a GET.
fn assert_only_gets(platform: &LoopbackPlatform) {
    for r in platform.requests() {
        assert_eq!(r.method, "GET", "doctor sent {} {}", r.method, r.path);
    }
    assert!(platform.pushes().is_empty());
}

#[actix_rt::test]
async fn all_ok_against_the_loopback_platform_with_a_queued_state() {
    let platform = LoopbackPlatform::start().await;
    let sandbox = sandbox();
    write_done(&sandbox.root(), "core/app/task-1");
    write_workspace(
        &sandbox.root(),
        "core/app/task-2",
        &status_json("running", "2026-04-14T12:00:00Z", 1),
    );
    // Offline: queued, nothing sent.
    let file = sandbox.dispatch_file("d", &["queued-1"]);
    run_async(sandbox.cmd(&["push", "--dispatches", &file]))
        .await
        .ok();
    let db_before = fs::read(sandbox.db()).unwrap();

    let out = run_async(sandbox.online(&platform.url(), &["doctor"])).await;
    note(&format!("doctor, healthy:\n{}", out.stdout));
    assert_secret_kept(&out);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for l in out.stdout.lines().filter(|l| !l.starts_with("doctor:")) {
        // A nearly full disk on the test machine is not this test's business.
        assert!(l.starts_with("ok") || l.contains("  disk  "), "{l}");
    }
    assert!(line(&out, "api url").contains("from $CORE_API_URL"));
    assert!(line(&out, "token ").contains("from $CORE_AGENT_API_KEY (not shown)"));
    assert!(line(&out, "token accepted").contains("HTTP 200"));
    assert!(line(&out, "workspaces").contains("2 workspaces, 1 finished"));
    assert!(line(&out, "database").contains("every row decodes"));
    assert!(line(&out, "queue").contains("1 entries (1 dispatches)"));
    assert!(line(&out, "daemon").contains("none running"));
    assert!(out.stdout.contains("0 fail"));
    let probe = &platform.requests()[0];
    assert_eq!(probe.path, "/v1/agent/status");
    assert_eq!(probe.query, format!("agent_id={AGENT}"));

    let json = run_async(sandbox.online(&platform.url(), &["--json", "doctor"])).await;
    assert_eq!(json.code, 0);
    let Value::Array(checks) = json.json() else {
        panic!("not an array: {}", json.stdout)
    };
    for c in &checks {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["check", "detail", "hint", "status"], "{c}");
    }
    assert_secret_kept(&json);
    assert_only_gets(&platform);
    assert_eq!(
        fs::read(sandbox.db()).unwrap(),
        db_before,
        "doctor wrote the state"
    );
    platform.stop().await;
}

#[actix_rt::test]
async fn a_refused_token_is_named_and_fails() {
    let platform = LoopbackPlatform::start().await;
    platform.set_default(Scripted::status(401));
    let sandbox = sandbox();
    let out = run_async(sandbox.online(&platform.url(), &["doctor"])).await;
    note(&format!(
        "doctor, a refused token is named and fails:\n{}",
        out.stdout
    ));
    assert_secret_kept(&out);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let l = line(&out, "token accepted");
    assert!(
        l.starts_with("fail") && l.contains("the platform refused the token (HTTP 401)"),
        "{l}"
    );
    assert_only_gets(&platform);
    platform.stop().await;
}

#[actix_rt::test]
async fn a_closed_port_fails_at_tcp() {
    let sandbox = sandbox();
    let url = dead_url();
    let out = run_async(sandbox.online(&url, &["doctor"])).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let l = line(&out, "tcp");
    assert!(
        l.starts_with("fail") && l.contains("cannot connect to the platform"),
        "{l}"
    );
    assert!(!out.stdout.contains("token accepted"), "{}", out.stdout);
    assert_secret_kept(&out);
}

#[actix_rt::test]
async fn a_platform_behind_tls_with_an_unknown_ca_is_named_a_private_ca_problem() {
    // A `localhost` certificate signed by a CA nobody trusts.
    let (handle, port) = TestCert::signed_for("localhost").serve(HttpResponse::Ok);
    let sandbox = sandbox();
    let url = format!("https://localhost:{port}");
    let out = run_async(sandbox.online(&url, &["doctor"])).await;
    note(&format!("doctor, a platform behind tls:\n{}", out.stdout));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let l = line(&out, "tls");
    assert!(
        l.starts_with("fail") && l.contains("unknown issuer") && l.contains("SSL_CERT_FILE"),
        "{l}"
    );
    assert_secret_kept(&out);
    handle.stop(true).await;
}

#[actix_rt::test]
async fn a_state_dir_that_cannot_be_created_fails_and_nothing_is_created() {
    let platform = LoopbackPlatform::start().await;
    let sandbox = sandbox();
    let file = sandbox.path().join("a-file");
    fs::write(&file, b"not a dir").unwrap();
    let state = file.join("sync");
    let args = ["doctor", "--state-dir", state.to_str().unwrap()];
    let out = run_async(sandbox.online(&platform.url(), &args)).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let l = line(&out, "state access");
    assert!(
        l.starts_with("fail") && l.contains("is not a directory"),
        "{l}"
    );
    assert!(line(&out, "state dir").contains("from --state-dir"));
    assert_eq!(fs::read(&file).unwrap(), b"not a dir");
    platform.stop().await;
}

#[actix_rt::test]
async fn a_corrupt_database_fails_and_is_left_byte_for_byte() {
    let platform = LoopbackPlatform::start().await;
    let sandbox = sandbox();
    fs::create_dir_all(sandbox.state()).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    fs::write(sandbox.db(), &garbage).unwrap();
    let out = run_async(sandbox.online(&platform.url(), &["doctor"])).await;
    note(&format!(
        "doctor, a corrupt database fails:\n{}",
        out.stdout
    ));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let l = line(&out, "database");
    assert!(
        l.starts_with("fail") && l.contains("cannot be read") && l.contains("move"),
        "{l}"
    );
    assert_eq!(
        fs::read(sandbox.db()).unwrap(),
        garbage,
        "doctor touched it"
    );
    platform.stop().await;
}

#[actix_rt::test]
async fn beside_a_running_daemon_it_asks_through_the_socket() {
    let platform = LoopbackPlatform::start().await;
    let sandbox = sandbox();
    let run = sandbox.online(&platform.url(), &["run", "--scan-interval", "0"]);
    let mut daemon = Daemon::spawn(&sandbox, "daemon", None, run);
    daemon.wait_running().await;
    let out = run_async(sandbox.online(&platform.url(), &["doctor"])).await;
    assert_secret_kept(&out);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let pid = daemon.pid().to_string();
    let db = line(&out, "database");
    assert!(
        db.contains("held by the running agent-sync") && db.contains(&pid),
        "{db}"
    );
    let d = line(&out, "daemon");
    assert!(
        d.contains(&format!("pid {pid}"))
            && d.contains(&format!("version {}", env!("CARGO_PKG_VERSION")))
            && d.contains(" up "),
        "{d}"
    );
    assert_only_gets(&platform);
    daemon.stop().await;
    platform.stop().await;
}
