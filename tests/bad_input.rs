//! R4, bad input: whatever a host, a workspace tree or a platform hands agent-sync, it
//! never panics, names the problem, and goes on with the rest.
//!
//! - Property tests (proptest) of the parsers: `status.json` (`WorkspaceStatus::parse`),
//!   report files (through a scan of a generated workspace), context envelopes
//!   (`parse_context`, against a model of design.md §5), host dispatches
//!   (`validate_dispatches`, and the CLI on generated files). `PROPTEST_CASES` scales
//!   them all (defaults below keep the suite fast).
//! - A hostile workspace tree scanned by the real binary (as `nobody` when the tests
//!   run as root, so that an unreadable file is really unreadable): symlink loops,
//!   symlinks out of the root, FIFOs and directories where files belong, 100 MB sparse
//!   files over the size caps, corrupt and non-UTF-8 files, non-UTF-8 directory names.
//! - The same tree walked both ways the walk can open files ([`Resolver::Native`]:
//!   `openat2` on Linux; [`Resolver::Portable`]: `openat(O_NOFOLLOW)` per component, as
//!   on macOS and the BSDs), in process and through the Scanner and the Queue: the two
//!   find, refuse and queue exactly the same things.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_sync::actors::dispatch::validate_dispatches;
use agent_sync::actors::puller::parse_context;
use agent_sync::actors::scanner::walk::{scan_tree_with, Resolver, TreeScan};
use agent_sync::actors::status::{WorkspaceStatus, TERMINAL_STATUSES};
use agent_sync::actors::DispatchError;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

use common::{LoopbackPlatform, Sandbox};

/// Proptest settings: `PROPTEST_CASES` or `default`; no regression files in the tree.
fn config(default: u32) -> Config {
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

fn json_value() -> impl Strategy<Value = Value> {
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

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(key(), json_value(), 0..12)
        .prop_map(|m| m.into_iter().collect())
}

/// Bytes that are JSON now and then, and mostly almost-JSON or noise.
fn input_bytes() -> impl Strategy<Value = Vec<u8>> {
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

// ============================================================ host dispatches

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn dispatch_list() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(
        prop_oneof![
            4 => json_object().prop_map(Value::Object),
            1 => json_value(),
        ],
        0..8,
    )
}

#[test]
fn host_dispatches_are_accepted_only_as_objects_and_the_first_bad_one_is_named() {
    let mut runner = TestRunner::new(config(512));
    runner
        .run(&dispatch_list(), |values| {
            let first_bad = values.iter().position(|v| !v.is_object());
            match (validate_dispatches(values.clone()), first_bad) {
                (Ok(objects), None) => {
                    prop_assert_eq!(objects.len(), values.len());
                    for (object, value) in objects.iter().zip(&values) {
                        prop_assert_eq!(&Value::Object(object.to_object()), value);
                    }
                }
                (Err(DispatchError::NotAnObject { index, found }), Some(bad)) => {
                    prop_assert_eq!(index, bad);
                    prop_assert_eq!(found, kind(&values[bad]));
                }
                (other, bad) => prop_assert!(false, "{:?} for first bad {:?}", other, bad),
            }
            Ok(())
        })
        .unwrap();
}

/// One isolated installation of the binary (the shared testkit's sandbox).
fn sandbox() -> Sandbox {
    Sandbox::new(
        env!("CARGO_BIN_EXE_agent-sync"),
        "bad-input-agent",
        "bad-input-token",
    )
}

/// Dispatches queued in `sandbox`'s state, read through `status`.
fn queued_in(sandbox: &Sandbox) -> usize {
    sandbox.status()["queued_dispatches"]
        .as_u64()
        .expect("queued_dispatches") as usize
}

#[test]
fn the_cli_refuses_generated_bad_dispatch_files_before_queueing_anything() {
    let sandbox = sandbox();
    let file = sandbox.path().join("dispatches.json");
    let input = prop_oneof![
        2 => dispatch_list().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => input_bytes(),
    ];
    let queued = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(config(16));
    runner
        .run(&input, |bytes| {
            fs::write(&file, &bytes).unwrap();
            let out = sandbox
                .cmd(&["push", "--dispatches", file.to_str().unwrap()])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(out.status.code().is_some(), "killed by a signal");
            prop_assert!(!stderr.contains("panicked"), "{}", stderr);
            let valid = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .filter(|a| a.iter().all(Value::is_object));
            match valid {
                Some(items) => {
                    prop_assert_eq!(out.status.code(), Some(0), "{}", stderr);
                    queued.set(queued.get() + items.len());
                }
                None => {
                    prop_assert_eq!(out.status.code(), Some(1), "{}", stderr);
                    prop_assert!(stderr.starts_with("error: "), "{}", stderr);
                    prop_assert!(stderr.contains("nothing was queued"), "{}", stderr);
                }
            }
            prop_assert_eq!(queued_in(&sandbox), queued.get());
            Ok(())
        })
        .unwrap();
}

// ============================================================ a hostile tree

const DONE: &str = r#"{"status":"completed","updated_at":"2026-04-14T12:00:00Z","runs":1}"#;
/// Only ever outside the root: finding it in a push is a leak.
const OUTSIDE_SECRET: &str = "outside-the-root-7d1f";

fn workspace(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("status.json"), DONE).unwrap();
    dir
}

