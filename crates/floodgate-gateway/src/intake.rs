//! Order intake: the hot path from a shopper's order to a durable `202`.
//!
//! Each drop has one [`DropLedger`] behind a mutex, held only for in-memory decisions (no I/O,
//! well under a microsecond). A winning order takes its units, is handed to the store's group
//! commit, and is answered only once it is on disk. The commit runs in its own task, so a shopper
//! who hangs up cannot leave a reservation or an idempotency key half-done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use floodgate_core::ledger::SharedLedger;
use floodgate_core::{
    DropId, DropLedger, DropSpec, IdempotencyKey, KeyLookup, KeyTable, Order, OrderId,
    OrderRequest, Refusal, Timestamp,
};
use floodgate_store::{Store, StoreError};

use crate::error::ApiError;
use crate::lock;
use crate::stock_leases::StockLeases;

/// Limits of the intake, from the `[intake]` config section.
#[derive(Debug, Clone)]
pub struct IntakeLimits {
    /// Most units one order may ask for.
    pub max_quantity_per_order: u32,
    /// How long an idempotency key is remembered after its order was accepted.
    pub idempotency_retention: Duration,
    /// How long a lease of stock lasts unrenewed (a store several nodes share).
    pub lease_ttl: Duration,
}

/// The answer to an order that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Stored just now.
    Accepted(OrderId),
    /// The key was answered before with the same request: the same order again.
    Replayed(OrderId),
}

impl Placed {
    /// The order either way.
    pub fn order_id(&self) -> &OrderId {
        match self {
            Self::Accepted(order_id) | Self::Replayed(order_id) => order_id,
        }
    }
}

/// How many times one order waits for a lease refill before it is answered `503`: the pool
/// changes under other nodes' leases, but not forever.
const REFILLS_PER_ORDER: u32 = 3;

/// Every drop's ledger, and the store behind them.
pub struct Intake {
    store: Arc<dyn Store>,
    ledgers: RwLock<HashMap<DropId, SharedLedger>>,
    // Serialises drop definitions so two admin updates cannot interleave store and ledger writes.
    definitions: tokio::sync::Mutex<()>,
    limits: IntakeLimits,
    /// When the store last refused a write for want of capacity (ms since the epoch; 0: never).
    last_overload: Arc<AtomicI64>,
    /// Whether the store's last order commit failed (a full disk, an I/O error): `/readyz`
    /// says so until a commit succeeds again.
    commits_failing: Arc<AtomicBool>,
    /// Leases of stock, when the store is shared with other nodes.
    leases: Option<StockLeases>,
}

impl Intake {
    /// Rebuilds every ledger from the store: drops, units held, idempotency keys in retention.
    pub async fn restore(
        store: Arc<dyn Store>,
        limits: IntakeLimits,
        now: Timestamp,
    ) -> Result<Self, StoreError> {
        let snapshot = store
            .load(keys_since(now, limits.idempotency_retention))
            .await?;
        let leases = store.cluster().map(|_| StockLeases::new(limits.lease_ttl));
        let leased = leases.is_some();
        let mut ledgers: HashMap<DropId, DropLedger> = snapshot
            .drops
            .into_iter()
            .map(|(drop_id, spec)| (drop_id, new_ledger(spec, leased)))
            .collect();
        for holding in snapshot.holdings {
            if let Some(ledger) = ledgers.get_mut(&holding.drop_id) {
                ledger.restore_holding(&holding.customer, &holding.sku, holding.units);
            }
        }
        for key in snapshot.keys {
            if let Some(ledger) = ledgers.get_mut(&key.drop_id) {
                ledger
                    .keys
                    .restore(key.key, key.fingerprint, key.order_id, key.accepted_at);
            }
        }
        let ledgers = ledgers
            .into_iter()
            .map(|(drop_id, ledger)| (drop_id, Arc::new(Mutex::new(ledger))))
            .collect();
        Ok(Self {
            store,
            ledgers: RwLock::new(ledgers),
            definitions: tokio::sync::Mutex::new(()),
            limits,
            last_overload: Arc::new(AtomicI64::new(0)),
            commits_failing: Arc::new(AtomicBool::new(false)),
            leases,
        })
    }

