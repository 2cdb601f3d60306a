//! Storage faults (design.md §6 R2, §8): a truncated database, a full disk, a
//! read-only state dir and a second process beside a running daemon each end in
//! their documented outcome (a clear `error:` line, exit 1, the state left as it
//! was), never a panic, and nothing that was acknowledged is lost. Platform faults
//! are in `platform_faults/`; a garbage database and the lock held in-process in
//! `cli.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::Instant;

use agent_sync_testkit::*;
use serde_json::json;

/// The token of the binary's tests: distinctive enough that finding it is a leak.
const SECRET: &str = "storage-secret-a41f09";
/// The agent the binary runs as.
const AGENT: &str = "storage-agent";

/// One isolated installation of the binary.
fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, SECRET)
}

#[test]
fn a_truncated_database_is_refused_and_left_in_place_or_repaired_never_a_panic() {
    // A real state: 40 queued dispatches in entries of up to 100.
    let source = sandbox();
    let (file, _) = source.padded_dispatches("t", 40, 200);
    assert_eq!(
        run(source.cmd(&["push", "--dispatches", file.to_str().unwrap()])).code,
        0
    );
    let bytes = fs::read(source.db()).expect("the database");
    let len = bytes.len();
    let mut cuts = vec![0, 1, 64, 512, 4096, len / 4, len / 2, len - 4096, len - 1];
    cuts.retain(|c| *c < len);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let sandbox = sandbox();
        fs::create_dir_all(sandbox.state()).unwrap();
        fs::write(sandbox.db(), &bytes[..cut]).unwrap();
        let (more, _) = sandbox.padded_dispatches("more", 2, 10);
        let mut seen = Vec::new();
        for args in [
            &["--json", "status"][..],
            &["--json", "queue"],
            &["push", "--dispatches", more.to_str().unwrap()],
        ] {
            let before = fs::read(sandbox.db()).unwrap();
            let out = run(sandbox.cmd(args));
            assert!(
                out.signal.is_none() && (out.code == 0 || out.code == 1),
                "cut {cut}: {args:?}: {} {}",
                out.code,
                out.stderr
            );
            assert!(
                !out.stderr.contains("panicked"),
                "cut {cut}: {}",
                out.stderr
            );
            if out.code == 1 {
                assert_error(&out, &format!("cut {cut}: {args:?}"));
                assert!(
                    out.stderr.contains("cannot be opened")
                        && out.stderr.contains("left untouched"),
                    "cut {cut}: reported as corrupt, not as an I/O problem: {}",
                    out.stderr
                );
                assert_eq!(
                    fs::read(sandbox.db()).unwrap(),
                    before,
                    "cut {cut}: a refused database must be left byte for byte (design.md §8)"
                );
                seen.push(format!(
                    "exit 1 ({})",
                    out.stderr
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(90)
                        .collect::<String>()
                ));
            } else {
                seen.push("exit 0".to_string());
            }
        }
        let queued = if seen.iter().all(|s| s == "exit 0") {
            format!(", {} dispatches queued after", sandbox.queued_ids().len())
        } else {
            String::new()
        };
        note(&format!(
            "truncated sync.redb to {cut} of {len} bytes: status/queue/push: {}{queued}",
            seen.join("; ")
        ));
    }
}

/// `RLIMIT_FSIZE` on the child: any write past `limit` bytes fails with EFBIG (and
/// SIGXFSZ, which would kill it, is ignored), as on a full disk.
fn limit_file_size(cmd: &mut Command, limit: u64) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

