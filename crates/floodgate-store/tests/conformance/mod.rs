//! The conformance suite every [`Store`] backend must pass, written once against the trait.
//!
//! A backend's test file implements [`Backend`] and calls [`conformance_suite!`], which expands
//! to one test per case below.

use std::sync::Arc;

use floodgate_core::{
    DropId, DropSpec, IdempotencyKey, Order, OrderId, OrderRequest, OrderState, SkuSpec, Timestamp,
};
use floodgate_store::{Delivery, Holding, OrderFilter, StateCount, Store, StoreError};

/// Opens a backend's store; opening twice must reach the same data (a restart).
pub(crate) trait Backend {
    /// The store type under test.
    type Store: Store;
    /// Opens the store on this backend's data.
    async fn open(&self) -> Self::Store;
}

/// Expands to one `#[tokio::test]` per conformance case, for `$backend` (an expression that
/// builds a fresh [`Backend`]).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            a_new_store_is_empty,
            drops_round_trip_and_update,
            an_accepted_order_is_stored_whole,
            accepted_orders_survive_a_restart,
            the_store_refuses_to_oversell,
            unknown_skus_are_refused,
            stock_cannot_go_below_held_units,
            concurrent_orders_all_commit,
            listing_filters_and_pages,
            keys_expire_by_age,
            close_flushes_and_then_refuses,
            a_delivery_runs_to_confirmed_and_survives_a_restart,
            a_rejected_order_gives_its_units_back,
            a_failed_order_keeps_its_units_until_redriven,
            deliveries_refuse_the_wrong_state_and_unknown_orders,
            units_are_counted_per_sku_and_state,
            an_idempotency_key_holds_one_order,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                conformance::$case(&$backend).await;
            }
        )*
    };
}

pub(crate) const T0: Timestamp = Timestamp::from_unix_millis(1_000_000);

/// The drop every case uses.
pub(crate) fn drop_id() -> DropId {
    DropId::parse("spring").unwrap()
}

/// The drop every case sells: two SKUs of `stock` units each, five units a customer.
pub(crate) fn spec(stock: u64) -> DropSpec {
    DropSpec::new(
        "Spring drop".into(),
        T0,
        T0.add_millis(3_600_000),
        5,
        vec![
            SkuSpec {
                sku: "rod".into(),
                name: "Rod".into(),
                price_cents: 19_900,
                stock,
            },
            SkuSpec {
                sku: "reel".into(),
                name: "Reel".into(),
                price_cents: 9_900,
                stock,
            },
        ],
    )
}

/// Order number `serial`, by customer `c-{serial}` under key `key-{serial}`.
pub(crate) fn order(serial: u64, sku: &str, quantity: u32) -> Order {
    let request = OrderRequest {
        customer: format!("c-{serial}"),
        sku: sku.into(),
        quantity,
    };
    let fingerprint = request.fingerprint();
    Order::accepted(
        OrderId::new(T0, u128::from(serial)),
        drop_id(),
        IdempotencyKey::parse(&format!("key-{serial}")).unwrap(),
        request,
        fingerprint,
        T0.add_millis(serial as i64),
    )
}

async fn with_drop<B: Backend>(backend: &B, stock: u64) -> B::Store {
    let store = backend.open().await;
    store.put_drop(drop_id(), spec(stock), T0).await.unwrap();
    store
}

pub(crate) async fn a_new_store_is_empty<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let snapshot = store.load(Timestamp::from_unix_millis(0)).await.unwrap();
    assert!(snapshot.drops.is_empty() && snapshot.holdings.is_empty() && snapshot.keys.is_empty());
    assert_eq!(
        store
            .order(OrderId::new(Timestamp::from_unix_millis(0), 1))
            .await
            .unwrap(),
        None
    );
    store.check_writable().await.unwrap();
}

pub(crate) async fn drops_round_trip_and_update<B: Backend>(backend: &B) {
    let store = with_drop(backend, 10).await;
    let mut updated = spec(20);
    updated.paused = true;
    updated.skus.pop();
    store
        .put_drop(drop_id(), updated.clone(), T0)
        .await
        .unwrap();
    let snapshot = store.load(T0).await.unwrap();
    assert_eq!(snapshot.drops, vec![(drop_id(), updated)]);
}

