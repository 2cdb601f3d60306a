//! `agent-sync doctor`: checks an installation and says, one line per check, what is
//! ok, what deserves a look (warn) and what stops it from working (fail), with what
//! to do. Exit code 1 when anything fails, else 0.
//!
//! In order ([`run`]):
//! 1. configuration ([`settings`]): where each setting came from, the token's source
//!    (never its value), the key file's permissions;
//! 2. the platform ([`platform`]): the proxy route, DNS, TCP, TLS, the token
//!    (`GET /v1/agent/status`), the clock offset from its `Date`;
//! 3. the workspace root and 4. the state ([`local`]): the walk's count, the state
//!    dir, `sync.redb` read-only, the queue's head, dead letters, free space, files
//!    open to group or others;
//! 5. the running agent-sync, if any ([`host`], with free space): pid, version,
//!    uptime, through its control socket.
//!
//! It never changes state (the database is opened read-only, or the running process
//! is asked; nothing is created) and never pushes: its only request to the platform is
//! one GET. The token is never printed: every line is redacted before it is shown.

pub mod host;
pub mod local;
pub mod platform;
pub mod settings;

use agent_sync::actors::platform::Token;
use agent_sync::actors::redact::REDACTED;
use agent_sync::SyncConfig;
use serde::Serialize;

use super::error::{EXIT_FAILURE, EXIT_OK};
use super::output::Format;
use super::GlobalArgs;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but deserves a look.
    Warn,
    /// Stops agent-sync from doing its job.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report: the `--json` element `{check, status, detail, hint}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`api url`, `tls`, `state dir`, ...), stable for scripts.
    pub check: String,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it; `None` when nothing is to be done.
    pub hint: Option<String>,
}

impl Check {
    /// An ok line.
    pub fn ok(check: &str, detail: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, detail, None::<String>)
    }

    /// A warning with what to do.
    pub fn warn(check: &str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::new(check, Status::Warn, detail, Some(hint))
    }

    /// A failure with what to do.
    pub fn fail(check: &str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::new(check, Status::Fail, detail, Some(hint))
    }

    fn new(
        check: &str,
        status: Status,
        detail: impl Into<String>,
        hint: Option<impl Into<String>>,
    ) -> Check {
        Check {
            check: check.to_string(),
            status,
            detail: detail.into(),
            hint: hint.map(Into::into),
        }
    }

    /// The same line with every occurrence of `token` replaced: a safety net under
    /// the rule that no check ever puts it in a line.
    fn redacted(mut self, token: Option<&Token>) -> Check {
        if let Some(token) = token {
            let secret = token.expose();
            self.detail = self.detail.replace(secret, REDACTED);
            self.hint = self.hint.map(|h| h.replace(secret, REDACTED));
        }
        self
    }
}

/// Runs every check against the configuration `global` resolves (flags over the
/// environment), prints the report and answers the exit code.
pub async fn run(global: &GlobalArgs, format: Format) -> i32 {
    let config = global.apply(SyncConfig::from_env());
    let token = config.tokens.read();
    let mut checks = settings::checks(global, &config);
    checks.extend(platform::checks(&config, token.as_ref()).await);
    checks.extend(local::workspace_checks(&config));
    checks.extend(local::state_checks(&config).await);
    let checks: Vec<Check> = checks
        .into_iter()
        .map(|c| c.redacted(token.as_ref()))
        .collect();
    println!("{}", render(format, &checks));
    if checks.iter().any(|c| c.status == Status::Fail) {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

/// The report: one line per check and a count (text), or a JSON array.
pub fn render(format: Format, checks: &[Check]) -> String {
    if format == Format::Json {
        // Plain strings and enums always serialise.
        return serde_json::to_string(checks).unwrap_or_else(|e| format!("[\"{e}\"]"));
    }
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let mut lines: Vec<String> = checks
        .iter()
        .map(|c| {
            let mut line = format!("{:<4}  {:<width$}  {}", c.status.label(), c.check, c.detail);
            if let Some(hint) = &c.hint {
                line.push_str(" -> ");
                line.push_str(hint);
            }
            line
        })
        .collect();
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    lines.push(format!(
        "doctor: {} ok, {} warn, {} fail",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    ));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_verdict_and_the_hint_and_json_has_the_four_fields() {
        let checks = vec![
            Check::ok("api url", "https://x (from the default)"),
            Check::fail("token", "refused", "fix it"),
        ];
        let text = render(Format::Text, &checks);
        assert!(text.starts_with("ok    api url  https://x"), "{text}");
        assert!(text.contains("fail  token    refused -> fix it"), "{text}");
        assert!(text.ends_with("doctor: 1 ok, 0 warn, 1 fail"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &checks)).unwrap();
        assert_eq!(json[0]["hint"], serde_json::Value::Null);
        assert_eq!(json[1]["status"], "fail");
        assert_eq!(json[1]["check"], "token");
    }

    #[test]
    fn a_token_in_a_line_is_redacted() {
        let token = Token::new("doc-secret-77").unwrap();
        let check =
            Check::warn("x", "said doc-secret-77", "not doc-secret-77").redacted(Some(&token));
        assert!(!format!("{check:?}").contains("doc-secret-77"));
    }
}
