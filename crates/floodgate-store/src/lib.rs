//! floodgate's durable store: the only link between order intake and delivery.
//!
//! [`Store`] is what the gateway and the dispatcher see. [`SqliteStore`] is the embedded default,
//! [`PostgresStore`] the one several nodes share: in both, one writer thread commits many orders
//! per transaction (group commit) and reader connections serve lookups. The crate knows nothing of HTTP. Every backend passes the same conformance suite
//! (`tests/conformance`).

mod cluster;
mod postgres;
mod relay;
mod sqlite;
mod writer;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use floodgate_core::{
    DropId, DropSpec, IdempotencyKey, Order, OrderId, OrderState, RequestFingerprint, Timestamp,
};

pub use cluster::{
    AdmissionRules, Cluster, LeaseGrant, LeaseHeld, SharedPlace, SharedRoomView, SharedRooms, Term,
};
pub use postgres::{PostgresOptions, PostgresStore};
pub use relay::relay_answers_here;
pub use sqlite::{SqliteOptions, SqliteStore};

/// The future every store method returns; boxed so `dyn Store` works.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable state shared by intake and delivery.
pub trait Store: Send + Sync + 'static {
    /// Everything needed to rebuild the in-memory ledgers at start-up; idempotency keys of orders
    /// accepted before `keys_since` are left out (they have expired).
    fn load(&self, keys_since: Timestamp) -> StoreFuture<'_, Snapshot>;

    /// Creates or replaces a drop. Refuses to set a SKU's stock below the units its orders hold.
    fn put_drop(&self, drop_id: DropId, spec: DropSpec, now: Timestamp) -> StoreFuture<'_, ()>;

    /// Stores an order and its reservation in one transaction. When this returns `Ok` both are on
    /// disk. Refuses with [`StoreError::Oversell`] rather than hold more units than the stock,
    /// with [`StoreError::KeyTaken`] when the drop has an order under the same idempotency key,
    /// and (a shared store) with [`StoreError::LimitReached`] when the customer's orders through
    /// every node would pass the drop's limit.
    fn accept_order(&self, order: Order) -> StoreFuture<'_, ()>;

    /// One order.
    fn order(&self, order_id: OrderId) -> StoreFuture<'_, Option<Order>>;

    /// Orders matching `filter`, in acceptance order.
    fn orders(&self, filter: OrderFilter) -> StoreFuture<'_, Vec<Order>>;

    /// Orders and units per state, for one drop.
    fn order_counts(&self, drop_id: DropId) -> StoreFuture<'_, BTreeMap<OrderState, StateCount>>;

    /// Units per SKU and state, for one drop (pairs with no units are left out).
    fn sku_units(&self, drop_id: DropId) -> StoreFuture<'_, BTreeMap<(String, OrderState), u64>>;

    /// Moves an order along its delivery, durably, if it is in a state the change starts from
    /// ([`StoreError::WrongState`] otherwise). A rejected order's units go back to its SKU's
    /// stock in the same transaction.
    fn record_delivery(
        &self,
        order_id: OrderId,
        change: Delivery,
        now: Timestamp,
    ) -> StoreFuture<'_, ()>;

    /// Proves the store can still commit a write (for `/readyz`).
    fn check_writable(&self) -> StoreFuture<'_, ()>;

    /// Commits every write already handed over, then refuses new ones.
    fn close(&self) -> StoreFuture<'_, ()>;

    /// How the store's commits have gone since it opened, for `/metrics`; `None` for a store
    /// that does not count them.
    fn commit_figures(&self) -> Option<CommitFigures> {
        None
    }

    /// How nodes sharing this store coordinate; `None` for a store only one node uses.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
}

/// A store's commits since it opened.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CommitFigures {
    /// Transactions committed (each one a batch of writes).
    pub commits: u64,
    /// Writes across those transactions: the mean batch is `writes / commits`.
    pub writes: u64,
    /// The largest batch.
    pub largest_batch: u64,
    /// Time spent committing, in seconds (the mean commit is this over `commits`).
    pub seconds: f64,
}

/// What start-up needs from the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every drop.
    pub drops: Vec<(DropId, DropSpec)>,
    /// Units held per drop, customer and SKU, by orders that keep their stock.
    pub holdings: Vec<Holding>,
    /// Idempotency keys still within retention.
    pub keys: Vec<StoredKey>,
}

