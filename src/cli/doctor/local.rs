//! The local checks of `doctor`: the workspace root (the walk, read-only), the state
//! (dir, database, queue, dead letters, disk, permissions) and the running
//! agent-sync. Nothing is created or written: the database is opened read-only, and
//! when a running agent-sync holds it, that process is asked through its socket.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use agent_sync::actors::diagnose::{inspect, InspectError, Inspection};
use agent_sync::actors::messages::HeadSummary;
use agent_sync::actors::private_state::exposed;
use agent_sync::actors::scanner::walk::scan_tree;
use agent_sync::control::ControlClient;
use agent_sync::SyncConfig;

use super::{host, Check};

/// The workspace root: readable, how many workspaces, how many finished.
pub fn workspace_checks(config: &SyncConfig) -> Vec<Check> {
    let root = &config.workspace_root;
    let shown = root.display();
    let check = match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::warn(
            "workspaces",
            format!("{shown} does not exist: nothing to sync yet"),
            "create it, or point --workspace-root / CORE_WORKSPACE at the host's workspaces",
        ),
        Err(e) => Check::fail(
            "workspaces",
            format!("{shown} cannot be read: {e}"),
            "give this user read access to it",
        ),
        Ok(meta) if !meta.is_dir() => Check::fail(
            "workspaces",
            format!("{shown} is not a directory"),
            "point --workspace-root / CORE_WORKSPACE at the host's workspaces",
        ),
        Ok(_) => match std::fs::read_dir(root) {
            Err(e) => Check::fail(
                "workspaces",
                format!("{shown} cannot be listed: {e}"),
                "give this user read access to it",
            ),
            Ok(_) => {
                let scan = scan_tree(root);
                let found = format!(
                    "{shown}: {} workspaces, {} finished",
                    scan.workspaces,
                    scan.terminal.len()
                );
                if scan.skipped > 0 {
                    Check::warn(
                        "workspaces",
                        format!("{found}, {} skipped", scan.skipped),
                        "the warnings above name each skipped workspace and why",
                    )
                } else {
                    Check::ok("workspaces", found)
                }
            }
        },
    };
    vec![check]
}

/// The state, then the running agent-sync, in order.
pub async fn state_checks(config: &SyncConfig) -> Vec<Check> {
    let dir = &config.state_dir;
    let mut checks = vec![state_dir_check(dir)];
    let client = ControlClient::connect(dir);
    match &client {
        Some(client) => checks.extend(remote_state(client).await),
        None => checks.extend(local_state(dir)),
    }
    checks.push(host::disk_check(dir));
    let open = exposed(dir);
    checks.push(match open.first() {
        None => Check::ok(
            "permissions",
            "the state dir and its files are private to their user",
        ),
        Some(first) => {
            let more = match open.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            let what = if first.is_dir {
                "state dir"
            } else {
                "state file"
            };
            Check::warn(
                "permissions",
                format!(
                    "{what} {} is open to group or others (mode {:04o}){more}",
                    first.path.display(),
                    first.mode
                ),
                "chmod 700 the state dir and chmod 600 its files, unless shared on purpose",
            )
        }
    });
    checks.push(match &client {
        None => Check::ok("daemon", "none running on this state"),
        Some(client) => host::daemon_check(client).await,
    });
    checks
}

/// Whether this user can write `path` (`access(2)` with the real ids).
fn writable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The state dir: writable when it exists, creatable when it does not.
fn state_dir_check(dir: &Path) -> Check {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Check::fail(
            "state access",
            format!("{shown} is not a directory"),
            "point --state-dir / CORE_WORKSPACE at a directory",
        ),
        Ok(_) if writable(dir) => {
            Check::ok("state access", format!("{shown} is writable by this user"))
        }
        Ok(_) => Check::fail(
            "state access",
            format!("{shown} is not writable by this user (uid {})", uid()),
            format!("run as its owner, or chown the dir to this user: chown -R $(id -un) {shown}"),
        ),
        Err(_) => {
            let existing = dir
                .ancestors()
                .skip(1)
                .find(|a| a.symlink_metadata().is_ok());
            match existing {
                Some(a) if !a.is_dir() => Check::fail(
                    "state access",
                    format!(
                        "{shown} cannot be created: {} is not a directory",
                        a.display()
                    ),
                    "choose another --state-dir, or move that file away",
                ),
                Some(a) if !writable(a) => Check::fail(
                    "state access",
                    format!(
                        "{shown} cannot be created: {} is not writable by this user",
                        a.display()
                    ),
                    format!(
                        "create {shown} for this user (mode 0700), or choose another --state-dir"
                    ),
                ),
                _ => Check::ok(
                    "state access",
                    format!("{shown} does not exist yet; the first start creates it (mode 0700)"),
                ),
            }
        }
    }
}

