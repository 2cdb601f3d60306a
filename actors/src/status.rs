//! The workspace status (design.md §4.2): a `status.json` as the host writes it,
//! parsed tolerantly by one parser for the walk and the ghost reap alike, the
//! statuses that make a dispatch worth pushing, and the fingerprint that says which
//! version of a dispatch was delivered.

use serde::Deserialize;

use crate::lenient::{LenientInt, LenientString, LenientTime};
use crate::time::Timestamp;

/// Statuses after which a workspace is finished and worth pushing.
pub const TERMINAL_STATUSES: [&str; 4] = ["completed", "merged", "failed", "blocked"];

/// `status.json` of a workspace, parsed tolerantly.
///
/// Why a hand-written `Deserialize`: hosts written in other languages put `runs` as a
/// float, `issue` as a string, or `null` anywhere, and a finished dispatch must not be
/// lost to a type quibble ([`crate::lenient`]); and only a JSON object is a status (a
/// derived impl would also take an array as a struct). It parses in one pass, without
/// an intermediate map: the scanner reads thousands of these.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkspaceStatus {
    /// `running`, `completed`, `merged`, `failed`, `blocked`, ...
    pub status: String,
    /// Which agent ran the task.
    pub agent: String,
    /// Repository name.
    pub repo: String,
    /// Organisation of the repository.
    pub org: String,
    /// Task name.
    pub task: String,
    /// Branch the agent worked on.
    pub branch: String,
    /// Issue number, 0 when none.
    pub issue: i64,
    /// OS process id of the worker, 0 when none (used by ghost reap).
    pub pid: i64,
    /// The host's own process identifier.
    pub process_id: String,
    /// When the dispatch started.
    pub started_at: Option<Timestamp>,
    /// When the status last changed: half of the fingerprint.
    pub updated_at: Option<Timestamp>,
    /// The agent's open question, if it is blocked.
    pub question: String,
    /// How many times the task ran: the other half of the fingerprint.
    pub runs: i64,
    /// Pull request opened by the agent.
    pub pr_url: String,
}

impl WorkspaceStatus {
    /// Parses a `status.json` body: a JSON object, every field optional.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        // Fields we skip are not checked by the parser: check the whole body, so only
        // valid JSON is ever accepted.
        let text = std::str::from_utf8(bytes).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!(
                "status.json is not UTF-8: {e}"
            ))
        })?;
        serde_json::from_str(text)
    }

    /// True when the dispatch is finished and should be pushed.
    pub fn is_terminal(&self) -> bool {
        TERMINAL_STATUSES.contains(&self.status.as_str())
    }

    /// `<updated_at as UTC RFC 3339, seconds>#<runs>`; an unset time is written as Go
    /// writes its zero time, so ledgers imported from the Go agent still match.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.updated_at, self.runs)
    }
}

impl<'de> Deserialize<'de> for WorkspaceStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StatusVisitor)
    }
}

/// Reads the fields of a `status.json` object; unknown fields are skipped unparsed.
struct StatusVisitor;

impl<'de> serde::de::Visitor<'de> for StatusVisitor {
    type Value = WorkspaceStatus;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a status.json object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut status = WorkspaceStatus::default();
        while let Some(StatusKey(key)) = map.next_key()? {
            let text = |map: &mut A| map.next_value::<LenientString>().map(|v| v.0);
            match key {
                Some("status") => status.status = text(&mut map)?,
                Some("agent") => status.agent = text(&mut map)?,
                Some("repo") => status.repo = text(&mut map)?,
                Some("org") => status.org = text(&mut map)?,
                Some("task") => status.task = text(&mut map)?,
                Some("branch") => status.branch = text(&mut map)?,
                Some("process_id") => status.process_id = text(&mut map)?,
                Some("question") => status.question = text(&mut map)?,
                Some("pr_url") => status.pr_url = text(&mut map)?,
                Some("issue") => status.issue = map.next_value::<LenientInt>()?.0,
                Some("pid") => status.pid = map.next_value::<LenientInt>()?.0,
                Some("runs") => status.runs = map.next_value::<LenientInt>()?.0,
                Some("started_at") => status.started_at = map.next_value::<LenientTime>()?.0,
                Some("updated_at") => status.updated_at = map.next_value::<LenientTime>()?.0,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(status)
    }
}

/// A key of `status.json`, matched against the known names without allocating.
struct StatusKey(Option<&'static str>);

impl<'de> Deserialize<'de> for StatusKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = StatusKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<StatusKey, E> {
                const KNOWN: [&str; 14] = [
                    "status",
                    "agent",
                    "repo",
                    "org",
                    "task",
                    "branch",
                    "issue",
                    "pid",
                    "process_id",
                    "started_at",
                    "updated_at",
                    "question",
                    "runs",
                    "pr_url",
                ];
                Ok(StatusKey(KNOWN.iter().copied().find(|k| *k == key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The fingerprint of design.md §4.2 from its two parts.
pub fn fingerprint(updated_at: Option<Timestamp>, runs: i64) -> String {
    match updated_at {
        Some(time) => format!("{}#{runs}", time.rfc3339_seconds()),
        None => format!("0001-01-01T00:00:00Z#{runs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing_is_tolerant_of_types_and_unknown_fields() {
        let status = WorkspaceStatus::parse(
            br#"{"status":"completed","runs":3.0,"issue":"12","pid":null,
                 "updated_at":"2026-04-14T13:00:00+01:00","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(status.runs, 3);
        assert_eq!(status.issue, 12);
        assert_eq!(status.pid, 0);
        assert!(status.is_terminal());
        assert_eq!(status.fingerprint(), "2026-04-14T12:00:00Z#3");
    }

    #[test]
    fn status_that_is_not_an_object_is_an_error() {
        assert!(WorkspaceStatus::parse(b"[1,2]").is_err());
        assert!(WorkspaceStatus::parse(b"{\"status\":").is_err());
    }
}