/// Units that one customer's orders hold of one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The drop.
    pub drop_id: DropId,
    /// The customer.
    pub customer: String,
    /// The SKU.
    pub sku: String,
    /// Units held.
    pub units: u64,
}

/// An idempotency key and the order it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The drop the key is scoped to.
    pub drop_id: DropId,
    /// The key.
    pub key: IdempotencyKey,
    /// Digest of the request that used it first.
    pub fingerprint: RequestFingerprint,
    /// The order it produced.
    pub order_id: OrderId,
    /// When that order was accepted.
    pub accepted_at: Timestamp,
}

/// Which orders to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this drop.
    pub drop_id: Option<DropId>,
    /// Only this state.
    pub state: Option<OrderState>,
    /// Only orders accepted after this one (for paging).
    pub after: Option<OrderId>,
    /// At most this many.
    pub limit: u32,
}

/// How many orders, and how many units, are in one state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCount {
    /// Orders.
    pub orders: u64,
    /// Units across those orders.
    pub units: u64,
}

/// A drop's definition as both backends keep it: its spec as JSON.
fn spec_json(spec: &DropSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|error| StoreError::Backend(error.to_string()))
}

/// The refusal of a drop update that would set `sku`'s stock below what orders hold.
fn below_held(drop_id: &DropId, sku: &str) -> StoreError {
    StoreError::StockBelowHeld {
        drop_id: drop_id.clone(),
        sku: sku.to_owned(),
    }
}

/// The SKUs of a drop's stock rows (`existing`: each with the units held or allocated on it)
/// that an update to `spec` drops, refused if any still holds units.
fn skus_to_remove(
    drop_id: &DropId,
    spec: &DropSpec,
    existing: Vec<(String, i64)>,
) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    for (sku, held) in existing {
        if spec.sku(&sku).is_some() {
            continue;
        }
        if held > 0 {
            return Err(below_held(drop_id, &sku));
        }
        removed.push(sku);
    }
    Ok(removed)
}

/// One row of a drop's order tallies, as each backend reads them: a SKU, a state, its orders
/// and its units.
type TallyRow = (String, OrderState, u64, u64);

/// A drop's tallies summed per state.
fn counts_by_state(rows: Vec<TallyRow>) -> BTreeMap<OrderState, StateCount> {
    let mut counts = BTreeMap::<OrderState, StateCount>::new();
    for (_, state, orders, units) in rows {
        let count = counts.entry(state).or_default();
        count.orders += orders;
        count.units += units;
    }
    counts
}

/// A drop's units per SKU and state.
fn units_by_sku_and_state(rows: Vec<TallyRow>) -> BTreeMap<(String, OrderState), u64> {
    rows.into_iter()
        .map(|(sku, state, _, units)| ((sku, state), units))
        .collect()
}

/// One step of an order's delivery to the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// `accepted | submitting → submitting`, counting one more attempt; recorded before the
    /// attempt is sent, so a restart knows the downstream may have the order.
    Attempt,
    /// `submitting → confirmed`, with the downstream's reference if it gave one.
    Confirmed {
        /// The downstream's reference.
        reference: Option<String>,
    },
    /// `submitting → rejected`: the downstream refused it for good; the units go back on sale.
    Rejected {
        /// What the downstream said.
        reason: String,
    },
    /// `submitting → failed`: the last attempt failed too; the order waits in the dead-letter
    /// view, still holding its units.
    Failed {
        /// What the last attempt met.
        reason: String,
    },
    /// `failed → accepted` with no attempts: an operator's redrive.
    Redrive,
}

impl Delivery {
    /// The states the change applies to, and the state it leads to.
    pub fn transition(&self) -> (&'static [OrderState], OrderState) {
        use OrderState::*;
        match self {
            Self::Attempt => (&[Accepted, Submitting], Submitting),
            Self::Confirmed { .. } => (&[Submitting], Confirmed),
            Self::Rejected { .. } => (&[Submitting], Rejected),
            Self::Failed { .. } => (&[Submitting], Failed),
            Self::Redrive => (&[Failed], Accepted),
        }
    }
}

