//! Configuration of a [`SyncService`](crate::SyncService): what to sync, where state
//! lives, how to reach the platform.
//!
//! [`SyncConfig::from_env`] resolves design.md §5 and §8 (environment over
//! defaults); the CLI then applies its flags on top (flags over environment). The
//! library itself never reads the environment unless the host asks it to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_sync_actors::history::DEFAULT_HISTORY_LIMIT;
use agent_sync_actors::platform::{PlatformConfig, Token, TokenSource};
use agent_sync_actors::proxy::ProxyConfig;
use agent_sync_actors::puller::DEFAULT_MAX_CONTEXT_ITEMS;
use agent_sync_actors::queue::{Jitter, QueueConfig, DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES};
use agent_sync_actors::ActorsConfig;

/// How long a graceful stop waits for the request in flight by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The platform used when neither `CORE_API_URL` nor `CORE_BRAIN_URL` is set.
pub const DEFAULT_API_URL: &str = "https://api.lthn.sh";

/// Everything a [`SyncService`](crate::SyncService) needs.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Root of `<org>/<repo>/<task>/` workspaces.
    pub workspace_root: PathBuf,
    /// Directory of `sync.redb`.
    pub state_dir: PathBuf,
    /// Agent id pushes and pulls default to.
    pub agent_id: String,
    /// Fleet node id sent with pushes, when set.
    pub fleet_node_id: Option<i64>,
    /// Where the token comes from; `Fixed(None)` is fully offline.
    pub tokens: TokenSource,
    /// URL, timeouts, body limit, http policy.
    pub platform: PlatformConfig,
    /// Most dispatches per queued entry, i.e. per POST (P11).
    pub max_batch: usize,
    /// Most bytes of request body per queued entry (P11); small pushes coalesce into
    /// the tail entry up to both caps.
    pub max_request_bytes: usize,
    /// Newest history records kept (H1).
    pub history_limit: usize,
    /// Most context items cached (design.md §5, pull): a `since` pull merges into
    /// the cache, so without a cap new ids would grow it for ever; the oldest go
    /// first, with a warning naming how many.
    pub max_context_items: usize,
    /// How long a graceful [`stop`](crate::SyncService::stop) lets the request in
    /// flight run before it counts as timed out (R3).
    pub shutdown_timeout: Duration,
    /// How retry delays are spread; [`Jitter::Random`] unless a test wants a seed.
    pub jitter: Jitter,
    /// Safety-net drain interval; timers do the real work.
    pub flush_interval: Option<Duration>,
    /// Drain the queue as soon as the service starts (what survived a restart goes
    /// out at once). Off for one-shot work that must not push, such as a pull.
    pub drain_on_start: bool,
    /// Serve the control API on `<state-dir>/agent-sync.sock` (on by default), so the
    /// CLI's `status`, `queue`, `push`, ... work beside a running service instead of
    /// failing with "in use". A host that wants no socket turns it off.
    pub control_socket: bool,
    /// Also serve `/metrics` and `/health` over TCP at this address (off by default;
    /// `run --metrics-addr`). Only ever an address the operator gave explicitly.
    pub metrics_addr: Option<SocketAddr>,
}

impl SyncConfig {
    /// A builder: URL, token, workspace root, state dir and the other settings a host
    /// gives, the defaults of [`new`](Self::new) for the rest.
    pub fn builder() -> SyncConfigBuilder {
        SyncConfigBuilder {
            config: SyncConfig::new(PathBuf::new(), PathBuf::new()),
            workspace_root: None,
            state_dir: None,
        }
    }

    /// A config with defaults for everything but the two directories; offline until a
    /// token source is set.
    pub fn new(workspace_root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        SyncConfig {
            workspace_root: workspace_root.into(),
            state_dir: state_dir.into(),
            agent_id: "agent".into(),
            fleet_node_id: None,
            tokens: TokenSource::Fixed(None),
            platform: PlatformConfig {
                base_url: DEFAULT_API_URL.into(),
                ..PlatformConfig::default()
            },
            max_batch: DEFAULT_MAX_BATCH,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            history_limit: DEFAULT_HISTORY_LIMIT,
            max_context_items: DEFAULT_MAX_CONTEXT_ITEMS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            jitter: Jitter::Random,
            flush_interval: Some(Duration::from_secs(60)),
            drain_on_start: true,
            control_socket: true,
            metrics_addr: None,
        }
    }

