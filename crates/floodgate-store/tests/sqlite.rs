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
