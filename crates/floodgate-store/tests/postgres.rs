//! The conformance suite against the PostgreSQL backend, each case on a throwaway cluster of its
//! own (`floodgate_testkit::postgres`); PostgreSQL missing is a failure with a clear message,
//! never a skip.

mod conformance;

use std::time::Duration;

use conformance::{T0, drop_id, order, spec};
use floodgate_core::{DropSpec, Order, OrderState};
use floodgate_store::{Delivery, PostgresOptions, PostgresStore, Store, StoreError};
use floodgate_testkit::postgres::PostgresCluster;

struct Postgres(PostgresCluster);

impl conformance::Backend for Postgres {
    type Store = PostgresStore;
    async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.0.url("postgres"), PostgresOptions::default())
            .await
            .expect("open postgres store")
    }
}

fn postgres() -> Postgres {
    Postgres(PostgresCluster::start().expect("a throwaway PostgreSQL cluster"))
}

conformance_suite!(postgres());

/// Two nodes starting at once against an empty database: the schema is migrated exactly once,
/// and both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_starting_at_once_migrate_once_and_both_run() {
    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    cluster.create_database("shared").unwrap();
    let url = cluster.url("shared");
    let (first, second) = tokio::join!(
        PostgresStore::open(&url, PostgresOptions::default()),
        PostgresStore::open(&url, PostgresOptions::default()),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(
        first.cluster().unwrap().node(),
        second.cluster().unwrap().node()
    );
    let client = PostgresCluster::connect(&url).await;
    let once: bool = client
        .query_one(
            "SELECT COUNT(*) = COUNT(DISTINCT version) AND COUNT(*) = MAX(version)
             FROM floodgate_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(once, "each migration ran once");
    first.check_writable().await.unwrap();
    second.check_writable().await.unwrap();
}

/// Leases split a SKU's stock between nodes: each sells from its own lease, neither can take
/// more than the pool has, orders past a short lease fall back to the pool, and the units of a
/// lease that lapsed or was given back return to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_split_the_stock_between_nodes_and_lapsed_ones_come_back() {
    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    let url = cluster.url("postgres");
    let (a, b) = (open(&url).await, open(&url).await);
    a.put_drop(drop_id(), spec(10), T0).await.unwrap();
    let ttl = Duration::from_secs(60);
    let (lease_a, lease_b) = (a.cluster().unwrap(), b.cluster().unwrap());
    let grant = lease_a
        .lease_stock(drop_id(), "rod".into(), 6, ttl)
        .await
        .unwrap();
    assert_eq!((grant.granted, grant.unleased), (6, 4));
    let grant = lease_b
        .lease_stock(drop_id(), "rod".into(), 6, ttl)
        .await
        .unwrap();
    assert_eq!((grant.granted, grant.unleased), (4, 0));
    let grant = lease_b
        .lease_stock(drop_id(), "rod".into(), 1, ttl)
        .await
        .unwrap();
    assert_eq!(grant.granted, 0, "the pool is empty");

    // A sells 6 from its lease; a 7th has neither lease nor pool left.
    for serial in 0..6 {
        a.accept_order(order(serial, "rod", 1)).await.unwrap();
    }
    assert!(matches!(
        a.accept_order(order(6, "rod", 1)).await,
        Err(StoreError::Oversell { .. })
    ));
    assert_eq!(remaining(&url, lease_a.node()).await, 0);
    // B gives 3 of its 4 back; A's next order takes one from the pool.
    lease_b
        .return_stock(drop_id(), "rod".into(), 3)
        .await
        .unwrap();
    a.accept_order(order(7, "rod", 1)).await.unwrap();
    // B's lease lapses: its last unit comes back to the pool, whoever reclaims it.
    let grant = lease_b
        .lease_stock(drop_id(), "reel".into(), 2, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(grant.granted, 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let renewed = lease_b.renew_leases(ttl).await.unwrap();
    assert_eq!(
        renewed.len(),
        1,
        "only the unexpired lease is renewed: {renewed:?}"
    );
    assert_eq!(lease_a.reclaim_lapsed_leases().await.unwrap(), 2);
    assert_eq!(lease_b.return_all_stock().await.unwrap(), 1);
    let client = PostgresCluster::connect(&url).await;
    let row = client
        .query_one("SELECT allocated, stock FROM stock WHERE sku = 'rod'", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (7, 10),
        "7 sold, 3 back in the pool"
    );
    let leases: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM stock_leases WHERE node = $1",
            &[&lease_b.node()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leases, 0);
}

/// A customer buying through two nodes at once is held to the drop's limit by the database,
/// and a rejected order's units count against the limit no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_customer_limit_holds_across_nodes() {
    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    let url = cluster.url("postgres");
    let (a, b) = (open(&url).await, open(&url).await);
    a.put_drop(
        drop_id(),
        DropSpec {
            limit_per_customer: 4,
            ..spec(100)
        },
        T0,
    )
    .await
    .unwrap();
    let first = Order {
        customer: "ann".into(),
        quantity: 3,
        ..order(1, "rod", 3)
    };
    let second = Order {
        customer: "ann".into(),
        quantity: 2,
        ..order(2, "rod", 2)
    };
    a.accept_order(first.clone()).await.unwrap();
    assert_eq!(
        b.accept_order(second.clone()).await,
        Err(StoreError::LimitReached {
            drop_id: drop_id(),
            customer: "ann".into(),
            limit: 4
        })
    );
    a.record_delivery(first.order_id.clone(), Delivery::Attempt, T0)
        .await
        .unwrap();
    a.record_delivery(
        first.order_id.clone(),
        Delivery::Rejected {
            reason: "no".into(),
        },
        T0,
    )
    .await
    .unwrap();
    b.accept_order(second).await.unwrap();
}

/// One leader per role: a second node is refused while the term runs, takes over once it has
/// expired (a new term number), and the old leader is then refused; resigning hands over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_follower_takes_over_an_expired_term() {
    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    let url = cluster.url("postgres");
    let (a, b) = (open(&url).await, open(&url).await);
    let (a, b) = (a.cluster().unwrap(), b.cluster().unwrap());
    let short = Duration::from_millis(300);
    let first = a
        .lead("dispatch", short)
        .await
        .unwrap()
        .expect("nobody led");
    assert!(first.taken_over);
    assert_eq!(b.lead("dispatch", short).await.unwrap(), None);
    let kept = a.lead("dispatch", short).await.unwrap().unwrap();
    assert_eq!((kept.number, kept.taken_over), (first.number, false));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = b
        .lead("dispatch", short)
        .await
        .unwrap()
        .expect("the term expired");
    assert_eq!((taken.number, taken.taken_over), (first.number + 1, true));
    assert_eq!(a.lead("dispatch", short).await.unwrap(), None);
    b.resign("dispatch").await.unwrap();
    let back = a
        .lead("dispatch", short)
        .await
        .unwrap()
        .expect("b resigned");
    assert_eq!((back.number, back.taken_over), (first.number + 2, true));
}

