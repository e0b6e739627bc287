//! The connections a listener holds open: at most so many in all and so many from one client
//! address. A connection beyond either cap is not refused outright: it gets one of a few
//! overflow seats, where only a health check is answered, so a listener full of hostile
//! connections still tells its load balancer the truth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::lock;

/// Connections beyond the caps that may wait at once for their one request; beyond these, a
/// new connection is closed unread. Enough for a load balancer's probes, too few to matter.
const OVERFLOW_SEATS: usize = 64;

/// Why a connection was held to one request, or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Beyond {
    /// `max_connections` was reached.
    Listener,
    /// `max_connections_per_ip` was reached for its address.
    ClientAddress,
}

/// How a listener's connections fared, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections open now, in seats and overflow seats.
    open: AtomicUsize,
    /// Connections beyond `max_connections`.
    beyond_listener: AtomicU64,
    /// Connections beyond `max_connections_per_ip`.
    beyond_client_address: AtomicU64,
    /// Connections closed because a head was not whole in time.
    head_timeouts: AtomicU64,
    /// Kept-alive connections closed for being idle.
    idle_timeouts: AtomicU64,
    /// Requests whose body came slower than the minimum rate.
    body_timeouts: AtomicU64,
    /// Answers whose client stopped reading.
    send_timeouts: AtomicU64,
}

/// A limit a connection was closed by, as [`ConnectionStats`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// `header_read_timeout`.
    Head,
    /// `idle_timeout`.
    Idle,
    /// `body_min_rate_bytes_per_s`.
    Body,
    /// `send_timeout`.
    Send,
}

/// A listener's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionFigures {
    /// Connections open.
    pub open: usize,
    /// Connections beyond `max_connections`, since start.
    pub beyond_listener: u64,
    /// Connections beyond `max_connections_per_ip`, since start.
    pub beyond_client_address: u64,
    /// Connections closed by each timeout, since start: head, idle, body, send.
    pub timed_out: [(TimedOut, u64); 4],
}

impl ConnectionStats {
    /// Counts a connection closed by `limit`.
    pub(super) fn timed_out(&self, limit: TimedOut) {
        let counter = match limit {
            TimedOut::Head => &self.head_timeouts,
            TimedOut::Idle => &self.idle_timeouts,
            TimedOut::Body => &self.body_timeouts,
            TimedOut::Send => &self.send_timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn figures(&self) -> ConnectionFigures {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ConnectionFigures {
            open: self.open.load(Ordering::Relaxed),
            beyond_listener: load(&self.beyond_listener),
            beyond_client_address: load(&self.beyond_client_address),
            timed_out: [
                (TimedOut::Head, load(&self.head_timeouts)),
                (TimedOut::Idle, load(&self.idle_timeouts)),
                (TimedOut::Body, load(&self.body_timeouts)),
                (TimedOut::Send, load(&self.send_timeouts)),
            ],
        }
    }
}

/// The seats of one listener.
pub(super) struct Seats {
    max_connections: usize,
    max_per_address: usize,
    taken: std::sync::Mutex<Taken>,
    overflow: AtomicUsize,
    stats: Arc<ConnectionStats>,
}

/// The seats taken, in all and by address (only addresses with a connection open).
#[derive(Default)]
struct Taken {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Where a new connection sits; gives its seat back when dropped.
pub(super) struct Seat {
    seats: Arc<Seats>,
    address: IpAddr,
    /// `None` in a seat; the cap it is beyond in an overflow seat.
    pub(super) beyond: Option<Beyond>,
}

impl Seats {
    pub(super) fn new(
        max_connections: usize,
        max_per_address: usize,
        stats: Arc<ConnectionStats>,
    ) -> Arc<Self> {
        Arc::new(Self {
            max_connections,
            max_per_address,
            taken: std::sync::Mutex::default(),
            overflow: AtomicUsize::new(0),
            stats,
        })
    }

    /// A seat for a connection from `address`, an overflow seat beyond a cap, or `None` when
    /// the overflow seats are taken too (the connection is then closed unread).
    pub(super) fn take(self: &Arc<Self>, address: IpAddr) -> Option<Seat> {
        let beyond = {
            let mut taken = lock(&self.taken);
            let from_address = taken.by_address.get(&address).copied().unwrap_or(0);
            if taken.total >= self.max_connections {
                Beyond::Listener
            } else if from_address >= self.max_per_address {
                Beyond::ClientAddress
            } else {
                taken.total += 1;
                taken.by_address.insert(address, from_address + 1);
                self.stats.open.fetch_add(1, Ordering::Relaxed);
                return Some(self.seat(address, None));
            }
        };
        let beyond_count = match beyond {
            Beyond::Listener => &self.stats.beyond_listener,
            Beyond::ClientAddress => &self.stats.beyond_client_address,
        };
        beyond_count.fetch_add(1, Ordering::Relaxed);
        if self.overflow.fetch_add(1, Ordering::Relaxed) >= OVERFLOW_SEATS {
            self.overflow.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(self.seat(address, Some(beyond)))
    }

    fn seat(self: &Arc<Self>, address: IpAddr, beyond: Option<Beyond>) -> Seat {
        Seat {
            seats: Arc::clone(self),
            address,
            beyond,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let seats = &self.seats;
        seats.stats.open.fetch_sub(1, Ordering::Relaxed);
        if self.beyond.is_some() {
            seats.overflow.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut taken = lock(&seats.taken);
        taken.total -= 1;
        if let Some(count) = taken.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                taken.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_capped_in_all_and_by_address_then_overflow_then_none() {
        let stats = Arc::new(ConnectionStats::default());
        let seats = Seats::new(3, 2, Arc::clone(&stats));
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        let first = [seats.take(a), seats.take(a)];
        assert!(
            first
                .iter()
                .all(|seat| seat.as_ref().unwrap().beyond.is_none())
        );
        let third_from_a = seats.take(a).unwrap();
        assert_eq!(third_from_a.beyond, Some(Beyond::ClientAddress));
        let from_b = seats.take(b).unwrap();
        assert_eq!(from_b.beyond, None);
        assert_eq!(seats.take(c).unwrap().beyond, Some(Beyond::Listener));
        drop(first);
        assert_eq!(seats.take(c).unwrap().beyond, None, "seats come back");
        let held = [seats.take(c).unwrap(), seats.take(c).unwrap()];
        assert!(
            held.iter().all(|seat| seat.beyond.is_none()),
            "three seats taken"
        );
        // One overflow seat is the third connection from `a`'s.
        let overflow: Vec<_> = (1..OVERFLOW_SEATS).map(|_| seats.take(b)).collect();
        assert!(
            overflow
                .iter()
                .all(|seat| seat.as_ref().unwrap().beyond.is_some())
        );
        assert!(
            seats.take(b).is_none(),
            "the overflow seats are bounded too"
        );
        drop((overflow, third_from_a, from_b, held));
        let figures = stats.figures();
        assert_eq!(figures.open, 0, "every seat given back");
        assert!(figures.beyond_listener > OVERFLOW_SEATS as u64);
        assert!(
            lock(&seats.taken).by_address.is_empty(),
            "no address is kept once gone"
        );
    }
}
