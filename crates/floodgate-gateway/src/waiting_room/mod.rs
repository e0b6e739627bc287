//! The drops' waiting rooms as the public API sees them: joining, polling a ticket, and spending
//! a pass on an order. Tickets and passes are signed tokens (`floodgate_core::token`), so a poll
//! needs no lookup to know whom it is for.
//!
//! A node alone on its store keeps each room in memory (the queue rules are
//! `floodgate_core::waiting_room`); nodes sharing a store keep their rooms in it ([`shared`]), so
//! any node answers for any ticket or pass.

mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use floodgate_core::{
    DropId, Identity, RoomRules, RoomTotals, Standing, Timestamp, TokenKeys, TokenKind,
    WaitingRoom, WaitingRoomSpec,
};

use floodgate_store::Store;

use crate::Intake;
use crate::error::ApiError;
use shared::SharedRooms;

/// While the order intake is saturated or delivery is too far behind, rooms issue passes for
/// this share of `max_active`.
const SATURATED_SHARE: f64 = 0.5;
/// How long after the store last refused an order for want of capacity the intake counts as
/// saturated.
const SATURATION_MEMORY: Duration = Duration::from_secs(10);

/// The spread of poll intervals: a waiter is told to come back after 2–4 s, so polls do not
/// arrive in synchronized waves.
const POLL_AFTER_MS: (u64, u64) = (2_000, 4_000);

/// A room's load.
pub(crate) struct Occupancy {
    /// Shoppers waiting.
    pub(crate) waiting: u64,
    /// Passes in force.
    pub(crate) in_force: u32,
    /// Admissions over the last minute.
    pub(crate) admitted_last_minute: usize,
    /// Seconds until the last waiter's turn, when the rate is known.
    pub(crate) eta_of_last: Option<u64>,
    /// Running totals since the room opened.
    pub(crate) totals: RoomTotals,
}

/// A pass held while its order is placed. Settled by [`HeldPass::settle`]; dropped unsettled
/// (the request was cancelled, the order's fate unknown) it counts as spent, so it can never buy
/// twice — an idempotent replay of the order needs no pass.
pub(crate) struct HeldPass<'a> {
    rooms: &'a Rooms,
    drop_id: &'a DropId,
    pass: Option<u64>,
    now: Timestamp,
}

impl HeldPass<'_> {
    /// `spent` when the order was placed or refused for a business reason, so the slot goes to
    /// the next waiter; otherwise the shopper can buy with it again. `sold_out` is the drop's
    /// state after the order: the slot of the order that took the last unit goes to nobody.
    pub(crate) async fn settle(mut self, spent: bool, sold_out: bool, now: Timestamp) {
        let Some(pass) = self.pass.take() else {
            return;
        };
        match &self.rooms.shared {
            Some(shared) => settle_shared(shared.store(), self.drop_id, pass, spent).await,
            None => self.end_local(pass, spent, Some(sold_out), now),
        }
    }

    fn end_local(&self, pass: u64, spent: bool, sold_out: Option<bool>, now: Timestamp) {
        if let Some(room) = self.rooms.rooms().get_mut(self.drop_id) {
            if let Some(sold_out) = sold_out {
                room.set_sold_out(sold_out);
            }
            room.settle_pass(pass, spent, now);
        }
    }
}

impl Drop for HeldPass<'_> {
    fn drop(&mut self) {
        let Some(pass) = self.pass.take() else {
            return;
        };
        match &self.rooms.shared {
            Some(shared) => {
                let (store, drop_id) = (Arc::clone(shared.store()), self.drop_id.clone());
                tokio::spawn(async move { settle_shared(&store, &drop_id, pass, true).await });
            }
            None => self.end_local(pass, true, None, self.now),
        }
    }
}

/// Ends the hold of a pass kept in a shared store; a hold the store did not hear of ends when
/// the pass expires.
async fn settle_shared(store: &Arc<dyn Store>, drop_id: &DropId, pass: u64, spent: bool) {
    let Some(cluster) = store.cluster() else {
        return;
    };
    if let Err(error) = cluster.settle_pass(drop_id.clone(), pass, spent).await {
        tracing::warn!(drop = %drop_id, pass, %error, "cannot settle a waiting-room pass");
    }
}

