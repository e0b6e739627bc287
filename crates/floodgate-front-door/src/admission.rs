//! Admission to one pool: an adaptive concurrency limit, partitioned by priority, with a short
//! bounded wait queue in front of it.
//!
//! A request of class `c` goes straight in while fewer than `limit × c.share_of_limit()` are in
//! flight. Otherwise it waits, in its class's FIFO, for at most the queue timeout; a freed slot
//! goes to the highest class that fits, first come first served within a class. A waiter whose
//! client hung up (its future dropped) is skipped. A full queue sheds its newest waiter of the
//! lowest class to make room for a higher one, or else the newcomer; an expired wait is shed too:
//! `503 overloaded`. Work already admitted always finishes; only new work waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use floodgate_core::{AdaptiveLimit, Priority};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The ceiling's starting point as a share of the pool's maximum: start careful, grow by use.
const INITIAL_SHARE: u32 = 4;
/// The limit never goes below this, so a pool always gets some traffic to measure.
const MIN_LIMIT: u32 = 2;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// The wait queue is full.
    QueueFull,
    /// It waited and was not admitted: the queue timeout passed, or it made room for a higher
    /// class.
    Waited,
}

/// The admission state of one pool.
pub(crate) struct Admission {
    state: Mutex<State>,
    queue_capacity: usize,
    queue_timeout: Duration,
}

struct State {
    limit: AdaptiveLimit,
    in_flight: u32,
    /// One FIFO per class that can wait (every class but `critical`), highest first.
    waiting: [VecDeque<oneshot::Sender<Permit>>; 4],
}

impl State {
    fn fits(&self, class: Priority) -> bool {
        f64::from(self.in_flight) < f64::from(self.limit.limit()) * class.share_of_limit()
    }

    fn queued(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }

    /// Whether anyone of `class` or a higher one is waiting: they go first. Lower classes
    /// waiting do not hold a higher one back.
    fn queued_ahead_of(&self, class: Priority) -> bool {
        self.waiting[..=queue_index(class)]
            .iter()
            .any(|queue| !queue.is_empty())
    }

    /// Makes room in a full queue by shedding the newest waiter of the lowest class below
    /// `class`; whether there was one.
    fn evict_below(&mut self, class: Priority) -> bool {
        let lower = &mut self.waiting[queue_index(class) + 1..];
        // Dropping its sender wakes the waiter with a refusal.
        lower
            .iter_mut()
            .rev()
            .find_map(|queue| queue.pop_back())
            .is_some()
    }

    /// Takes a slot.
    fn take(&mut self, admission: &Arc<Admission>) -> Permit {
        self.in_flight += 1;
        Permit {
            admission: Arc::clone(admission),
            started: Instant::now(),
            in_flight_at_start: self.in_flight,
            finished: false,
        }
    }

    /// Hands freed slots to waiters, highest class first. A permit sent to a waiter that is
    /// already gone comes back and is given to the next one; one sent to a waiter that goes away
    /// before reading it is dropped with the channel, which frees the slot.
    fn grant(&mut self, admission: &Arc<Admission>) {
        for (index, class) in Priority::ALL[1..].iter().enumerate() {
            while self.fits(*class) {
                let Some(waiter) = self.waiting[index].pop_front() else {
                    break;
                };
                if let Err(mut unclaimed) = waiter.send(self.take(admission)) {
                    // Returned under this lock: undo by hand, not through `Drop`.
                    unclaimed.finished = true;
                    self.in_flight -= 1;
                }
            }
        }
    }
}

/// A slot in a pool; give it back with [`Permit::finish`] (dropping it frees the slot without
/// feeding the limit).
pub struct Permit {
    admission: Arc<Admission>,
    started: Instant,
    in_flight_at_start: u32,
    finished: bool,
}

