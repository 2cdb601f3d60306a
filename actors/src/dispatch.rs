//! [`Dispatch`]: one dispatch as pushed to the platform, kept as its JSON text.
//!
//! The platform owns the schema of a dispatch and host-provided ones are pushed
//! verbatim, so agent-sync never reads inside one except for its id. What it does with
//! a dispatch is measure it (the request-body cap), store it (a redb row), send it (a
//! request body) and free it. As compact JSON text each of those is a length, a copy or
//! one `free`; as a `serde_json::Map` of 15 keys each was some 30 allocations decoded,
//! encoded or dropped, and that was a third of a drain's and a scan's time.
//!
//! Invariant: the text is one JSON object. Every constructor checks it or builds it so.
//! The text is compact when agent-sync wrote it (a scan's record, a host object, a
//! stored row); a row written by hand may keep its whitespace, which only makes a
//! measured body a little larger than the one sent. On disk a queue row is a
//! `QueueEntry` whose `dispatches` are inline JSON objects.
//!
//! Around it: the [`DispatchKey`] (id and fingerprint) that the Ledger and the Queue
//! are asked about, the [`ScannedDispatch`] a scan hands the Queue, the record a scan
//! builds from a [`WorkspaceStatus`] ([`WorkspaceStatus::to_dispatch`]), and the check
//! of the dispatches a host pushes ([`validate_dispatches`]).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::DispatchError;
use crate::lenient::json_kind;
use crate::status::WorkspaceStatus;
use crate::time::Timestamp;

/// One dispatch as pushed to the platform: a JSON object, held as its text.
#[derive(Clone)]
pub struct Dispatch(Box<RawValue>);

impl Dispatch {
    /// The dispatch of a JSON object (a host's, or one read from the Go agent's files).
    pub fn from_object(object: &Map<String, Value>) -> Self {
        Dispatch::serialize_object(object)
    }

    /// Parses one JSON object; anything else is an error.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The dispatch's compact JSON text, as it is stored and sent.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// Bytes of the dispatch in a request body.
    pub fn json_len(&self) -> usize {
        self.0.get().len()
    }

    /// The id the dispatch is known by: `id`, else `workspace` (the Go agent's
    /// records), the string exactly as written; a blank or non-string one is no id. The
    /// one place this is decided, for scan, queue, ledger and legacy import alike.
    pub fn id(&self) -> Option<String> {
        let ids: Ids = serde_json::from_str(self.0.get()).ok()?;
        [ids.id, ids.workspace]
            .into_iter()
            .flatten()
            .find(|s| !s.trim().is_empty())
            .map(Cow::into_owned)
    }

    /// The dispatch as a JSON object, for reading its fields (tests, an operator's
    /// listing); the pipeline itself never needs it.
    pub fn to_object(&self) -> Map<String, Value> {
        // The text is an object by construction, so this parse does not fail.
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// Serialises `value`, which serialises as a JSON object, into a dispatch.
    fn serialize_object<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Dispatch(raw),
            // Unreachable: our objects have string keys and infallible values, the
            // only things that make serde_json's serialiser fail.
            Err(_) => Dispatch(empty_object()),
        }
    }
}

/// `{}`, the fallback of a serialisation that cannot fail.
fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

impl From<Map<String, Value>> for Dispatch {
    fn from(object: Map<String, Value>) -> Self {
        Dispatch::from_object(&object)
    }
}

impl PartialEq for Dispatch {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl fmt::Display for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Dispatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Dispatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(D::Error::custom("a dispatch must be a JSON object"));
        }
        Ok(Dispatch(raw))
    }
}

/// The two id fields of a dispatch; every other field is skipped unparsed, and a
/// repeated key keeps its last value, as a parsed `Map` would.
#[derive(Default)]
struct Ids<'a> {
    /// `id` when it is a string.
    id: Option<Cow<'a, str>>,
    /// `workspace` when it is a string.
    workspace: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Ids<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdsVisitor;
        impl<'de> Visitor<'de> for IdsVisitor {
            type Value = Ids<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dispatch object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ids<'de>, A::Error> {
                let mut ids = Ids::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "id" => &mut ids.id,
                        "workspace" => &mut ids.workspace,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<MaybeString>()?.0;
                }
                Ok(ids)
            }
        }
        deserializer.deserialize_map(IdsVisitor)
    }
}

