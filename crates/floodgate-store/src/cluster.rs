//! What nodes sharing one database coordinate through it: blocks of stock leased to each node,
//! who leads a cluster-wide role (delivery to the downstream), and the drops' waiting rooms.
//!
//! Every expiry is judged by the database's clock, so nodes whose clocks disagree still agree on
//! which lease has lapsed.

use std::time::Duration;

use floodgate_core::{DropId, DropSpec, IdempotencyKey, Order, Timestamp};

use crate::StoreFuture;

/// A store shared by several nodes.
pub trait Cluster: SharedRooms + Send + Sync {
    /// This node's name in the database (leases and leadership are recorded under it).
    fn node(&self) -> &str;

    /// Moves up to `wanted` unleased units of a SKU into this node's lease, which then runs for
    /// `ttl`. Orders the node accepts draw on its lease first, in the same transaction as the
    /// order, so a hot SKU's shared row is written once per lease rather than once per batch.
    fn lease_stock(
        &self,
        drop_id: DropId,
        sku: String,
        wanted: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, LeaseGrant>;

    /// Extends every unexpired lease of this node by `ttl`; what each still holds. A lease
    /// missing from the answer has lapsed: its units are, or will soon be, back in the pool.
    fn renew_leases(&self, ttl: Duration) -> StoreFuture<'_, Vec<LeaseHeld>>;

    /// Puts `units` unsold units of this node's lease back in the pool.
    fn return_stock(&self, drop_id: DropId, sku: String, units: u64) -> StoreFuture<'_, ()>;

    /// The leases of this node that another node asked for since the last call (its own lease
    /// request fell short while this node's lease held units): `(drop, sku)`.
    fn wanted_leases(&self) -> StoreFuture<'_, Vec<(DropId, String)>>;

    /// Gives back everything this node still leases (at a graceful shutdown).
    fn return_all_stock(&self) -> StoreFuture<'_, u64>;

    /// Puts the units of every lapsed lease, whichever node held it, back in the pool; how many
    /// units came back.
    fn reclaim_lapsed_leases(&self) -> StoreFuture<'_, u64>;

    /// Takes or keeps the lead of `role` for `ttl`, unless another node holds it unexpired.
    /// `None`: another node leads.
    fn lead(&self, role: &str, ttl: Duration) -> StoreFuture<'_, Option<Term>>;

    /// Units of each SKU on sale outside this node: in the pool, or in other nodes' unsold
    /// leases (which come back to the pool when returned or lapsed): `(drop, sku, units)`.
    fn stock_elsewhere(&self) -> StoreFuture<'_, Vec<(DropId, String, u64)>>;

    /// The drop's order under `key`, if any node took one: a retry that reaches another node
    /// than its first attempt gets the first answer even when memory would refuse it now.
    fn order_by_key(&self, drop_id: DropId, key: IdempotencyKey) -> StoreFuture<'_, Option<Order>>;

    /// Every drop as stored, so a node learns of drops defined or changed through another.
    fn drops(&self) -> StoreFuture<'_, Vec<(DropId, DropSpec)>>;

    /// Gives up the lead of `role`, if this node has it (at a graceful shutdown), so a follower
    /// need not wait for the term to expire.
    fn resign(&self, role: &str) -> StoreFuture<'_, ()>;
}

/// What a lease request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Units added to this node's lease.
    pub granted: u64,
    /// Units of the SKU left in the pool, leased to no node.
    pub unleased: u64,
    /// Units of the SKU on sale outside this node: `unleased`, and other nodes' unsold leases.
    pub elsewhere: u64,
}

/// One lease a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHeld {
    /// The drop.
    pub drop_id: DropId,
    /// The SKU.
    pub sku: String,
    /// Units still unsold in it.
    pub remaining: u64,
}

/// A term of leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Counts up with every change of leader.
    pub number: u64,
    /// This call took the lead from another node (or from nobody) rather than keeping it.
    pub taken_over: bool,
}

