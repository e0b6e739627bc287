//! Durable reservations per second through the SQLite store: group commit against one commit per
//! order (`max_batch = 1`), both with many orders in flight at once as during a drop.
//!
//! Run: `cargo bench -p floodgate-store --bench group_commit`. Criterion prints each variant's
//! throughput in orders/s; their ratio is the gain from group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floodgate_core::{
    DropId, DropSpec, IdempotencyKey, Order, OrderId, OrderRequest, SkuSpec, Timestamp,
};
use floodgate_store::{SqliteOptions, SqliteStore, Store};

/// Orders submitted concurrently per measured batch: a burst of shoppers hitting intake at once.
const ORDERS_IN_FLIGHT: u64 = 2_000;

fn reservations(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = criterion.benchmark_group("durable_reservations");
    group.throughput(Throughput::Elements(ORDERS_IN_FLIGHT));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, max_batch, in_flight) in [
        ("group_commit", 2_048, ORDERS_IN_FLIGHT),
        ("commit_per_order", 1, 200),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteOptions {
            max_batch,
            ..SqliteOptions::default()
        };
        let store = Arc::new(SqliteStore::open(dir.path(), options).expect("store"));
        let drop_id = DropId::parse("bench").expect("id");
        runtime
            .block_on(store.put_drop(drop_id.clone(), spec(), Timestamp::from_unix_millis(0)))
            .expect("drop");
        let counter = Arc::new(AtomicU64::new(0));
        group.throughput(Throughput::Elements(in_flight));
        group.bench_function(name, |bencher| {
            bencher.to_async(&runtime).iter(|| {
                let tasks: Vec<_> = (0..in_flight)
                    .map(|_| {
                        let store = Arc::clone(&store);
                        let order = order(&drop_id, counter.fetch_add(1, Ordering::Relaxed));
                        tokio::spawn(async move { store.accept_order(order).await })
                    })
                    .collect();
                async move {
                    for task in tasks {
                        task.await.expect("task").expect("durable write");
                    }
                }
            });
        });
    }
    group.finish();
}

fn spec() -> DropSpec {
    DropSpec::new(
        "bench".into(),
        Timestamp::from_unix_millis(0),
        Timestamp::from_unix_millis(i64::MAX),
        1,
        vec![SkuSpec {
            sku: "unit".into(),
            name: "Unit".into(),
            price_cents: 1,
            stock: u64::from(u32::MAX),
        }],
    )
}

fn order(drop_id: &DropId, serial: u64) -> Order {
    let request = OrderRequest {
        customer: format!("c-{serial}"),
        sku: "unit".into(),
        quantity: 1,
    };
    let fingerprint = request.fingerprint();
    let epoch = Timestamp::from_unix_millis(0);
    Order::accepted(
        OrderId::new(epoch, u128::from(serial)),
        drop_id.clone(),
        IdempotencyKey::parse(&format!("k-{serial}")).expect("key"),
        request,
        fingerprint,
        epoch,
    )
}

criterion_group!(benches, reservations);
criterion_main!(benches);