/// The current real uid.
fn uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// `sync.redb` opened read-only: the database, the queue, the dead letters.
fn local_state(dir: &Path) -> Vec<Check> {
    let db = dir.join("sync.redb");
    let shown = db.display();
    match inspect(dir) {
        Ok(found) => {
            let database = if found.bad_rows > 0 {
                Check::fail(
                    "database",
                    format!(
                        "{shown}: {} row(s) do not decode (skipped by agent-sync): {}",
                        found.bad_rows,
                        found.bad_row_names.join("; ")
                    ),
                    "restore a backup of sync.redb, or move it aside and let the next scan find the work again",
                )
            } else {
                Check::ok(
                    "database",
                    format!(
                        "{shown} opens and every row decodes ({} history records)",
                        found.history_records
                    ),
                )
            };
            vec![database, queue_check(&inspected_head(&found), found.queued_entries, found.queued_dispatches), dead_letters_check(found.dead_letters)]
        }
        Err(InspectError::Missing) => vec![Check::ok(
            "database",
            format!("no {shown} yet: a fresh state (the first start creates it)"),
        )],
        Err(InspectError::InUse) => vec![Check::warn(
            "database",
            format!("{shown} is held by a process that serves no control socket"),
            "a host embedding agent-sync with control_socket off, or one starting: run doctor again",
        )],
        Err(InspectError::NeedsRepair) => vec![Check::warn(
            "database",
            format!("{shown} was not closed cleanly (a crash?); a read-only look cannot repair it"),
            "the next agent-sync start repairs it (`agent-sync status` does too)",
        )],
        Err(e @ InspectError::Corrupt { .. }) => vec![Check::fail(
            "database",
            format!("{e}; it is left untouched"),
            format!("move {shown} aside (a fresh state starts) or restore a backup"),
        )],
        Err(e @ InspectError::Io { .. }) => vec![Check::fail(
            "database",
            e.to_string(),
            "check the file's owner and mode (this user must read and write it)",
        )],
    }
}

/// The head of an inspection, as the status shows it.
fn inspected_head(found: &Inspection) -> Option<HeadSummary> {
    found.head.as_ref().map(|e| HeadSummary {
        seq: e.seq,
        attempts: e.attempts,
        next_attempt: e.next_attempt,
        last_error: e.last_error.clone(),
        queued_at: e.queued_at,
    })
}

/// The running agent-sync's view of the state, through its socket.
async fn remote_state(client: &ControlClient) -> Vec<Check> {
    let pid = client
        .pid()
        .map(|p| format!(" (pid {p})"))
        .unwrap_or_default();
    match client.status().await {
        Ok(status) => vec![
            Check::ok(
                "database",
                format!(
                    "held by the running agent-sync{pid}: asked it through its control socket ({} bytes)",
                    status.db_bytes
                ),
            ),
            queue_check(&status.head, status.queued_entries, status.queued_dispatches),
            dead_letters_check(status.dead_letters),
        ],
        Err(e) => vec![Check::fail(
            "database",
            format!("held by a running agent-sync{pid}, which did not answer: {e}"),
            "check that process (its log); restart it if it hangs",
        )],
    }
}

/// The queue's size and head, and the head's last error.
fn queue_check(head: &Option<HeadSummary>, entries: u64, dispatches: u64) -> Check {
    let Some(head) = head else {
        return Check::ok("queue", "empty");
    };
    let size = format!("{entries} entries ({dispatches} dispatches)");
    if head.attempts == 0 {
        return Check::ok(
            "queue",
            format!(
                "{size}; head seq {} queued {}, not tried yet",
                head.seq,
                head.queued_at.to_rfc3339()
            ),
        );
    }
    let next = head
        .next_attempt
        .map(|t| format!(", next attempt {}", t.to_rfc3339()))
        .unwrap_or_default();
    Check::warn(
        "queue",
        format!(
            "{size}; head seq {} failed {} time(s){next}, last error: {}",
            head.seq,
            head.attempts,
            head.last_error.as_deref().unwrap_or("(none recorded)")
        ),
        "nothing is lost: it is retried with backoff; the platform lines above say what is wrong",
    )
}

/// Entries the platform refused for good.
fn dead_letters_check(count: u64) -> Check {
    if count == 0 {
        Check::ok("dead letters", "none")
    } else {
        Check::warn(
            "dead letters",
            format!("{count} entries the platform refused for good"),
            "see `agent-sync dead-letters`, fix the cause, then `agent-sync requeue --all`",
        )
    }
}