/// What a shopper is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// In: the pass lets them order until `expires_at`.
    Admitted { pass: String, expires_at: Timestamp },
    /// Waiting: poll `ticket` again after `poll_after_ms`.
    Waiting {
        ticket: String,
        position: u64,
        ahead: u64,
        eta_seconds: Option<u64>,
        poll_after_ms: u64,
    },
    /// In the pre-queue until the draw at `starts_at`; poll `ticket` after that.
    Prequeue {
        ticket: String,
        starts_at: Timestamp,
    },
    /// Nothing left to wait for.
    SoldOut,
}

/// What the draw of a drop's pre-queue lets anyone check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fairness {
    /// SHA-256 of the seed, published from the moment the room opened.
    pub(crate) commitment: [u8; 32],
    /// The seed, once drawn.
    pub(crate) seed: Option<[u8; 32]>,
    /// Shoppers in the pre-queue.
    pub(crate) entrants: usize,
}

/// The drop a room belongs to, as the room needs it.
#[derive(Clone)]
pub(crate) struct RoomDrop {
    pub(crate) id: DropId,
    pub(crate) room: WaitingRoomSpec,
    pub(crate) starts_at: Timestamp,
    pub(crate) ends_at: Timestamp,
}

/// Every drop's room.
pub(crate) struct Rooms {
    keys: TokenKeys,
    /// Whether the intake is saturated now (set before each room operation).
    saturated: AtomicBool,
    /// Whether the orders waiting for delivery exceed the allowed backlog (set every second).
    backlogged: AtomicBool,
    abandon_after_ms: i64,
    /// The rooms of a node alone on its store.
    rooms: Mutex<HashMap<DropId, WaitingRoom>>,
    /// The rooms of a node sharing its store: every room lives there instead.
    shared: Option<SharedRooms>,
}

impl Rooms {
    /// Rooms signing with `keys`, forgetting waiters silent for `abandon_after_ms`; kept in
    /// `store` when other nodes share it.
    pub(crate) fn new(keys: TokenKeys, abandon_after_ms: i64, store: &Arc<dyn Store>) -> Self {
        Self {
            keys,
            saturated: AtomicBool::new(false),
            backlogged: AtomicBool::new(false),
            abandon_after_ms,
            rooms: Mutex::new(HashMap::new()),
            shared: SharedRooms::of(store, abandon_after_ms),
        }
    }