async fn open(url: &str) -> PostgresStore {
    PostgresStore::open(url, PostgresOptions::default())
        .await
        .unwrap()
}

/// Units still unsold in `node`'s leases.
async fn remaining(url: &str, node: &str) -> i64 {
    PostgresCluster::connect(url)
        .await
        .query_one(
            "SELECT COALESCE(SUM(remaining), 0)::int8 FROM stock_leases WHERE node = $1",
            &[&node],
        )
        .await
        .unwrap()
        .get(0)
}

/// The database restarts (a failover looks the same from here): writes fail while it is down,
/// and the store reconnects by itself once it is back, for writes and reads alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_the_database_restarts() {
    use floodgate_store::OrderFilter;

    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    let store = open(&cluster.url("postgres")).await;
    let (drop_id, spec, now) = (drop_id(), spec(10), T0);
    store.put_drop(drop_id.clone(), spec, now).await.unwrap();
    store.check_writable().await.unwrap();

    cluster.pause().unwrap();
    assert!(
        store.check_writable().await.is_err(),
        "no database, no commit"
    );
    cluster.resume().unwrap();
    store
        .check_writable()
        .await
        .expect("the writer reconnects by itself");
    let counts = store.order_counts(drop_id.clone()).await.unwrap();
    assert!(!counts.contains_key(&OrderState::Accepted));
    let listed = store
        .orders(OrderFilter {
            drop_id: Some(drop_id),
            limit: 10,
            ..OrderFilter::default()
        })
        .await
        .expect("the readers reconnect by themselves");
    assert!(listed.is_empty());
}