impl Admission {
    /// A pool's admission with at most `max_concurrency` in flight.
    pub(crate) fn new(
        max_concurrency: u32,
        queue_capacity: usize,
        queue_timeout: Duration,
    ) -> Self {
        let max = max_concurrency.max(MIN_LIMIT);
        let initial = (max / INITIAL_SHARE).max(MIN_LIMIT);
        Self {
            state: Mutex::new(State {
                limit: AdaptiveLimit::new(initial, MIN_LIMIT, max),
                in_flight: 0,
                waiting: Default::default(),
            }),
            queue_capacity,
            queue_timeout,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current limit and the requests in flight.
    pub(crate) fn load(&self) -> (u32, u32) {
        let state = self.state();
        (state.limit.limit(), state.in_flight)
    }

    /// Admits a request of `class` at once if it fits and nobody of its class or above waits.
    pub(crate) fn try_admit(self: &Arc<Self>, class: Priority) -> Option<Permit> {
        let mut state = self.state();
        (state.fits(class) && !state.queued_ahead_of(class)).then(|| state.take(self))
    }

    /// Admits a request of `class` (not `critical`: those bypass admission), waiting if needed.
    pub(crate) async fn admit(self: &Arc<Self>, class: Priority) -> Result<Permit, Shed> {
        let granted = {
            let mut state = self.state();
            if state.fits(class) && !state.queued_ahead_of(class) {
                return Ok(state.take(self));
            }
            if state.queued() >= self.queue_capacity && !state.evict_below(class) {
                return Err(Shed::QueueFull);
            }
            let (grant, granted) = oneshot::channel();
            state.waiting[queue_index(class)].push_back(grant);
            granted
        };
        match tokio::time::timeout(self.queue_timeout, granted).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out: dropping the receiver makes a later grant skip this request.
            _ => Err(Shed::Waited),
        }
    }
}

/// The wait queue of a class; `critical` never waits, and is filed with `checkout` if asked.
fn queue_index(class: Priority) -> usize {
    (class as usize).saturating_sub(1)
}

impl Permit {
    /// Gives the slot back, feeding the limit how the request went.
    pub fn finish(mut self, failed: bool) {
        self.release(failed);
    }

    fn release(&mut self, failed: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        let admission = Arc::clone(&self.admission);
        let mut state = admission.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        state
            .limit
            .on_sample(self.started.elapsed(), self.in_flight_at_start, failed);
        state.grant(&admission);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Abandoned mid-request (the client hung up): the slot is free, the sample says nothing.
        if !self.finished {
            self.finished = true;
            let admission = Arc::clone(&self.admission);
            let mut state = admission.state();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.grant(&admission);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::task::JoinHandle;

    use super::*;

    fn admission(max: u32, queue: usize) -> Arc<Admission> {
        Arc::new(Admission::new(max, queue, Duration::from_millis(100)))
    }

    /// A pool of eight (a limit of two at first) with a queue of one, both slots held.
    async fn full_pool() -> (Arc<Admission>, [Permit; 2]) {
        let pool = admission(8, 1);
        let held = [
            pool.admit(Priority::Checkout).await.unwrap(),
            pool.admit(Priority::Checkout).await.unwrap(),
        ];
        (pool, held)
    }

    /// A request of `class` waiting for a slot, given back at once when it gets one.
    async fn waiter(pool: &Arc<Admission>, class: Priority) -> JoinHandle<Result<(), Shed>> {
        let waiting = tokio::spawn({
            let pool = Arc::clone(pool);
            async move { pool.admit(class).await.map(|permit| permit.finish(false)) }
        });
        tokio::task::yield_now().await;
        waiting
    }

    #[tokio::test(start_paused = true)]
    async fn lower_classes_stop_at_their_share_and_higher_ones_go_first() {
        // max 40 → starts at a limit of 10: browse may fill 9, checkout all 10.
        let pool = admission(40, 10);
        let mut held = Vec::new();
        for _ in 0..9 {
            held.push(pool.admit(Priority::Browse).await.unwrap());
        }
        let browse = waiter(&pool, Priority::Browse).await;
        let checkout = pool.admit(Priority::Checkout).await.unwrap();
        assert_eq!(pool.load(), (10, 10));
        // One slot frees: checkout is served before the browse waiter would fit again.
        held.pop().unwrap().finish(false);
        checkout.finish(false);
        assert!(browse.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_and_a_long_wait_are_shed() {
        let (pool, _held) = full_pool().await;
        let waiting = waiter(&pool, Priority::Cart).await;
        assert_eq!(
            pool.admit(Priority::Cart).await.err(),
            Some(Shed::QueueFull)
        );
        assert_eq!(waiting.await.unwrap(), Err(Shed::Waited));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_room_for_a_higher_class() {
        let (pool, _held) = full_pool().await;
        let browse = waiter(&pool, Priority::Browse).await;
        let checkout = waiter(&pool, Priority::Checkout).await;
        assert_eq!(browse.await.unwrap(), Err(Shed::Waited), "evicted");
        assert_eq!(
            pool.admit(Priority::Background).await.err(),
            Some(Shed::QueueFull)
        );
        assert_eq!(
            checkout.await.unwrap(),
            Err(Shed::Waited),
            "timed out in turn"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_went_away_is_skipped() {
        let pool = admission(8, 10);
        let first = pool.admit(Priority::Checkout).await.unwrap();
        let _second = pool.admit(Priority::Checkout).await.unwrap();
        let gone = waiter(&pool, Priority::Checkout).await;
        gone.abort();
        let _ = gone.await;
        let next = waiter(&pool, Priority::Checkout).await;
        first.finish(false);
        assert!(next.await.unwrap().is_ok());
    }
}