    /// Resolves the process environment (design.md §5 and §8).
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Resolves from any variable lookup (the environment, or a map in tests).
    ///
    /// - API URL: `CORE_API_URL`, `CORE_BRAIN_URL`, else [`DEFAULT_API_URL`].
    /// - Token: `CORE_AGENT_API_KEY`, `CORE_BRAIN_KEY`, else `<home>/.claude/brain.key`
    ///   (home = `CORE_HOME`, else `HOME`), re-read before every request.
    /// - Workspace root / state dir: `$CORE_WORKSPACE/workspace` and
    ///   `$CORE_WORKSPACE/sync`, else `~/Lethean/workspace` and `~/Lethean/data/sync`.
    /// - Agent id: `AGENT_NAME`, else the host name.
    /// - Proxies: `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, each else its lower-case
    ///   form, as Go reads them ([`proxy_from_lookup`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_else(account_home);
        let (workspace_root, state_dir) = match var("CORE_WORKSPACE") {
            Some(core) => (
                Path::new(&core).join("workspace"),
                Path::new(&core).join("sync"),
            ),
            None => (
                home.join("Lethean").join("workspace"),
                home.join("Lethean").join("data").join("sync"),
            ),
        };
        let mut config = SyncConfig::new(workspace_root, state_dir);
        config.platform.base_url = var("CORE_API_URL")
            .or_else(|| var("CORE_BRAIN_URL"))
            .unwrap_or_else(|| DEFAULT_API_URL.into());
        config.tokens = match var("CORE_AGENT_API_KEY").or_else(|| var("CORE_BRAIN_KEY")) {
            Some(token) => TokenSource::Fixed(Token::new(token)),
            None => {
                let key_home = var("CORE_HOME").map(PathBuf::from).unwrap_or(home);
                TokenSource::KeyFile(key_home.join(".claude").join("brain.key"))
            }
        };
        config.agent_id = var("AGENT_NAME").unwrap_or_else(host_name);
        config.platform.proxy = proxy_from_lookup(var);
        config
    }

    /// The actors' part of the configuration.
    pub(crate) fn actors(&self) -> ActorsConfig {
        ActorsConfig {
            workspace_root: self.workspace_root.clone(),
            agent_id: self.agent_id.clone(),
            fleet_node_id: self.fleet_node_id,
            tokens: self.tokens.clone(),
            queue: QueueConfig {
                max_batch: self.max_batch,
                max_request_bytes: self.max_request_bytes,
                // A lease outlives its request.
                lease_timeout: self.platform.request_timeout * 2 + Duration::from_secs(10),
                jitter: self.jitter,
            },
            history_limit: self.history_limit,
            max_context_items: self.max_context_items,
            flush_interval: self.flush_interval,
            drain_on_start: self.drain_on_start,
        }
    }
}

/// Why [`SyncConfigBuilder`] refused a setting or a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The token given is empty or blank: leave the token unset to run offline.
    EmptyToken,
    /// No workspace root was given: agent-sync would not know what to scan.
    MissingWorkspaceRoot,
    /// No state dir was given: agent-sync would not know where its queue lives.
    MissingStateDir,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigError::EmptyToken => {
                "the token is empty; leave it unset to run offline (queue without sending)"
            }
            ConfigError::MissingWorkspaceRoot => "no workspace root was set",
            ConfigError::MissingStateDir => "no state dir was set",
        })
    }
}

impl std::error::Error for ConfigError {}

/// Builds a [`SyncConfig`] step by step ([`SyncConfig::builder`]): the settings a
/// host usually gives, each with its rule, and the defaults of [`SyncConfig::new`]
/// for the rest (every field stays public on the built config).
///
/// ```
/// use agent_sync::prelude::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = SyncConfig::builder()
///     .api_url("https://api.example.com")
///     .token("secret")?
///     .workspace_root("/srv/agents/workspace")
///     .state_dir("/var/lib/agent-sync")
///     .agent_id("build-7")
///     .build()?;
/// assert_eq!(config.platform.base_url, "https://api.example.com");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SyncConfigBuilder {
    /// Everything but the two directories, from [`SyncConfig::new`]'s defaults.
    config: SyncConfig,
    /// The workspace root, required: without one there is nothing to scan.
    workspace_root: Option<PathBuf>,
    /// The state dir, required: without one the queue has no home.
    state_dir: Option<PathBuf>,
}

