//! What stands where a secret was, in every text people read (logs, errors, `Debug`
//! output, a doctor's report): the token in a platform's answer (`platform::excerpt`),
//! a proxy's credentials (`proxy`).
//! One spelling, so a reader (or a test) finds every redaction by it.

/// What stands where a secret was.
pub const REDACTED: &str = "<redacted>";
