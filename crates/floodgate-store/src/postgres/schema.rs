//! The PostgreSQL schema, its migrations and the mapping between rows and domain types.
//!
//! The tables mirror SQLite's: stock in its own table with `CHECK (held <= stock)`, so the
//! database refuses an oversell whatever a node's memory believed, and an order's reservation is
//! its row plus its units in `stock.held`, changed in one transaction.
//!
//! Migrations run at start-up in one transaction under an advisory lock, so nodes that start
//! together against an empty database take turns: the first applies them, the rest find them
//! applied.

use floodgate_core::{
    DropId, IdempotencyKey, Order, OrderId, OrderState, RequestFingerprint, Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::StoreError;

/// The advisory lock migrations hold (an arbitrary constant: "floodgat" in ASCII).
const MIGRATION_LOCK: i64 = 0x666c_6f6f_6467_6174;

/// How long a starting node waits for the database to be free: a node restarted right after
/// its predecessor stopped finds the lock released within moments, once the server has seen the
/// old connection close.
const NODE_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
const NODE_LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The advisory lock a node holds on its write connection for as long as it runs ("fgnode").
const NODE_LOCK: i64 = 0x6667_6e6f_6465;

/// Claims the database for this node: until nodes coordinate their stock, waiting rooms and
/// delivery through it, a second node on the same database would sell from a ledger that does
/// not see the first one's orders and double the downstream's rate. The lock goes with the
/// connection, so a node that dies (even by SIGKILL) frees it.
pub(super) async fn claim_for_this_node(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + NODE_LOCK_PATIENCE;
    loop {
        let claimed: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&NODE_LOCK])
            .await
            .map_err(backend)?
            .get(0);
        if claimed {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(NODE_LOCK_RETRY).await;
    }
    Err(StoreError::Backend(
        "another floodgate node is using this database; several nodes on one database \
         are not supported yet"
            .into(),
    ))
}

/// Versioned migrations; `floodgate_migrations` records which have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE drops (
    drop_id    TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE stock (
    drop_id TEXT NOT NULL,
    sku     TEXT NOT NULL,
    stock   BIGINT NOT NULL,
    held    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (drop_id, sku),
    CHECK (held >= 0 AND held <= stock)
);

CREATE TABLE orders (
    seq             BIGSERIAL PRIMARY KEY,
    order_id        TEXT NOT NULL UNIQUE,
    drop_id         TEXT NOT NULL,
    sku             TEXT NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity > 0),
    customer        TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    accepted_at     BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    downstream_ref  TEXT,
    idempotency_key TEXT NOT NULL,
    fingerprint     BYTEA NOT NULL,
    last_error      TEXT
);

CREATE INDEX orders_by_state ON orders (state, seq);
CREATE INDEX orders_by_drop ON orders (drop_id, seq);
CREATE INDEX orders_by_acceptance ON orders (accepted_at);
-- Same key, same order, whichever node it reaches and however long ago: the database's guard.
CREATE UNIQUE INDEX orders_by_key ON orders (drop_id, idempotency_key);

-- One row that `/readyz` rewrites to prove a commit still goes through.
CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), beats BIGINT NOT NULL);
INSERT INTO heartbeat VALUES (1, 0);
"#];

/// Columns of `orders`, in the order [`order_from_row`] reads them.
pub(super) const ORDER_COLUMNS: &str = "order_id, drop_id, sku, quantity, customer, state, attempts, \
     accepted_at, updated_at, downstream_ref, idempotency_key, fingerprint, last_error";

/// Brings the schema up to date, taking turns with any other node doing the same.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    let transaction = client.transaction().await.map_err(backend)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS floodgate_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(backend)?;
    let applied: i64 = transaction
        .query_one("SELECT COUNT(*) FROM floodgate_migrations", &[])
        .await
        .map_err(backend)?
        .get(0);
    let applied = usize::try_from(applied).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        transaction
            .batch_execute(migration)
            .await
            .map_err(backend)?;
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        transaction
            .execute(
                "INSERT INTO floodgate_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(backend)?;
    }
    transaction.commit().await.map_err(backend)
}

/// Reads one order from a row selected with [`ORDER_COLUMNS`].
pub(super) fn order_from_row(row: &Row) -> Result<Order, StoreError> {
    let corrupt = |what: &str| StoreError::Backend(format!("stored {what} is malformed"));
    let text = |index: usize| row.try_get::<_, String>(index).map_err(backend);
    let fingerprint: Vec<u8> = row.try_get(11).map_err(backend)?;
    let quantity: i32 = row.try_get(3).map_err(backend)?;
    let attempts: i32 = row.try_get(6).map_err(backend)?;
    Ok(Order {
        order_id: OrderId::parse(&text(0)?).ok_or_else(|| corrupt("order id"))?,
        drop_id: DropId::parse(&text(1)?).map_err(|_| corrupt("drop id"))?,
        sku: text(2)?,
        quantity: u32::try_from(quantity).map_err(|_| corrupt("quantity"))?,
        customer: text(4)?,
        state: OrderState::parse(&text(5)?).ok_or_else(|| corrupt("state"))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
        accepted_at: Timestamp::from_unix_millis(row.try_get(7).map_err(backend)?),
        updated_at: Timestamp::from_unix_millis(row.try_get(8).map_err(backend)?),
        downstream_ref: row.try_get(9).map_err(backend)?,
        idempotency_key: IdempotencyKey::parse(&text(10)?).map_err(|_| corrupt("key"))?,
        fingerprint: RequestFingerprint(
            fingerprint.try_into().map_err(|_| corrupt("fingerprint"))?,
        ),
        last_error: row.try_get(12).map_err(backend)?,
    })
}

/// A `u64` count or amount as PostgreSQL's `BIGINT`.
pub(super) fn bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `u32` as PostgreSQL's `INTEGER`.
pub(super) fn integer(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Whether `error` is a violated `CHECK` constraint (such as `held <= stock`).
pub(super) fn is_check_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::CHECK_VIOLATION)
}

/// Wraps a PostgreSQL error as a backend failure, with the server's message when it sent one.
pub(super) fn backend(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::Backend(format!("postgres: {}", db.message())),
        None => StoreError::Backend(format!("postgres: {error}")),
    }
}
