//! A latency histogram that many threads record into without a lock: log-linear buckets of
//! microseconds (eight per power of two, so any quantile read back is within 12.5 % of the
//! truth), each an atomic counter. Readers take a [`LatencyCounts`] snapshot and subtract an
//! earlier one to get the quantiles of the time in between — what a dashboard needs once a
//! second, at the cost of one relaxed increment per request.

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this many microseconds get a bucket each.
const LINEAR_BELOW: u64 = 16;
/// Buckets per power of two above that (the resolution: 1/8 = 12.5 %).
const SUB_BUCKETS: u64 = 8;
/// Powers of two covered: from 16 µs up to 2^36 µs (19 hours); longer values share the last
/// bucket, which no request of the gateway's can reach (every one has a timeout).
const POWERS: u64 = 32;
/// Buckets in all.
const BUCKETS: usize = (LINEAR_BELOW + POWERS * SUB_BUCKETS) as usize;

/// Durations recorded from any thread.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration of `micros` microseconds.
    pub fn record(&self, micros: u64) {
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencyCounts {
        LatencyCounts(
            self.buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
        )
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyCounts(Vec<u64>);

impl Default for LatencyCounts {
    fn default() -> Self {
        Self(vec![0; BUCKETS])
    }
}

impl LatencyCounts {
    /// What was recorded after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .zip(&earlier.0)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        )
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs;
        }
    }

    /// How many durations.
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0 to 1) in microseconds: the upper edge of the bucket it falls in, so
    /// it never understates; `None` when nothing was recorded.
    pub fn quantile_micros(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_edge(bucket));
            }
        }
        Some(upper_edge(BUCKETS - 1))
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR_BELOW {
        return micros as usize;
    }
    let power = u64::from(63 - micros.leading_zeros());
    let sub = (micros >> (power - SUB_BUCKETS.trailing_zeros() as u64)) & (SUB_BUCKETS - 1);
    let index = LINEAR_BELOW + (power - LINEAR_BELOW.trailing_zeros() as u64) * SUB_BUCKETS + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The largest value that falls in `bucket`.
fn upper_edge(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < LINEAR_BELOW {
        return bucket;
    }
    let power = (bucket - LINEAR_BELOW) / SUB_BUCKETS + LINEAR_BELOW.trailing_zeros() as u64;
    let sub = (bucket - LINEAR_BELOW) % SUB_BUCKETS;
    let width = 1 << (power - SUB_BUCKETS.trailing_zeros() as u64);
    (1 << power) + (sub + 1) * width - 1
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut previous_edge = None;
        for bucket in 0..BUCKETS - 1 {
            let edge = upper_edge(bucket);
            assert_eq!(bucket_of(edge), bucket, "edge {edge}");
            assert_eq!(bucket_of(edge + 1), bucket + 1, "after edge {edge}");
            assert!(previous_edge.is_none_or(|previous| previous < edge));
            previous_edge = Some(edge);
        }
    }

    #[test]
    fn quantiles_of_the_time_in_between() {
        let histogram = LatencyHistogram::default();
        histogram.record(5_000_000);
        let before = histogram.snapshot();
        for micros in 1..=100 {
            histogram.record(micros * 100);
        }
        let window = histogram.snapshot().since(&before);
        assert_eq!(window.count(), 100);
        let p50 = window.quantile_micros(0.5).unwrap();
        assert!((5_000..=5_000 * 9 / 8).contains(&p50), "p50 {p50}");
        let max = window.quantile_micros(1.0).unwrap();
        assert!((10_000..=10_000 * 9 / 8).contains(&max), "max {max}");
        assert_eq!(LatencyCounts::default().quantile_micros(0.5), None);
    }

    proptest! {
        #[test]
        fn a_quantile_is_within_an_eighth_above_the_truth(
            mut values in proptest::collection::vec(0u64..50_000_000, 1..300),
            q in 0.0f64..=1.0,
        ) {
            let histogram = LatencyHistogram::default();
            for value in &values {
                histogram.record(*value);
            }
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let truth = values[rank - 1];
            let read = histogram.snapshot().quantile_micros(q).unwrap();
            prop_assert!(read >= truth, "{read} < {truth}");
            prop_assert!(read <= truth + truth / 8 + 1, "{read} far above {truth}");
        }
    }
}