/// A value kept when it is a string (borrowed unless it has escapes), else dropped.
struct MaybeString<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for MaybeString<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;
        impl<'de> Visitor<'de> for StringVisitor {
            type Value = MaybeString<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeString(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeString(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(MaybeString(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeString(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeString(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeString(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeString(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeString(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
        }
        deserializer.deserialize_any(StringVisitor)
    }
}

/// Which version of which dispatch: what the Ledger marks on delivery and what the
/// Queue deduplicates by, and all a scan asks them about before it builds a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DispatchKey {
    /// Workspace name = dispatch id.
    pub id: String,
    /// `updated_at#runs` of its `status.json` ([`WorkspaceStatus::fingerprint`]).
    pub fingerprint: String,
}

/// A dispatch found by the Scanner, with the fingerprint computed from its parsed
/// `status.json` (never re-derived from the pushed JSON: Go defect 1).
#[derive(Clone, Debug, PartialEq)]
pub struct ScannedDispatch {
    /// Workspace name = dispatch id.
    pub id: String,
    /// Fingerprint at scan time.
    pub fingerprint: String,
    /// What is pushed.
    pub record: Dispatch,
}

/// Host dispatches must all be JSON objects; one bad element refuses the whole call.
pub fn check_dispatches(values: &[Value]) -> Result<(), DispatchError> {
    match values.iter().enumerate().find(|(_, v)| !v.is_object()) {
        Some((index, bad)) => Err(DispatchError::NotAnObject {
            index,
            found: json_kind(bad),
        }),
        None => Ok(()),
    }
}

/// [`check_dispatches`], then each object as the [`Dispatch`] that is queued.
pub fn validate_dispatches(values: Vec<Value>) -> Result<Vec<Dispatch>, DispatchError> {
    check_dispatches(&values)?;
    Ok(values
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(object) => Some(Dispatch::from(object)),
            _ => None,
        })
        .collect())
}

/// The dispatch record of design.md §4.2, serialised straight from the parsed status
/// and report, with no intermediate map. Fields are in alphabetical order, the order a
/// `serde_json::Map` writes them in, so records are the bytes they always were.
#[derive(Serialize)]
struct Record<'a> {
    agent: &'a str,
    branch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    findings: Option<&'a Value>,
    id: &'a str,
    issue: i64,
    org: &'a str,
    pr_url: &'a str,
    process_id: &'a str,
    question: &'a str,
    repo: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a Map<String, Value>>,
    runs: i64,
    started_at: Option<Seconds>,
    status: &'a str,
    task: &'a str,
    updated_at: Option<Seconds>,
    workspace: &'a str,
}

/// A time written as RFC 3339 UTC, whole seconds, without an intermediate string.
struct Seconds(Timestamp);

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.rfc3339_seconds())
    }
}

impl WorkspaceStatus {
    /// The dispatch record of design.md §4.2 for workspace `name`. A non-empty
    /// `report.json` object adds `report`, and its `findings` and `changes` when they
    /// are a non-empty array and object.
    pub fn to_dispatch(&self, name: &str, report: Option<&Map<String, Value>>) -> Dispatch {
        let report = report.filter(|r| !r.is_empty());
        let field = |key: &str, keep: fn(&Value) -> bool| {
            report.and_then(|r| r.get(key)).filter(|v| keep(v))
        };
        Dispatch::serialize_object(&Record {
            agent: &self.agent,
            branch: &self.branch,
            changes: field("changes", |v| v.as_object().is_some_and(|o| !o.is_empty())),
            findings: field("findings", |v| v.as_array().is_some_and(|a| !a.is_empty())),
            id: name,
            issue: self.issue,
            org: &self.org,
            pr_url: &self.pr_url,
            process_id: &self.process_id,
            question: &self.question,
            repo: &self.repo,
            report,
            runs: self.runs,
            started_at: self.started_at.map(Seconds),
            status: &self.status,
            task: &self.task,
            updated_at: self.updated_at.map(Seconds),
            workspace: name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn only_a_json_object_is_a_dispatch() {
        assert!(Dispatch::parse(r#"{"id":"a"}"#).is_ok());
        for bad in ["[1]", "\"a\"", "1", "null", "{", ""] {
            assert!(Dispatch::parse(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn the_id_is_id_else_workspace_and_never_blank_or_a_number() {
        let id = |text: &str| Dispatch::parse(text).unwrap().id();
        assert_eq!(id(r#"{"id":"a","workspace":"b"}"#).as_deref(), Some("a"));
        assert_eq!(id(r#"{"id":"  ","workspace":"b"}"#).as_deref(), Some("b"));
        assert_eq!(id(r#"{"id":7,"workspace":"b"}"#).as_deref(), Some("b"));
        assert_eq!(id(r#"{"x":{"id":"inner"},"n":[1]}"#), None);
        assert_eq!(id(r#"{"id":"a\"b"}"#).as_deref(), Some("a\"b"));
        assert_eq!(id(r#"{"id":"first","id":"last"}"#).as_deref(), Some("last"));
    }

    #[test]
    fn a_host_object_is_kept_as_its_compact_text() {
        let host = object(json!({"id": "h/1", "nested": {"b": [1, 2.5, null]}, "a": true}));
        let dispatch = Dispatch::from(host.clone());
        assert_eq!(dispatch.to_object(), host);
        assert_eq!(dispatch.as_json(), Value::Object(host).to_string());
        assert_eq!(dispatch.json_len(), dispatch.as_json().len());
        let stored = serde_json::to_string(&vec![dispatch.clone()]).unwrap();
        let back: Vec<Dispatch> = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, [dispatch]);
    }

    #[test]
    fn a_scanned_record_is_the_bytes_a_map_of_its_fields_would_write() {
        let status = WorkspaceStatus::parse(
            br#"{"status":"completed","agent":"claude","repo":"go-io","org":"core",
                 "task":"t\"1","runs":2,"issue":"12","updated_at":"2026-04-14T13:00:00+01:00"}"#,
        )
        .unwrap();
        let report = object(json!({"findings": [], "changes": {"a": 1}, "summary": "ok"}));
        let expected = json!({
            "id": "core/go-io/t", "workspace": "core/go-io/t", "repo": "go-io",
            "org": "core", "task": "t\"1", "agent": "claude", "branch": "",
            "status": "completed", "question": "", "issue": 12, "runs": 2,
            "process_id": "", "pr_url": "", "started_at": null,
            "updated_at": "2026-04-14T12:00:00Z",
            "changes": {"a": 1}, "report": report.clone(),
        });
        let record = status.to_dispatch("core/go-io/t", Some(&report));
        assert_eq!(record.as_json(), expected.to_string());
        let bare = status.to_dispatch("core/go-io/t", Some(&Map::new()));
        assert!(!bare.to_object().contains_key("report"));
        assert_eq!(bare, status.to_dispatch("core/go-io/t", None));
    }
}
