//! The queue of one drop's waiting room: invisible while there is room, FIFO once there is not,
//! admitting as passes are used or expire, skipping shoppers who stopped polling, and closed when
//! the drop sells out.
//!
//! Shoppers who join in the pre-queue, before the start, are drawn into a random order at the
//! start: sorted by HMAC-SHA256(seed, identity key), a keyed permutation anyone can check once
//! the seed is published; its SHA-256 is published from the moment the room opens, so the seed
//! cannot be chosen after seeing who joined.
//!
//! Positions come from a counter, as in a bakery: the room keeps, per waiting shopper, only the
//! digest of their identity and when they last polled (12 bytes in two ring buffers), plus one
//! map entry from identity to place. Everyone at or below `admitted_through` has had their turn.
//! Time is passed in; nothing here reads a clock.

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::Timestamp;
use crate::sharded_map::{Entry, ShardedMap};

/// How far back the admission rate for ETAs is measured.
const RATE_WINDOW_MS: i64 = 60_000;

/// The rules of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRules {
    /// Passes in force at once at most.
    pub max_active: u32,
    /// How long a pass lasts unused.
    pub pass_ttl_ms: i64,
    /// A waiter silent this long loses their place.
    pub abandon_after_ms: i64,
    /// At most this many admissions in any minute (`None`: as fast as passes free up).
    pub admit_per_minute: Option<u32>,
}

impl RoomRules {
    /// Rules that admit as fast as passes free up, with no ceiling per minute.
    pub const fn unthrottled(max_active: u32, pass_ttl_ms: i64, abandon_after_ms: i64) -> Self {
        Self {
            max_active,
            pass_ttl_ms,
            abandon_after_ms,
            admit_per_minute: None,
        }
    }
}

/// Where a shopper stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Holds pass number `pass`, valid until `expires_at`.
    Admitted {
        /// The pass number.
        pass: u64,
        /// When it lapses unused.
        expires_at: Timestamp,
    },
    /// Waiting at `position`, with `ahead` shoppers before them.
    Waiting {
        /// Their position.
        position: u64,
        /// Shoppers ahead (abandoned ones included until they are skipped).
        ahead: u64,
        /// Estimated seconds until admission, from the recent admission rate (`None` before
        /// anyone has been admitted in the window).
        eta_seconds: Option<u64>,
    },
    /// In the pre-queue: the draw at `starts_at` decides the place.
    Prequeue {
        /// When the draw happens.
        starts_at: Timestamp,
    },
    /// The drop sold out: nothing to wait for.
    SoldOut,
    /// The place lapsed (not polled in time, or the pass expired unused); joining again starts
    /// at the back.
    Lapsed,
}

/// Running totals of a room since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomTotals {
    /// Shoppers who took a new place.
    pub arrivals: u64,
    /// Joins answered "sold out".
    pub turned_away: u64,
    /// Places handed out in the queue (the last position).
    pub queued: u64,
    /// Every queue position up to here has had its turn (admitted, or skipped for silence).
    pub head: u64,
    /// Passes issued, at once or from the queue.
    pub admitted: u64,
}

/// A pass's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PassState {
    expires_at: Timestamp,
    used: bool,
    /// An order with it is being placed; it keeps its slot until the order's outcome.
    held: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Prequeue,
    Waiting(u64),
    Admitted(u64),
}

/// A [`Place`] in eight bytes, so an entry of the identity map costs sixteen: the top two bits
/// say which place, the rest hold the position or pass number (counters that never reach 2^62).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedPlace(u64);

const NUMBER_BITS: u64 = (1 << 62) - 1;

impl From<Place> for PackedPlace {
    fn from(place: Place) -> Self {
        Self(match place {
            Place::Waiting(position) => position & NUMBER_BITS,
            Place::Admitted(pass) => 1 << 62 | (pass & NUMBER_BITS),
            Place::Prequeue => 2 << 62,
        })
    }
}

impl PackedPlace {
    fn unpack(self) -> Place {
        match self.0 >> 62 {
            0 => Place::Waiting(self.0 & NUMBER_BITS),
            1 => Place::Admitted(self.0 & NUMBER_BITS),
            _ => Place::Prequeue,
        }
    }
}

