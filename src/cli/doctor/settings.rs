//! The configuration checks of `doctor`: each setting with where it came from (a
//! flag, a variable, the default), the token's source (never its value) and the key
//! file's permissions.
//!
//! The sources are found the way [`SyncConfig::from_env`] and
//! [`GlobalArgs::apply`] resolve the values: a flag wins, then the first variable
//! set (blank counts as unset), then the default.

use std::fmt::Display;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use agent_sync::actors::platform::{PlatformConfig, TokenSource};
use agent_sync::actors::proxy::ProxyConfig;
use agent_sync::actors::PlatformConfigError;
use agent_sync::SyncConfig;

use super::super::GlobalArgs;
use super::Check;

/// The variable `key`, blank as unset (as the configuration reads it).
fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// Where a value came from: `--flag` when given, else the first of `vars` set, else
/// `default`.
fn source(flag: Option<&str>, vars: &[&str], default: &str) -> String {
    if let Some(flag) = flag {
        return format!("from {flag}");
    }
    match vars.iter().find(|v| var(v).is_some()) {
        Some(v) => format!("from ${v}"),
        None => format!("default: {default}"),
    }
}

/// The check of a setting that has no wrong value: `VALUE (SOURCE)`, the source
/// found by [`source`]. Why one function: the workspace root, the state dir and the
/// agent id are reported alike, and so their lines cannot drift apart.
fn setting(
    check: &str,
    value: impl Display,
    flag: Option<&str>,
    vars: &[&str],
    default: &str,
) -> Check {
    Check::ok(check, format!("{value} ({})", source(flag, vars, default)))
}

/// The configuration checks, in order.
pub fn checks(global: &GlobalArgs, config: &SyncConfig) -> Vec<Check> {
    let flag = |given: bool, name: &'static str| given.then_some(name);
    let url = config.platform.base_url.trim();
    let url_source = source(
        flag(global.api_url.is_some(), "--api-url"),
        &["CORE_API_URL", "CORE_BRAIN_URL"],
        "the built-in URL",
    );
    // The URL alone: the proxy settings have a line of their own.
    let url_only = PlatformConfig {
        proxy: ProxyConfig::default(),
        ..config.platform.clone()
    };
    let api = match url_only.validate() {
        Ok(()) => Check::ok("api url", format!("{url} ({url_source})")),
        Err(PlatformConfigError::InsecureUrl { .. }) => Check::fail(
            "api url",
            format!("{url} ({url_source}) is plain http to a non-loopback host: the token would travel unencrypted"),
            "use https, or pass --allow-insecure-http if that network is trusted",
        ),
        Err(e) => Check::fail(
            "api url",
            format!("{url} ({url_source}): {e}"),
            "set --api-url or CORE_API_URL to https://HOST",
        ),
    };
    let dirs = "$CORE_WORKSPACE unset, under $HOME";
    let root = setting(
        "workspace root",
        config.workspace_root.display(),
        flag(global.workspace_root.is_some(), "--workspace-root"),
        &["CORE_WORKSPACE"],
        dirs,
    );
    let state = setting(
        "state dir",
        config.state_dir.display(),
        flag(global.state_dir.is_some(), "--state-dir"),
        &["CORE_WORKSPACE"],
        dirs,
    );
    let agent_flag = global
        .agent_id
        .as_ref()
        .is_some_and(|a| !a.trim().is_empty());
    let agent = setting(
        "agent id",
        &config.agent_id,
        flag(agent_flag, "--agent-id"),
        &["AGENT_NAME"],
        "the host name",
    );
    let mut checks = vec![api, root, state, agent];
    checks.extend(token_checks(&config.tokens));
    checks
}

/// The token's source, and the key file's permissions when it is the source.
fn token_checks(tokens: &TokenSource) -> Vec<Check> {
    match tokens {
        TokenSource::Fixed(Some(_)) => {
            let from = ["CORE_AGENT_API_KEY", "CORE_BRAIN_KEY"]
                .into_iter()
                .find(|v| var(v).is_some())
                .unwrap_or("the environment");
            vec![Check::ok("token", format!("set, from ${from} (not shown)"))]
        }
        TokenSource::Fixed(None) => vec![Check::warn(
            "token",
            "none: agent-sync runs offline and sends nothing",
            "set CORE_AGENT_API_KEY, or write the token to <home>/.claude/brain.key (chmod 600)",
        )],
        TokenSource::KeyFile(path) => key_file_checks(path),
    }
}

/// A key file as the token's source: there, readable, not empty, private.
fn key_file_checks(path: &Path) -> Vec<Check> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::warn(
                "token",
                format!("none: no $CORE_AGENT_API_KEY and no key file {shown}; agent-sync runs offline and sends nothing"),
                format!("write the token to {shown} (chmod 600), or set CORE_AGENT_API_KEY"),
            )]
        }
        Err(e) => {
            return vec![Check::fail(
                "token",
                format!("the key file {shown} cannot be read: {e}"),
                format!("make {shown} readable by this user (and nobody else: chmod 600)"),
            )]
        }
    };
    let token = if !meta.is_file() {
        Check::fail(
            "token",
            format!("the key file {shown} is not a regular file"),
            format!("put the token in {shown} as a plain file"),
        )
    } else if TokenSource::KeyFile(path.to_path_buf()).read().is_none() {
        Check::warn(
            "token",
            format!("the key file {shown} is empty or unreadable (over 64 KiB counts as not a key): offline"),
            format!("write the token to {shown}"),
        )
    } else {
        Check::ok(
            "token",
            format!("set, from the key file {shown} (not shown)"),
        )
    };
    let mode = meta.permissions().mode() & 0o777;
    let perms = if mode & 0o044 != 0 {
        Check::warn(
            "key file",
            format!("{shown} is readable by group or others (mode {mode:04o})"),
            format!("chmod 600 {shown}"),
        )
    } else {
        Check::ok("key file", format!("{shown} is private (mode {mode:04o})"))
    };
    vec![token, perms]
}