impl SyncConfigBuilder {
    /// The platform's base URL ([`DEFAULT_API_URL`] unless set). Plain `http://` is
    /// refused at start for a host that is not loopback, unless
    /// [`allow_insecure_http`](Self::allow_insecure_http).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.config.platform.base_url = url.into();
        self
    }

    /// The token sent as `Authorization: Bearer`, trimmed; an empty one is refused
    /// ([`ConfigError::EmptyToken`]).
    ///
    /// **Without a token agent-sync is offline**: host dispatches pushed with
    /// `SyncPush { dispatches: Some(..) }` are queued durably, scanned workspaces are
    /// left on disk (the next scan finds them again), and nothing is pushed or pulled
    /// until a token is configured. That is the default; the service logs a warning at
    /// start when it runs so. [`token_file`](Self::token_file) reads a key file before
    /// every request instead.
    pub fn token(mut self, token: impl Into<String>) -> Result<Self, ConfigError> {
        let token = Token::new(token).ok_or(ConfigError::EmptyToken)?;
        self.config.tokens = TokenSource::Fixed(Some(token));
        Ok(self)
    }

    /// Reads the token from `path` (trimmed) before every request, so a rotated key
    /// is picked up without a restart; while the file is missing or empty agent-sync
    /// is offline, as without [`token`](Self::token).
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tokens = TokenSource::KeyFile(path.into());
        self
    }

    /// Where the workspaces are: `<root>/<org>/<repo>/<task>/`, each with a
    /// `status.json` (required).
    pub fn workspace_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workspace_root = Some(dir.into());
        self
    }

    /// Where `sync.redb` (the queue, ledger and history) and the control socket live,
    /// created 0700 if missing (required). One running service per state dir.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The agent id pushes and pulls default to (`agent` unless set).
    pub fn agent_id(mut self, id: impl Into<String>) -> Self {
        self.config.agent_id = id.into();
        self
    }

    /// The fleet node id sent with pushes (none unless set).
    pub fn fleet_node_id(mut self, id: i64) -> Self {
        self.config.fleet_node_id = Some(id);
        self
    }

    /// Serve the control socket `<state-dir>/agent-sync.sock` (on unless turned off).
    pub fn control_socket(mut self, on: bool) -> Self {
        self.config.control_socket = on;
        self
    }

    /// Also serve `/metrics` and `/health` over TCP at `addr` (off unless set).
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.config.metrics_addr = Some(addr);
        self
    }

    /// Accept a plain `http://` URL for a host that is not loopback (off: refused).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.config.platform.allow_insecure_http = allow;
        self
    }

    /// The config; [`ConfigError`] when the workspace root or the state dir is
    /// missing. The URL is checked when the service starts.
    pub fn build(self) -> Result<SyncConfig, ConfigError> {
        let workspace_root = self
            .workspace_root
            .ok_or(ConfigError::MissingWorkspaceRoot)?;
        let state_dir = self.state_dir.ok_or(ConfigError::MissingStateDir)?;
        Ok(SyncConfig {
            workspace_root,
            state_dir,
            ..self.config
        })
    }
}

/// The proxy settings from the environment as Go's `http.ProxyFromEnvironment` reads
/// them: each variable in upper case, else in lower case, blank as unset. Under CGI
/// (`REQUEST_METHOD` set) `HTTP_PROXY` can come from a client's `Proxy:` header
/// ("httpoxy"), so it is ignored there, as Go refuses it.
pub fn proxy_from_lookup(var: impl Fn(&str) -> Option<String>) -> ProxyConfig {
    let either = |upper: &str, lower: &str| var(upper).or_else(|| var(lower));
    let cgi = var("REQUEST_METHOD").is_some();
    ProxyConfig {
        https_proxy: either("HTTPS_PROXY", "https_proxy"),
        http_proxy: either("HTTP_PROXY", "http_proxy").filter(|_| !cgi),
        no_proxy: either("NO_PROXY", "no_proxy"),
    }
}

/// The current user's home from the password database, for when `HOME` is unset (a
/// bare service environment); `/` when even that is unknown, never the working dir.
fn account_home() -> PathBuf {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the
    // string out at once and this runs once, at configuration time.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if !entry.is_null() && !(*entry).pw_dir.is_null() {
            let dir = std::ffi::CStr::from_ptr((*entry).pw_dir);
            if let Ok(dir) = dir.to_str() {
                if !dir.is_empty() {
                    return PathBuf::from(dir);
                }
            }
        }
    }
    PathBuf::from("/")
}

