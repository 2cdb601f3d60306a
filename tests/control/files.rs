//! The files beside the state: the control socket (mode 0600, a socket, gone on
//! stop, a stale one replaced, a live one kept when a second `run` is refused) and the
//! key file (one warning by name when others can read it, never its content).

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use agent_sync_testkit::*;

use crate::{sandbox, served_by, SECRET};

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