fn meta(dir: &Path) -> PathBuf {
    let meta = dir.join(".meta");
    fs::create_dir_all(&meta).unwrap();
    meta
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

fn sparse(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Builds the tree; returns the ids that must be pushed: with a report or without.
fn hostile_tree(root: &Path, outside: &Path) -> (Vec<&'static str>, Vec<&'static str>) {
    // Outside the root: a workspace, a status file, a report, a .meta dir, all tempting.
    let secret_report = json!({"summary": OUTSIDE_SECRET}).to_string();
    fs::create_dir_all(outside.join("ws/meta")).unwrap();
    fs::write(outside.join("ws/status.json"), DONE).unwrap();
    fs::write(outside.join("ws/meta/report.json"), &secret_report).unwrap();
    fs::write(outside.join("report.json"), &secret_report).unwrap();
    fs::write(outside.join("status.json"), DONE).unwrap();

    // The good ones, so the scan has something to go on with.
    let good = workspace(root, "o/r/good-1");
    fs::write(meta(&good).join("report.json"), r#"{"summary":"ok"}"#).unwrap();
    workspace(root, "o/r/good-2");
    workspace(root, "flat-good");

    // Symlink loops and links out of the root: never walked.
    symlink(root, root.join("o/r/loop-to-root")).unwrap();
    symlink(".", root.join("o/r/loop-to-self")).unwrap();
    symlink("../../o", root.join("o/r/loop-up")).unwrap();
    symlink(outside.join("ws"), root.join("o/r/escape")).unwrap();
    symlink(outside.join("ws"), root.join("escape-flat")).unwrap();
    fs::create_dir_all(root.join("o/r/link-status")).unwrap();
    symlink(
        outside.join("status.json"),
        root.join("o/r/link-status/status.json"),
    )
    .unwrap();
    // Reports reached through a link: pushed without them.
    let dir = workspace(root, "o/r/meta-link");
    symlink(outside.join("ws/meta"), dir.join(".meta")).unwrap();
    let dir = workspace(root, "o/r/report-link");
    symlink(outside.join("report.json"), meta(&dir).join("report.json")).unwrap();

    // FIFOs and directories where files belong: never opened, never a hang.
    fs::create_dir_all(root.join("o/r/fifo-status")).unwrap();
    mkfifo(&root.join("o/r/fifo-status/status.json"));
    let dir = workspace(root, "o/r/fifo-report");
    mkfifo(&meta(&dir).join("report.json"));
    fs::create_dir_all(root.join("o/r/dir-status/status.json")).unwrap();
    let dir = workspace(root, "o/r/dir-report");
    fs::create_dir_all(meta(&dir).join("report.json")).unwrap();

    // Over the caps (1 MiB, 8 MiB): 100 MB each, sparse, never read.
    fs::create_dir_all(root.join("o/r/huge-status")).unwrap();
    sparse(&root.join("o/r/huge-status/status.json"), 100_000_000);
    let dir = workspace(root, "o/r/huge-report");
    sparse(&meta(&dir).join("report.json"), 100_000_000);

    // Corrupt content.
    fs::create_dir_all(root.join("o/r/corrupt")).unwrap();
    fs::write(root.join("o/r/corrupt/status.json"), "{\"status\": \"compl").unwrap();
    let dir = workspace(root, "o/r/bad-utf8-report");
    fs::write(
        meta(&dir).join("report.json"),
        b"{\"summary\": \"\xff\xfe\"}",
    )
    .unwrap();

    // Names that are not UTF-8 cannot be dispatch ids: skipped.
    let bad = OsStr::from_bytes(b"bad-\xff\xfe");
    workspace(&root.join(bad).join("r"), "t");
    workspace(&root.join("o").join(bad), "t");
    workspace(root, "o/r/ok");
    let _ = fs::create_dir_all(root.join("o/r").join(bad));
    fs::write(root.join("o/r").join(bad).join("status.json"), DONE).unwrap();

    // Unreadable (to anyone but root): skipped with a warning when run as nobody.
    fs::create_dir_all(root.join("o/r/unreadable")).unwrap();
    fs::write(root.join("o/r/unreadable/status.json"), DONE).unwrap();
    fs::set_permissions(
        root.join("o/r/unreadable/status.json"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    (
        vec!["o/r/good-1"],
        vec![
            "flat-good",
            "o/r/bad-utf8-report",
            "o/r/dir-report",
            "o/r/fifo-report",
            "o/r/good-2",
            "o/r/huge-report",
            "o/r/meta-link",
            "o/r/ok",
            "o/r/report-link",
        ],
    )
}

/// The ids a scan of the hostile tree must find, in sorted order.
fn hostile_expected(with_report: &[&'static str], without: &[&'static str]) -> Vec<&'static str> {
    let mut expected: Vec<&str> = with_report.iter().chain(without).copied().collect();
    // In-process the tests may run as root: the 0600 file is readable then.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        expected.push("o/r/unreadable");
    }
    expected.sort_unstable();
    expected
}

/// What one walk of the hostile tree must have found.
fn check_hostile_scan(scan: &TreeScan, with_report: &[&str], expected: &[&str], how: &str) {
    let mut ids: Vec<&str> = scan.terminal.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, expected, "{how}");
    for dispatch in &scan.terminal {
        let text = serde_json::to_string(&dispatch.record).unwrap();
        assert!(
            !text.contains(OUTSIDE_SECRET),
            "{how}: {} carries a file from outside the root: {text}",
            dispatch.id
        );
        assert_eq!(
            dispatch.record.to_object().contains_key("report"),
            with_report.contains(&dispatch.id.as_str()),
            "{how}: {}",
            dispatch.id
        );
    }
    assert!(
        scan.skipped >= 2,
        "{how}: corrupt and huge status files: {}",
        scan.skipped
    );
}

#[test]
fn the_scanner_stays_inside_the_root_and_skips_what_it_cannot_read_quickly() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (with_report, without) = hostile_tree(root.path(), outside.path());
    let expected = hostile_expected(&with_report, &without);
    let mut scans = Vec::new();
    for resolver in [Resolver::Native, Resolver::Portable] {
        let started = Instant::now();
        let scan = scan_tree_with(root.path(), resolver);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{resolver:?}: the scan took {took:?}"
        );
        check_hostile_scan(&scan, &with_report, &expected, &format!("{resolver:?}"));
        scans.push(scan);
    }
    // Not only the same ids: the same records, in the same order, the same skips.
    assert_eq!(scans[0].terminal, scans[1].terminal);
    assert_eq!(
        (scans[0].workspaces, scans[0].skipped),
        (scans[1].workspaces, scans[1].skipped)
    );
}

