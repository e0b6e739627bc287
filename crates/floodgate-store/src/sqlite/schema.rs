//! The SQLite schema and the mapping between rows and domain types.
//!
//! Stock lives in its own table with `CHECK (held <= stock)`: the database itself refuses an
//! oversell, whatever the in-memory ledger believed. An order's reservation is its row in a
//! stock-holding state plus its units in `stock.held`, always changed in one transaction.

use floodgate_core::{
    DropId, IdempotencyKey, Order, OrderId, OrderState, RequestFingerprint, Timestamp,
};
use rusqlite::{Connection, Row};

use crate::StoreError;

/// Versioned migrations; `user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE drops (
    drop_id    TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE stock (
    drop_id TEXT NOT NULL,
    sku     TEXT NOT NULL,
    stock   INTEGER NOT NULL,
    held    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (drop_id, sku),
    CHECK (held >= 0 AND held <= stock)
) STRICT, WITHOUT ROWID;

CREATE TABLE orders (
    seq             INTEGER PRIMARY KEY,
    order_id        TEXT NOT NULL UNIQUE,
    drop_id         TEXT NOT NULL,
    sku             TEXT NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity > 0),
    customer        TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    accepted_at     INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    downstream_ref  TEXT,
    idempotency_key TEXT NOT NULL,
    fingerprint     BLOB NOT NULL
) STRICT;

CREATE INDEX orders_by_state ON orders (state, seq);
CREATE INDEX orders_by_drop ON orders (drop_id, seq);

-- One row that `/readyz` rewrites to prove a commit still reaches the disk.
CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), beats INTEGER NOT NULL) STRICT;
INSERT INTO heartbeat VALUES (1, 0);
"#,
    r#"
ALTER TABLE orders ADD COLUMN last_error TEXT;
"#,
    // Same key, same order, however long ago: the database's guard behind the ledger's.
    r#"
CREATE UNIQUE INDEX orders_by_key ON orders (drop_id, idempotency_key);
"#,
    // Kept by the writer in the transactions that insert orders or change their state, so
    // counting a drop's orders reads these rows, not every order.
    r#"
CREATE TABLE order_tallies (
    drop_id TEXT NOT NULL,
    sku     TEXT NOT NULL,
    state   TEXT NOT NULL,
    orders  INTEGER NOT NULL,
    units   INTEGER NOT NULL,
    PRIMARY KEY (drop_id, sku, state)
) STRICT, WITHOUT ROWID;
INSERT INTO order_tallies
    SELECT drop_id, sku, state, COUNT(*), SUM(quantity) FROM orders GROUP BY drop_id, sku, state;
"#,
    // No query reads these two: order lists walk `seq` from their cursor, and the start-up
    // scan reads every row. Each was two more B-trees for every insert and state change to write.
    r#"
DROP INDEX IF EXISTS orders_by_state;
DROP INDEX IF EXISTS orders_by_drop;
"#,
];

/// What a migration turns into when existing data refuses it: a store that reused keys after
/// they left memory (before the unique index) keeps a plain index and the old behaviour.
const FALLBACKS: &[(usize, &str)] = &[(
    2,
    "CREATE INDEX orders_by_key ON orders (drop_id, idempotency_key);",
)];

/// Columns of `orders`, in the order [`order_from_row`] reads them.
pub(super) const ORDER_COLUMNS: &str = "order_id, drop_id, sku, quantity, customer, state, attempts, \
     accepted_at, updated_at, downstream_ref, idempotency_key, fingerprint, last_error";

/// Sets durability pragmas and brings the schema up to date.
pub(super) fn prepare_writer(connection: &mut Connection) -> Result<(), StoreError> {
    // WAL + FULL: every commit fsyncs the log, so a committed order survives power loss
    // (research/order_pipeline.md §5.1: NORMAL may roll back committed transactions).
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .and_then(|()| connection.pragma_update(None, "synchronous", "FULL"))
        .map_err(backend)?;
    map_file(connection)?;
    let applied: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend)?;
    let applied = usize::try_from(applied).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction().map_err(backend)?;
        if let Err(error) = transaction.execute_batch(migration) {
            let fallback = FALLBACKS.iter().find(|(version, _)| *version == index);
            match (error.sqlite_error_code(), fallback) {
                (Some(rusqlite::ErrorCode::ConstraintViolation), Some((_, fallback))) => {
                    tracing::warn!(
                        migration = index + 1,
                        "existing orders repeat an idempotency key; keys are guarded in memory only"
                    );
                    transaction.execute_batch(fallback).map_err(backend)?;
                }
                _ => return Err(backend(error)),
            }
        }
        transaction
            .pragma_update(None, "user_version", index as i64 + 1)
            .map_err(backend)?;
        transaction.commit().map_err(backend)?;
    }
    Ok(())
}

/// Reads through a memory map of the database file, so a page missing from SQLite's own cache
/// costs no system call. That cache stays at SQLite's default (2 MiB): the end of a write
/// transaction may walk the whole hash table of the page cache, and at 64 MiB that walk
/// (`pcache1TruncateUnsafe`) took 2 % of all of `bench/intake.sh`'s samples under `perf`. At
/// the default it is gone, and the writer's CPU per order fell by about 2 µs with the bench's
/// keys, 5 to 10 µs with random ones.
pub(super) fn map_file(connection: &Connection) -> Result<(), StoreError> {
    const MMAP_BYTES: i64 = 256 * 1024 * 1024;
    connection
        .pragma_update(None, "mmap_size", MMAP_BYTES)
        .map_err(backend)
}

/// Reads one order from a row selected with [`ORDER_COLUMNS`].
pub(super) fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    let text = |index: usize| row.get::<_, String>(index);
    let corrupt = |index: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("stored {what} is malformed").into(),
        )
    };
    let fingerprint: Vec<u8> = row.get(11)?;
    Ok(Order {
        order_id: OrderId::parse(&text(0)?).ok_or_else(|| corrupt(0, "order id"))?,
        drop_id: DropId::parse(&text(1)?).map_err(|_| corrupt(1, "drop id"))?,
        sku: text(2)?,
        quantity: row.get(3)?,
        customer: text(4)?,
        state: OrderState::parse(&text(5)?).ok_or_else(|| corrupt(5, "state"))?,
        attempts: row.get(6)?,
        accepted_at: Timestamp::from_unix_millis(row.get(7)?),
        updated_at: Timestamp::from_unix_millis(row.get(8)?),
        downstream_ref: row.get(9)?,
        idempotency_key: IdempotencyKey::parse(&text(10)?).map_err(|_| corrupt(10, "key"))?,
        fingerprint: RequestFingerprint(
            fingerprint
                .try_into()
                .map_err(|_| corrupt(11, "fingerprint"))?,
        ),
        last_error: row.get(12)?,
    })
}

/// Wraps a SQLite error as a backend failure.
pub(super) fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}
