//! A fixed-size log-linear histogram of nanosecond values, for latency percentiles.
//!
//! Values below 64 each have a bucket. Above that, each power of two is cut into 16 equal
//! buckets, so a bucket's width is at most 1/16 of its lower bound and a percentile read at
//! the bucket's middle is within about 3 % of the true value. Recording never allocates.

/// Values below this get a bucket each.
const EXACT: u64 = 64;
/// log2 of the buckets per power of two.
const SUB_BITS: u32 = 4;
/// Buckets in total: the exact ones, then 16 for each power of two from 2^6 to 2^63.
const BUCKETS: usize = EXACT as usize + (64 - 6) * (1 << SUB_BITS);

/// Counts per bucket.
#[derive(Clone, Debug)]
pub(crate) struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max: 0,
        }
    }
}

fn bucket(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let sub = (value >> (exponent - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + ((exponent - 6) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The middle of `index`'s range.
fn middle(index: usize) -> u64 {
    if index < EXACT as usize {
        return index as u64;
    }
    let rel = index - EXACT as usize;
    let exponent = (rel >> SUB_BITS) as u32 + 6;
    let sub = (rel & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (exponent - SUB_BITS);
    let low = (1u64 << exponent) + sub * width;
    low + width / 2
}

impl Histogram {
    /// Counts one value.
    pub(crate) fn record(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Values recorded.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The largest value recorded.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` (0..=1) of the recorded values fall; `None` when
    /// nothing was recorded.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(middle(index).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[u64], q: f64, expected: u64) {
        let mut h = Histogram::default();
        for v in values {
            h.record(*v);
        }
        let got = h.quantile(q).unwrap();
        let error = got.abs_diff(expected) as f64 / expected.max(1) as f64;
        assert!(
            error <= 0.035,
            "q{q} of {values:?}: got {got}, expected {expected}"
        );
    }

    #[test]
    fn quantiles_are_close() {
        check(&[5], 0.5, 5);
        check(&[1, 2, 3, 4, 100], 0.5, 3);
        check(&[1_000_000; 10], 0.99, 1_000_000);
        let spread: Vec<u64> = (1..=1000).map(|v| v * 1000).collect();
        check(&spread, 0.5, 500_000);
        check(&spread, 0.99, 990_000);
        check(&[u64::MAX], 1.0, u64::MAX);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn every_value_has_a_bucket_in_range() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let b = bucket(v);
                assert!(b < BUCKETS, "{v}");
                let m = middle(b);
                assert!(m.abs_diff(v) as f64 <= v as f64 / 16.0 + 1.0, "{v} -> {m}");
            }
        }
    }
}
