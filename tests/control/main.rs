//! The CLI beside a running agent-sync (design.md §13), end to end with the built binary:
//! the control socket, commands carried out by the running process, logs by default,
//! systemd notify, completions and the man page, key file hygiene, and an embedded
//! `SyncService` serving the socket to the CLI.
//!
//! Like `tests/cli.rs`, every process gets a cleared environment rooted in a temp dir
//! (`<tmp>/workspace`, `<tmp>/sync`); platforms are loopback servers on 127.0.0.1 run
//! by the test's actix System, so child processes are waited for on the blocking pool.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_sync::actors::platform::{Token, TokenSource};
use agent_sync::control::ControlClient;
use agent_sync::messages::SyncPush;
use agent_sync::{SyncConfig, SyncService};
use agent_sync_testkit::*;
use serde_json::{json, Value};

/// A token distinctive enough that finding it anywhere is a leak.
const SECRET: &str = "control-secret-51c0ffee77";
/// The agent id every process runs as.
const AGENT: &str = "control-agent";
/// Bounded waits for what a daemon does on its own.
const DEADLINE: Duration = Duration::from_secs(20);

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

/// The pid the process serving `socket` reports in `/health`.
async fn served_by(socket: &Path) -> u64 {
    let (_, body) = get_unix(socket, "/health").await;
    let health: Value = serde_json::from_str(&body).expect("health is JSON");
    health["pid"].as_u64().expect("a pid")
}

// ------------------------------------------------- same output beside a daemon

/// The commands that do not change the state, with their arguments.
const READ_ONLY: &[&[&str]] = &[
    &["status"],
    &["--json", "status"],
    &["queue"],
    &["--json", "queue"],
    &["dead-letters"],
    &["--json", "dead-letters"],
    &["history"],
    &["--json", "history"],
    &["history", "--limit", "2"],
    &["requeue", "99"],
    &["--json", "requeue", "98", "99"],
];