/// The pre-queue and its draw.
#[derive(Debug)]
struct Draw {
    starts_at: Timestamp,
    seed: [u8; 32],
    /// Who joined before the start, until the draw places them.
    entrants: Vec<u64>,
    /// How many there were, once drawn.
    drawn: Option<usize>,
}

/// The sort key of `identity` in the draw seeded with `seed`: the first eight bytes of
/// HMAC-SHA256(seed, identity key as eight big-endian bytes), read big-endian.
pub fn draw_key(seed: &[u8; 32], identity: u64) -> u64 {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed).expect("HMAC takes keys of any length");
    mac.update(&identity.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    u64::from_be_bytes(tag[..8].try_into().expect("eight bytes"))
}

/// Why a pass cannot buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassRefusal {
    /// Unknown, or expired.
    #[error("the pass is not in force")]
    NotInForce,
    /// Already used for an order.
    #[error("the pass was already used")]
    Used,
}

/// What a room publishes about its draw's seed before the draw: SHA-256 of the seed.
pub fn commitment(seed: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(seed).into()
}

/// The passes a room lets be in force while only `share` (0 to 1) of `max_active` is allowed,
/// never fewer than one.
pub fn throttled_cap(max_active: u32, share: f64) -> u32 {
    let scaled = (f64::from(max_active) * share.clamp(0.0, 1.0)).ceil() as u32;
    scaled.clamp(1, max_active)
}

/// A room's turns over the last minute, the basis of its waiting-time estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentTurns {
    /// Passes issued.
    pub admitted: u64,
    /// Places skipped because their shopper stopped polling.
    pub skipped: u64,
    /// Milliseconds since the first of those admissions.
    pub span_ms: i64,
}

impl RecentTurns {
    /// Seconds until `ahead` more turns: the share of recent turns skipped is taken out of
    /// `ahead`, and the rest go at the recent admission rate. `None` before anyone was admitted.
    pub fn eta_seconds(&self, ahead: u64) -> Option<u64> {
        if self.admitted == 0 {
            return None;
        }
        let admitted = self.admitted as f64;
        let per_second = admitted * 1_000.0 / self.span_ms.max(1_000) as f64;
        let still_there = admitted / (admitted + self.skipped as f64);
        Some(((ahead as f64 * still_there + 1.0) / per_second).ceil() as u64)
    }
}

/// One drop's waiting room.
#[derive(Debug)]
pub struct WaitingRoom {
    rules: RoomRules,
    /// Shoppers who took a new place (pre-queue, instant pass or queue), rejoiners included.
    arrivals: u64,
    /// Joins answered "sold out" (each attempt: nobody's place is kept to tell them apart).
    turned_away: u64,
    /// Positions handed out so far.
    joined: u64,
    /// Every position up to here has been admitted or skipped.
    admitted_through: u64,
    /// Identity digests of positions `admitted_through + 1 ..= joined`.
    waiting_ids: VecDeque<u64>,
    /// Their last poll, in seconds after `epoch`.
    waiting_seen: VecDeque<u32>,
    epoch: Timestamp,
    /// Sharded, so growing past millions of shoppers never stalls the room for a full rehash.
    places: ShardedMap<u64, PackedPlace>,
    passes: HashMap<u64, PassState>,
    /// Passes by expiry; every pass lives equally long, so issue order is expiry order.
    expiries: VecDeque<(Timestamp, u64)>,
    /// Passes issued and neither used nor expired.
    in_force: u32,
    issued: u64,
    /// Recent admissions, for the rate behind ETAs.
    recent_admissions: VecDeque<Timestamp>,
    /// Recent places skipped because their shopper stopped polling, for the share of the
    /// queue ahead that ETAs leave out.
    recent_skips: VecDeque<Timestamp>,
    sold_out: bool,
    draw: Draw,
    /// Passes allowed in force now: `max_active`, or less while the shop behind is saturated.
    cap: u32,
}

impl WaitingRoom {
    /// An empty room opening at `now` for a drop starting at `starts_at`; `seed` (random, kept
    /// secret until the start) orders the pre-queue.
    pub fn new(rules: RoomRules, starts_at: Timestamp, seed: [u8; 32], now: Timestamp) -> Self {
        Self {
            rules,
            arrivals: 0,
            turned_away: 0,
            joined: 0,
            admitted_through: 0,
            waiting_ids: VecDeque::new(),
            waiting_seen: VecDeque::new(),
            epoch: now,
            places: ShardedMap::new(),
            passes: HashMap::new(),
            expiries: VecDeque::new(),
            in_force: 0,
            issued: 0,
            recent_admissions: VecDeque::new(),
            recent_skips: VecDeque::new(),
            sold_out: false,
            cap: rules.max_active,
            draw: Draw {
                starts_at,
                seed,
                entrants: Vec::new(),
                drawn: None,
            },
        }
    }

