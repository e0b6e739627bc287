//! An adaptive concurrency limit that follows the origin's latency: Netflix concurrency-limits'
//! `Gradient2Limit` (research/overload.md §2.1; Envoy's adaptive concurrency filter is the same
//! idea).
//!
//! Two averages of the round-trip time are kept: a short one (the latest samples) and a long one
//! (an exponential average over ~600 samples). While the short RTT stays near the long one the
//! origin is not queueing and the limit grows by a small headroom (√limit); when the short RTT
//! climbs, the gradient `long / short` (tolerating 1.5×) falls below one and the limit shrinks
//! in proportion. A failure or timeout is not a latency sample: it cuts the limit by a tenth, as
//! the library's AIMD limit does on a drop. The limit never grows while less than half of it is
//! in use, so an idle pool does not drift upwards.

use std::time::Duration;

/// Samples over which the long RTT averages.
const LONG_WINDOW: f64 = 600.0;
/// Samples before the long average is trusted as-is (a plain mean until then).
const WARMUP: u32 = 10;
/// How much slower than usual the origin may answer before the limit shrinks.
const TOLERANCE: f64 = 1.5;
/// Weight of each new limit estimate.
const SMOOTHING: f64 = 0.2;
/// Factor applied to the limit on a failure.
const BACKOFF: f64 = 0.9;

/// The limit of one pool.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    limit: f64,
    min: f64,
    max: f64,
    long_rtt: f64,
    samples: u32,
}

impl AdaptiveLimit {
    /// Starts at `initial`, kept within `min..=max` (`max` is the pool's bulkhead).
    pub fn new(initial: u32, min: u32, max: u32) -> Self {
        let (min, max) = (f64::from(min.max(1)), f64::from(max.max(min.max(1))));
        Self {
            limit: f64::from(initial).clamp(min, max),
            min,
            max,
            long_rtt: 0.0,
            samples: 0,
        }
    }

    /// The current limit, in requests.
    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// Feeds one finished request: its round trip, how many were in flight when it started, and
    /// whether it failed (timed out or the origin errored).
    pub fn on_sample(&mut self, rtt: Duration, in_flight: u32, failed: bool) {
        if failed {
            self.limit = (self.limit * BACKOFF).max(self.min);
            return;
        }
        let short = rtt.as_secs_f64().max(1e-6);
        self.samples = self.samples.saturating_add(1);
        let weight = if self.samples <= WARMUP {
            1.0 / f64::from(self.samples)
        } else {
            2.0 / (LONG_WINDOW + 1.0)
        };
        self.long_rtt += (short - self.long_rtt) * weight;
        // After a long overload the long average has absorbed the slow samples; let it recover.
        if self.long_rtt / short > 2.0 {
            self.long_rtt *= 0.95;
        }
        if f64::from(in_flight) < self.limit / 2.0 {
            return;
        }
        let gradient = (TOLERANCE * self.long_rtt / short).clamp(0.5, 1.0);
        let estimate = self.limit * gradient + self.limit.sqrt();
        self.limit =
            (self.limit * (1.0 - SMOOTHING) + estimate * SMOOTHING).clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn grows_while_latency_holds_and_only_when_used() {
        let mut limit = AdaptiveLimit::new(10, 2, 200);
        for _ in 0..50 {
            limit.on_sample(ms(10), 1, false);
        }
        assert_eq!(limit.limit(), 10, "an idle pool does not grow");
        for _ in 0..50 {
            let in_flight = limit.limit();
            limit.on_sample(ms(10), in_flight, false);
        }
        assert!(limit.limit() > 40, "{}", limit.limit());
        for _ in 0..2_000 {
            let in_flight = limit.limit();
            limit.on_sample(ms(10), in_flight, false);
        }
        assert_eq!(limit.limit(), 200, "capped by the bulkhead");
    }

    #[test]
    fn shrinks_when_the_origin_queues_and_recovers_after() {
        let mut limit = AdaptiveLimit::new(100, 2, 200);
        for _ in 0..100 {
            limit.on_sample(ms(10), 100, false);
        }
        let before = limit.limit();
        for _ in 0..30 {
            let in_flight = limit.limit();
            limit.on_sample(ms(80), in_flight, false);
        }
        let squeezed = limit.limit();
        assert!(squeezed < before / 2, "{before} -> {squeezed}");
        for _ in 0..300 {
            let in_flight = limit.limit();
            limit.on_sample(ms(10), in_flight, false);
        }
        assert!(
            limit.limit() > squeezed * 2,
            "recovered to {}",
            limit.limit()
        );
    }

    #[test]
    fn failures_shrink_it_and_the_floor_holds() {
        let mut limit = AdaptiveLimit::new(50, 4, 200);
        for _ in 0..200 {
            limit.on_sample(ms(10), 1, true);
        }
        assert_eq!(limit.limit(), 4);
    }
}
