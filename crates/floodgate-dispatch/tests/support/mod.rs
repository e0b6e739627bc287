//! An in-memory outbox and order factory, so the dispatcher can run on paused time.
#![allow(dead_code)] // each test binary uses its own part of the support module

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_core::{
    DropId, DropSpec, IdempotencyKey, Order, OrderId, OrderRequest, OrderState, SkuSpec, Timestamp,
};
use floodgate_dispatch::{DispatchSettings, Outbox};
use floodgate_store::{Delivery, SqliteOptions, SqliteStore, Store, StoreError, StoreFuture};
use tokio::sync::watch;

pub(crate) const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

/// `count` accepted orders of one unit each.
pub(crate) fn orders(count: u64) -> Vec<Order> {
    (1..=count)
        .map(|serial| {
            let request = OrderRequest {
                customer: format!("c-{serial}"),
                sku: "rod".into(),
                quantity: 1,
            };
            let fingerprint = request.fingerprint();
            Order::accepted(
                OrderId::new(T0, u128::from(serial)),
                DropId::parse("spring").unwrap(),
                IdempotencyKey::parse(&format!("key-{serial}")).unwrap(),
                request,
                fingerprint,
                T0,
            )
        })
        .collect()
}

/// Settings for a downstream that takes `rate` a second.
pub(crate) fn settings(rate: u32) -> DispatchSettings {
    DispatchSettings {
        rate_per_second: NonZeroU32::new(rate).unwrap(),
        max_in_flight: NonZeroU32::new(8).unwrap(),
        max_attempts: NonZeroU32::new(30).unwrap(),
        timeout: Duration::from_secs(2),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(5),
        breaker_failures: 5,
        breaker_open: Duration::from_secs(1),
    }
}

enum Change {
    Moved,
    Settled,
    Reopened,
}

/// Orders in memory, moved by the same rules as the store's.
pub(crate) struct MemoryOutbox {
    orders: Mutex<BTreeMap<OrderId, Order>>,
    /// How many orders are in a final state (confirmed, rejected, failed).
    settled: watch::Sender<usize>,
}

impl MemoryOutbox {
    pub(crate) fn new(orders: Vec<Order>) -> Arc<Self> {
        let orders = orders
            .into_iter()
            .map(|order| (order.order_id.clone(), order))
            .collect();
        Arc::new(Self {
            orders: Mutex::new(orders),
            settled: watch::channel(0).0,
        })
    }

    /// Waits until `count` orders are settled.
    pub(crate) async fn settled(&self, count: usize) {
        let mut settled = self.settled.subscribe();
        settled.wait_for(|settled| *settled >= count).await.unwrap();
    }

    pub(crate) fn all(&self) -> Vec<Order> {
        self.orders.lock().unwrap().values().cloned().collect()
    }

    pub(crate) fn in_state(&self, state: OrderState) -> usize {
        self.all()
            .iter()
            .filter(|order| order.state == state)
            .count()
    }
}

impl Outbox for MemoryOutbox {
    fn waiting(
        &self,
        state: OrderState,
        after: Option<OrderId>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<Order>> {
        let orders = self.orders.lock().unwrap();
        let page = orders
            .values()
            .filter(|order| order.state == state)
            .filter(|order| after.as_ref().is_none_or(|after| order.order_id > *after))
            .take(limit as usize)
            .cloned()
            .collect();
        Box::pin(async move { Ok(page) })
    }

    fn record(&self, order_id: OrderId, change: Delivery, now: Timestamp) -> StoreFuture<'_, ()> {
        let mut orders = self.orders.lock().unwrap();
        let result = match orders.get_mut(&order_id) {
            None => Err(StoreError::UnknownOrder(order_id)),
            Some(order) => {
                let (from, to) = change.transition();
                if from.contains(&order.state) {
                    order.state = to;
                    order.updated_at = now;
                    match change {
                        Delivery::Attempt => {
                            order.attempts += 1;
                            Ok(Change::Moved)
                        }
                        Delivery::Confirmed { reference } => {
                            order.downstream_ref = reference;
                            Ok(Change::Settled)
                        }
                        Delivery::Rejected { reason } | Delivery::Failed { reason } => {
                            order.last_error = Some(reason);
                            Ok(Change::Settled)
                        }
                        Delivery::Redrive => {
                            order.attempts = 0;
                            Ok(Change::Reopened)
                        }
                    }
                } else {
                    Err(StoreError::WrongState {
                        order_id,
                        state: order.state,
                    })
                }
            }
        };
        drop(orders);
        if let Ok(change) = &result {
            self.settled.send_modify(|settled| match change {
                Change::Settled => *settled += 1,
                Change::Reopened => *settled -= 1,
                Change::Moved => {}
            });
        }
        Box::pin(async move { result.map(|_| ()) })
    }
}

/// A SQLite store in a temporary directory holding `count` accepted orders of a drop with
/// enough stock.
pub(crate) async fn store_with(count: u64) -> (Arc<SqliteStore>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(data.path(), SqliteOptions::default()).unwrap());
    let spec = DropSpec::new(
        "Spring".into(),
        T0,
        T0.add_millis(3_600_000),
        1,
        vec![SkuSpec {
            sku: "rod".into(),
            name: "Rod".into(),
            price_cents: 100,
            stock: count,
        }],
    );
    store
        .put_drop(DropId::parse("spring").unwrap(), spec, T0)
        .await
        .unwrap();
    let mut accepting = tokio::task::JoinSet::new();
    for order in orders(count) {
        let store = Arc::clone(&store);
        accepting.spawn(async move { store.accept_order(order).await });
    }
    for accepted in accepting.join_all().await {
        accepted.unwrap();
    }
    (store, data)
}