/// Commands that change the state, in the order both runs apply them.
fn mutating(sandbox: &Sandbox) -> Vec<Vec<String>> {
    let one = sandbox.dispatch_file("one", &["host/one"]);
    let two = sandbox.dispatch_file("two", &["host/two-a", "host/two-b"]);
    [
        vec!["push", "--dispatches", one.as_str()],
        vec!["--json", "push", "--dispatches", two.as_str()],
        vec!["pull"],
        vec!["--json", "pull", "--since", "2026-01-01T00:00:00Z"],
        vec!["push"],
        vec!["--json", "push", "--queue-only"],
        vec!["--json", "requeue", "--all"],
        vec!["requeue", "--all"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

async fn outputs(sandbox: &Sandbox, url: &str, commands: &[Vec<String>]) -> Vec<Out> {
    let mut outs = Vec::new();
    for args in commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        outs.push(run_async(sandbox.online(url, &args)).await);
    }
    outs
}

#[actix_rt::test]
async fn every_command_beside_a_running_daemon_prints_exactly_what_it_prints_against_a_stopped_state(
) {
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    // One answer both endpoints take: a 2xx for pushes, a recognised envelope for pulls.
    platform.set_default(Scripted::ok().json(json!({"ok": true, "context": [{"id": "m1"}]})));
    let url = platform.url();

    // A state with history, a ledger entry, a cached context and a dead letter.
    platform.respond(Scripted::status(400).body("bad dispatch"));
    let refused = sandbox.dispatch_file("refused", &["host/refused"]);
    run_async(sandbox.online(&url, &["push", "--dispatches", &refused]))
        .await
        .ok();
    let good = sandbox.dispatch_file("good", &["host/good"]);
    run_async(sandbox.online(&url, &["push", "--dispatches", &good]))
        .await
        .ok();
    run_async(sandbox.online(&url, &["pull"])).await.ok();
    write_done(&sandbox.root(), "core/go-io/first");
    run_async(sandbox.online(&url, &["push"])).await.ok();
    let db = sandbox.state().join("sync.redb");
    let backup = sandbox.path().join("sync.redb.backup");
    fs::copy(&db, &backup).unwrap();

    // Against the stopped state: the read-only commands, then the mutating ones.
    let read_only: Vec<Vec<String>> = READ_ONLY
        .iter()
        .map(|args| args.iter().map(|a| a.to_string()).collect())
        .collect();
    let stopped_reads = outputs(&sandbox, &url, &read_only).await;
    write_done(&sandbox.root(), "core/go-io/second");
    let stopped_writes = outputs(&sandbox, &url, &mutating(&sandbox)).await;

    // The same state again (the scan finds the second workspace again), held by a
    // daemon that only drains (it never scans or pulls on its own).
    fs::copy(&backup, &db).unwrap();
    let before = platform.delivered().len();
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        None,
        sandbox.online(&url, &["run", "--scan-interval", "0"]),
    );
    daemon.wait_running().await;
    assert!(sandbox.socket().exists(), "the daemon serves its socket");
    let running_reads = outputs(&sandbox, &url, &read_only).await;
    let running_writes = outputs(&sandbox, &url, &mutating(&sandbox)).await;

    for ((args, stopped), running) in read_only.iter().zip(&stopped_reads).zip(&running_reads) {
        assert_eq!(stopped, running, "{args:?} differs beside the daemon");
    }
    for ((args, stopped), running) in mutating(&sandbox)
        .iter()
        .zip(&stopped_writes)
        .zip(&running_writes)
    {
        assert_eq!(stopped, running, "{args:?} differs beside the daemon");
    }
    // The missing seqs still exit 1 with the same error, through the daemon too.
    assert_eq!(running_reads[9].code, 1);
    assert!(
        running_reads[9]
            .stderr
            .starts_with("error: no dead letter with seq 99"),
        "{:?}",
        running_reads[9]
    );
    assert_eq!(running_writes[0].stdout.trim(), "synced: 1");
    assert_eq!(
        running_writes[1].json(),
        json!({"success": true, "count": 2, "queued": 0})
    );
    assert_eq!(running_writes[2].stdout.trim(), "context items: 1");
    assert_eq!(
        running_writes[4].stdout.trim(),
        "synced: 1",
        "the daemon scanned"
    );

    // The daemon delivered the host dispatches itself (it logs each request) ...
    let delivered: Vec<String> = platform.delivered()[before..]
        .iter()
        .flat_map(|r| r.dispatch_ids())
        .collect();
    for id in ["host/one", "host/two-a", "host/two-b", "core/go-io/second"] {
        assert!(
            delivered.contains(&id.to_string()),
            "{id} not delivered: {delivered:?}"
        );
    }
    assert!(daemon.log().contains("pushed entry"), "{}", daemon.log());
    // ... and the dead letter requeued through it went out too (the daemon has a
    // token; the stopped-state requeue only moved it).
    wait_until("the requeued dead letter to be delivered", DEADLINE, || {
        platform.delivered()[before..]
            .iter()
            .any(|r| r.dispatch_ids() == ["host/refused"])
    })
    .await;
    for out in stopped_reads
        .iter()
        .chain(&running_reads)
        .chain(&running_writes)
    {
        assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
    }
    daemon.stop().await;
    assert!(!daemon.log().contains(SECRET));
    platform.stop().await;
}

// -------------------------------------------------------------- the socket file

#[actix_rt::test]
async fn the_control_socket_has_mode_0600_is_a_socket_and_goes_away_on_stop() {
    let sandbox = sandbox();
    let mut daemon = Daemon::spawn(&sandbox, "daemon", None, sandbox.cmd(&["run"]));
    daemon.wait_running().await;
    let meta = fs::symlink_metadata(sandbox.socket()).expect("the socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: getuid has no preconditions.
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), unsafe {
        libc::getuid()
    });
    assert_eq!(served_by(&sandbox.socket()).await, u64::from(daemon.pid()));
    daemon.stop().await;
    assert!(!sandbox.socket().exists(), "removed on a clean stop");
    // No private staging directory is left behind either.
    let leftovers: Vec<_> = fs::read_dir(sandbox.state())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with(".ctl-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[actix_rt::test]
async fn a_stale_socket_left_by_a_killed_daemon_is_replaced_at_the_next_start() {
    let sandbox = sandbox();
    let mut first = Daemon::spawn(&sandbox, "first", None, sandbox.cmd(&["run"]));
    first.wait_running().await;
    first.kill();
    assert!(sandbox.socket().exists(), "kill -9 leaves the socket file");
    // Nobody listens: a command opens the state directly.
    run_async(sandbox.cmd(&["status"])).await.ok();

    let mut second = Daemon::spawn(&sandbox, "second", None, sandbox.cmd(&["run"]));
    second.wait_running().await;
    assert!(
        second.log().contains("replacing the stale control socket"),
        "{}",
        second.log()
    );
    assert_eq!(served_by(&sandbox.socket()).await, u64::from(second.pid()));
    run_async(sandbox.cmd(&["status"])).await.ok();
    second.stop().await;
}

#[actix_rt::test]
async fn a_second_run_is_refused_naming_the_holders_pid_and_the_live_socket_is_kept() {
    let sandbox = sandbox();
    let mut daemon = Daemon::spawn(&sandbox, "daemon", None, sandbox.cmd(&["run"]));
    daemon.wait_running().await;
    for args in [&["run"][..], &["import-legacy"]] {
        let started = Instant::now();
        let out = run_async(sandbox.cmd(args)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?} hung");
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        let expected = format!(
            "error: state in {} is in use by another agent-sync process (pid {});",
            sandbox.state().display(),
            daemon.pid()
        );
        assert!(
            out.stderr.starts_with(&expected),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(
        run_async(sandbox.cmd(&["run"]))
            .await
            .stderr
            .contains("already runs on this state"),
        "run says why"
    );
    // The holder's socket is untouched and still answers.
    assert_eq!(served_by(&sandbox.socket()).await, u64::from(daemon.pid()));
    run_async(sandbox.cmd(&["status"])).await.ok();
    daemon.stop().await;
}

// ---------------------------------------------------------------------- logs

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

// --------------------------------------------------------------------- systemd

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

// ----------------------------------------------------- completions and man page

#[actix_rt::test]
async fn completions_for_each_shell_and_the_man_page_name_every_subcommand() {
    let sandbox = sandbox();
    for shell in ["bash", "zsh", "fish"] {
        let out = run_async(sandbox.cmd(&["completions", shell])).await.ok();
        assert!(out.stdout.len() > 200, "{shell}: {}", out.stdout);
        for sub in SUBCOMMANDS {
            assert!(out.stdout.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // roff writes a hyphen as `\-`.
    let man = run_async(sandbox.cmd(&["man"]))
        .await
        .ok()
        .stdout
        .replace("\\-", "-");
    assert!(man.contains(".TH agent-sync 1"), "not roff: {man}");
    for sub in SUBCOMMANDS {
        assert!(
            man.contains(&format!("agent-sync-{sub}(1)")),
            "the man page lacks {sub}"
        );
        // ... and each command it names has its page.
        let page = run_async(sandbox.cmd(&["man", sub]))
            .await
            .ok()
            .stdout
            .replace("\\-", "-");
        assert!(
            page.contains(&format!(".TH agent-sync-{sub} 1")),
            "{sub}: {page}"
        );
    }
    assert_eq!(run_async(sandbox.cmd(&["man", "nope"])).await.code, 1);
    // Neither needs (or creates) a state.
    assert!(!sandbox.state().exists());
    assert_eq!(
        run_async(sandbox.cmd(&["completions", "tcsh"])).await.code,
        2
    );
}

// ----------------------------------------------------------- key file hygiene

#[actix_rt::test]
async fn a_key_file_readable_by_others_is_warned_about_once_by_name_never_by_content() {
    let sandbox = sandbox();
    let key = sandbox.home().join(".claude").join("brain.key");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, format!("{SECRET}\n")).unwrap();
    let dead = dead_url();

    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = sandbox.cmd(&["push", "--queue-only"]);
    cmd.env("CORE_API_URL", &dead);
    let out = run_async(cmd).await.ok();
    let warnings = out.stderr.matches("is readable by group or others").count();
    assert_eq!(warnings, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&key.display().to_string()),
        "names the file"
    );
    assert!(out.stderr.contains("0644"), "{}", out.stderr);
    assert!(!out.stderr.contains(SECRET), "never the content");

    // The daemon reads the key every cycle, and still warns once.
    let mut cmd = sandbox.cmd(&["run", "--scan-interval", "250ms"]);
    cmd.env("CORE_API_URL", &dead);
    let mut daemon = Daemon::spawn(&sandbox, "daemon", None, cmd);
    daemon.wait_running().await;
    actix_rt::time::sleep(Duration::from_millis(1200)).await;
    daemon.stop().await;
    let log = daemon.log();
    assert_eq!(
        log.matches("is readable by group or others").count(),
        1,
        "{log}"
    );
    assert!(!log.contains(SECRET));

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = sandbox.cmd(&["push", "--queue-only"]);
    cmd.env("CORE_API_URL", &dead);
    let out = run_async(cmd).await.ok();
    assert!(!out.stderr.contains("readable"), "{}", out.stderr);
}

// ------------------------------------------------------------- embedded service

#[actix_rt::test]
async fn an_embedded_service_serves_the_socket_and_the_cli_talks_to_it() {
    let sandbox = sandbox();
    let mut config = SyncConfig::new(sandbox.root(), sandbox.state());
    config.agent_id = AGENT.into();
    // Offline: whatever is pushed stays queued, so the host and the CLI see one queue.
    config.tokens = TokenSource::Fixed(None::<Token>);
    config.flush_interval = None;
    let service = SyncService::start(config).expect("start the embedded service");
    assert_eq!(service.control_socket(), Some(sandbox.socket().as_path()));
    service
        .push(SyncPush {
            dispatches: Some(vec![json!({"id": "host/embedded"})]),
            ..SyncPush::default()
        })
        .await
        .unwrap();

    let via_cli = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    let direct = serde_json::to_value(service.status().await.unwrap()).unwrap();
    assert_eq!(via_cli, direct);
    assert_eq!(via_cli["queued_dispatches"], 1);

    let file = sandbox.dispatch_file("cli", &["cli/one", "cli/two"]);
    let out = run_async(sandbox.cmd(&["--json", "push", "--dispatches", &file]))
        .await
        .ok();
    assert_eq!(
        out.json(),
        json!({"success": true, "count": 0, "queued": 3})
    );
    let queued: Vec<Value> = service
        .queue(None)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| e.dispatches.iter().map(|d| d.to_object()["id"].clone()))
        .collect();
    assert_eq!(
        queued,
        [json!("host/embedded"), json!("cli/one"), json!("cli/two")]
    );
    let queue = run_async(sandbox.cmd(&["--json", "queue"]))
        .await
        .ok()
        .json();
    assert_eq!(
        queue.as_array().map(Vec::len),
        Some(service.queue(None).await.unwrap().len())
    );
    assert_eq!(
        served_by(&sandbox.socket()).await,
        u64::from(std::process::id())
    );

    // Stopped, the socket is gone and the CLI opens the state itself.
    service.stop().await;
    assert!(!sandbox.socket().exists());
    let after = run_async(sandbox.cmd(&["--json", "status"]))
        .await
        .ok()
        .json();
    assert_eq!(after["queued_dispatches"], 3);
}

#[actix_rt::test]
async fn listings_page_through_the_socket_and_return_every_entry_exactly_once() {
    const QUEUED: usize = 2_500;
    const DEAD: usize = 25;
    let sandbox = sandbox();
    let platform = LoopbackPlatform::start().await;
    let mut config = SyncConfig::new(sandbox.root(), sandbox.state());
    config.agent_id = AGENT.into();
    config.tokens = TokenSource::Fixed(Token::new(SECRET));
    config.platform.base_url = platform.url();
    config.flush_interval = None;
    // One dispatch per entry: a backlog of thousands of entries.
    config.max_batch = 1;
    let service = SyncService::start(config).expect("start the embedded service");
    let host = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("{prefix}/{i}")}))
            .collect()
    };
    // Refused for good: dead letters (the drain goes on after each).
    platform.set_default(Scripted::status(422).body("bad dispatch"));
    let push = |dispatches| SyncPush {
        dispatches: Some(dispatches),
        ..SyncPush::default()
    };
    service.push(push(host("dead", DEAD))).await.unwrap();
    // Then the platform is down: the head is tried once, everything stays queued.
    platform.set_default(Scripted::status(503));
    let report = service.push(push(host("queued", QUEUED))).await.unwrap();
    assert_eq!(report.queued, QUEUED as u64);
    let direct: Vec<u64> = service
        .queue(None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(direct.len(), QUEUED);
    let direct_dead: Vec<u64> = service
        .dead_letters()
        .await
        .unwrap()
        .iter()
        .map(|l| l.entry.seq)
        .collect();
    assert_eq!(direct_dead.len(), DEAD);

    // Through the socket, 7 at a time: every entry once, in order.
    let client = ControlClient::connect(&sandbox.state()).expect("the service's socket");
    let (mut seqs, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = client.queue_page(after, 7).await.unwrap();
        pages += 1;
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        seqs.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, direct, "every entry exactly once, oldest first");
    assert_eq!(pages, QUEUED.div_ceil(7) + 1, "the empty page ends it");
    let (mut dead, mut after) = (Vec::new(), None);
    loop {
        let page = client.dead_letters_page(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.entry.seq);
        dead.extend(page.iter().map(|l| l.entry.seq));
    }
    assert_eq!(dead, direct_dead);
    let all = client.queue().await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), direct);

    // As curl sees it: a default page of 1,000, the next one after its last seq, and a
    // limit over the page size refused rather than cut.
    let socket = sandbox.socket();
    let page = |target: String| {
        let socket = socket.clone();
        async move {
            let (status, body) = get_unix(&socket, &target).await;
            assert_eq!(status, 200, "{target}: {body}");
            let page: Value = serde_json::from_str(&body).expect("JSON");
            page.as_array()
                .expect("an array")
                .iter()
                // A dead letter holds its entry.
                .map(|e| {
                    e["seq"]
                        .as_u64()
                        .or(e["entry"]["seq"].as_u64())
                        .expect("a seq")
                })
                .collect::<Vec<u64>>()
        }
    };
    let first = page("/v1/queue".into()).await;
    assert_eq!(first, direct[..1000]);
    let second = page(format!("/v1/queue?after={}", first[999])).await;
    assert_eq!(second, direct[1000..2000]);
    let tail = page(format!("/v1/queue?after={}&limit=1000", direct[2399])).await;
    assert_eq!(tail, direct[2400..]);
    let dead_page = page(format!("/v1/dead-letters?after={}&limit=5", direct_dead[9])).await;
    assert_eq!(dead_page, direct_dead[10..15]);
    for target in [
        "/v1/queue?limit=1001",
        "/v1/queue?limit=many",
        "/v1/dead-letters?after=-1",
    ] {
        let (status, body) = get_unix(&socket, target).await;
        assert_eq!(status, 400, "{target}: {body}");
        let error: Value = serde_json::from_str(&body).expect("an error body");
        assert_eq!(error["kind"], "request", "{target}: {body}");
    }

    // The CLI through the socket pages too: more than one page, all of it.
    let out = run_async(sandbox.cmd(&["--json", "queue"])).await.ok();
    let listed: Vec<u64> = out
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, direct);
    let out = run_async(sandbox.cmd(&["queue", "--limit", "1001"]))
        .await
        .ok();
    assert_eq!(out.stdout.lines().count(), 1001);
    let out = run_async(sandbox.cmd(&["--json", "dead-letters", "--limit", "20"]))
        .await
        .ok();
    assert_eq!(out.json().as_array().map(Vec::len), Some(20));
    service.stop().await;
    platform.stop().await;
}