pub(crate) async fn an_accepted_order_is_stored_whole<B: Backend>(backend: &B) {
    let store = with_drop(backend, 10).await;
    let accepted = order(1, "rod", 2);
    store.accept_order(accepted.clone()).await.unwrap();
    assert_eq!(
        store.order(accepted.order_id.clone()).await.unwrap(),
        Some(accepted.clone())
    );
    let snapshot = store.load(T0).await.unwrap();
    assert_eq!(
        snapshot.holdings,
        vec![Holding {
            drop_id: drop_id(),
            customer: accepted.customer.clone(),
            sku: "rod".into(),
            units: 2
        }]
    );
    assert_eq!(snapshot.keys.len(), 1);
    assert_eq!(snapshot.keys[0].key, accepted.idempotency_key);
    assert_eq!(snapshot.keys[0].fingerprint, accepted.fingerprint);
    assert_eq!(snapshot.keys[0].order_id, accepted.order_id);
    assert_accepted(&store, 1, 2).await;
}

pub(crate) async fn accepted_orders_survive_a_restart<B: Backend>(backend: &B) {
    let accepted = order(1, "rod", 1);
    {
        let store = with_drop(backend, 10).await;
        store.accept_order(accepted.clone()).await.unwrap();
        store.close().await.unwrap();
    }
    let reopened = backend.open().await;
    assert_eq!(
        reopened.order(accepted.order_id.clone()).await.unwrap(),
        Some(accepted)
    );
    assert_eq!(reopened.load(T0).await.unwrap().drops.len(), 1);
}

pub(crate) async fn the_store_refuses_to_oversell<B: Backend>(backend: &B) {
    let store = with_drop(backend, 3).await;
    store.accept_order(order(1, "rod", 2)).await.unwrap();
    let refused = order(2, "rod", 2);
    let error = store.accept_order(refused.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::Oversell { .. }), "{error:?}");
    assert_eq!(store.order(refused.order_id).await.unwrap(), None);
    store.accept_order(order(3, "rod", 1)).await.unwrap();
    assert_accepted(&store, 2, 3).await;
}

pub(crate) async fn unknown_skus_are_refused<B: Backend>(backend: &B) {
    let store = with_drop(backend, 3).await;
    let error = store.accept_order(order(1, "net", 1)).await.unwrap_err();
    assert!(matches!(error, StoreError::UnknownSku { .. }), "{error:?}");
}

pub(crate) async fn stock_cannot_go_below_held_units<B: Backend>(backend: &B) {
    let store = with_drop(backend, 5).await;
    store.accept_order(order(1, "rod", 4)).await.unwrap();
    let error = store.put_drop(drop_id(), spec(3), T0).await.unwrap_err();
    assert!(
        matches!(error, StoreError::StockBelowHeld { .. }),
        "{error:?}"
    );
    let mut without_rod = spec(5);
    without_rod.skus.remove(0);
    let error = store
        .put_drop(drop_id(), without_rod, T0)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::StockBelowHeld { .. }),
        "{error:?}"
    );
    store.put_drop(drop_id(), spec(4), T0).await.unwrap();
    assert_eq!(store.load(T0).await.unwrap().drops[0].1, spec(4));
}

pub(crate) async fn concurrent_orders_all_commit<B: Backend>(backend: &B) {
    let store = Arc::new(with_drop(backend, 1_000).await);
    let tasks: Vec<_> = (0..1_500)
        .map(|serial| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.accept_order(order(serial, "rod", 1)).await })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => accepted += 1,
            Err(StoreError::Oversell { .. }) => {}
            Err(error) => panic!("unexpected {error:?}"),
        }
    }
    assert_eq!(accepted, 1_000);
    assert_accepted(store.as_ref(), 1_000, 1_000).await;
}

pub(crate) async fn listing_filters_and_pages<B: Backend>(backend: &B) {
    let store = with_drop(backend, 100).await;
    let orders: Vec<Order> = (0..5).map(|serial| order(serial, "reel", 1)).collect();
    for accepted in &orders {
        store.accept_order(accepted.clone()).await.unwrap();
    }
    let everything = OrderFilter {
        drop_id: Some(drop_id()),
        limit: 100,
        ..OrderFilter::default()
    };
    assert_eq!(store.orders(everything.clone()).await.unwrap(), orders);
    let page = OrderFilter {
        after: Some(orders[1].order_id.clone()),
        limit: 2,
        ..everything.clone()
    };
    assert_eq!(store.orders(page).await.unwrap(), orders[2..4]);
    let failed = OrderFilter {
        state: Some(OrderState::Failed),
        ..everything
    };
    assert!(store.orders(failed).await.unwrap().is_empty());
    let other_drop = OrderFilter {
        drop_id: Some(DropId::parse("other").unwrap()),
        limit: 10,
        ..OrderFilter::default()
    };
    assert!(store.orders(other_drop).await.unwrap().is_empty());
}

