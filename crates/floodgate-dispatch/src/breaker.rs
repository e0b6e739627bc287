//! A circuit breaker in front of the downstream, after Semian and Sentinel
//! (research/order_pipeline.md §2.6, research/overload.md §1): after `threshold` failures in a
//! row it opens and nothing is sent; when the open period ends, exactly one probe goes out. A good
//! answer closes it; a bad one opens it again for twice as long, up to [`MAX_OPEN_FACTOR`] times
//! the configured period. A legacy system that is down gets one request per period, not a storm.

use std::time::Duration;

use floodgate_core::delivery::BreakerState;
use tokio::time::Instant;

/// The longest open period, as a multiple of the configured one.
const MAX_OPEN_FACTOR: u32 = 8;

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing,
}

/// The breaker of one downstream.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    base_open: Duration,
    open_for: Duration,
    state: State,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row, for `open_for` at first.
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            base_open: open_for,
            open_for,
            state: State::Closed { failures: 0 },
        }
    }

    /// Where it stands.
    pub(crate) fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::Probing => BreakerState::HalfOpen,
        }
    }

    /// When an open breaker lets its probe go.
    pub(crate) fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a request may start now; an open breaker whose period ended lets exactly one
    /// probe start, and only once no earlier request is still out (`in_flight == 0`).
    pub(crate) fn try_start(&mut self, now: Instant, in_flight: usize) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until && in_flight == 0 => {
                self.state = State::Probing;
                true
            }
            State::Open { .. } | State::Probing => false,
        }
    }

    /// The downstream answered (whatever it said about the order itself).
    pub(crate) fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
        self.open_for = self.base_open;
    }

    /// A request failed: 5xx, 429, timeout or no connection.
    pub(crate) fn on_failure(&mut self, now: Instant) {
        match self.state {
            State::Closed { failures } if failures + 1 >= self.threshold => {
                self.state = State::Open {
                    until: now + self.open_for,
                };
            }
            State::Closed { failures } => {
                self.state = State::Closed {
                    failures: failures + 1,
                }
            }
            State::Probing => {
                self.open_for = (self.open_for * 2).min(self.base_open * MAX_OPEN_FACTOR);
                self.state = State::Open {
                    until: now + self.open_for,
                };
            }
            // A late answer to a request sent before the breaker opened.
            State::Open { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(5);

    #[test]
    fn opens_after_the_threshold_and_probes_once() {
        let mut breaker = Breaker::new(3, PERIOD);
        let now = Instant::now();
        breaker.on_failure(now);
        breaker.on_failure(now);
        assert!(breaker.try_start(now, 0));
        breaker.on_failure(now);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.try_start(now + PERIOD - Duration::from_millis(1), 0));
        assert!(
            !breaker.try_start(now + PERIOD, 1),
            "waits for earlier requests"
        );
        assert!(breaker.try_start(now + PERIOD, 0));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.try_start(now + PERIOD, 0), "one probe only");
        breaker.on_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.try_start(now + PERIOD, 5));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut breaker = Breaker::new(2, PERIOD);
        let now = Instant::now();
        breaker.on_failure(now);
        breaker.on_success();
        breaker.on_failure(now);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_doubles_the_open_period_up_to_a_cap() {
        let mut breaker = Breaker::new(1, PERIOD);
        let mut now = Instant::now();
        breaker.on_failure(now);
        let mut periods = Vec::new();
        for _ in 0..6 {
            let until = breaker.reopens_at().unwrap();
            periods.push(until - now);
            now = until;
            assert!(breaker.try_start(now, 0));
            breaker.on_failure(now);
        }
        let secs: Vec<u64> = periods.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [5, 10, 20, 40, 40, 40]);
        breaker.on_success();
        breaker.on_failure(now);
        assert_eq!(breaker.reopens_at().unwrap() - now, PERIOD);
    }
}
