//! R4, bad input: whatever a host, a workspace tree or a platform hands agent-sync, it
//! never panics, names the problem, and goes on with the rest.
//!
//! - Property tests (proptest) of the parsers: `status.json` (`WorkspaceStatus::parse`),
//!   report files (through a scan of a generated workspace), context envelopes
//!   (`parse_context`, against a model of design.md §5), host dispatches
//!   (`validate_dispatches`, and the CLI on generated files). `PROPTEST_CASES` scales
//!   them all (the defaults each test passes to `config` keep the suite fast).
//! - A hostile workspace tree scanned by the real binary (as `nobody` when the tests
//!   run as root, so that an unreadable file is really unreadable): symlink loops,
//!   symlinks out of the root, FIFOs and directories where files belong, 100 MB sparse
//!   files over the size caps, corrupt and non-UTF-8 files, non-UTF-8 directory names.
//! - The same tree walked both ways the walk can open files ([`Resolver::Native`]:
//!   `openat2` on Linux; [`Resolver::Portable`]: `openat(O_NOFOLLOW)` per component, as
//!   on macOS and the BSDs), in process and through the Scanner and the Queue: the two
//!   find, refuse and queue exactly the same things.
//!
//! The parsers' property tests are in [`parsers`] and [`host_dispatches`], their
//! generators in [`strategies`]; the hostile tree and its scans in [`hostile_tree`].

mod host_dispatches;
mod hostile_tree;
mod parsers;
mod strategies;

use agent_sync_testkit::Sandbox;

/// One isolated installation of the binary (the shared testkit's sandbox).
fn sandbox() -> Sandbox {
    Sandbox::new(
        env!("CARGO_BIN_EXE_agent-sync"),
        "bad-input-agent",
        "bad-input-token",
    )
}