    /// Advances the rooms kept in a shared store (a few times a second): their draws,
    /// expiries and admissions, whichever node the shoppers reach.
    pub(crate) async fn tend(&self, intake: &Intake, now: Timestamp) {
        if let Some(shared) = &self.shared {
            self.observe_intake(intake, now);
            shared.tend(intake, self.share(), now).await;
        }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<DropId, WaitingRoom>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the rooms whether the order intake behind them is saturated (the store refused an
    /// order for want of capacity within [`SATURATION_MEMORY`]): while it is, they admit fewer.
    pub(crate) fn observe_intake(&self, intake: &Intake, now: Timestamp) {
        let saturated = intake.saturated(now, SATURATION_MEMORY);
        self.saturated.store(saturated, Ordering::Relaxed);
    }

    /// `drop_id`'s room as `/metrics` and the admin API show it, if it has one open.
    pub(crate) fn occupancy(&self, drop_id: &DropId, now: Timestamp) -> Option<Occupancy> {
        if let Some(shared) = &self.shared {
            return shared.occupancy(drop_id);
        }
        let rooms = self.rooms();
        let room = rooms.get(drop_id)?;
        Some(Occupancy {
            waiting: room.waiting(),
            in_force: room.in_force(),
            admitted_last_minute: room.admitted_last_minute(),
            eta_of_last: room.eta_of_last(now),
            totals: room.totals(),
        })
    }

    /// The keys that sign tickets, passes and visitor cookies.
    pub(crate) fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Tells the rooms whether delivery is further behind than allowed: while it is, they admit
    /// fewer, so confirmations do not drift ever later.
    pub(crate) fn observe_backlog(&self, backlogged: bool) {
        self.backlogged.store(backlogged, Ordering::Relaxed);
    }

    fn share(&self) -> f64 {
        if self.saturated.load(Ordering::Relaxed) || self.backlogged.load(Ordering::Relaxed) {
            SATURATED_SHARE
        } else {
            1.0
        }
    }

    /// Opens `drop`'s room ahead of its surge, sized for `shoppers`.
    pub(crate) fn presize(&self, drop: &RoomDrop, shoppers: usize, now: Timestamp) {
        if self.shared.is_some() {
            return; // The places are rows in the shared store.
        }
        let mut rooms = self.rooms();
        self.room(&mut rooms, drop, now).presize(shoppers);
    }

    /// `drop`'s room, opened now if it has none yet, with a fresh random seed for its draw.
    fn room<'r>(
        &self,
        rooms: &'r mut HashMap<DropId, WaitingRoom>,
        drop: &RoomDrop,
        now: Timestamp,
    ) -> &'r mut WaitingRoom {
        rooms.entry(drop.id.clone()).or_insert_with(|| {
            let rules = RoomRules {
                max_active: drop.room.max_active,
                pass_ttl_ms: i64::from(drop.room.pass_ttl_s) * 1_000,
                abandon_after_ms: self.abandon_after_ms,
                admit_per_minute: drop.room.admit_per_minute,
            };
            let mut seed = [0; 32];
            seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            WaitingRoom::new(rules, drop.starts_at, seed, now)
        })
    }

    /// `identity` joins the room of `drop`.
    pub(crate) async fn join(
        &self,
        drop: &RoomDrop,
        identity: &Identity,
        sold_out: bool,
        now: Timestamp,
    ) -> Result<Answer, ApiError> {
        let (drop_id, ends_at) = (&drop.id, drop.ends_at);
        let standing = match &self.shared {
            Some(shared) => shared.join(drop, identity, sold_out, self.share()).await?,
            None => {
                let mut rooms = self.rooms();
                let room = self.room(&mut rooms, drop, now);
                room.set_sold_out(sold_out);
                room.throttle(self.share());
                room.join(identity.key(), now)
            }
        };
        Ok(self.answer(drop_id, identity, standing, ends_at))
    }

    /// Where the holder of `ticket` stands; `drop_of` gives the ticket's drop and whether it is
    /// sold out now, if it has a room. A ticket is refused to a request that proves another
    /// `holder` than the one it was issued to.
    pub(crate) async fn poll(
        &self,
        ticket: &str,
        holder: Option<Identity>,
        now: Timestamp,
        drop_of: impl FnOnce(&DropId) -> Option<(RoomDrop, bool)>,
    ) -> Result<Answer, ApiError> {
        let opened = self
            .keys
            .open(ticket, TokenKind::Ticket, now)
            .map_err(|_| ApiError::InvalidTicket)?;
        if holder.is_some_and(|holder| holder != opened.identity) {
            return Err(ApiError::InvalidTicket);
        }
        let drop_id = DropId::parse(&opened.drop_id).map_err(|_| ApiError::InvalidTicket)?;
        let (drop, sold_out) = drop_of(&drop_id).ok_or(ApiError::InvalidTicket)?;
        if let Some(shared) = &self.shared {
            let (identity, position) = (&opened.identity, opened.claims.serial);
            let standing = shared
                .poll(&drop, identity, position, sold_out, self.share())
                .await?;
            return Ok(self.answer(&drop_id, identity, standing, opened.claims.expires_at));
        }
        let mut rooms = self.rooms();
        let room = rooms.get_mut(&drop_id).ok_or(ApiError::InvalidTicket)?;
        room.set_sold_out(sold_out);
        room.throttle(self.share());
        match room.poll(opened.identity.key(), now) {
            Standing::Lapsed => Err(ApiError::PlaceLapsed),
            standing => Ok(self.answer(
                &drop_id,
                &opened.identity,
                standing,
                opened.claims.expires_at,
            )),
        }
    }

