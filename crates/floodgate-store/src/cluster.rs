//! What nodes sharing one database coordinate through it: blocks of stock leased to each node,
//! and who leads a cluster-wide role (delivery to the downstream).
//!
//! Every expiry is judged by the database's clock, so nodes whose clocks disagree still agree on
//! which lease has lapsed.

use std::time::Duration;

use floodgate_core::{DropId, DropSpec};

use crate::StoreFuture;

/// A store shared by several nodes.
pub trait Cluster: Send + Sync {
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

    /// Gives back everything this node still leases (at a graceful shutdown).
    fn return_all_stock(&self) -> StoreFuture<'_, u64>;

    /// Puts the units of every lapsed lease, whichever node held it, back in the pool; how many
    /// units came back.
    fn reclaim_lapsed_leases(&self) -> StoreFuture<'_, u64>;

    /// Takes or keeps the lead of `role` for `ttl`, unless another node holds it unexpired.
    /// `None`: another node leads.
    fn lead(&self, role: &str, ttl: Duration) -> StoreFuture<'_, Option<Term>>;

    /// Units of each SKU in the pool, leased to no node: `(drop, sku, unleased)`.
    fn unleased_stock(&self) -> StoreFuture<'_, Vec<(DropId, String, u64)>>;

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
