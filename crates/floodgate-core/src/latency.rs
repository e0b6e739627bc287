//! A latency histogram that many threads record into at once: an HdrHistogram of microseconds
//! per shard, each shard behind its own lock and each thread sticking to one shard, so a lock is
//! all but never contended. Readers take a [`LatencyCounts`] snapshot and subtract an earlier
//! one to get the quantiles of the time in between — what a dashboard needs once a second.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;

/// Two significant figures: any quantile read back is within 1 % of the truth.
const SIGNIFICANT_FIGURES: u8 = 2;
/// An hour; longer values count as an hour, which no request of the gateway's can reach (every
/// one has a timeout).
const HIGHEST_MICROS: u64 = 3_600_000_000;

fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_FIGURES)
        .expect("the bounds are valid")
}

/// The shard the current thread records into, out of `shards`.
fn shard_of_this_thread(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|shard| shard % shards)
}

/// Durations recorded from any thread.
#[derive(Debug)]
pub struct LatencyHistogram {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl Default for LatencyHistogram {
    /// A shard per core.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            shards: (0..cores).map(|_| Mutex::new(empty())).collect(),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration of `micros` microseconds.
    pub fn record(&self, micros: u64) {
        let shard = &self.shards[shard_of_this_thread(self.shards.len())];
        shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(micros);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencyCounts {
        let mut total = empty();
        for shard in &self.shards {
            total
                .add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))
                .expect("shards share their bounds");
        }
        LatencyCounts(total)
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyCounts(Histogram<u64>);

impl Default for LatencyCounts {
    fn default() -> Self {
        Self(empty())
    }
}

impl LatencyCounts {
    /// What was recorded after `earlier`, a snapshot of the same histogram (counts it does not
    /// hold, from another histogram, are left in).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut window = self.0.clone();
        match window.subtract(&earlier.0) {
            Ok(()) => Self(window),
            Err(_) => self.clone(),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        self.0.add(&other.0).expect("counts share their bounds");
    }

    /// How many durations.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0 to 1) in microseconds: the highest value its bucket holds, so it
    /// never understates; `None` when nothing was recorded.
    pub fn quantile_micros(&self, q: f64) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
        assert!((5_000..=5_050).contains(&p50), "p50 {p50}");
        let max = window.quantile_micros(1.0).unwrap();
        assert!((10_000..=10_100).contains(&max), "max {max}");
        assert_eq!(LatencyCounts::default().quantile_micros(0.5), None);
    }

    #[test]
    fn every_thread_is_counted() {
        let histogram = LatencyHistogram::default();
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let histogram = &histogram;
                scope.spawn(move || {
                    for micros in 0..1_000 {
                        histogram.record(thread * 1_000 + micros);
                    }
                });
            }
        });
        let counts = histogram.snapshot();
        assert_eq!(counts.count(), 8_000);
        let mut halves = LatencyCounts::default();
        halves.add(&counts);
        halves.add(&counts);
        assert_eq!(halves.count(), 16_000);
        assert_eq!(halves.since(&counts), counts);
    }

    #[test]
    fn values_past_an_hour_count_as_an_hour() {
        let histogram = LatencyHistogram::default();
        histogram.record(u64::MAX);
        let read = histogram.snapshot().quantile_micros(1.0).unwrap();
        assert!((HIGHEST_MICROS..=HIGHEST_MICROS + HIGHEST_MICROS / 100).contains(&read));
    }

    proptest! {
        #[test]
        fn a_quantile_is_within_a_hundredth_above_the_truth(
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
            prop_assert!(read <= truth + truth / 100 + 1, "{read} far above {truth}");
        }
    }
}
