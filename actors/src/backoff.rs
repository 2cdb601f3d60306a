//! When to try a failed push again: the seed schedule and `Retry-After`. The Queue's
//! policy (`queue::policy`) spreads the steps with jitter and takes `Retry-After` as a
//! floor.

use std::time::{Duration, SystemTime};

use crate::time::Timestamp;

/// The Go agent's schedule (design.md §5.2): 0, 1 s, 5 s, 15 s, 60 s, then 5 min.
pub fn backoff(attempts: u32) -> Duration {
    match attempts {
        0 => Duration::ZERO,
        1 => Duration::from_secs(1),
        2 => Duration::from_secs(5),
        3 => Duration::from_secs(15),
        4 => Duration::from_secs(60),
        _ => Duration::from_secs(300),
    }
}

/// A `Retry-After` header value, which is either delay-seconds or an HTTP date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// Wait this long.
    Delay(Duration),
    /// Wait until then.
    At(Timestamp),
}

impl RetryAfter {
    /// Parses the header; `None` for anything that is neither form.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(RetryAfter::Delay(Duration::from_secs(seconds)));
        }
        let at = httpdate::parse_http_date(value).ok()?;
        let millis = match at.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).ok()?,
            Err(_) => 0,
        };
        Some(RetryAfter::At(Timestamp::from_unix_millis(millis)))
    }

    /// The delay it asks for, seen from `now`.
    pub fn delay_from(self, now: Timestamp) -> Duration {
        match self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(at) => at.duration_since(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_seed() {
        let secs: Vec<u64> = (0..7).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [0, 1, 5, 15, 60, 300, 300]);
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        assert_eq!(
            RetryAfter::parse(" 120 "),
            Some(RetryAfter::Delay(Duration::from_secs(120)))
        );
        let now = Timestamp::parse_rfc3339("2015-10-21T07:28:00Z").unwrap();
        let date = RetryAfter::parse("Wed, 21 Oct 2015 07:30:00 GMT").unwrap();
        assert_eq!(date.delay_from(now), Duration::from_secs(120));
        assert_eq!(RetryAfter::parse("soon"), None);
    }
}
