//! Read-only diagnostics for a command such as `agent-sync doctor`: nothing here
//! writes the state, sends a push or changes anything on the platform.
//!
//! - [`inspect()`]: `sync.redb` opened read-only, every JSON row decoded, the queue
//!   summed up;
//! - [`probe_status`]: one `GET {base}/v1/agent/status?agent_id=<id>` over the same
//!   client a push uses (the proxy route, the system's roots plus `SSL_CERT_FILE`, no
//!   redirects, the timeouts): does the platform answer, does it take the token, what
//!   time does it say it is. A GET: it changes nothing on the platform.

pub mod inspect;

pub use inspect::{inspect, InspectError, Inspection};

use std::time::{Duration, SystemTime};

use crate::platform::{excerpt, percent_encode, PlatformConfig, Token, EXCERPT_BYTES};

/// The path probed.
pub const STATUS_PATH: &str = "/v1/agent/status";

/// The platform's answer to the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// Its HTTP status.
    pub status: u16,
    /// Its `Date` header, when it sent a valid one (the clock check).
    pub date: Option<SystemTime>,
    /// When the answer came, by this host's clock, to compare `date` with.
    pub received_at: SystemTime,
    /// How long the request took.
    pub elapsed: Duration,
}

/// Why the probe got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The TLS handshake failed on the platform's certificate; `detail` is what
    /// rustls said (`UnknownIssuer`, `NotValidForName`, `Expired`, ...).
    Certificate {
        /// The error, redacted and cut.
        detail: String,
    },
    /// Anything else: connect, proxy, timeout, protocol.
    Failed {
        /// The error, redacted and cut.
        detail: String,
    },
}

impl ProbeError {
    /// The error text.
    pub fn detail(&self) -> &str {
        match self {
            ProbeError::Certificate { detail } | ProbeError::Failed { detail } => detail,
        }
    }
}

/// GETs the status of `agent_id` with `token` (without one, no `Authorization` is
/// sent: the answer then still tells about the connection and the clock). Call
/// [`PlatformConfig::validate`] first; run on an actix `System`.
pub async fn probe_status(
    config: &PlatformConfig,
    token: Option<&Token>,
    agent_id: &str,
) -> Result<ProbeAnswer, ProbeError> {
    let client = crate::platform::client(config);
    let url = format!(
        "{}{STATUS_PATH}?agent_id={}",
        config.base_url.trim().trim_end_matches('/'),
        percent_encode(agent_id)
    );
    let mut request = client
        .get(url)
        .insert_header(("Accept", "application/json"));
    if let Some(token) = token {
        request = request.insert_header(("Authorization", format!("Bearer {}", token.expose())));
    }
    let started = std::time::Instant::now();
    let response = request.send().await.map_err(|e| {
        let detail = excerpt(e.to_string().as_bytes(), token, EXCERPT_BYTES);
        if is_certificate_error(&detail) {
            ProbeError::Certificate { detail }
        } else {
            ProbeError::Failed { detail }
        }
    })?;
    let date = response
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    Ok(ProbeAnswer {
        status: response.status().as_u16(),
        date,
        received_at: SystemTime::now(),
        elapsed: started.elapsed(),
    })
}

/// Whether an awc error is rustls refusing the platform's certificate.
fn is_certificate_error(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    lower.contains("certificate") || lower.contains("unknownissuer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_told_apart() {
        assert!(is_certificate_error(
            "Failed to connect to host: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_certificate_error(
            "Failed to connect to host: Connection refused (os error 111)"
        ));
    }
}