#[actix_rt::test]
async fn both_walk_paths_queue_the_same_dispatches_of_a_hostile_tree_through_the_scanner() {
    use actix::Actor;
    use agent_sync::actors::messages::ListQueue;
    use agent_sync::actors::messages::ScanToQueue;
    use agent_sync::actors::queue::{Queue, QueueConfig};
    use agent_sync::actors::scanner::walk::WalkOptions;
    use agent_sync::actors::time::Clock;
    use agent_sync::actors::{Ledger, Scanner, Store};

    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (with_report, without) = hostile_tree(root.path(), outside.path());
    let expected = hostile_expected(&with_report, &without);
    let mut queued = Vec::new();
    for resolver in [Resolver::Native, Resolver::Portable] {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let ledger = Ledger::new(store.clone()).start();
        let queue = Queue::new(store.clone(), QueueConfig::default(), Clock::system()).start();
        let scanner = Scanner::new(root.path().to_path_buf(), ledger.recipient())
            .with_store(store)
            .with_queue(queue.clone().recipient(), queue.clone().recipient())
            .with_walk(WalkOptions {
                resolver,
                chunk: 4,
                ..WalkOptions::default()
            })
            .start();
        // Twice: the second scan answers from the rescan cache, and queues nothing more.
        for round in 0..2 {
            let summary = scanner
                .send(ScanToQueue {
                    agent_id: "bad-input-agent".into(),
                    fleet_node_id: None,
                })
                .await
                .unwrap()
                .unwrap();
            let found = if round == 0 { expected.len() } else { 0 };
            assert_eq!(summary.found, found, "{resolver:?}, scan {round}");
        }
        let entries = queue.send(ListQueue::default()).await.unwrap().unwrap();
        let dispatches: Vec<Value> = entries
            .iter()
            .flat_map(|e| e.dispatches.iter().map(|d| Value::Object(d.to_object())))
            .collect();
        let mut ids: Vec<&str> = dispatches.iter().filter_map(|d| d["id"].as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, expected, "{resolver:?}");
        for dispatch in &dispatches {
            assert!(
                !dispatch.to_string().contains(OUTSIDE_SECRET),
                "{resolver:?} leaked"
            );
        }
        queued.push(dispatches);
    }
    assert_eq!(
        queued[0], queued[1],
        "both walk paths queue the same records, in order"
    );
}