#[test]
fn a_full_disk_refuses_the_enqueue_and_keeps_exactly_what_was_acknowledged() {
    let sandbox = sandbox();
    assert_eq!(run(sandbox.cmd(&["status"])).code, 0);
    let size = fs::metadata(sandbox.db()).unwrap().len();
    let limit = size + 512 * 1024;
    let mut acked: Vec<String> = Vec::new();
    let mut failures = 0;
    for round in 0..40 {
        // 100 KiB per push: the limit is reached within a few.
        let (file, ids) = sandbox.padded_dispatches(&format!("full{round}"), 25, 4000);
        let mut cmd = sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()]);
        limit_file_size(&mut cmd, limit);
        let out = run(cmd);
        if out.code == 0 {
            // A later push may fit again (redb reuses what a failed commit left), so
            // a success after a failure is fine: what counts is that every
            // acknowledged push, and only those, is queued (checked below).
            acked.extend(ids);
        } else {
            assert_error(&out, "a push on a full disk");
            assert!(
                out.stderr.contains("enqueue") || out.stderr.contains("cannot open"),
                "{}",
                out.stderr
            );
            failures += 1;
            if failures == 3 {
                note(&format!(
                    "disk full (RLIMIT_FSIZE {limit}): {} dispatches acknowledged, then: {}",
                    acked.len(),
                    out.stderr.trim()
                ));
                break;
            }
        }
    }
    assert_eq!(failures, 3, "the limit was never reached");
    assert!(!acked.is_empty(), "some pushes fit under the limit");
    // Status still reads under the limit.
    let mut cmd = sandbox.cmd(&["--json", "status"]);
    limit_file_size(&mut cmd, limit);
    let out = run(cmd);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    // Without the limit: the state opens and holds exactly what was acknowledged.
    assert_eq!(sandbox.queued_ids(), acked);
    let (file, ids) = sandbox.padded_dispatches("after", 3, 10);
    assert_eq!(
        run(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()])).code,
        0
    );
    acked.extend(ids);
    assert_eq!(sandbox.queued_ids(), acked);
}