    /// Makes room for `shoppers` more places, so an announced surge grows nothing while it lasts.
    pub fn presize(&mut self, shoppers: usize) {
        self.places.reserve(shoppers);
        self.waiting_ids.reserve(shoppers);
        self.waiting_seen.reserve(shoppers);
    }

    /// SHA-256 of the seed: published before the start, it binds the draw in advance.
    pub fn commitment(&self) -> [u8; 32] {
        commitment(&self.draw.seed)
    }

    /// The seed, once the draw has happened.
    pub fn revealed_seed(&self) -> Option<[u8; 32]> {
        self.draw.drawn.map(|_| self.draw.seed)
    }

    /// How many shoppers joined the pre-queue.
    pub fn entrants(&self) -> usize {
        self.draw.drawn.unwrap_or(self.draw.entrants.len())
    }

    /// Shoppers waiting (lapsed ones included until skipped).
    pub fn waiting(&self) -> u64 {
        self.joined - self.admitted_through
    }

    /// The room's running totals, for timelines: what grew between two readings happened in
    /// between.
    pub fn totals(&self) -> RoomTotals {
        RoomTotals {
            arrivals: self.arrivals,
            turned_away: self.turned_away,
            queued: self.joined,
            head: self.admitted_through,
            admitted: self.issued,
        }
    }

    /// Admissions over the last minute (as of the last event).
    pub fn admitted_last_minute(&self) -> usize {
        self.recent_admissions.len()
    }

    /// Seconds until the last waiter's turn at the recent admission rate; `None` while nobody
    /// waits or nobody was admitted in the last minute.
    pub fn eta_of_last(&self, now: Timestamp) -> Option<u64> {
        let ahead = self.waiting().checked_sub(1)?;
        self.eta(ahead, now)
    }

    /// Passes in force.
    pub fn in_force(&self) -> u32 {
        self.in_force
    }

    /// Admits only `share` (0 to 1) of `max_active` while the shop behind the room is
    /// saturated; passes already in force stay valid, fewer new ones are issued.
    pub fn throttle(&mut self, share: f64) {
        self.cap = throttled_cap(self.rules.max_active, share);
    }

    /// Marks the drop sold out (or back in stock): waiters learn it on their next poll.
    pub fn set_sold_out(&mut self, sold_out: bool) {
        self.sold_out = sold_out;
    }

    /// A shopper asks to enter: admitted at once while there is room and nobody waits, else
    /// placed at the back. Asking again returns the same place.
    pub fn join(&mut self, identity: u64, now: Timestamp) -> Standing {
        self.advance(now);
        if self.sold_out {
            self.turned_away += 1;
            return Standing::SoldOut;
        }
        if self.draw.drawn.is_none() {
            if let Entry::Vacant(place) = self.places.entry(identity) {
                place.insert(Place::Prequeue.into());
                self.draw.entrants.push(identity);
                self.arrivals += 1;
            }
            return Standing::Prequeue {
                starts_at: self.draw.starts_at,
            };
        }
        match self.standing(identity, now) {
            Standing::Lapsed => {}
            standing => return standing,
        }
        self.arrivals += 1;
        if self.waiting() == 0 && self.in_force < self.cap && !self.at_ceiling() {
            let pass = self.issue(identity, now);
            return self.admitted(pass);
        }
        self.joined += 1;
        self.waiting_ids.push_back(identity);
        self.waiting_seen.push_back(self.seconds(now));
        self.places
            .insert(identity, Place::Waiting(self.joined).into());
        self.standing(identity, now)
    }

    /// A waiting shopper polls: proves they are still there and learns where they stand.
    pub fn poll(&mut self, identity: u64, now: Timestamp) -> Standing {
        self.advance(now);
        if let Some(Place::Waiting(position)) = self.places.get(&identity).map(|p| p.unpack())
            && position > self.admitted_through
        {
            let index = (position - self.admitted_through - 1) as usize;
            self.waiting_seen[index] = self.seconds(now);
        }
        if self.sold_out {
            return Standing::SoldOut;
        }
        self.standing(identity, now)
    }

