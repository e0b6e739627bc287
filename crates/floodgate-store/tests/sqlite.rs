//! The conformance suite against the embedded SQLite backend.

mod conformance;

use floodgate_store::{SqliteOptions, SqliteStore};

struct Sqlite(tempfile::TempDir);

impl conformance::Backend for Sqlite {
    type Store = SqliteStore;
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(self.0.path(), SqliteOptions::default()).expect("open sqlite store")
    }
}

fn sqlite() -> Sqlite {
    Sqlite(tempfile::tempdir().expect("temp dir"))
}

conformance_suite!(sqlite());

/// A store written before the tallies existed gets them counted from its orders when it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_the_tallies_gets_them_counted_from_its_orders() {
    use conformance::Backend;
    use floodgate_store::Store;
    let backend = sqlite();
    conformance::units_are_counted_per_sku_and_state(&backend).await;
    let expected = backend
        .open()
        .await
        .sku_units(conformance::drop_id())
        .await
        .unwrap();
    assert_eq!(expected.len(), 3, "{expected:?}");
    let old = rusqlite::Connection::open(backend.0.path().join("floodgate.db")).unwrap();
    old.execute_batch("DROP TABLE order_tallies; PRAGMA user_version = 3;")
        .unwrap();
    drop(old);
    let reopened = backend.open().await;
    assert_eq!(
        reopened.sku_units(conformance::drop_id()).await.unwrap(),
        expected
    );
}

/// Every index on `orders` costs every insert a B-tree write, so the table keeps only those a
/// query reads: the order id and the idempotency key (both unique). Lists walk `seq` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_keep_only_the_indexes_a_query_reads() {
    use conformance::Backend;
    let backend = sqlite();
    drop(backend.open().await);
    let connection = rusqlite::Connection::open(backend.0.path().join("floodgate.db")).unwrap();
    let mut statement = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders' ORDER BY name")
        .unwrap();
    let indexes: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["orders_by_key", "sqlite_autoindex_orders_1"]);
}
