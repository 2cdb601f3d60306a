//! Host dispatches: `validate_dispatches` accepts only objects and names the first
//! bad one, and the CLI refuses a generated bad dispatch file before queueing anything.

use std::fs;

use agent_sync::actors::dispatch::validate_dispatches;
use agent_sync::actors::lenient::json_kind;
use agent_sync::actors::DispatchError;
use agent_sync_testkit::Sandbox;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::Value;

use crate::sandbox;
use crate::strategies::{config, input_bytes, json_object, json_value};

// ============================================================ host dispatches

/// A list of dispatches: mostly objects, now and then another value.
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
                    prop_assert_eq!(found, json_kind(&values[bad]));
                }
                (other, bad) => prop_assert!(false, "{:?} for first bad {:?}", other, bad),
            }
            Ok(())
        })
        .unwrap();
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