    /// Spends a pass on an order; it frees its slot for the next waiter.
    pub fn use_pass(&mut self, pass: u64, now: Timestamp) -> Result<(), PassRefusal> {
        self.advance(now);
        let state = self.passes.get_mut(&pass).ok_or(PassRefusal::NotInForce)?;
        if state.used {
            return Err(PassRefusal::Used);
        }
        if now >= state.expires_at {
            return Err(PassRefusal::NotInForce);
        }
        state.used = true;
        self.in_force -= 1;
        self.advance(now);
        Ok(())
    }

    /// Holds a pass while an order with it is placed: it cannot buy twice meanwhile, and keeps
    /// its slot until [`Self::settle_pass`] says whether it was spent.
    pub fn hold_pass(&mut self, pass: u64, now: Timestamp) -> Result<(), PassRefusal> {
        self.advance(now);
        let state = self.passes.get_mut(&pass).ok_or(PassRefusal::NotInForce)?;
        if state.used || state.held {
            return Err(PassRefusal::Used);
        }
        if now >= state.expires_at {
            return Err(PassRefusal::NotInForce);
        }
        state.held = true;
        Ok(())
    }

    /// Ends a hold: a `spent` pass frees its slot for the next waiter; otherwise (the order
    /// failed on the shop's side) the pass can buy again until it expires.
    pub fn settle_pass(&mut self, pass: u64, spent: bool, now: Timestamp) {
        if let Some(state) = self.passes.get_mut(&pass) {
            state.held = false;
            if spent && !state.used {
                state.used = true;
                self.in_force -= 1;
            }
        }
        self.advance(now);
    }

    /// Expires passes, then admits waiters in order while passes are free, skipping those who
    /// stopped polling.
    pub fn advance(&mut self, now: Timestamp) {
        if self.draw.drawn.is_none() && now >= self.draw.starts_at {
            self.run_draw(now);
        }
        while let Some(&(expires_at, pass)) = self.expiries.front()
            && expires_at <= now
        {
            self.expiries.pop_front();
            if self.passes.remove(&pass).is_some_and(|state| !state.used) {
                self.in_force -= 1;
            }
        }
        let window_start = now.add_millis(-RATE_WINDOW_MS);
        for recent in [&mut self.recent_admissions, &mut self.recent_skips] {
            while recent.front().is_some_and(|at| *at < window_start) {
                recent.pop_front();
            }
        }
        let silent_since = self.seconds(now.add_millis(-self.rules.abandon_after_ms));
        while self.in_force < self.cap && !self.sold_out && !self.at_ceiling() {
            let (Some(identity), Some(seen)) =
                (self.waiting_ids.pop_front(), self.waiting_seen.pop_front())
            else {
                break;
            };
            self.admitted_through += 1;
            if seen < silent_since {
                self.places.remove(&identity);
                self.recent_skips.push_back(now);
                continue;
            }
            self.issue(identity, now);
        }
    }

    /// Whether the last minute's admissions reached the hand-set ceiling.
    fn at_ceiling(&self) -> bool {
        self.rules
            .admit_per_minute
            .is_some_and(|ceiling| self.recent_admissions.len() >= ceiling as usize)
    }

    /// Places the pre-queue in the order of its draw keys, behind nobody.
    fn run_draw(&mut self, now: Timestamp) {
        let seed = self.draw.seed;
        let mut entrants = std::mem::take(&mut self.draw.entrants);
        entrants.sort_by_key(|identity| (draw_key(&seed, *identity), *identity));
        let seen = self.seconds(now);
        for identity in &entrants {
            self.joined += 1;
            self.waiting_ids.push_back(*identity);
            self.waiting_seen.push_back(seen);
            self.places
                .insert(*identity, Place::Waiting(self.joined).into());
        }
        self.draw.drawn = Some(entrants.len());
    }

    fn issue(&mut self, identity: u64, now: Timestamp) -> u64 {
        self.issued += 1;
        let pass = self.issued;
        let expires_at = now.add_millis(self.rules.pass_ttl_ms);
        self.passes.insert(
            pass,
            PassState {
                expires_at,
                used: false,
                held: false,
            },
        );
        self.expiries.push_back((expires_at, pass));
        self.in_force += 1;
        self.places.insert(identity, Place::Admitted(pass).into());
        self.recent_admissions.push_back(now);
        pass
    }