/// The machine's host name, or `agent` when it cannot be read.
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and we stop at the first NUL either way.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "agent".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> SyncConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SyncConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn env_precedence_for_url_token_and_dirs() {
        let c = resolve(&[
            ("HOME", "/home/a"),
            ("CORE_API_URL", "http://127.0.0.1:1"),
            ("CORE_BRAIN_URL", "http://ignored"),
            ("CORE_BRAIN_KEY", "k2"),
            ("AGENT_NAME", "codex"),
        ]);
        assert_eq!(c.platform.base_url, "http://127.0.0.1:1");
        assert_eq!(c.tokens.read().unwrap().expose(), "k2");
        assert_eq!(c.workspace_root, PathBuf::from("/home/a/Lethean/workspace"));
        assert_eq!(c.state_dir, PathBuf::from("/home/a/Lethean/data/sync"));
        assert_eq!(c.agent_id, "codex");

        let c = resolve(&[
            ("HOME", "/h"),
            ("CORE_HOME", "/ch"),
            ("CORE_WORKSPACE", "/w"),
        ]);
        assert_eq!(c.platform.base_url, DEFAULT_API_URL);
        assert!(
            matches!(&c.tokens, TokenSource::KeyFile(p) if p == Path::new("/ch/.claude/brain.key"))
        );
        assert_eq!(c.workspace_root, PathBuf::from("/w/workspace"));
        assert_eq!(c.state_dir, PathBuf::from("/w/sync"));
        assert!(!c.agent_id.is_empty());
    }

    #[test]
    fn proxies_come_from_upper_then_lower_case_variables() {
        let c = resolve(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("http_proxy", "http://plain:3128"),
            ("no_proxy", ".corp, 10.0.0.0/8"),
        ]);
        let proxy = &c.platform.proxy;
        assert_eq!(proxy.https_proxy.as_deref(), Some("http://upper:3128"));
        assert_eq!(proxy.http_proxy.as_deref(), Some("http://plain:3128"));
        assert_eq!(proxy.no_proxy.as_deref(), Some(".corp, 10.0.0.0/8"));
        let c = resolve(&[("HTTPS_PROXY", " "), ("https_proxy", "lower:1")]);
        assert_eq!(c.platform.proxy.https_proxy.as_deref(), Some("lower:1"));
        assert_eq!(resolve(&[]).platform.proxy, ProxyConfig::default());
        let cgi = resolve(&[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "evil:1")]);
        assert_eq!(cgi.platform.proxy.http_proxy, None);
    }

    #[test]
    fn the_builder_sets_url_token_and_dirs_and_refuses_what_is_missing() {
        let c = SyncConfig::builder()
            .api_url("http://127.0.0.1:9")
            .token(" k ")
            .unwrap()
            .workspace_root("/w")
            .state_dir("/s")
            .agent_id("a")
            .fleet_node_id(7)
            .control_socket(false)
            .build()
            .unwrap();
        assert_eq!(c.platform.base_url, "http://127.0.0.1:9");
        assert_eq!(c.tokens.read().unwrap().expose(), "k");
        assert_eq!(
            (c.workspace_root.as_path(), c.state_dir.as_path()),
            (Path::new("/w"), Path::new("/s"))
        );
        assert_eq!((c.agent_id.as_str(), c.fleet_node_id), ("a", Some(7)));
        assert!(!c.control_socket);
        assert_eq!(
            c.max_batch, DEFAULT_MAX_BATCH,
            "the rest keeps new()'s defaults"
        );

        let offline = SyncConfig::builder().workspace_root("/w").state_dir("/s");
        assert!(matches!(
            offline.clone().build().unwrap().tokens,
            TokenSource::Fixed(None)
        ));
        assert_eq!(offline.token("  ").err(), Some(ConfigError::EmptyToken));
        let no_state = SyncConfig::builder().workspace_root("/w").build();
        assert_eq!(no_state.err(), Some(ConfigError::MissingStateDir));
        let no_root = SyncConfig::builder().state_dir("/s").build();
        assert_eq!(no_root.err(), Some(ConfigError::MissingWorkspaceRoot));
    }

    #[test]
    fn without_home_the_state_is_under_the_account_home_never_the_cwd() {
        let c = resolve(&[]);
        assert!(c.state_dir.is_absolute(), "{}", c.state_dir.display());
        assert!(
            c.workspace_root.is_absolute(),
            "{}",
            c.workspace_root.display()
        );
    }
}