/// What a [`Delivery`] writes to an order: the columns both backends set.
pub(crate) struct DeliveryUpdate<'a> {
    /// The state the order was found in.
    pub(crate) from: OrderState,
    /// The state it leads to.
    pub(crate) to: OrderState,
    /// The new `attempts`, as an SQL expression over the old.
    pub(crate) attempts: &'static str,
    /// The downstream's reference, when it gave one.
    pub(crate) reference: Option<&'a str>,
    /// Why the attempt did not go through.
    pub(crate) error: Option<&'a str>,
}

impl Delivery {
    /// The update for `order_id`, found in the state stored as `stored`, or why it does not
    /// apply.
    pub(crate) fn update(
        &self,
        order_id: &OrderId,
        stored: &str,
    ) -> Result<DeliveryUpdate<'_>, StoreError> {
        let state = OrderState::parse(stored)
            .ok_or_else(|| StoreError::Backend(format!("{order_id}: stored state {stored:?}")))?;
        let (allowed, to) = self.transition();
        if !allowed.contains(&state) {
            return Err(StoreError::WrongState {
                order_id: order_id.clone(),
                state,
            });
        }
        let (attempts, reference, error) = match self {
            Self::Attempt => ("attempts + 1", None, None),
            Self::Confirmed { reference } => ("attempts", reference.as_deref(), None),
            Self::Rejected { reason } | Self::Failed { reason } => {
                ("attempts", None, Some(reason.as_str()))
            }
            Self::Redrive => ("0", None, None),
        };
        Ok(DeliveryUpdate {
            from: state,
            to,
            attempts,
            reference,
            error,
        })
    }
}

impl StoreError {
    /// Why `order`'s units did not fit: the stock is short for a SKU the drop sells, or the
    /// SKU is unknown.
    pub(crate) fn not_fitting(order: &Order, sku_known: bool) -> Self {
        let (drop_id, sku) = (order.drop_id.clone(), order.sku.clone());
        if sku_known {
            Self::Oversell { drop_id, sku }
        } else {
            Self::UnknownSku { drop_id, sku }
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The write would hold more units of a SKU than its stock; nothing was written.
    #[error("{drop_id}/{sku}: not enough stock for the reservation")]
    Oversell {
        /// The drop.
        drop_id: DropId,
        /// The SKU.
        sku: String,
    },
    /// A drop update would set a SKU's stock below the units orders hold.
    #[error("{drop_id}/{sku}: stock may not go below the units orders hold")]
    StockBelowHeld {
        /// The drop.
        drop_id: DropId,
        /// The SKU.
        sku: String,
    },
    /// The customer's orders through other nodes already hold the drop's per-customer limit.
    #[error("{drop_id}: the customer's orders already hold the per-customer limit")]
    LimitReached {
        /// The drop.
        drop_id: DropId,
        /// The customer.
        customer: String,
        /// The drop's limit.
        limit: u32,
    },
    /// The order names a drop or SKU the store does not know.
    #[error("{drop_id}/{sku}: no such drop or sku")]
    UnknownSku {
        /// The drop.
        drop_id: DropId,
        /// The SKU.
        sku: String,
    },
    /// No order has this id.
    #[error("{0}: no such order")]
    UnknownOrder(OrderId),
    /// The order is not in a state the change applies to; nothing was written.
    #[error("{order_id} is {}; the change does not apply", state.as_str())]
    WrongState {
        /// The order.
        order_id: OrderId,
        /// Where it stands.
        state: OrderState,
    },
    /// The drop already has an order under this idempotency key (placed through another node,
    /// or before the key left memory): nothing was written.
    #[error("{drop_id}: the idempotency key already has order {order_id}")]
    KeyTaken {
        /// The drop.
        drop_id: DropId,
        /// The order stored under the key.
        order_id: OrderId,
        /// The digest of the request that placed it, to tell a replay from a reuse.
        fingerprint: RequestFingerprint,
    },
    /// The writer's queue is full: the disk is not keeping up.
    #[error("the store's write queue is full")]
    Overloaded,
    /// The store was closed (shutting down).
    #[error("the store is closed")]
    Closed,
    /// The backend failed; the text says how.
    #[error("store backend: {0}")]
    Backend(String),
}