#[actix_rt::test]
async fn a_host_can_turn_the_control_socket_off() {
    let sandbox = sandbox();
    let mut config = SyncConfig::new(sandbox.root(), sandbox.state());
    config.control_socket = false;
    let service = SyncService::start(config).expect("start");
    assert_eq!(service.control_socket(), None);
    assert!(!sandbox.socket().exists());
    // Without a socket the CLI cannot reach it: the state is in use, by this pid.
    let out = run_async(sandbox.cmd(&["status"])).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&format!(
            "in use by another agent-sync process (pid {})",
            std::process::id()
        )),
        "{}",
        out.stderr
    );
    service.stop().await;
}

#[actix_rt::test]
async fn a_state_dir_too_long_for_a_socket_still_syncs_without_one_and_says_why() {
    let sandbox = sandbox();
    let deep = sandbox.path().join("d".repeat(60)).join("e".repeat(60));
    let mut config = SyncConfig::new(sandbox.root(), &deep);
    config.tokens = TokenSource::Fixed(None::<Token>);
    let service = SyncService::start(config).expect("it starts without the socket");
    assert_eq!(service.control_socket(), None);
    assert!(!deep.join("agent-sync.sock").exists());
    let report = service
        .push(SyncPush {
            dispatches: Some(vec![json!({"id": "deep"})]),
            ..SyncPush::default()
        })
        .await
        .unwrap();
    assert_eq!(report.queued, 1, "it still queues");
    service.stop().await;
}
