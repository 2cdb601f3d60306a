//! Tolerant reading of JSON written by hosts and by the Go agent.
//!
//! Hosts write `runs` as `3.0`, `issue` as `"12"`, `null` anywhere; a finished dispatch
//! must not be lost to a type quibble. Two forms of the same rules:
//!
//! - on a parsed [`Value`]: [`lenient_int`], [`lenient_time`] (legacy import);
//! - as serde visitors ([`LenientString`], [`LenientInt`], [`LenientTime`]) for the one
//!   parser of `status.json` ([`crate::status::WorkspaceStatus::parse`]), which the walk
//!   and the ghost reap share and which reads straight into its struct without
//!   building a JSON map first.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::time::Timestamp;

/// An integer written as an int, a float (`3.0`, Go's habit) or a numeric string;
/// anything else is 0.
pub fn lenient_int(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .unwrap_or(0),
        Some(Value::String(s)) => int_of_str(s),
        _ => 0,
    }
}

/// An RFC 3339 string, any precision and offset; Go's zero time and anything else
/// is unset.
pub fn lenient_time(value: Option<&Value>) -> Option<Timestamp> {
    value
        .and_then(Value::as_str)
        .and_then(Timestamp::parse_optional)
}

/// The JSON type of `value`, as error messages name it ("a string", "null", ...).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn int_of_str(s: &str) -> i64 {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map_or(0, |f| f as i64)
}

/// Consumes whatever container is next, so a value of the wrong shape is skipped.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A string; numbers and booleans as their text; anything else empty.
pub struct LenientString(pub String);

impl<'de> Deserialize<'de> for LenientString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_unit<E: de::Error>(self) -> Result<String, E> {
                Ok(String::new())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<String, A::Error> {
                drain_seq(seq).map(|()| String::new())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<String, A::Error> {
                drain_map(map).map(|()| String::new())
            }
        }
        deserializer.deserialize_any(V).map(LenientString)
    }
}

/// An integer from an int, a float or a numeric string; anything else 0.
pub struct LenientInt(pub i64);

impl<'de> Deserialize<'de> for LenientInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
                Ok(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
                Ok(if v.is_finite() { v as i64 } else { 0 })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
                Ok(int_of_str(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<i64, E> {
                Ok(0)
            }
            fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
                Ok(0)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<i64, A::Error> {
                drain_seq(seq).map(|()| 0)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<i64, A::Error> {
                drain_map(map).map(|()| 0)
            }
        }
        deserializer.deserialize_any(V).map(LenientInt)
    }
}

/// An RFC 3339 time; Go's zero time, a bad string or any other value is unset.
pub struct LenientTime(pub Option<Timestamp>);

impl<'de> Deserialize<'de> for LenientTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Timestamp>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Timestamp::parse_optional(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq).map(|()| None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map).map(|()| None)
            }
        }
        deserializer.deserialize_any(V).map(LenientTime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitors_agree_with_the_value_forms() {
        for text in [
            "3",
            "3.9",
            "\"12\"",
            "\" 7 \"",
            "null",
            "true",
            "[1]",
            "{\"a\":1}",
            "\"x\"",
        ] {
            let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let visited: LenientInt = serde_json::from_str(text).unwrap();
            assert_eq!(visited.0, lenient_int(Some(&value)), "{text}");
        }
        let t: LenientTime = serde_json::from_str("\"2026-01-01T01:00:00+01:00\"").unwrap();
        assert_eq!(
            t.0.map(|t| t.to_rfc3339()),
            Some("2026-01-01T00:00:00Z".into())
        );
        let s: LenientString = serde_json::from_str("[1, {\"x\": [2]}]").unwrap();
        assert_eq!(s.0, "");
        let s: LenientString = serde_json::from_str("4.5").unwrap();
        assert_eq!(s.0, "4.5");
    }

    /// The names are part of error messages ("dispatch 3 is a string, not a JSON
    /// object"), so they are spelled out here rather than derived from the function.
    #[test]
    fn json_kinds_are_named_as_error_messages_say_them() {
        for (text, kind) in [
            ("null", "null"),
            ("false", "a boolean"),
            ("1.5", "a number"),
            ("\"x\"", "a string"),
            ("[]", "an array"),
            ("{}", "an object"),
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(json_kind(&value), kind, "{text}");
        }
    }
}
