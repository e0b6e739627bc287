//! The conformance suite against the PostgreSQL backend, each case on a throwaway cluster of its
//! own (`floodgate_testkit::postgres`); PostgreSQL missing is a failure with a clear message,
//! never a skip.

mod conformance;

use floodgate_store::{PostgresOptions, PostgresStore};
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
/// and the second node is refused with a clear message rather than sharing the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_starting_at_once_migrate_once_and_only_one_runs() {
    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    cluster.create_database("shared").unwrap();
    let url = cluster.url("shared");
    let (first, second) = tokio::join!(
        PostgresStore::open(&url, PostgresOptions::default()),
        PostgresStore::open(&url, PostgresOptions::default()),
    );
    let (running, refused) = match (first, second) {
        (Ok(store), Err(error)) | (Err(error), Ok(store)) => (store, error),
        (first, second) => panic!(
            "exactly one node must run: {:?} / {:?}",
            first.err(),
            second.err()
        ),
    };
    assert!(
        refused.to_string().contains("another floodgate node"),
        "{refused}"
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let migrations: i64 = client
        .query_one("SELECT COUNT(*) FROM floodgate_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(migrations, 1, "each migration ran once");
    // Once the running node is gone, another may take over the database.
    drop(running);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match PostgresStore::open(&url, PostgresOptions::default()).await {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                assert!(
                    error.to_string().contains("another floodgate node"),
                    "{error}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the database was not freed: {error}"),
        }
    }
}

/// The database restarts (a failover looks the same from here): writes fail while it is down,
/// and the store reconnects by itself once it is back, for writes and reads alike, and the node
/// reclaims the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_the_database_restarts() {
    use floodgate_core::{DropId, DropSpec, OrderState, SkuSpec, Timestamp};
    use floodgate_store::{OrderFilter, Store};

    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    let store = PostgresStore::open(&cluster.url("postgres"), PostgresOptions::default())
        .await
        .unwrap();
    let drop_id = DropId::parse("spring").unwrap();
    let spec = DropSpec {
        name: "Spring".into(),
        starts_at: Timestamp::from_unix_millis(0),
        ends_at: Timestamp::from_unix_millis(10_000_000),
        limit_per_customer: 5,
        skus: vec![SkuSpec {
            sku: "rod".into(),
            name: "Rod".into(),
            price_cents: 1,
            stock: 10,
        }],
        waiting_room: Default::default(),
        paused: false,
        prewarm_s: 0,
        expected_shoppers: 0,
        prewarm_paths: Vec::new(),
    };
    let now = Timestamp::from_unix_millis(1_000);
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
