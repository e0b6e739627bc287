//! Rate limits of a route: GCRA per client key and for the whole route.
//!
//! A key's whole state is one timestamp (its TAT), and a TAT in the past carries no information
//! (`Gcra::is_idle`), so idle keys are dropped whenever a shard has doubled since its last sweep:
//! memory follows the clients active in the last burst window, not every client ever seen. If a
//! flood of distinct keys still fills [`MAX_KEYS`], new keys are let through untracked: a flood of
//! distinct keys is not slowed by per-client limits anyway, and the route's global limit still
//! holds.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use floodgate_core::gcra::{Decision, Gcra};
use tokio::time::Instant;

/// Shards of the key table, each behind its own lock.
const SHARDS: usize = 32;
/// Keys tracked per limiter at most.
pub(crate) const MAX_KEYS: usize = 1_000_000;
/// A shard is swept when it reaches this many keys at the least.
const MIN_SWEEP_LEN: usize = 1_024;

/// A per-key limit.
pub struct KeyedLimiter {
    gcra: Gcra,
    origin: Instant,
    spread: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    tats: HashMap<Box<str>, Duration>,
    sweep_at: usize,
}

impl KeyedLimiter {
    /// `rate` per second per key, bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            gcra: Gcra::new(rate, Duration::from_secs(1), burst),
            origin: Instant::now(),
            spread: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Whether `key` may send now; `Err` holds how long until it may.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now().duration_since(self.origin);
        let shard = &self.shards[self.spread.hash_one(key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = shard.tats.get(key).copied();
        match self.gcra.check(tat, now) {
            Decision::Deny { retry_after } => Err(retry_after),
            Decision::Allow { tat: next } => {
                if let Some(stored) = shard.tats.get_mut(key) {
                    *stored = next;
                    return Ok(());
                }
                if shard.tats.len() >= shard.sweep_at.max(MIN_SWEEP_LEN) {
                    shard.tats.retain(|_, tat| !Gcra::is_idle(*tat, now));
                    shard.sweep_at = shard.tats.len() * 2;
                }
                if shard.tats.len() < MAX_KEYS / SHARDS {
                    shard.tats.insert(key.into(), next);
                }
                Ok(())
            }
        }
    }

    /// Whether `key` may send now, without counting a send: `Err` holds how long until it may.
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now().duration_since(self.origin);
        let shard = &self.shards[self.spread.hash_one(key) as usize % SHARDS];
        let tat = (shard.lock().unwrap_or_else(PoisonError::into_inner))
            .tats
            .get(key)
            .copied();
        match self.gcra.check(tat, now) {
            Decision::Deny { retry_after } => Err(retry_after),
            Decision::Allow { .. } => Ok(()),
        }
    }

    /// Keys tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .tats
                    .len()
            })
            .sum()
    }
}

/// One limit for a whole route.
pub(crate) struct GlobalLimiter {
    gcra: Gcra,
    origin: Instant,
    tat: Mutex<Option<Duration>>,
}

impl GlobalLimiter {
    /// `rate` per second; bursts of one second's worth.
    pub(crate) fn new(rate: u32) -> Self {
        Self {
            gcra: Gcra::new(rate, Duration::from_secs(1), rate),
            origin: Instant::now(),
            tat: Mutex::new(None),
        }
    }

    /// Whether the route may take a request now; `Err` holds how long until it may.
    pub(crate) fn check(&self) -> Result<(), Duration> {
        let now = Instant::now().duration_since(self.origin);
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        match self.gcra.check(*tat, now) {
            Decision::Allow { tat: next } => {
                *tat = Some(next);
                Ok(())
            }
            Decision::Deny { retry_after } => Err(retry_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_key_gets_its_own_burst_then_waits() {
        let limiter = KeyedLimiter::new(10, 2);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(limiter.check("b").is_ok());
        tokio::time::advance(wait).await;
        assert!(limiter.check("a").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_million_distinct_keys_do_not_grow_the_table_without_bound() {
        // 1,000 new clients every millisecond for a second, each sending once at 10/s.
        let limiter = KeyedLimiter::new(10, 1);
        let mut most = 0;
        for millisecond in 0..1_000 {
            for client in 0..1_000 {
                assert!(limiter.check(&format!("{millisecond}-{client}")).is_ok());
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            most = most.max(limiter.tracked());
        }
        // A key lives 100 ms (one interval): about 100,000 are ever live at once; sweeps run
        // when a shard doubles, so at most twice that is held.
        assert!(
            most <= 2 * 100_000 + SHARDS * MIN_SWEEP_LEN,
            "{most} keys held"
        );
        assert!(most < MAX_KEYS);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_limit_counts_everyone() {
        let limiter = GlobalLimiter::new(5);
        for _ in 0..5 {
            assert!(limiter.check().is_ok());
        }
        assert_eq!(limiter.check().unwrap_err(), Duration::from_millis(200));
    }
}
