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
