//! Platform faults (design.md §5, §6 R4, §7.4, §12): whatever the platform does at
//! the HTTP or the TCP level, each fault ends in its documented outcome, nothing that
//! was acknowledged is lost, and nothing hangs. Storage faults are in
//! `storage_faults.rs`.
//!
//! Not repeated here because other files prove them: the 5xx/408/429/501/4xx classes,
//! `Retry-After` in seconds and as a date, 401/403 then recovery, 413 splitting,
//! a delayed answer cut by the request timeout (the `response_classes` tests); a pull
//! body over a small limit (`pull_and_service.rs`).
//!
//! Platforms that misbehave at the TCP level are [`Raw`] servers (resets, silence,
//! lies about lengths, endless bodies); the tests of the binary use them too, so they
//! need no actix System. Only 127.0.0.1 is used.
//!
//! | module        | the faults its tests inject                                     |
//! |---------------|-----------------------------------------------------------------|
//! | [`transport`] | resets, silence, a stalled body, connection reuse (below HTTP)  |
//! | [`answers`]   | 5xx storms, hostile `Retry-After`, garbage bodies, echoed tokens |
//! | [`limits`]    | a proxy's early 413, a pull body over 16 MiB                    |
//! | [`binary`]    | the daemon against a refused connection and an echoing platform |

mod answers;
mod binary;
mod limits;
mod transport;

use std::time::Duration;

use agent_sync_testkit::*;

/// Default options but the request timeout.
fn with_timeout(timeout: Duration) -> Options {
    Options {
        request_timeout: timeout,
        ..Options::default()
    }
}
