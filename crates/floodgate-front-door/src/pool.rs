//! An origin pool: its upstreams, how requests are spread over them, and passive ejection of an
//! upstream that keeps failing (as Envoy's outlier detection does with consecutive 5xx).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::Uri;
use tokio::time::Instant;

use super::admission::Admission;
use super::upstream::Connections;
use crate::settings::Balance;

/// Failures in a row that eject an upstream.
const EJECT_AFTER_FAILURES: u32 = 5;
/// How long an ejected upstream gets no traffic.
const EJECTION: Duration = Duration::from_secs(10);

/// One upstream server.
pub(crate) struct Upstream {
    /// Base URL; the request's path and query are appended.
    pub(crate) base: Uri,
    /// Its kept-alive connections.
    pub(crate) connections: Connections,
    in_flight: AtomicU32,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

/// A pool of upstreams behind one admission budget.
pub(crate) struct Pool {
    /// Its config name.
    pub(crate) name: String,
    upstreams: Vec<Upstream>,
    balance: Balance,
    turn: AtomicUsize,
    /// Its concurrency limit and wait queue.
    pub(crate) admission: Arc<Admission>,
}

/// An upstream chosen for one request; counts it as in flight until dropped.
pub(crate) struct Chosen<'p> {
    pub(crate) upstream: &'p Upstream,
}

impl Drop for Chosen<'_> {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool of `upstreams`: at least one, each an http URL with a host (as the config checks).
    pub(crate) fn new(
        name: String,
        upstreams: Vec<Uri>,
        balance: Balance,
        admission: Admission,
    ) -> Self {
        Self {
            name,
            upstreams: upstreams
                .into_iter()
                .map(|base| Upstream {
                    connections: Connections::to(
                        base.authority()
                            .cloned()
                            .expect("the config checks that an upstream URL names a host"),
                    ),
                    base,
                    in_flight: AtomicU32::new(0),
                    failures: AtomicU32::new(0),
                    ejected_until: Mutex::new(None),
                })
                .collect(),
            balance,
            turn: AtomicUsize::new(0),
            admission: Arc::new(admission),
        }
    }

    /// Every upstream.
    pub(crate) fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Chooses an upstream; ejected ones are skipped unless every one is ejected (then all
    /// serve: a pool that sends nothing helps nobody).
    pub(crate) fn choose(&self) -> Chosen<'_> {
        let now = Instant::now();
        let serving = |upstream: &&Upstream| !upstream.is_ejected(now);
        let healthy = self.upstreams.iter().filter(serving).count();
        let upstream = match self.balance {
            Balance::RoundRobin => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                match healthy {
                    0 => &self.upstreams[turn % self.upstreams.len()],
                    _ => (self.upstreams.iter().filter(serving).nth(turn % healthy))
                        .expect("counted"),
                }
            }
            Balance::LeastInFlight => {
                let load = |upstream: &&Upstream| upstream.in_flight.load(Ordering::Relaxed);
                let least = match healthy {
                    0 => self.upstreams.iter().min_by_key(load),
                    _ => self.upstreams.iter().filter(serving).min_by_key(load),
                };
                least.expect("a pool has an upstream")
            }
        };
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        Chosen { upstream }
    }
}

impl Upstream {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| now < until)
    }

    /// Records how a request to it went; the fifth failure in a row ejects it.
    pub(crate) fn record(&self, healthy: bool) {
        if healthy {
            self.failures.store(0, Ordering::Relaxed);
            return;
        }
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= EJECT_AFTER_FAILURES {
            self.failures.store(0, Ordering::Relaxed);
            *self
                .ejected_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + EJECTION);
            tracing::warn!(upstream = %self.base, "ejected after {EJECT_AFTER_FAILURES} failures in a row");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(balance: Balance) -> Pool {
        let upstreams = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
            .iter()
            .map(|url| url.parse().unwrap())
            .collect();
        let admission = Admission::new(8, 8, Duration::from_millis(10));
        Pool::new("p".into(), upstreams, balance, admission)
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_alternates_and_least_in_flight_avoids_the_busy_one() {
        let pool = pool(Balance::RoundRobin);
        let ports: Vec<u16> = (0..4)
            .map(|_| pool.choose().upstream.base.port_u16().unwrap())
            .collect();
        assert_eq!(ports, [1, 2, 1, 2]);

        let pool = super::tests::pool(Balance::LeastInFlight);
        let busy = pool.choose();
        let next = pool.choose();
        assert_ne!(busy.upstream.base, next.upstream.base);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_upstream_is_ejected_for_a_while() {
        let pool = pool(Balance::RoundRobin);
        let failing = &pool.upstreams[0];
        for _ in 0..EJECT_AFTER_FAILURES {
            failing.record(false);
        }
        for _ in 0..4 {
            assert_eq!(pool.choose().upstream.base.port_u16(), Some(2));
        }
        tokio::time::advance(EJECTION).await;
        let ports: Vec<u16> = (0..2)
            .map(|_| pool.choose().upstream.base.port_u16().unwrap())
            .collect();
        assert!(ports.contains(&1));
    }
}
