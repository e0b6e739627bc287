//! The generic cell rate algorithm (GCRA), as governor and Brandur Leach's write-up describe it
//! (research/overload.md §1): a rate limit kept as one timestamp per key, the "theoretical arrival
//! time" (TAT) of the next request if the client sent at exactly the rate.
//!
//! A request at `now` is allowed while `max(tat, now) − now ≤ (burst − 1) × interval`; allowing
//! it moves the TAT one interval on. A key whose TAT is in the past is indistinguishable from a
//! key never seen, so it can be forgotten: memory holds only the keys active within the last
//! `burst × interval`.
//!
//! Times are offsets from any fixed origin (a monotonic clock's start), passed in.

use std::time::Duration;

/// One limit: `rate` requests per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: Duration,
    tolerance: Duration,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; store this as the key's new TAT.
    Allow {
        /// The new theoretical arrival time.
        tat: Duration,
    },
    /// Refused; the earliest a retry can be allowed is this far from now.
    Deny {
        /// Time until a retry is allowed.
        retry_after: Duration,
    },
}

impl Gcra {
    /// `rate` requests per `per` (both non-zero), bursts of `burst` (at least 1).
    pub fn new(rate: u32, per: Duration, burst: u32) -> Self {
        let interval = per / rate.max(1);
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
        }
    }

    /// Checks a request at `now` against a key whose stored TAT is `tat` (`None`: never seen or
    /// forgotten).
    pub fn check(&self, tat: Option<Duration>, now: Duration) -> Decision {
        let due = tat.map_or(now, |tat| tat.max(now));
        let ahead = due - now;
        if ahead <= self.tolerance {
            Decision::Allow {
                tat: due + self.interval,
            }
        } else {
            Decision::Deny {
                retry_after: ahead - self.tolerance,
            }
        }
    }

    /// Whether a key with TAT `tat` may be forgotten at `now`: it carries no state any more.
    pub fn is_idle(tat: Duration, now: Duration) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(limit: &Gcra, arrivals: &[Duration]) -> Vec<bool> {
        let mut tat = None;
        arrivals
            .iter()
            .map(|&now| match limit.check(tat, now) {
                Decision::Allow { tat: next } => {
                    tat = Some(next);
                    true
                }
                Decision::Deny { .. } => false,
            })
            .collect()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limit = Gcra::new(10, Duration::from_secs(1), 3);
        let at = |millis: u64| Duration::from_millis(millis);
        let allowed = run(
            &limit,
            &[at(0), at(0), at(0), at(0), at(100), at(150), at(200)],
        );
        assert_eq!(allowed, [true, true, true, false, true, false, true]);
        let Decision::Deny { retry_after } = limit.check(Some(at(400)), at(150)) else {
            panic!("over the burst");
        };
        assert_eq!(retry_after, at(50));
    }

    proptest! {
        /// However requests arrive, any window of length w allows at most burst + w × rate.
        #[test]
        fn never_more_than_burst_plus_rate(
            rate in 1u32..50,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..200, 1..300),
        ) {
            let limit = Gcra::new(rate, Duration::from_secs(1), burst);
            let mut now = Duration::ZERO;
            let arrivals: Vec<Duration> = gaps.iter().map(|gap| {
                now += Duration::from_millis(*gap);
                now
            }).collect();
            let allowed: Vec<Duration> = arrivals.iter().zip(run(&limit, &arrivals))
                .filter_map(|(at, ok)| ok.then_some(*at)).collect();
            for (first, start) in allowed.iter().enumerate() {
                for (count, end) in allowed[first..].iter().enumerate() {
                    let window = (*end - *start).as_secs_f64();
                    let most = f64::from(burst) + window * f64::from(rate);
                    prop_assert!((count + 1) as f64 <= most + 1e-9);
                }
            }
        }

        /// A client that keeps to the rate is never refused.
        #[test]
        fn a_client_at_the_rate_is_always_allowed(rate in 1u32..1000, count in 1usize..200) {
            let limit = Gcra::new(rate, Duration::from_secs(1), 1);
            let interval = Duration::from_secs(1) / rate;
            let arrivals: Vec<Duration> = (0..count as u32).map(|n| interval * n).collect();
            prop_assert!(run(&limit, &arrivals).into_iter().all(|ok| ok));
        }

        /// A refused client that waits the retry-after it was told is allowed.
        #[test]
        fn retry_after_is_honest(rate in 1u32..100, burst in 1u32..10, extra in 1u32..20) {
            let limit = Gcra::new(rate, Duration::from_secs(1), burst);
            let mut tat = None;
            for _ in 0..(burst + extra) {
                if let Decision::Allow { tat: next } = limit.check(tat, Duration::ZERO) {
                    tat = Some(next);
                }
            }
            let Decision::Deny { retry_after } = limit.check(tat, Duration::ZERO) else {
                panic!("the burst is spent");
            };
            let allowed = matches!(limit.check(tat, retry_after), Decision::Allow { .. });
            prop_assert!(allowed);
        }
    }
}
