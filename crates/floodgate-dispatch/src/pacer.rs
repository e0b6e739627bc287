//! When the next request may start: at most `limit` starts in any one-second window, spread
//! evenly, at a rate that backs off when the downstream shows it is overloaded.
//!
//! A start waits for the latest of three rules:
//! 1. **Even spacing** at the current rate, a leaky bucket like Sentinel's `ThrottlingController`
//!    (research/overload.md §1), so the downstream never sees a burst.
//! 2. **A sliding-window log** of the last `limit` starts: the `limit`-th start before this one
//!    must be a whole window ago. This is the hard guarantee, whatever the rate does; a counter
//!    reset every second would allow `2 × limit` across the boundary.
//! 3. **`Retry-After`**: the downstream asked for a pause; nothing starts before it ends.
//!
//! The window is 2 % longer than a second: the downstream timestamps arrivals, not our starts,
//! and the margin absorbs up to 20 ms of jitter between the two at the cost of 2 % of the rate.
//!
//! The rate follows AIMD, as TCP and Netflix's `AIMDLimit` do (research/overload.md §2.1): it
//! halves on an overload signal, at most once per window so one bad second counts once, and
//! climbs back by a twentieth of the limit per success.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// The window the limit applies to, with the jitter margin.
pub const WINDOW: Duration = Duration::from_millis(1_020);

/// Lateness made up at high rates: tokio's timer fires on 1 ms ticks, so above 1,000 starts a
/// second several slots fall due in one tick.
const TIMER_TICKS: Duration = Duration::from_millis(2);

/// Factor applied to the rate on an overload signal.
const DECREASE: f64 = 0.5;

/// Share of the limit regained per success.
const INCREASE: f64 = 0.05;

/// The rate never drops below this share of the limit, so the downstream is still probed.
const FLOOR: f64 = 0.02;