/// A waiting room several nodes share: every place is a row, positions come from the room's
/// own sequence, and passes are issued only under the room's row lock, after counting the ones
/// in force, so `max_active` holds across the nodes by construction.
pub trait SharedRooms: Send + Sync {
    /// Opens the room of `drop_id` (creating it, with `seed` for its pre-queue draw, if no node
    /// has yet); the seed the room actually draws with.
    fn open_room(&self, drop_id: DropId, seed: [u8; 32]) -> StoreFuture<'_, [u8; 32]>;

    /// `identity` joins: the place it already holds, or a new one at the back (in the pre-queue
    /// until the draw). `draw_key` orders it in the draw.
    fn join_room(
        &self,
        drop_id: DropId,
        identity: u64,
        draw_key: u64,
    ) -> StoreFuture<'_, SharedPlace>;

    /// Where `identity` stands (`Lapsed` when it holds no place).
    fn find_place(&self, drop_id: DropId, identity: u64) -> StoreFuture<'_, SharedPlace>;

    /// Records that `identities` polled just now, so the room does not skip them as gone.
    fn mark_seen(&self, drop_id: DropId, identities: Vec<u64>) -> StoreFuture<'_, ()>;

    /// Runs the draw once the start has come, expires passes, and admits waiters in order while
    /// passes are free, skipping those silent too long; the room as it then stands.
    fn advance_room(
        &self,
        drop_id: DropId,
        rules: AdmissionRules,
    ) -> StoreFuture<'_, SharedRoomView>;

    /// Holds pass `pass` of `identity` while an order is placed with it. `false`: the pass is not
    /// in force, or already held or spent.
    fn hold_pass(&self, drop_id: DropId, identity: u64, pass: u64) -> StoreFuture<'_, bool>;

    /// Ends a hold: a `spent` pass frees its slot; otherwise it can buy again until it expires.
    fn settle_pass(&self, drop_id: DropId, pass: u64, spent: bool) -> StoreFuture<'_, ()>;

    /// Spends pass `pass` without an order (an operator's revocation). `false`: it was not in
    /// force.
    fn revoke_pass(&self, drop_id: DropId, pass: u64) -> StoreFuture<'_, bool>;
}

/// Where a shopper stands in a shared room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedPlace {
    /// In the pre-queue, waiting for the draw.
    Prequeue,
    /// Waiting at `position`.
    Waiting {
        /// The place in line; the room's sequence hands them out.
        position: u64,
    },
    /// Holds pass number `pass` (the position it was admitted from) until `expires_at`.
    Admitted {
        /// The pass number.
        pass: u64,
        /// When it lapses unused, by the database's clock.
        expires_at: Timestamp,
    },
    /// No place: never joined, skipped for silence, or the pass was spent or expired.
    Lapsed,
}

/// What an advance of a shared room follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionRules {
    /// Passes in force at most (`max_active`, or less while the shop behind is saturated).
    pub cap: u32,
    /// How long a pass lasts unused.
    pub pass_ttl: Duration,
    /// A waiter silent this long loses their place.
    pub abandon_after: Duration,
    /// At most this many admissions in any minute.
    pub admit_per_minute: Option<u32>,
    /// When the pre-queue is drawn.
    pub starts_at: Timestamp,
    /// Nothing is left to sell: nobody more is admitted.
    pub sold_out: bool,
}

/// A shared room as it stands, by the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SharedRoomView {
    /// The seed is revealed once the pre-queue is drawn.
    pub drawn: bool,
    /// Shoppers in the pre-queue (before the draw) or drawn from it (after).
    pub entrants: u64,
    /// Shoppers waiting in line.
    pub waiting: u64,
    /// Passes in force.
    pub in_force: u32,
    /// Every position up to here has had its turn (admitted, or skipped for silence).
    pub head: u64,
    /// The last position handed out.
    pub queued: u64,
    /// Passes issued since the room opened.
    pub admitted: u64,
    /// Admissions in the last minute.
    pub admitted_last_minute: u64,
    /// Places skipped for silence in the last minute.
    pub skipped_last_minute: u64,
    /// Milliseconds since the first of the last minute's admissions.
    pub admission_span_ms: i64,
}
