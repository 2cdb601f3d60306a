//! A strict parser of the Prometheus / OpenMetrics text exposition: a scrape that
//! does not parse fails the test (the series are read, not grepped).

use std::collections::BTreeMap;

/// One sample of a Prometheus / OpenMetrics text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name (`agent_sync_requests_total`, `..._bucket`, ...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses a text exposition: `# HELP/TYPE/UNIT` lines are checked for shape, the
/// `# EOF` marker must end it, every other line is `name[{k="v",...}] value`.
/// Panics (with the line) on anything else: a scrape that does not parse fails.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split_whitespace().next().unwrap_or("");
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "unknown comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = BTreeMap::new();
                for pair in inner.split(',').filter(|p| !p.is_empty()) {
                    let (key, quoted) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?} in {line}"));
                    let value = quoted
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label {pair:?} in {line}"));
                    labels.insert(key.to_string(), value.to_string());
                }
                (name.to_string(), labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the one sample `name{labels}` (labels given must match exactly;
/// panics when it is missing or ambiguous).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == wanted)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name}{wanted:?}: {} samples among {samples:#?}",
        found.len()
    );
    found[0].value
}