    fn admitted(&self, pass: u64) -> Standing {
        match self.passes.get(&pass) {
            Some(state) if !state.used => Standing::Admitted {
                pass,
                expires_at: state.expires_at,
            },
            _ => Standing::Lapsed,
        }
    }

    /// Where `identity` stands; a lapsed place is forgotten, so joining again starts afresh.
    fn standing(&mut self, identity: u64, now: Timestamp) -> Standing {
        let standing = match self.places.get(&identity).map(|place| place.unpack()) {
            None => Standing::Lapsed,
            Some(Place::Prequeue) => Standing::Prequeue {
                starts_at: self.draw.starts_at,
            },
            Some(Place::Admitted(pass)) => self.admitted(pass),
            Some(Place::Waiting(position)) if position <= self.admitted_through => Standing::Lapsed,
            Some(Place::Waiting(position)) => {
                let ahead = position - self.admitted_through - 1;
                Standing::Waiting {
                    position,
                    ahead,
                    eta_seconds: self.eta(ahead, now),
                }
            }
        };
        if standing == Standing::Lapsed {
            self.places.remove(&identity);
        }
        standing
    }

    /// Seconds until `ahead` more turns, from the last minute's turns.
    fn eta(&self, ahead: u64, now: Timestamp) -> Option<u64> {
        let first = self.recent_admissions.front()?;
        let recent = RecentTurns {
            admitted: self.recent_admissions.len() as u64,
            skipped: self.recent_skips.len() as u64,
            span_ms: now.unix_millis() - first.unix_millis(),
        };
        recent.eta_seconds(ahead)
    }