pub(crate) async fn keys_expire_by_age<B: Backend>(backend: &B) {
    let store = with_drop(backend, 100).await;
    for serial in 0..4 {
        store
            .accept_order(order(serial * 1_000, "rod", 1))
            .await
            .unwrap();
    }
    let recent = store.load(T0.add_millis(1_500)).await.unwrap();
    let mut keys: Vec<_> = recent
        .keys
        .iter()
        .map(|key| key.key.as_str().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["key-2000", "key-3000"]);
}

pub(crate) async fn close_flushes_and_then_refuses<B: Backend>(backend: &B) {
    let store = Arc::new(with_drop(backend, 100).await);
    let pending: Vec<_> = (0..50)
        .map(|serial| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.accept_order(order(serial, "rod", 1)).await })
        })
        .collect();
    for task in pending {
        task.await.unwrap().unwrap();
    }
    store.close().await.unwrap();
    assert_eq!(
        store.accept_order(order(99, "rod", 1)).await,
        Err(StoreError::Closed)
    );
    let reopened = backend.open().await;
    assert_eq!(
        reopened.order_counts(drop_id()).await.unwrap()[&OrderState::Accepted].orders,
        50
    );
}

/// Asserts how many orders the drop holds accepted, and how many units they hold.
async fn assert_accepted<S: Store>(store: &S, orders: u64, units: u64) {
    let counts = store.order_counts(drop_id()).await.unwrap();
    assert_eq!(
        counts.get(&OrderState::Accepted),
        Some(&StateCount { orders, units })
    );
}

fn held_units(snapshot: &floodgate_store::Snapshot) -> u64 {
    snapshot.holdings.iter().map(|holding| holding.units).sum()
}

pub(crate) async fn a_delivery_runs_to_confirmed_and_survives_a_restart<B: Backend>(backend: &B) {
    let store = with_drop(backend, 10).await;
    let placed = order(1, "rod", 2);
    let id = placed.order_id.clone();
    store.accept_order(placed).await.unwrap();
    for _ in 0..2 {
        store
            .record_delivery(id.clone(), Delivery::Attempt, T0.add_millis(5))
            .await
            .unwrap();
    }
    let submitting = store.order(id.clone()).await.unwrap().unwrap();
    assert_eq!(
        (submitting.state, submitting.attempts),
        (OrderState::Submitting, 2)
    );
    let reference = Some("L-1".to_owned());
    store
        .record_delivery(
            id.clone(),
            Delivery::Confirmed { reference },
            T0.add_millis(9),
        )
        .await
        .unwrap();
    drop(store);
    let reopened = backend.open().await;
    let confirmed = reopened.order(id).await.unwrap().unwrap();
    assert_eq!(confirmed.state, OrderState::Confirmed);
    assert_eq!(confirmed.attempts, 2);
    assert_eq!(confirmed.downstream_ref.as_deref(), Some("L-1"));
    assert_eq!(confirmed.updated_at, T0.add_millis(9));
    // A confirmed order keeps its units: they are sold.
    assert_eq!(held_units(&reopened.load(T0).await.unwrap()), 2);
}

pub(crate) async fn a_rejected_order_gives_its_units_back<B: Backend>(backend: &B) {
    let store = with_drop(backend, 3).await;
    let placed = order(1, "rod", 3);
    let id = placed.order_id.clone();
    store.accept_order(placed).await.unwrap();
    assert!(matches!(
        store.accept_order(order(2, "rod", 1)).await,
        Err(StoreError::Oversell { .. })
    ));
    store
        .record_delivery(id.clone(), Delivery::Attempt, T0)
        .await
        .unwrap();
    let reason = "422 unknown customer".to_owned();
    store
        .record_delivery(id.clone(), Delivery::Rejected { reason }, T0)
        .await
        .unwrap();
    let rejected = store.order(id).await.unwrap().unwrap();
    assert_eq!(rejected.state, OrderState::Rejected);
    assert_eq!(rejected.last_error.as_deref(), Some("422 unknown customer"));
    assert_eq!(held_units(&store.load(T0).await.unwrap()), 0);
    // The units are on sale again.
    store.accept_order(order(3, "rod", 3)).await.unwrap();
}

