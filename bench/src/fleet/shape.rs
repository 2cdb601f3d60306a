//! The arithmetic of the fleet figures ([`super`]): arrivals counted in buckets from
//! the recovery, the busiest bucket over the mean, and the same ratio for retry times
//! drawn uniformly at random (the reference a jittered fleet is compared with).

use std::time::{Duration, Instant};

use crate::support::Rng;

/// Width of a bucket.
pub const BUCKET: Duration = Duration::from_millis(100);

/// What the buckets say.
pub struct Shape {
    /// Requests that arrived after the recovery.
    pub after: usize,
    /// Requests answered 503.
    pub refused: usize,
    /// Buckets in the window.
    pub buckets: usize,
    /// The busiest bucket's count.
    pub peak: usize,
    /// Its index.
    pub peak_at: usize,
    /// peak / (after / buckets).
    pub ratio: f64,
    /// First request after the recovery, after it.
    pub first: Duration,
    /// Last request, after the recovery.
    pub last: Duration,
    /// The same ratio with 1 s buckets.
    pub ratio_1s: f64,
    /// Busiest second.
    pub peak_1s: usize,
    /// The ratio over the first-to-last window instead (not the figure).
    pub ratio_first_to_last: f64,
}

/// Peak over mean of `arrivals` in buckets of `width` from `recovery`.
pub fn buckets(after: &[Duration], width: Duration) -> (usize, usize, usize, f64) {
    let Some(last) = after.iter().max() else {
        return (0, 0, 0, 0.0);
    };
    let n = (last.as_nanos() / width.as_nanos()) as usize + 1;
    let mut counts = vec![0usize; n];
    for at in after {
        counts[(at.as_nanos() / width.as_nanos()) as usize] += 1;
    }
    let (peak_at, peak) = counts
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|(i, c)| (*c, std::cmp::Reverse(*i)))
        .unwrap_or_default();
    let mean = after.len() as f64 / n as f64;
    (n, peak, peak_at, peak as f64 / mean)
}

/// The shape of `arrivals` (when each came, what it was answered) after `recovery`.
pub fn shape(arrivals: &[(Instant, u16)], recovery: Instant) -> Shape {
    let after: Vec<Duration> = arrivals
        .iter()
        .filter(|(at, _)| *at >= recovery)
        .map(|(at, _)| *at - recovery)
        .collect();
    let (n, peak, peak_at, ratio) = buckets(&after, BUCKET);
    let (_, peak_1s, _, ratio_1s) = buckets(&after, Duration::from_secs(1));
    let first = after.iter().min().copied().unwrap_or_default();
    let from_first: Vec<Duration> = after.iter().map(|at| *at - first).collect();
    let (_, _, _, ratio_first_to_last) = buckets(&from_first, BUCKET);
    Shape {
        after: after.len(),
        refused: arrivals.iter().filter(|(_, status)| *status == 503).count(),
        buckets: n,
        peak,
        peak_at,
        ratio,
        first: after.iter().min().copied().unwrap_or_default(),
        last: after.iter().max().copied().unwrap_or_default(),
        ratio_1s,
        peak_1s,
        ratio_first_to_last,
    }
}

/// Reference for fleet_recovery_window: `instances` bursts of `per` requests, each burst in one
/// bucket chosen uniformly at random among `buckets`; the median peak-over-mean of
/// `draws` such placements. What independent random retry times give at best-case
/// (uniform) density, whatever the jitter's exact shape.
pub fn uniform_reference(instances: usize, per: usize, buckets: usize, draws: usize) -> f64 {
    if buckets == 0 || instances == 0 {
        return 0.0;
    }
    let mut rng = Rng::new(0x5eed_f1ee7);
    let mean = (instances * per) as f64 / buckets as f64;
    let mut ratios: Vec<f64> = (0..draws)
        .map(|_| {
            let mut counts = vec![0usize; buckets];
            for _ in 0..instances {
                let b = ((rng.next_f64() * buckets as f64) as usize).min(buckets - 1);
                counts[b] += per;
            }
            counts.iter().copied().max().unwrap_or(0) as f64 / mean
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_over_mean_counts_every_bucket_up_to_the_last_request() {
        let ms = Duration::from_millis;
        // Buckets 0..=9: [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]; mean 4 / 10.
        let (n, peak, peak_at, ratio) = buckets(&[ms(0), ms(50), ms(150), ms(950)], BUCKET);
        assert_eq!((n, peak, peak_at), (10, 2, 0));
        assert!((ratio - 5.0).abs() < 1e-9, "{ratio}");
        // One burst in one bucket: the mean is the peak.
        let (n, _, _, ratio) = buckets(&[ms(10), ms(20), ms(30)], BUCKET);
        assert_eq!(n, 1);
        assert!((ratio - 1.0).abs() < 1e-9);
        assert_eq!(buckets(&[], BUCKET).0, 0);
    }

    #[test]
    fn the_window_starts_at_the_recovery_not_at_the_first_request() {
        let recovery = Instant::now();
        let at = |ms: u64, status: u16| (recovery + Duration::from_millis(ms), status);
        // A herd 5 s after the recovery: 3 requests in bucket 50 of 51.
        let log = [at(5_000, 200), at(5_010, 200), at(5_020, 200)];
        let s = shape(&log, recovery);
        assert_eq!((s.after, s.buckets, s.peak, s.peak_at), (3, 51, 3, 50));
        assert!((s.ratio - 51.0).abs() < 1e-9);
        assert!((s.ratio_first_to_last - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_uniform_reference_is_one_when_everything_fits_one_bucket() {
        assert!((uniform_reference(5, 3, 1, 10) - 1.0).abs() < 1e-9);
        let spread = uniform_reference(100, 3, 860, 200);
        assert!(spread > 5.0 && spread < 40.0, "{spread}");
    }
}