    fn seconds(&self, at: Timestamp) -> u32 {
        let millis = (at.unix_millis() - self.epoch.unix_millis()).max(0);
        u32::try_from(millis / 1_000).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
    const RULES: RoomRules = RoomRules::unthrottled(2, 60_000, 30_000);

    /// A room whose drop has started (no pre-queue).
    fn room(rules: RoomRules) -> WaitingRoom {
        WaitingRoom::new(rules, T0, [7; 32], T0)
    }

    fn at(seconds: i64) -> Timestamp {
        T0.add_millis(seconds * 1_000)
    }

    fn pass_of(standing: Standing) -> u64 {
        match standing {
            Standing::Admitted { pass, .. } => pass,
            other => panic!("not admitted: {other:?}"),
        }
    }

    /// A room of one pass, held by shopper 0, with shoppers `1..=waiting` in line.
    fn one_pass_and_waiting(waiting: u64) -> (WaitingRoom, u64) {
        let mut room = room(RoomRules {
            max_active: 1,
            ..RULES
        });
        let pass = pass_of(room.join(0, T0));
        for identity in 1..=waiting {
            room.join(identity, T0);
        }
        (room, pass)
    }

    /// Places ahead and the ETA of a shopper still waiting.
    fn ahead_and_eta(standing: Standing) -> (u64, Option<u64>) {
        match standing {
            Standing::Waiting {
                ahead, eta_seconds, ..
            } => (ahead, eta_seconds),
            other => panic!("still waiting: {other:?}"),
        }
    }

    /// At each of `seconds`, `shoppers` poll, `pass` is spent and the next shopper admitted
    /// takes it over: one admission a tick.
    fn admit_one_each(
        room: &mut WaitingRoom,
        mut pass: u64,
        shoppers: &[u64],
        seconds: impl IntoIterator<Item = i64>,
    ) {
        for second in seconds {
            for identity in shoppers {
                room.poll(*identity, at(second));
            }
            room.use_pass(pass, at(second)).unwrap();
            pass = shoppers
                .iter()
                .find_map(|identity| match room.poll(*identity, at(second)) {
                    Standing::Admitted { pass: next, .. } if next != pass => Some(next),
                    _ => None,
                })
                .unwrap();
        }
    }

    #[test]
    fn invisible_while_there_is_room_then_first_come_first_served() {
        let mut room = room(RULES);
        let first = pass_of(room.join(1, T0));
        pass_of(room.join(2, T0));
        assert!(matches!(
            room.join(3, T0),
            Standing::Waiting {
                position: 1,
                ahead: 0,
                ..
            }
        ));
        assert!(matches!(
            room.join(4, T0),
            Standing::Waiting { ahead: 1, .. }
        ));
        assert_eq!(
            room.join(3, T0),
            room.poll(3, T0),
            "joining again keeps the place"
        );
        room.use_pass(first, at(1)).unwrap();
        pass_of(room.poll(3, at(1)));
        assert!(matches!(
            room.poll(4, at(1)),
            Standing::Waiting { ahead: 0, .. }
        ));
        assert_eq!(
            room.totals(),
            RoomTotals {
                arrivals: 4,
                turned_away: 0,
                queued: 2,
                head: 1,
                admitted: 3,
            },
            "four arrived, two queued, the first of them admitted"
        );
    }

    #[test]
    fn a_held_pass_keeps_its_slot_until_settled_and_buys_again_if_not_spent() {
        let mut room = room(RoomRules {
            max_active: 1,
            ..RULES
        });
        let pass = pass_of(room.join(1, T0));
        assert!(matches!(room.join(2, T0), Standing::Waiting { .. }));
        room.hold_pass(pass, at(1)).unwrap();
        assert_eq!(
            room.hold_pass(pass, at(1)),
            Err(PassRefusal::Used),
            "one order at a time"
        );
        room.settle_pass(pass, false, at(2));
        assert!(
            matches!(room.poll(2, at(2)), Standing::Waiting { .. }),
            "the slot was kept"
        );
        room.hold_pass(pass, at(3)).unwrap();
        room.settle_pass(pass, true, at(3));
        assert_eq!(room.hold_pass(pass, at(4)), Err(PassRefusal::Used));
        pass_of(room.poll(2, at(4)));
    }

    #[test]
    fn a_pass_buys_once_and_an_unused_one_expires_and_frees_its_slot() {
        let mut room = room(RULES);
        let pass = pass_of(room.join(1, T0));
        pass_of(room.join(2, T0));
        room.join(3, T0);
        room.use_pass(pass, at(1)).unwrap();
        assert_eq!(room.use_pass(pass, at(2)), Err(PassRefusal::Used));
        assert_eq!(room.use_pass(99, at(2)), Err(PassRefusal::NotInForce));
        // Shopper 2 never buys: at expiry (60 s) the slot is free again; shopper 3's pass,
        // issued at 1 s, is still in force.
        pass_of(room.poll(3, at(20)));
        let after_expiry = T0.add_millis(60_500);
        assert_eq!(room.poll(2, after_expiry), Standing::Lapsed);
        assert_eq!(room.in_force(), 1, "only shopper 3's pass");
    }

    #[test]
    fn a_silent_waiter_is_skipped() {
        let mut room = room(RULES);
        let pass = pass_of(room.join(1, T0));
        pass_of(room.join(2, T0));
        room.join(3, T0);
        room.join(4, T0);
        // 4 keeps polling, 3 does not.
        room.poll(4, at(40));
        room.use_pass(pass, at(45)).unwrap();
        pass_of(room.poll(4, at(45)));
        assert_eq!(room.poll(3, at(46)), Standing::Lapsed);
    }

    #[test]
    fn sold_out_reaches_every_waiter_and_restocking_moves_the_queue_again() {
        let mut room = room(RULES);
        let pass = pass_of(room.join(1, T0));
        pass_of(room.join(2, T0));
        room.join(3, T0);
        room.set_sold_out(true);
        assert_eq!(room.poll(3, at(1)), Standing::SoldOut);
        assert_eq!(room.join(9, at(1)), Standing::SoldOut);
        assert_eq!(room.totals().turned_away, 1, "the late joiner is counted");
        room.use_pass(pass, at(2)).unwrap();
        room.set_sold_out(false);
        pass_of(room.poll(3, at(3)));
    }

    #[test]
    fn a_throttled_room_issues_fewer_passes_until_released() {
        let mut room = room(RoomRules {
            max_active: 4,
            ..RULES
        });
        room.throttle(0.5);
        let admitted = (0..4)
            .filter(|identity| matches!(room.join(*identity, T0), Standing::Admitted { .. }))
            .count();
        assert_eq!(admitted, 2);
        room.throttle(1.0);
        assert!(matches!(room.poll(2, at(1)), Standing::Admitted { .. }));
        assert!(matches!(room.poll(3, at(1)), Standing::Admitted { .. }));
        room.throttle(0.0);
        assert_eq!(room.cap, 1, "never closed entirely");
    }

    #[test]
    fn the_eta_leaves_out_the_share_of_waiters_who_stopped_polling() {
        // Shoppers 1..=40 wait; the odd ones never poll again.
        let (mut room, pass) = one_pass_and_waiting(40);
        let patient: Vec<u64> = (1..=40u64)
            .filter(|identity| identity.is_multiple_of(2))
            .collect();
        admit_one_each(&mut room, pass, &patient, 31..=34);
        let (ahead, eta_seconds) = ahead_and_eta(room.poll(40, at(34)));
        // Half of the places ahead are silent: the estimate counts only the other half.
        assert_eq!(ahead, 31);
        let naive = ((ahead + 1) as f64 / (5.0 / 34.0)).ceil() as u64;
        assert!(
            eta_seconds.unwrap() < naive * 2 / 3,
            "{eta_seconds:?} vs {naive}"
        );
    }

    #[test]
    fn a_hand_set_ceiling_caps_admissions_per_minute() {
        let mut room = room(RoomRules {
            max_active: 100,
            admit_per_minute: Some(3),
            ..RULES
        });
        let admitted = (0..10)
            .filter(|identity| matches!(room.join(*identity, T0), Standing::Admitted { .. }))
            .count();
        assert_eq!(admitted, 3, "free capacity, but the ceiling holds");
        for identity in 3..10 {
            room.poll(identity, at(30));
        }
        assert!(matches!(
            room.poll(3, at(30)),
            Standing::Waiting { ahead: 0, .. }
        ));
        assert!(matches!(
            room.poll(3, T0.add_millis(60_500)),
            Standing::Admitted { .. }
        ));
    }

    #[test]
    fn the_eta_follows_the_admission_rate() {
        let (mut room, pass) = one_pass_and_waiting(20);
        // One admission every two seconds for 10 s.
        let shoppers: Vec<u64> = (1..=20).collect();
        admit_one_each(&mut room, pass, &shoppers, (2..=10).step_by(2));
        let (ahead, eta_seconds) = ahead_and_eta(room.poll(20, at(10)));
        assert_eq!(ahead, 14);
        // Six admissions in ten seconds: 15 turns take about 25 s.
        assert_eq!(eta_seconds, Some(25));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Join(u64),
        Poll(u64),
        UseFirstPass,
        /// Holds the first free pass, then settles it spent or not.
        HoldFirstPass {
            spent: bool,
        },
        Wait(i64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                (0u64..30).prop_map(Step::Join),
                (0u64..30).prop_map(Step::Poll),
                Just(Step::UseFirstPass),
                any::<bool>().prop_map(|spent| Step::HoldFirstPass { spent }),
                (1i64..20_000).prop_map(Step::Wait),
            ],
            1..200,
        )
    }

