//! Property tests of the parsers of what a workspace and the platform hand over:
//! `status.json` (`WorkspaceStatus::parse`), report files (through a scan of a generated
//! workspace) and context envelopes (`parse_context`, against a model of design.md §5).

use std::fs;

use agent_sync::actors::puller::parse_context;
use agent_sync::actors::scanner::walk::{scan_tree_with, Resolver};
use agent_sync::actors::status::{WorkspaceStatus, TERMINAL_STATUSES};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};

use crate::strategies::{config, input_bytes, json_object, json_value};

// ============================================================ status.json

#[test]
fn status_json_parser_never_panics_and_accepts_exactly_json_objects() {
    let mut runner = TestRunner::new(config(1024));
    runner
        .run(&input_bytes(), |bytes| {
            let parsed = WorkspaceStatus::parse(&bytes);
            // Every object serde_json can hold is accepted; whatever is not JSON object
            // syntax at all is refused. In between (numbers beyond f64 in fields the
            // parser skips) either answer is fine, as long as it does not panic.
            if serde_json::from_slice::<Map<String, Value>>(&bytes).is_ok() {
                prop_assert!(parsed.is_ok());
            }
            let object_syntax = bytes.trim_ascii_start().first() == Some(&b'{')
                && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
            if !object_syntax {
                prop_assert!(parsed.is_err());
            }
            if let Ok(status) = parsed {
                let _ = status.fingerprint();
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn status_json_fields_of_any_type_default_and_the_fingerprint_stays_well_formed() {
    let mut runner = TestRunner::new(config(1024));
    runner
        .run(&json_object(), |object| {
            let bytes = serde_json::to_vec(&object).unwrap();
            let status = WorkspaceStatus::parse(&bytes).expect("an object always parses");
            // A string is taken as is; null, arrays and objects are "" (numbers and
            // booleans may be written out): only a terminal string is terminal.
            match object.get("status") {
                Some(Value::String(s)) => {
                    prop_assert_eq!(&status.status, s);
                    prop_assert_eq!(
                        status.is_terminal(),
                        TERMINAL_STATUSES.contains(&s.as_str())
                    );
                }
                Some(Value::Number(_) | Value::Bool(_)) => prop_assert!(!status.is_terminal()),
                _ => prop_assert_eq!(&status.status, ""),
            }
            let fingerprint = status.fingerprint();
            let (time, runs) = fingerprint.rsplit_once('#').expect("time#runs");
            prop_assert_eq!(runs.parse::<i64>().ok(), Some(status.runs));
            prop_assert!(time.ends_with('Z'), "{}", fingerprint);
            if status.updated_at.is_none() {
                prop_assert_eq!(time, "0001-01-01T00:00:00Z");
            }
            Ok(())
        })
        .unwrap();
}

// ============================================================ report.json

#[test]
fn any_report_bytes_are_attached_only_when_a_non_empty_object_and_the_scan_goes_on() {
    let done = json!({"status": "completed", "updated_at": "2026-04-14T12:00:00Z", "runs": 2});
    let report = prop_oneof![
        input_bytes(),
        // Objects with findings and changes of every type.
        (json_value(), json_value(), json_object()).prop_map(|(findings, changes, mut rest)| {
            rest.insert("findings".into(), findings);
            rest.insert("changes".into(), changes);
            serde_json::to_vec(&rest).unwrap()
        }),
    ];
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&report, |bytes| {
            let root = tempfile::tempdir().unwrap();
            for name in ["o/r/bad", "o/r/good"] {
                let dir = root.path().join(name);
                fs::create_dir_all(dir.join(".meta")).unwrap();
                fs::write(dir.join("status.json"), done.to_string()).unwrap();
            }
            fs::write(root.path().join("o/r/bad/.meta/report.json"), &bytes).unwrap();
            fs::write(
                root.path().join("o/r/good/.meta/report.json"),
                r#"{"summary":"fine"}"#,
            )
            .unwrap();
            let scan = scan_tree_with(root.path(), Resolver::Native);
            let portable = scan_tree_with(root.path(), Resolver::Portable);
            prop_assert_eq!(&portable.terminal, &scan.terminal, "both resolvers");
            prop_assert_eq!(scan.workspaces, 2);
            prop_assert_eq!(
                scan.terminal.len(),
                2,
                "a bad report never drops the dispatch"
            );
            let bad = &scan.terminal[0].record.to_object();
            let good = &scan.terminal[1].record.to_object();
            prop_assert_eq!(&good["report"], &json!({"summary": "fine"}));
            let parsed = serde_json::from_slice::<Map<String, Value>>(&bytes)
                .ok()
                .filter(|m| !m.is_empty());
            match parsed {
                None => prop_assert!(!bad.contains_key("report")),
                Some(map) => {
                    prop_assert_eq!(bad.get("report"), Some(&Value::Object(map.clone())));
                    let findings = map
                        .get("findings")
                        .filter(|f| f.as_array().is_some_and(|a| !a.is_empty()));
                    prop_assert_eq!(bad.get("findings"), findings);
                    let changes = map
                        .get("changes")
                        .filter(|c| c.as_object().is_some_and(|o| !o.is_empty()));
                    prop_assert_eq!(bad.get("changes"), changes);
                }
            }
            prop_assert_eq!(&bad["id"], &json!("o/r/bad"));
            Ok(())
        })
        .unwrap();
}

// ============================================================ context envelopes

/// design.md §5 written out independently: the first candidate holding an array
/// with at least one object wins; else a recognised key holding an array means "no
/// context"; else the envelope is unknown.
fn context_model(body: &[u8]) -> Option<Vec<Value>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let objects = |v: &Value| -> Option<Vec<Value>> {
        v.as_array()
            .map(|a| a.iter().filter(|i| i.is_object()).cloned().collect())
    };
    if value.is_array() {
        return objects(&value);
    }
    let object = value.as_object()?;
    let data = object.get("data");
    let mut candidates: Vec<&Value> = Vec::new();
    if let Some(d) = data.filter(|d| d.is_array()) {
        candidates.push(d);
    }
    for key in ["context", "items", "memories"] {
        if let Some(v) = data.and_then(|d| d.as_object()).and_then(|d| d.get(key)) {
            candidates.push(v);
        }
    }
    for key in ["context", "items", "memories"] {
        if let Some(v) = object.get(key) {
            candidates.push(v);
        }
    }
    let arrays: Vec<Vec<Value>> = candidates.into_iter().filter_map(objects).collect();
    let first = arrays.first()?.clone();
    Some(arrays.into_iter().find(|a| !a.is_empty()).unwrap_or(first))
}

#[test]
fn context_envelopes_of_any_shape_parse_as_the_design_says_or_are_unknown() {
    let envelope = prop_oneof![
        input_bytes(),
        // Every recognised key, holding anything.
        (
            proptest::option::of(json_value()),
            proptest::collection::btree_map(
                proptest::sample::select(&["context", "items", "memories", "x"][..]),
                json_value(),
                0..4
            ),
            proptest::collection::btree_map(
                proptest::sample::select(&["context", "items", "memories", "data"][..]),
                json_value(),
                0..4
            ),
        )
            .prop_map(|(data_value, inner, outer)| {
                let mut object: Map<String, Value> =
                    outer.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let data = match data_value {
                    Some(Value::Object(_)) | None => {
                        Value::Object(inner.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                    }
                    Some(other) => other,
                };
                object.insert("data".into(), data);
                serde_json::to_vec(&object).unwrap()
            }),
    ];
    let mut runner = TestRunner::new(config(1024));
    runner
        .run(&envelope, |body| {
            let parsed = parse_context(&body);
            if let Some(items) = &parsed {
                prop_assert!(items.iter().all(Value::is_object));
            }
            prop_assert_eq!(parsed, context_model(&body));
            Ok(())
        })
        .unwrap();
}
