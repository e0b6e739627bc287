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