    /// What anyone may check about the draw of `drop`'s pre-queue.
    pub(crate) async fn fairness(
        &self,
        drop: &RoomDrop,
        sold_out: bool,
        now: Timestamp,
    ) -> Result<Fairness, ApiError> {
        if let Some(shared) = &self.shared {
            return shared.fairness(drop, sold_out, self.share()).await;
        }
        let mut rooms = self.rooms();
        let room = self.room(&mut rooms, drop, now);
        room.advance(now);
        Ok(Fairness {
            commitment: room.commitment(),
            seed: room.revealed_seed(),
            entrants: room.entrants(),
        })
    }

    /// Holds `pass` while an order with it is placed: it must be valid for `drop_id` and
    /// `identity`, in force and not in use.
    pub(crate) async fn hold<'a>(
        &'a self,
        drop_id: &'a DropId,
        identity: &Identity,
        pass: &str,
        now: Timestamp,
    ) -> Result<HeldPass<'a>, ApiError> {
        let claims = self
            .keys
            .verify(pass, TokenKind::Pass, drop_id, identity, now)
            .map_err(|_| ApiError::InvalidPass)?;
        match &self.shared {
            Some(shared) => shared.hold(drop_id, identity, claims.serial).await?,
            None => {
                let mut rooms = self.rooms();
                let room = rooms.get_mut(drop_id).ok_or(ApiError::InvalidPass)?;
                room.hold_pass(claims.serial, now)
                    .map_err(|_| ApiError::InvalidPass)?;
            }
        }
        Ok(HeldPass {
            rooms: self,
            drop_id,
            pass: Some(claims.serial),
            now,
        })
    }

    /// Revokes `pass` (an operator's decision): it can no longer buy, and its slot is free.
    pub(crate) async fn revoke(
        &self,
        drop_id: &DropId,
        pass: &str,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let opened = self
            .keys
            .open(pass, TokenKind::Pass, now)
            .map_err(|_| ApiError::InvalidPass)?;
        if opened.drop_id != drop_id.as_str() {
            return Err(ApiError::InvalidPass);
        }
        if let Some(shared) = &self.shared {
            return shared.revoke(drop_id, opened.claims.serial).await;
        }
        let mut rooms = self.rooms();
        let room = rooms.get_mut(drop_id).ok_or(ApiError::InvalidPass)?;
        room.use_pass(opened.claims.serial, now)
            .map_err(|_| ApiError::InvalidPass)
    }

    fn answer(
        &self,
        drop_id: &DropId,
        identity: &Identity,
        standing: Standing,
        ticket_expires_at: Timestamp,
    ) -> Answer {
        match standing {
            Standing::Admitted { pass, expires_at } => Answer::Admitted {
                pass: self
                    .keys
                    .sign(TokenKind::Pass, drop_id, identity, pass, expires_at),
                expires_at,
            },
            Standing::Waiting {
                position,
                ahead,
                eta_seconds,
            } => Answer::Waiting {
                ticket: self.keys.sign(
                    TokenKind::Ticket,
                    drop_id,
                    identity,
                    position,
                    ticket_expires_at,
                ),
                position,
                ahead,
                eta_seconds,
                poll_after_ms: POLL_AFTER_MS.0
                    + (identity.key() ^ position) % (POLL_AFTER_MS.1 - POLL_AFTER_MS.0),
            },
            // Joining never lapses (it queues again) and polling answers a lapse before this.
            Standing::Prequeue { starts_at } => Answer::Prequeue {
                ticket: self
                    .keys
                    .sign(TokenKind::Ticket, drop_id, identity, 0, ticket_expires_at),
                starts_at,
            },
            Standing::SoldOut | Standing::Lapsed => Answer::SoldOut,
        }
    }
}
