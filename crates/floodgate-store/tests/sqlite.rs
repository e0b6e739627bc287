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
