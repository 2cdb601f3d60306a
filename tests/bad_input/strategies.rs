//! The proptest settings and the generators of the property tests: JSON values and
//! objects that hit the fields the parsers look at, RFC 3339-looking times, and bytes
//! that are JSON now and then.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

/// Proptest settings: `PROPTEST_CASES` or `default`; no regression files in the tree.
pub(crate) fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Field names the parsers look at, so generated objects hit them often.
const KEYS: [&str; 24] = [
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
    "data",
    "context",
    "items",
    "memories",
    "id",
    "findings",
    "changes",
    "report",
    "workspace",
    "",
];

/// A field name: often one the parsers look at, else anything short.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(&KEYS[..]).prop_map(str::to_string),
        1 => "[a-z_\\u{0}-\\u{7f}\\u{e9}\\u{1f600}]{0,10}",
    ]
}

/// RFC 3339-looking strings, valid or nearly (leap seconds, year 0, odd offsets).
fn time_text() -> impl Strategy<Value = String> {
    (
        0u32..=9999,
        0u32..=13,
        0u32..=32,
        0u32..=24,
        0u32..=60,
        0u32..=61,
        proptest::option::of("[0-9]{1,12}"),
        prop_oneof![
            Just("Z".to_string()),
            "[+-][0-9]{2}:[0-9]{2}",
            Just(String::new())
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, offset)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{offset}")
        })
}

/// A JSON number, with the extremes and a float that is a whole number.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(3.0)),
    ]
}

/// A string: anything short, a time, or a status or number-like word.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        time_text(),
        proptest::sample::select(
            &[
                "completed",
                "merged",
                "failed",
                "blocked",
                "running",
                "1e999",
                "-1e999",
                "NaN",
                " 42 ",
                "0x10",
                "",
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

/// Any JSON value, nested up to three deep.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object of up to 11 fields.
pub(crate) fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(key(), json_value(), 0..12)
        .prop_map(|m| m.into_iter().collect())
}

/// Bytes that are JSON now and then, and mostly almost-JSON or noise.
pub(crate) fn input_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        json_object().prop_map(|o| serde_json::to_vec(&o).unwrap()),
        // Valid JSON, then cut or spliced.
        (json_object(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(o, at, b)| {
            let mut bytes = serde_json::to_vec(&o).unwrap();
            let i = at.index(bytes.len() + 1);
            if i < bytes.len() {
                bytes[i] = b;
            } else {
                bytes.truncate(bytes.len() / 2);
            }
            bytes
        }),
    ]
}