    proptest! {
        /// Whatever shoppers do: passes in force never exceed `max_active` and are exactly the
        /// unused, unexpired ones; every waiting place is behind everyone admitted, and the
        /// ring buffers hold exactly the waiting positions.
        #[test]
        fn the_rooms_invariants_hold(steps in steps()) {
            let mut room = room(RULES);
            let mut now = T0;
            for step in steps {
                match step {
                    Step::Join(identity) => {
                        room.join(identity, now);
                    }
                    Step::Poll(identity) => {
                        room.poll(identity, now);
                    }
                    Step::UseFirstPass => {
                        if let Some(pass) = room.passes.iter()
                            .filter(|(_, state)| !state.used)
                            .map(|(pass, _)| *pass)
                            .min()
                        {
                            let _ = room.use_pass(pass, now);
                        }
                    }
                    Step::HoldFirstPass { spent } => {
                        let free = room.passes.iter()
                            .filter(|(_, state)| !state.used && !state.held)
                            .map(|(pass, _)| *pass)
                            .min();
                        if let Some(pass) = free && room.hold_pass(pass, now).is_ok() {
                            prop_assert!(room.in_force() <= RULES.max_active);
                            room.settle_pass(pass, spent, now);
                        }
                    }
                    Step::Wait(millis) => now = now.add_millis(millis),
                }
                // Counts are kept as of the last event; bring them to now before checking.
                room.advance(now);
                prop_assert!(room.in_force() <= RULES.max_active);
                let counted = room.passes.values()
                    .filter(|state| !state.used && now < state.expires_at)
                    .count() as u32;
                prop_assert_eq!(counted, room.in_force());
                prop_assert_eq!(room.waiting_ids.len() as u64, room.waiting());
                prop_assert_eq!(room.waiting_seen.len() as u64, room.waiting());
                for place in room.places.values() {
                    if let Place::Waiting(position) = place.unpack() {
                        prop_assert!(position <= room.joined);
                    }
                }
            }
        }
    }