/// The binary as `nobody` when running as root (mode bits apply then), else as is.
fn scanner_command(sandbox: &Sandbox, args: &[&str]) -> (Command, bool) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match sandbox.as_nobody(args).filter(|_| root) {
        Some(cmd) => (cmd, true),
        None => (sandbox.cmd(args), false),
    }
}

fn chown_nobody(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0, "chown");
}

#[actix_rt::test]
async fn the_binary_pushes_the_good_workspaces_of_a_hostile_tree_and_warns_about_the_rest() {
    let sandbox = sandbox();
    let outside = sandbox.path().join("outside");
    let (with_report, without) = hostile_tree(&sandbox.root(), &outside);
    // Traversable by nobody; the state dir is nobody's.
    for dir in [sandbox.path().to_path_buf(), sandbox.path().join("home")] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::create_dir_all(sandbox.state()).unwrap();
    let platform = LoopbackPlatform::start().await;
    let (mut cmd, as_nobody) = scanner_command(&sandbox, &["--json", "push"]);
    if as_nobody {
        chown_nobody(&sandbox.state());
    } else {
        eprintln!("not root or no setpriv: the 0600 status.json is readable here");
    }
    cmd.env("CORE_AGENT_API_KEY", "bad-input-token")
        .env("CORE_API_URL", platform.url())
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let out = actix_rt::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected: Vec<&str> = with_report.iter().chain(&without).copied().collect();
    if !as_nobody {
        expected.push("o/r/unreadable");
    }
    expected.sort_unstable();
    assert_eq!(reply["count"], expected.len(), "{reply}\n{stderr}");

    let mut pushed: Vec<Value> = platform
        .delivered()
        .iter()
        .flat_map(|r| r.dispatches())
        .collect();
    pushed.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let ids: Vec<&str> = pushed.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected);
    for dispatch in &pushed {
        let id = dispatch["id"].as_str().unwrap();
        assert!(
            !dispatch.to_string().contains(OUTSIDE_SECRET),
            "{id} leaked"
        );
        assert_eq!(
            dispatch.get("report").is_some(),
            with_report.contains(&id),
            "{id}"
        );
    }
    for warning in [
        "over the 1048576-byte cap; skipped",
        "over the 8388608-byte cap; skipped",
        "corrupt status file",
        "dispatch pushed without it",
        "not UTF-8; skipped",
    ] {
        assert!(
            stderr.contains(warning),
            "no {warning:?} warning in:\n{stderr}"
        );
    }
    if as_nobody {
        assert!(
            stderr.contains("cannot read status file") && stderr.contains("unreadable"),
            "{stderr}"
        );
    }
    platform.stop().await;
}