#[test]
fn the_daemon_recovers_once_a_full_disk_has_room_again() {
    let sandbox = sandbox();
    assert_eq!(run(sandbox.cmd(&["status"])).code, 0);
    let size = fs::metadata(sandbox.db()).unwrap().len();
    let server = Raw::start(|_, _| Reply::ok());
    let mut cmd = sandbox.online(&server.url(), &["run", "--scan-interval", "1s"]);
    // Room for the log file but not for the database to grow.
    limit_file_size(&mut cmd, size.max(4 * 1024 * 1024));
    let mut daemon = Daemon::spawn(&sandbox, "daemon", Some("info"), cmd);
    daemon.wait_running_blocking();
    // Work whose enqueue needs the database to grow past the limit.
    for i in 0..12 {
        write_done_with_report(&sandbox.root(), &format!("core/full/task-{i}"), 600 * 1024);
    }
    daemon.wait_for("the enqueue to fail", |log| log.contains("could not"));
    let failed_at = daemon.log().len();
    // Room again: lift the limit of the running daemon.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pid of our own child and a valid limit.
    let rc = unsafe {
        libc::prlimit(
            libc::pid_t::try_from(daemon.pid()).expect("a pid"),
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let started = Instant::now();
    while server.delivered().iter().flat_map(Req::ids).count() < 12 && started.elapsed() < secs(15)
    {
        thread::sleep(millis(50));
    }
    while recorded_dispatches(&daemon.log()) < 12 && started.elapsed() < secs(15) {
        thread::sleep(millis(50));
    }
    let delivered = server.delivered().iter().flat_map(Req::ids).count();
    let posts = server.pushes().len();
    let after = daemon.log()[failed_at..].to_string();
    let status = daemon.terminate_blocking();
    assert_eq!(
        delivered,
        12,
        "the daemon never recovered from the full disk ({posts} POSTs); log after the failure:\n{}",
        after.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(status.code(), Some(0));
    let state = sandbox.status();
    assert_eq!(state["queued_entries"], 0, "{state}");
    assert_eq!(state["ledger_entries"], 12, "{state}");
}

#[test]
fn a_read_only_state_dir_is_refused_with_a_clear_error_and_left_alone() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        note("read-only state dir: not root, so mode bits apply; covered by the chmod below");
    }
    let sandbox = sandbox();
    let (file, ids) = sandbox.padded_dispatches("kept", 2, 10);
    assert_eq!(
        run(sandbox.cmd(&["push", "--dispatches", file.to_str().unwrap()])).code,
        0
    );
    for dir in [
        sandbox.path().to_path_buf(),
        sandbox.root(),
        sandbox.path().join("home"),
    ] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    // The state dir and database stay root's, 0755 and 0644: read-only to anyone else.
    let before = fs::read(sandbox.db()).unwrap();
    let (new_file, _) = sandbox.padded_dispatches("refused", 1, 10);
    fs::set_permissions(&new_file, fs::Permissions::from_mode(0o644)).unwrap();
    let unborn = sandbox.state().join("nested").join("state");
    let cases: [(&str, Vec<&str>); 3] = [
        ("status", vec!["status"]),
        (
            "push",
            vec!["push", "--dispatches", new_file.to_str().unwrap()],
        ),
        (
            "a state dir that cannot be created",
            vec!["--state-dir", unborn.to_str().unwrap(), "status"],
        ),
    ];
    let mut ran = false;
    for (what, args) in &cases {
        let cmd = if unsafe { libc::geteuid() } == 0 {
            match sandbox.as_nobody(args) {
                Some(cmd) => cmd,
                None => {
                    note("read-only state dir: skipped, neither setpriv nor runuser exists");
                    return;
                }
            }
        } else {
            fs::set_permissions(sandbox.db(), fs::Permissions::from_mode(0o444)).unwrap();
            fs::set_permissions(sandbox.state(), fs::Permissions::from_mode(0o555)).unwrap();
            sandbox.cmd(args)
        };
        let out = run(cmd);
        assert_error(&out, what);
        assert!(
            out.stderr.contains("cannot open") && out.stderr.contains("writable"),
            "{what}: the error should say what to check: {}",
            out.stderr
        );
        note(&format!(
            "read-only state dir, {what}: {}",
            out.stderr.trim()
        ));
        ran = true;
    }
    assert!(ran);
    fs::set_permissions(sandbox.state(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(sandbox.db(), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        fs::read(sandbox.db()).unwrap(),
        before,
        "left byte for byte"
    );
    assert!(!unborn.exists());
    assert_eq!(sandbox.queued_ids(), ids, "nothing refused was queued");
}

#[test]
fn a_second_process_beside_a_running_daemon_fails_fast_and_changes_nothing() {
    let sandbox = sandbox();
    let server = Raw::start(|_, req| {
        if req.head.method == "GET" {
            return Reply::json(200, json!({"context": [{"id": "m"}]}));
        }
        Reply::ok()
    });
    write_done(&sandbox.root(), "core/two/first");
    let mut daemon = Daemon::spawn(
        &sandbox,
        "daemon",
        Some("info"),
        sandbox.online(&server.url(), &["run", "--scan-interval", "1s"]),
    );
    wait_for("the first delivery", secs(20), || {
        server.delivered().len() == 1
    });
    // Beside a running daemon, status, queue, push, pull and requeue are carried out
    // by it through its control socket (tests/control/); the two commands that need
    // the state to themselves are refused, naming the daemon's pid.
    let in_use = format!(
        "state in {} is in use by another agent-sync process (pid {})",
        sandbox.state().display(),
        daemon.pid()
    );
    let url = server.url();
    let cases: Vec<(&str, Command)> = vec![
        ("import-legacy", sandbox.cmd(&["import-legacy"])),
        ("a second daemon", sandbox.online(&url, &["run"])),
    ];
    for (what, cmd) in cases {
        let started = Instant::now();
        let out = run(cmd);
        assert!(
            started.elapsed() < secs(5),
            "{what} hung: {:?}",
            started.elapsed()
        );
        assert_error(&out, what);
        assert!(out.stderr.contains(&in_use), "{what}: {}", out.stderr);
    }
    let requests = server.log().len();
    // The daemon is unaffected: new work still goes out.
    write_done(&sandbox.root(), "core/two/second");
    wait_for("the daemon's next delivery", secs(20), || {
        server.delivered().len() == 2
    });
    wait_for("the daemon to record the delivery", secs(20), || {
        recorded_dispatches(&daemon.log()) == 2
    });
    assert_eq!(
        daemon.terminate_blocking().code(),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(
        server.log()[..requests]
            .iter()
            .all(|(r, _)| r.head.method == "POST" && r.ids() == ["core/two/first"]),
        "the refused processes sent nothing"
    );
    let status = sandbox.status();
    assert_eq!(status["ledger_entries"], 2, "{status}");
    assert_eq!(status["queued_entries"], 0, "{status}");
}
