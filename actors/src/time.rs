//! Wall-clock time as the sync subsystem sees it.
//!
//! Times are kept as Unix milliseconds ([`Timestamp`]) so they compare, persist and
//! serialise cheaply; they are written as RFC 3339 UTC strings. [`Clock`] is the one
//! source of "now": production reads the system clock, tests anchor it to tokio's
//! (pausable) clock so backoff schedules can be checked without sleeping.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A UTC instant with millisecond precision.
///
/// Why not `SystemTime`: it neither serialises as RFC 3339 nor orders across a JSON
/// round trip; a plain integer does both and is `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Builds a timestamp from Unix milliseconds.
    pub fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Unix milliseconds.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 with any offset and any fractional precision (Go writes
    /// nanoseconds). Go's zero time `0001-01-01T00:00:00Z` parses to a timestamp;
    /// callers treat it as unset with [`Timestamp::is_go_zero`].
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).ok().map(Timestamp)
    }

    /// Parses RFC 3339, mapping Go's zero time to `None`.
    pub fn parse_optional(text: &str) -> Option<Self> {
        Self::parse_rfc3339(text).filter(|t| !t.is_go_zero())
    }

    /// True for Go's zero `time.Time` (year 1), which means "unset".
    pub fn is_go_zero(self) -> bool {
        self.0 <= GO_ZERO_MILLIS
    }

    /// RFC 3339 in UTC, whole seconds: the form of fingerprints and history.
    pub fn to_rfc3339_seconds(self) -> String {
        self.rfc3339_seconds().to_string()
    }

    /// [`Timestamp::to_rfc3339_seconds`] as a `Display`, for writing it into a larger
    /// text without a string of its own (a scan writes three per dispatch: one in its
    /// fingerprint, two in its record).
    pub fn rfc3339_seconds(self) -> impl fmt::Display {
        Rfc3339Text {
            at: self,
            keep_millis: false,
        }
    }

    /// RFC 3339 in UTC with milliseconds when they are not zero.
    pub fn to_rfc3339(self) -> String {
        Rfc3339Text {
            at: self,
            keep_millis: true,
        }
        .to_string()
    }

    /// Truncated to whole seconds: history records are kept at that precision.
    pub fn whole_seconds(self) -> Self {
        Timestamp(self.0.div_euclid(1000) * 1000)
    }

    /// `self + duration`, saturating.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long from `now` until `self`; zero when `self` is not in the future.
    pub fn duration_since(self, now: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(now.0)).unwrap_or(0))
    }
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm):
/// formatting thousands of timestamps per scan should not cost a generic formatter.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `0001-01-01T00:00:00Z` in Unix milliseconds.
const GO_ZERO_MILLIS: i64 = -62_135_596_800_000;

/// A timestamp written as RFC 3339 UTC.
struct Rfc3339Text {
    /// The instant.
    at: Timestamp,
    /// Whether to write a non-zero millisecond fraction.
    keep_millis: bool,
}

impl fmt::Display for Rfc3339Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis_since_epoch = self.at.0;
        let seconds = millis_since_epoch.div_euclid(1000);
        let millis = millis_since_epoch.rem_euclid(1000);
        let (days, time_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let (hour, minute, second) = (
            time_of_day / 3600,
            time_of_day % 3600 / 60,
            time_of_day % 60,
        );
        if !(0..=9999).contains(&year) {
            // Outside what RFC 3339 can write in four digits: let `time` say what it can.
            let nanos = i128::from(if self.keep_millis {
                millis_since_epoch
            } else {
                seconds * 1000
            }) * 1_000_000;
            return match OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
            {
                Some(text) => f.write_str(&text),
                None => write!(f, "@{millis_since_epoch}ms"),
            };
        }
        // Digits by hand: `write!` with padded fields was 3 % of a cold scan's CPU.
        let mut text = *b"0000-00-00T00:00:00";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, hour);
        put(14, 2, minute);
        put(17, 2, second);
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
        if self.keep_millis && millis != 0 {
            // As `time` writes it: the fraction without trailing zeros (".5", ".25").
            let fraction = format!("{millis:03}");
            write!(f, ".{}", fraction.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

/// The source of "now" for every decision that depends on time.
///
/// Why a type and not `SystemTime::now()`: the Queue's backoff and the Pusher's wake
/// timer must agree. Under tests with paused tokio time the timer advances virtual
/// time, so the Queue must read that same virtual clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: wall time at the anchor plus tokio time since.
    anchor: Option<(Timestamp, actix_rt::time::Instant)>,
}

impl Clock {
    /// The system wall clock (production).
    pub fn system() -> Self {
        Clock { anchor: None }
    }

    /// A clock that advances with tokio's clock, so `tokio::time::pause`/`advance` move
    /// it. Must be created inside a runtime.
    pub fn tokio() -> Self {
        Clock {
            anchor: Some((system_now(), actix_rt::time::Instant::now())),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match self.anchor {
            None => system_now(),
            Some((wall, instant)) => wall.saturating_add(instant.elapsed()),
        }
    }
}

fn system_now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offset_normalises_to_utc() {
        let t = Timestamp::parse_rfc3339("2026-04-14T13:00:00.123456789+01:00").unwrap();
        assert_eq!(t.to_rfc3339_seconds(), "2026-04-14T12:00:00Z");
        assert_eq!(t.to_rfc3339(), "2026-04-14T12:00:00.123Z");
    }

    #[test]
    fn fast_formatting_matches_the_time_crate() {
        let mut millis = -62_135_596_800_000i64; // 0001-01-01
        while millis < 253_402_300_799_000 {
            // 9999-12-31T23:59:59Z
            let t = Timestamp::from_unix_millis(millis);
            let nanos = i128::from(millis) * 1_000_000;
            let reference = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let reference = reference.format(&Rfc3339).unwrap();
            let ours = t.to_rfc3339();
            assert_eq!(
                Timestamp::parse_rfc3339(&ours),
                Timestamp::parse_rfc3339(&reference),
                "{ours} vs {reference}"
            );
            assert_eq!(ours, reference);
            millis += 997_654_321; // about 11.5 days and odd millis: 316k samples
        }
    }

    #[test]
    fn go_zero_time_is_unset() {
        assert_eq!(Timestamp::parse_optional("0001-01-01T00:00:00Z"), None);
        assert!(Timestamp::parse_optional("2026-01-01T00:00:00Z").is_some());
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn duration_since_is_zero_for_the_past() {
        let t = Timestamp::from_unix_millis(1_000);
        assert_eq!(
            t.duration_since(Timestamp::from_unix_millis(5_000)),
            Duration::ZERO
        );
        assert_eq!(
            t.saturating_add(Duration::from_secs(2)).duration_since(t),
            Duration::from_secs(2)
        );
    }
}
