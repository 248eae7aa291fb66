//! A log-bucketed histogram of nanosecond values, for latency percentiles.
//!
//! Values below 64 get a bucket each. Above, every power of two is split into 32 equal
//! buckets, so a bucket is at most 1/32 of its lower bound wide and a percentile reported at
//! the bucket's midpoint is within 1/64 (about 1.6 %) of the true value. That is the same
//! idea as HdrHistogram with two significant binary digits fewer, in a hundred lines and no
//! dependency; 1,920 buckets cover the whole `u64` range.

/// Values below this get an exact bucket of their own.
const LINEAR: u64 = 64;
/// log2 of the number of buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 5;
/// Buckets per power of two above [`LINEAR`].
const SUB: u64 = 1 << SUB_BITS;
/// Total number of buckets: the linear ones plus 32 for each power of two from 2^6 to 2^63.
const BUCKETS: usize = LINEAR as usize + (64 - 6) * SUB as usize;

/// Counts of values per bucket, plus the exact minimum and maximum.
#[derive(Clone, Debug)]
pub(crate) struct Histogram {
    /// One count per bucket.
    counts: Vec<u64>,
    /// Number of recorded values.
    total: u64,
    /// Smallest recorded value (`u64::MAX` when empty).
    min: u64,
    /// Largest recorded value.
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

/// The bucket that holds `value`.
fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    // `value` has its top bit at `exponent` >= 6; its next five bits pick the sub-bucket.
    let exponent = 63 - value.leading_zeros();
    let top = value >> (exponent - SUB_BITS);
    (LINEAR + u64::from(exponent - SUB_BITS - 1) * SUB + (top - SUB)) as usize
}

/// The smallest value of `bucket` and the bucket's width.
fn bounds_of(bucket: usize) -> (u64, u64) {
    let bucket = bucket as u64;
    if bucket < LINEAR {
        return (bucket, 1);
    }
    let k = bucket - LINEAR;
    let shift = (k / SUB + 1) as u32;
    ((SUB + k % SUB) << shift, 1 << shift)
}

impl Histogram {
    /// Records one value.
    pub(crate) fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Number of recorded values.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0.5 for the median, 0.99 for p99), to within 1.6 %.
    ///
    /// It is the midpoint of the bucket holding the value of rank `ceil(q * len)`, clamped to
    /// the exact minimum and maximum; `None` when nothing was recorded.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bounds_of(bucket);
                let mid = low.saturating_add(width / 2);
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::{bounds_of, bucket_of, Histogram, BUCKETS};

    /// Records `values` and checks each `(quantile, expected)` to within the bucket precision.
    fn check(values: &[u64], expected: &[(f64, u64)]) {
        let mut histogram = Histogram::default();
        for &value in values {
            histogram.record(value);
        }
        assert_eq!(histogram.len(), values.len() as u64);
        for &(q, want) in expected {
            let got = histogram.quantile(q).expect("values were recorded");
            let tolerance = want / 64 + 1;
            assert!(
                got.abs_diff(want) <= tolerance,
                "q={q}: expected about {want}, got {got}"
            );
        }
    }

    #[test]
    fn quantiles_of_known_distributions() {
        check(&[5], &[(0.0, 5), (0.5, 5), (1.0, 5)]);
        check(&[1, 2, 3, 4], &[(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4)]);
        let ramp: Vec<u64> = (1..=100_000).collect();
        check(
            &ramp,
            &[
                (0.5, 50_000),
                (0.99, 99_000),
                (0.999, 99_900),
                (1.0, 100_000),
            ],
        );
        let mut skewed = vec![1_000u64; 990];
        skewed.extend(std::iter::repeat_n(5_000_000, 10));
        check(&skewed, &[(0.5, 1_000), (0.99, 1_000), (0.995, 5_000_000)]);
    }

    #[test]
    fn empty_histogram_has_no_quantile() {
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn every_value_lands_inside_its_bucket() {
        let mut probes: Vec<u64> = (0..4096).collect();
        for shift in 6..64 {
            let base = 1u64 << shift;
            probes.extend([base - 1, base, base + 1, base + base / 3, base | (base - 1)]);
        }
        probes.push(u64::MAX);
        for value in probes {
            let bucket = bucket_of(value);
            assert!(bucket < BUCKETS, "{value} -> {bucket}");
            let (low, width) = bounds_of(bucket);
            assert!(
                low <= value && value - low < width,
                "{value} -> bucket {bucket} = [{low}, +{width})"
            );
            assert!(width == 1 || width <= low / 32, "bucket {bucket} too wide");
        }
    }
}