    /// The store behind the intake.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads a drop's ledger under its lock.
    pub fn with_drop<T>(&self, drop_id: &DropId, read: impl FnOnce(&DropLedger) -> T) -> Option<T> {
        self.ledger(drop_id).map(|ledger| read(&lock(&ledger)))
    }

    /// Every drop id, sorted.
    pub fn drop_ids(&self) -> Vec<DropId> {
        let mut ids: Vec<DropId> = self
            .ledgers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Sizes `drop_id`'s tables for `customers` more customers ahead of its surge.
    pub(crate) fn presize(&self, drop_id: &DropId, customers: usize) {
        if let Some(ledger) = self.ledger(drop_id) {
            lock(&ledger).presize(customers);
        }
    }

    /// What `key` would answer for `request` in `drop_id`, without claiming it.
    pub fn lookup_key(
        &self,
        drop_id: &DropId,
        key: &IdempotencyKey,
        request: &OrderRequest,
    ) -> Option<KeyLookup> {
        self.with_drop(drop_id, |ledger| {
            ledger.keys.lookup(key, request.fingerprint())
        })
    }

    /// On a shared store, the answer another node gave the first request under `key`, so a
    /// retry that moved nodes is not refused by what this node's memory sees now. `None`: no
    /// node took the key (or the store is this node's alone, whose memory knows every key).
    async fn first_answer_elsewhere(
        &self,
        ledger: &SharedLedger,
        drop_id: &DropId,
        key: &IdempotencyKey,
        request: &OrderRequest,
        now: Timestamp,
    ) -> Result<Option<Result<Placed, ApiError>>, ApiError> {
        let Some(cluster) = self.store.cluster() else {
            return Ok(None);
        };
        let Some(order) = cluster.order_by_key(drop_id.clone(), key.clone()).await? else {
            return Ok(None);
        };
        let fingerprint = order.fingerprint;
        lock(ledger)
            .keys
            .restore(key.clone(), fingerprint, order.order_id.clone(), now);
        Ok(Some(if fingerprint == request.fingerprint() {
            Ok(Placed::Replayed(order.order_id))
        } else {
            Err(ApiError::IdempotencyKeyReused)
        }))
    }

    /// Takes an order: replays a known key, refuses from memory, or reserves, stores durably and
    /// answers once the order is on disk.
    pub async fn place_order(
        &self,
        drop_id: &DropId,
        key: IdempotencyKey,
        request: OrderRequest,
        now: Timestamp,
    ) -> Result<Placed, ApiError> {
        request
            .validate(self.limits.max_quantity_per_order)
            .map_err(|invalid| ApiError::InvalidBody(invalid.to_string()))?;
        let ledger = self.ledger(drop_id).ok_or(ApiError::UnknownDrop)?;
        let fingerprint = request.fingerprint();
        {
            let mut drop = lock(&ledger);
            match drop.keys.claim(&key, fingerprint) {
                KeyLookup::Fresh => {}
                KeyLookup::Replay(order_id) => return Ok(Placed::Replayed(order_id)),
                KeyLookup::InProgress => return Err(ApiError::RequestInProgress),
                KeyLookup::Reused => return Err(ApiError::IdempotencyKeyReused),
            }
        }
        let mut refills = 0;
        loop {
            let refused = {
                let mut drop = lock(&ledger);
                match drop.reserve(&request.customer, &request.sku, request.quantity, now) {
                    Ok(()) => break,
                    Err(Refusal::LeaseShort) if refills < REFILLS_PER_ORDER => None,
                    Err(refusal) => {
                        drop.keys.forget(&key);
                        Some(refusal)
                    }
                }
            };
            if let Some(refusal) = refused {
                if let Some(first) = self
                    .first_answer_elsewhere(&ledger, drop_id, &key, &request, now)
                    .await?
                {
                    return first;
                }
                return Err(match refusal {
                    // The pool kept moving under other nodes' leases: try again shortly.
                    Refusal::LeaseShort => ApiError::Overloaded,
                    refusal => refusal.into(),
                });
            }
            refills += 1;
            if let Err(error) = self
                .refill(&ledger, drop_id, &request.sku, request.quantity)
                .await
            {
                lock(&ledger).keys.forget(&key);
                return Err(error.into());
            }
        }
        let order_id = OrderId::new(now, uuid::Uuid::new_v4().as_u128());
        let order = Order::accepted(order_id, drop_id.clone(), key, request, fingerprint, now);
        let store = Arc::clone(&self.store);
        let last_overload = Arc::clone(&self.last_overload);
        let commits_failing = Arc::clone(&self.commits_failing);
        // Detached: once units are taken, the commit and its bookkeeping finish even if the
        // client hangs up and this future is dropped.
        let commit = tokio::spawn(async move {
            let stored = store.accept_order(order.clone()).await;
            match &stored {
                Ok(()) => commits_failing.store(false, Ordering::Relaxed),
                Err(StoreError::Backend(_)) => commits_failing.store(true, Ordering::Relaxed),
                Err(_) => {}
            }
            let mut drop = lock(&ledger);
            match stored {
                Ok(()) => {
                    drop.keys
                        .finish(&order.idempotency_key, order.order_id.clone(), now);
                    Ok(Placed::Accepted(order.order_id))
                }
                // The store knew the key (another node took it, or memory had forgotten it):
                // remember its order, and answer as the key's first request was answered.
                Err(StoreError::KeyTaken {
                    order_id,
                    fingerprint,
                    ..
                }) => {
                    drop.release(&order.customer, &order.sku, order.quantity);
                    drop.keys
                        .restore(order.idempotency_key, fingerprint, order_id.clone(), now);
                    if fingerprint == order.fingerprint {
                        Ok(Placed::Replayed(order_id))
                    } else {
                        Err(ApiError::IdempotencyKeyReused)
                    }
                }
                Err(error) => {
                    if error == StoreError::Overloaded {
                        last_overload.store(now.unix_millis(), Ordering::Relaxed);
                    }
                    drop.release(&order.customer, &order.sku, order.quantity);
                    drop.keys.forget(&order.idempotency_key);
                    match error {
                        // The store cannot commit now (a full disk, say; its writer has logged
                        // why): nothing was taken, and the shopper may retry, as from an
                        // overloaded store.
                        StoreError::Backend(_) => Err(ApiError::Overloaded),
                        error => Err(ApiError::from(error)),
                    }
                }
            }
        });
        commit.await.unwrap_or(Err(ApiError::Internal))
    }

    /// Whether the last order commit failed, and none has succeeded since.
    pub(crate) fn commits_failing(&self) -> bool {
        self.commits_failing.load(Ordering::Relaxed)
    }

    /// The store proved it can commit again (the readiness probe's own commit succeeded).
    pub(crate) fn commits_recovered(&self) {
        self.commits_failing.store(false, Ordering::Relaxed);
    }

    /// Whether the store refused an order for want of capacity within `window` before `now`:
    /// the shop behind is saturated, and the waiting room should admit fewer.
    pub fn saturated(&self, now: Timestamp, window: Duration) -> bool {
        let last = self.last_overload.load(Ordering::Relaxed);
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        last != 0 && now.unix_millis() - last < window_ms
    }

    /// Puts the units of an order that no longer holds them (rejected downstream) back on sale;
    /// the store has already returned them.
    pub fn return_units(&self, order: &Order) {
        if let Some(ledger) = self.ledger(&order.drop_id) {
            lock(&ledger).return_rejected(&order.customer, &order.sku, order.quantity);
        }
    }

    /// Leases more of a SKU for an order that found this node's lease short.
    async fn refill(
        &self,
        ledger: &SharedLedger,
        drop_id: &DropId,
        sku: &str,
        quantity: u32,
    ) -> Result<(), StoreError> {
        match (&self.leases, self.store.cluster()) {
            (Some(leases), Some(cluster)) => {
                leases
                    .refill(cluster, ledger, drop_id, sku, u64::from(quantity))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Keeps this node's leases of stock topped up, renewed, and reclaims lapsed ones (a store
    /// shared with other nodes; nothing otherwise).
    pub(crate) async fn tend_leases(&self, now: Timestamp) -> Result<(), StoreError> {
        match (&self.leases, self.store.cluster()) {
            (Some(leases), Some(cluster)) => leases.tend(cluster, &self.all_ledgers(), now).await,
            _ => Ok(()),
        }
    }

    /// Takes in the drops defined or changed through other nodes sharing the store, and how
    /// many units are on sale outside this node (other nodes sell, leases come back).
    pub(crate) async fn follow_drops(&self) -> Result<(), StoreError> {
        let Some(cluster) = self.store.cluster() else {
            return Ok(());
        };
        let stored = cluster.drops().await?;
        for (drop_id, sku, elsewhere) in cluster.stock_elsewhere().await? {
            if let Some(ledger) = self.ledger(&drop_id) {
                lock(&ledger).see_elsewhere(&sku, elsewhere);
            }
        }
        let _one_definition_at_a_time = self.definitions.lock().await;
        for (drop_id, spec) in stored {
            match self.ledger(&drop_id) {
                Some(ledger) => {
                    let mut drop = lock(&ledger);
                    if drop.spec() != &spec {
                        tracing::info!(drop = %drop_id, "drop changed through another node");
                        drop.apply_spec(spec);
                    }
                }
                None => {
                    tracing::info!(drop = %drop_id, "drop defined through another node");
                    let ledger = Arc::new(Mutex::new(new_ledger(spec, true)));
                    self.ledgers
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(drop_id, ledger);
                }
            }
        }
        Ok(())
    }

    /// Gives back the stock this node leased and did not sell (a graceful shutdown, once no
    /// order is being placed).
    pub(crate) async fn return_leases(&self) -> Result<(), StoreError> {
        if let (Some(leases), Some(cluster)) = (&self.leases, self.store.cluster()) {
            let units = leases.return_all(cluster, &self.all_ledgers()).await?;
            tracing::info!(units, "unsold leased stock returned to the pool");
        }
        Ok(())
    }

    fn all_ledgers(&self) -> Vec<(DropId, SharedLedger)> {
        self.ledgers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(drop_id, ledger)| (drop_id.clone(), Arc::clone(ledger)))
            .collect()
    }

    /// Creates or replaces a drop's definition, keeping the units its orders hold.
    pub async fn put_drop(
        &self,
        drop_id: DropId,
        spec: DropSpec,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(ApiError::InvalidDrop(problems));
        }
        let _one_definition_at_a_time = self.definitions.lock().await;
        let existing = self.ledger(&drop_id);
        if let Some(ledger) = &existing {
            lock(ledger)
                .check_spec(&spec)
                .map_err(ApiError::StockInUse)?;
        }
        self.store
            .put_drop(drop_id.clone(), spec.clone(), now)
            .await?;
        match existing {
            Some(ledger) => lock(&ledger).apply_spec(spec),
            None => {
                let ledger = Arc::new(Mutex::new(new_ledger(spec, self.leases.is_some())));
                self.ledgers
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(drop_id, ledger);
            }
        }
        Ok(())
    }

    /// Pauses or resumes a drop, durably.
    pub async fn set_paused(
        &self,
        drop_id: &DropId,
        paused: bool,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let spec = self
            .with_drop(drop_id, |drop| drop.spec().clone())
            .ok_or(ApiError::UnknownDrop)?;
        self.put_drop(drop_id.clone(), DropSpec { paused, ..spec }, now)
            .await
    }

    /// Forgets idempotency keys older than the retention.
    pub fn prune_keys(&self, now: Timestamp) {
        let answered_before = keys_since(now, self.limits.idempotency_retention);
        for (_, ledger) in self.all_ledgers() {
            // A part per lock, so orders wait for a sliver of the sweep, never all of it.
            for part in 0..KeyTable::PARTS {
                lock(&ledger).keys.prune_part(part, answered_before);
            }
        }
    }

    fn ledger(&self, drop_id: &DropId) -> Option<SharedLedger> {
        self.ledgers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(drop_id)
            .cloned()
    }
}

/// A drop's ledger: selling from leases when the store is shared with other nodes.
fn new_ledger(spec: DropSpec, leased: bool) -> DropLedger {
    if leased {
        DropLedger::leased(spec)
    } else {
        DropLedger::new(spec)
    }
}

fn keys_since(now: Timestamp, retention: Duration) -> Timestamp {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    now.add_millis(-retention_ms)
}
