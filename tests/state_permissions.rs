//! The state is private to its user (design.md §7.4), end to end: the binary run
//! under a umask creates the state dir 0700 and every file in it 0600 (the database,
//! the control socket of a running daemon); a state dir or file that already exists
//! open to group or others is warned about once, by path, and left as it was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use agent_sync_testkit::*;

/// The agent id every test runs as.
const AGENT: &str = "private-agent";

fn sandbox() -> Sandbox {
    Sandbox::new(agent_sync_bin!(), AGENT, "private-token-0c4d")
}

/// `cmd`, started under `umask`.
fn with_umask(mut cmd: Command, umask: libc::mode_t) -> Command {
    // SAFETY: umask is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        });
    }
    cmd
}

/// Permission bits of `path` itself (a socket is not followed, nor is anything).
fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The state dir's mode and every entry in it with its mode, sorted by name.
fn modes(state: &Path) -> (u32, Vec<(String, u32)>) {
    let mut entries: Vec<(String, u32)> = fs::read_dir(state)
        .expect("read the state dir")
        .map(|entry| {
            let entry = entry.expect("an entry");
            (
                entry.file_name().to_string_lossy().into_owned(),
                mode(&entry.path()),
            )
        })
        .collect();
    entries.sort();
    (mode(state), entries)
}

/// `push --dispatches` of one host dispatch, offline (queued durably), under `umask`.
fn push_offline(sandbox: &Sandbox, id: &str, umask: libc::mode_t) -> Out {
    let file = sandbox.dispatch_file(id, &[id]);
    run(with_umask(
        sandbox.cmd(&["push", "--dispatches", &file]),
        umask,
    ))
    .ok()
}

#[test]
fn a_first_run_leaves_the_state_dir_0700_and_every_file_0600_whatever_the_umask() {
    for umask in [0o022, 0o000] {
        let sandbox = sandbox();
        assert!(!sandbox.state().exists());
        push_offline(&sandbox, "first", umask);
        let after_push = modes(&sandbox.state());
        assert_eq!(
            after_push,
            (0o700, vec![("sync.redb".to_string(), 0o600)]),
            "umask {umask:03o}"
        );

        // A daemon adds its control socket, private too.
        let cmd = sandbox.cmd(&["run", "--scan-interval", "0", "--no-reap"]);
        let mut daemon = Daemon::spawn(&sandbox, "run", None, with_umask(cmd, umask));
        daemon.wait_running_blocking();
        let running = modes(&sandbox.state());
        assert_eq!(
            running,
            (
                0o700,
                vec![
                    ("agent-sync.sock".to_string(), 0o600),
                    ("sync.redb".to_string(), 0o600)
                ]
            ),
            "umask {umask:03o}: {}",
            daemon.log()
        );
        assert!(daemon.terminate_blocking().success(), "{}", daemon.log());
        assert!(
            !daemon.log().contains("open to group or others"),
            "{}",
            daemon.log()
        );
        let shown = |entries: &[(String, u32)]| -> String {
            entries
                .iter()
                .map(|(name, mode)| format!(" {name} {mode:04o}"))
                .collect()
        };
        note(&format!(
            "umask {umask:03o}: after a first push: state dir {:04o},{}; while `run` \
             runs:{}",
            after_push.0,
            shown(&after_push.1),
            shown(&running.1)
        ));
    }
}

#[test]
fn an_existing_open_state_dir_is_warned_about_once_and_left_as_it_was() {
    let sandbox = sandbox();
    let state = sandbox.state();
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    let dir_warning = format!(
        "state dir {} is open to group or others (mode 0755)",
        state.display()
    );

    let out = push_offline(&sandbox, "queued", 0o022);
    assert_eq!(
        out.stderr.matches(&dir_warning).count(),
        1,
        "{}",
        out.stderr
    );
    assert!(out
        .stderr
        .contains(&format!("chmod 700 {}", state.display())));
    assert_eq!(mode(&state), 0o755, "the operator's dir is left as it was");
    // The file agent-sync created in it is private all the same.
    assert_eq!(mode(&sandbox.db()), 0o600);

    // A database an older version left group-readable: warned about, left as it is.
    fs::set_permissions(sandbox.db(), fs::Permissions::from_mode(0o644)).unwrap();
    let file_warning = format!(
        "state file {} is open to group or others (mode 0644)",
        sandbox.db().display()
    );
    let out = run(with_umask(sandbox.cmd(&["status"]), 0o022)).ok();
    assert!(
        out.stdout.contains("queued dispatches: 1"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stderr.matches(&dir_warning).count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches(&file_warning).count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!((mode(&state), mode(&sandbox.db())), (0o755, 0o644));

    // A daemon warns once at start, not on every cycle.
    let cmd = sandbox.cmd(&["run", "--scan-interval", "0", "--no-reap"]);
    let mut daemon = Daemon::spawn(&sandbox, "run", None, cmd);
    daemon.wait_running_blocking();
    assert!(daemon.terminate_blocking().success(), "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(log.matches(&dir_warning).count(), 1, "{log}");
    assert_eq!(log.matches(&file_warning).count(), 1, "{log}");
    assert_eq!((mode(&state), mode(&sandbox.db())), (0o755, 0o644));
}
