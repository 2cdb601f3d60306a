//! How a row of the JSON tables is encoded and decoded: the one place, so every
//! table reads and writes values the same way, and a row that does not decode is
//! treated the same everywhere (H1, design.md §12.2).
//!
//! JSON, so a record written by one version can be read (or skipped with a warning)
//! by another. The rescan cache's two tables use a binary encoding of their own
//! (`scanner::walk::cache`), not this one.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes a value for a table.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own types into a Vec cannot fail: no maps with non-string keys.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a value from a table.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Decodes the row `key` of a listing; one that does not decode is skipped with a
/// warning naming it (H1): left in place, never blocking the rest.
pub(crate) fn decode_or_warn<T: DeserializeOwned>(
    what: &str,
    key: impl std::fmt::Display,
    bytes: &[u8],
) -> Option<T> {
    match decode(bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            log::warn!("{what} {key} does not decode ({e}); skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_and_a_damaged_one_is_skipped() {
        let bytes = encode(&vec!["a", "b"]);
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), ["a", "b"]);
        assert_eq!(decode_or_warn::<Vec<String>>("row", 1, b"{not json"), None);
    }
}