pub(crate) async fn a_failed_order_keeps_its_units_until_redriven<B: Backend>(backend: &B) {
    let store = with_drop(backend, 5).await;
    let placed = order(1, "reel", 2);
    let id = placed.order_id.clone();
    store.accept_order(placed).await.unwrap();
    store
        .record_delivery(id.clone(), Delivery::Attempt, T0)
        .await
        .unwrap();
    let reason = "503 after 8 attempts".to_owned();
    store
        .record_delivery(id.clone(), Delivery::Failed { reason }, T0)
        .await
        .unwrap();
    let dead_letters = store
        .orders(OrderFilter {
            state: Some(OrderState::Failed),
            limit: 10,
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(
        dead_letters[0].last_error.as_deref(),
        Some("503 after 8 attempts")
    );
    assert_eq!(held_units(&store.load(T0).await.unwrap()), 2);
    store
        .record_delivery(id.clone(), Delivery::Redrive, T0)
        .await
        .unwrap();
    let redriven = store.order(id).await.unwrap().unwrap();
    assert_eq!(
        (redriven.state, redriven.attempts),
        (OrderState::Accepted, 0)
    );
    assert_eq!(held_units(&store.load(T0).await.unwrap()), 2);
}

pub(crate) async fn deliveries_refuse_the_wrong_state_and_unknown_orders<B: Backend>(backend: &B) {
    let store = with_drop(backend, 5).await;
    let placed = order(1, "rod", 1);
    let id = placed.order_id.clone();
    store.accept_order(placed).await.unwrap();
    let confirm = Delivery::Confirmed { reference: None };
    assert_eq!(
        store.record_delivery(id.clone(), confirm, T0).await,
        Err(StoreError::WrongState {
            order_id: id.clone(),
            state: OrderState::Accepted
        })
    );
    assert!(matches!(
        store
            .record_delivery(id.clone(), Delivery::Redrive, T0)
            .await,
        Err(StoreError::WrongState { .. })
    ));
    let unknown = OrderId::new(T0, 999);
    assert_eq!(
        store
            .record_delivery(unknown.clone(), Delivery::Attempt, T0)
            .await,
        Err(StoreError::UnknownOrder(unknown))
    );
    let unchanged = store.order(id).await.unwrap().unwrap();
    assert_eq!(
        (unchanged.state, unchanged.attempts),
        (OrderState::Accepted, 0)
    );
}

pub(crate) async fn units_are_counted_per_sku_and_state<B: Backend>(backend: &B) {
    let store = with_drop(backend, 10).await;
    let confirmed = order(1, "rod", 2);
    store.accept_order(confirmed.clone()).await.unwrap();
    store.accept_order(order(2, "rod", 3)).await.unwrap();
    store.accept_order(order(3, "reel", 1)).await.unwrap();
    store
        .record_delivery(confirmed.order_id.clone(), Delivery::Attempt, T0)
        .await
        .unwrap();
    store
        .record_delivery(
            confirmed.order_id,
            Delivery::Confirmed { reference: None },
            T0,
        )
        .await
        .unwrap();
    let units = store.sku_units(drop_id()).await.unwrap();
    let expected = [
        (("reel".to_owned(), OrderState::Accepted), 1),
        (("rod".to_owned(), OrderState::Accepted), 3),
        (("rod".to_owned(), OrderState::Confirmed), 2),
    ];
    assert_eq!(units, expected.into_iter().collect());
}

pub(crate) async fn an_idempotency_key_holds_one_order<B: Backend>(backend: &B) {
    let store = with_drop(backend, 10).await;
    let first = order(1, "rod", 2);
    store.accept_order(first.clone()).await.unwrap();
    // Another order under the same key, in a batch of its own and in a batch with a stranger.
    let mut again = order(2, "rod", 3);
    again.idempotency_key = first.idempotency_key.clone();
    let stranger = order(3, "rod", 1);
    let (refused, accepted) = tokio::join!(
        store.accept_order(again.clone()),
        store.accept_order(stranger.clone())
    );
    assert_eq!(
        refused,
        Err(StoreError::KeyTaken {
            drop_id: drop_id(),
            order_id: first.order_id.clone(),
            fingerprint: first.fingerprint,
        })
    );
    accepted.unwrap();
    assert_eq!(store.order(again.order_id).await.unwrap(), None);
    // The refused order holds nothing.
    assert_accepted(&store, 2, 3).await;
    // Nor does it hold stock: three units are held, so the stock may go down to three.
    store.put_drop(drop_id(), spec(3), T0).await.unwrap();
    assert!(matches!(
        store.put_drop(drop_id(), spec(2), T0).await,
        Err(StoreError::StockBelowHeld { .. })
    ));
}