/// Pacing state of one downstream.
#[derive(Debug)]
pub(crate) struct Pacer {
    limit: NonZeroU32,
    rate: f64,
    /// The last `limit` starts, oldest first.
    starts: VecDeque<Instant>,
    /// When the next start is due by even spacing. Kept on the ideal schedule rather than
    /// measured from the last start, so timer lateness (tokio's timer has 1 ms ticks) does not
    /// cost rate.
    next_slot: Option<Instant>,
    held_until: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl Pacer {
    /// A pacer at full rate.
    pub(crate) fn new(limit: NonZeroU32) -> Self {
        Self {
            limit,
            rate: f64::from(limit.get()),
            starts: VecDeque::with_capacity(limit.get() as usize),
            next_slot: None,
            held_until: None,
            last_decrease: None,
        }
    }

    /// The current sending rate, in starts per second of [`WINDOW`].
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// The earliest moment the next request may start (possibly in the past).
    pub(crate) fn next_start(&self) -> Option<Instant> {
        let window = (self.starts.len() == self.limit.get() as usize)
            .then(|| self.starts.front().map(|oldest| *oldest + WINDOW))
            .flatten();
        [self.next_slot, window, self.held_until]
            .into_iter()
            .flatten()
            .max()
    }

    /// Whether a request may start at `now`.
    pub(crate) fn may_start(&self, now: Instant) -> bool {
        self.next_start().is_none_or(|at| at <= now)
    }

    /// Records a start; the caller checked [`may_start`](Self::may_start).
    pub(crate) fn record_start(&mut self, at: Instant) {
        if self.starts.len() == self.limit.get() as usize {
            self.starts.pop_front();
        }
        self.starts.push_back(at);
        // Lateness up to half a spacing, or two timer ticks at high rates, is made up; after an
        // idle spell the schedule restarts from now, so idleness never turns into a burst.
        let spacing = WINDOW.div_f64(self.rate);
        let allowance = (spacing / 2).max(TIMER_TICKS);
        let on_schedule = self
            .next_slot
            .map_or(at, |slot| slot.max(at.checked_sub(allowance).unwrap_or(at)));
        self.next_slot = Some(on_schedule + spacing);
    }

    /// The downstream took a request well: regain some rate.
    pub(crate) fn on_success(&mut self) {
        let limit = f64::from(self.limit.get());
        self.rate = (self.rate + limit * INCREASE).min(limit);
    }

    /// The downstream showed overload (429, 503, 504, a timeout): halve the rate, once per window.
    pub(crate) fn on_overload(&mut self, now: Instant) {
        if self
            .last_decrease
            .is_some_and(|last| now.duration_since(last) < WINDOW)
        {
            return;
        }
        let floor = f64::from(self.limit.get()) * FLOOR;
        self.rate = (self.rate * DECREASE).max(floor);
        self.last_decrease = Some(now);
    }

    /// The downstream asked for a pause (`Retry-After`): no start before `until`.
    pub(crate) fn hold_until(&mut self, until: Instant) {
        self.held_until = self.held_until.max(Some(until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32) -> NonZeroU32 {
        NonZeroU32::new(per_second).unwrap()
    }

    /// Starts as many requests as the pacer allows, as soon as it allows, for `span`.
    fn greedy_starts(pacer: &mut Pacer, from: Instant, span: Duration) -> Vec<Instant> {
        let mut starts = Vec::new();
        let mut now = from;
        while now < from + span {
            if pacer.may_start(now) {
                pacer.record_start(now);
                starts.push(now);
            }
            now += Duration::from_millis(1);
        }
        starts
    }

    fn most_in_one_second(starts: &[Instant]) -> usize {
        (0..starts.len())
            .map(|first| {
                starts[first..]
                    .iter()
                    .take_while(|start| {
                        start.duration_since(starts[first]) < Duration::from_secs(1)
                    })
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn full_rate_is_evenly_spaced_and_never_exceeds_the_limit() {
        let mut pacer = Pacer::new(limit(10));
        let starts = greedy_starts(&mut pacer, Instant::now(), Duration::from_secs(10));
        assert_eq!(most_in_one_second(&starts), 10);
        // 98 % of the limit: the jitter margin is the only loss.
        assert_eq!(starts.len(), 99);
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(102));
        }
    }

    #[test]
    fn late_timers_cost_no_rate_and_idleness_gives_no_burst() {
        let mut pacer = Pacer::new(limit(200));
        let start = Instant::now();
        // Every wake-up comes on the next whole millisecond after the slot.
        let mut now = start;
        let mut starts = Vec::new();
        while now < start + Duration::from_secs(10) {
            if pacer.may_start(now) {
                pacer.record_start(now);
                starts.push(now);
            }
            now += Duration::from_millis(1);
        }
        assert!(most_in_one_second(&starts) <= 200);
        assert!(starts.len() >= 1_950, "{} starts in 10 s", starts.len());

        let after_idle = now + Duration::from_secs(5);
        pacer.record_start(after_idle);
        let next = pacer.next_start().unwrap();
        assert!(next - after_idle >= WINDOW.div_f64(200.0) / 2);
    }

    #[test]
    fn the_window_holds_while_the_rate_jumps_back_up() {
        let mut pacer = Pacer::new(limit(50));
        let start = Instant::now();
        pacer.on_overload(start);
        let mut starts = greedy_starts(&mut pacer, start, Duration::from_millis(500));
        for _ in 0..40 {
            pacer.on_success();
        }
        let resumed = start + Duration::from_millis(500);
        starts.extend(greedy_starts(&mut pacer, resumed, Duration::from_secs(3)));
        assert!(most_in_one_second(&starts) <= 50);
    }

    #[test]
    fn overload_halves_once_per_window_and_success_recovers_gradually() {
        let mut pacer = Pacer::new(limit(10));
        let now = Instant::now();
        pacer.on_overload(now);
        pacer.on_overload(now + Duration::from_millis(500));
        assert_eq!(pacer.rate(), 5.0);
        pacer.on_overload(now + WINDOW);
        assert_eq!(pacer.rate(), 2.5);
        for _ in 0..10 {
            pacer.on_success();
        }
        assert_eq!(pacer.rate(), 7.5);
        for _ in 0..10 {
            pacer.on_success();
        }
        assert_eq!(pacer.rate(), 10.0);
    }

    #[test]
    fn the_rate_has_a_floor() {
        let mut pacer = Pacer::new(limit(100));
        let mut now = Instant::now();
        for _ in 0..20 {
            pacer.on_overload(now);
            now += WINDOW;
        }
        assert_eq!(pacer.rate(), 2.0);
    }

    #[test]
    fn retry_after_holds_every_start() {
        let mut pacer = Pacer::new(limit(10));
        let now = Instant::now();
        pacer.hold_until(now + Duration::from_secs(3));
        pacer.hold_until(now + Duration::from_secs(1));
        assert!(!pacer.may_start(now + Duration::from_millis(2_999)));
        assert!(pacer.may_start(now + Duration::from_secs(3)));
    }
}