    #[test]
    fn admission_follows_the_order_of_joining() {
        let mut room = room(RoomRules {
            max_active: 1,
            ..RULES
        });
        let mut pass = pass_of(room.join(100, T0));
        for identity in 0..10 {
            room.join(identity, T0);
        }
        for expected in 0..10 {
            room.use_pass(pass, T0).unwrap();
            let admitted: Vec<u64> = (0..10)
                .filter(|identity| matches!(room.poll(*identity, T0), Standing::Admitted { .. }))
                .collect();
            assert_eq!(admitted, [expected], "admitted out of order");
            pass = pass_of(room.poll(expected, T0));
        }
    }

    #[test]
    fn the_pre_queue_is_drawn_at_the_start_in_the_order_of_its_keys() {
        let seed = [42; 32];
        let starts_at = at(60);
        let mut room = WaitingRoom::new(RULES, starts_at, seed, T0);
        for identity in 0..50 {
            assert_eq!(room.join(identity, T0), Standing::Prequeue { starts_at });
        }
        assert_eq!(
            room.join(3, at(1)),
            Standing::Prequeue { starts_at },
            "one place each"
        );
        assert_eq!(room.revealed_seed(), None);
        assert_eq!(room.commitment(), <[u8; 32]>::from(Sha256::digest(seed)));
        room.advance(starts_at);
        assert_eq!(room.revealed_seed(), Some(seed));
        assert_eq!(room.entrants(), 50);
        let mut expected: Vec<u64> = (0..50).collect();
        expected.sort_by_key(|identity| (draw_key(&seed, *identity), *identity));
        // The first two drawn hold passes; the rest wait in the drawn order.
        for (index, identity) in expected.iter().enumerate() {
            match room.poll(*identity, starts_at) {
                Standing::Admitted { .. } => assert!(index < 2),
                Standing::Waiting { position, .. } => assert_eq!(position, index as u64 + 1),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            room.join(99, starts_at),
            Standing::Waiting { position: 51, .. }
        ));
    }

    proptest! {
        /// The draw is a permutation of the entrants, reproducible from the seed alone.
        #[test]
        fn the_draw_is_a_reproducible_permutation(
            seed in proptest::array::uniform32(any::<u8>()),
            entrants in proptest::collection::hash_set(any::<u64>(), 0..60),
        ) {
            let draw = |entrants: &Vec<u64>| {
                let mut room = WaitingRoom::new(RULES, at(10), seed, T0);
                for identity in entrants {
                    room.join(*identity, T0);
                }
                room.advance(at(10));
                room.waiting_ids.iter().copied().collect::<Vec<u64>>()
            };
            let joined: Vec<u64> = entrants.into_iter().collect();
            let mut reversed = joined.clone();
            reversed.reverse();
            let order = draw(&joined);
            prop_assert_eq!(&order, &draw(&reversed), "arrival order inside the pre-queue counts for nothing");
            let mut sorted = joined.clone();
            sorted.sort_by_key(|identity| (draw_key(&seed, *identity), *identity));
            // The first max_active of the draw were admitted; the rest wait in the drawn order.
            prop_assert_eq!(&sorted[sorted.len().min(2)..], order.as_slice());
        }
    }

    #[test]
    fn a_million_waiters_cost_under_64_bytes_each() {
        let mut room = room(RULES);
        for identity in 0..1_000_000u64 {
            room.join(identity, T0);
        }
        assert_eq!(room.waiting(), 999_998);
        let per_entry = std::mem::size_of::<(u64, PackedPlace)>() + 1;
        let map = room.places.capacity() * per_entry;
        let rings = room.waiting_ids.capacity() * 8 + room.waiting_seen.capacity() * 4;
        let per_waiter = (map + rings) as f64 / room.waiting() as f64;
        assert!(per_waiter <= 64.0, "{per_waiter:.1} bytes per waiter");
    }
}
