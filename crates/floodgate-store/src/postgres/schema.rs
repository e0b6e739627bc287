//! The PostgreSQL schema, its migrations and the mapping between rows and domain types.
//!
//! The tables mirror SQLite's, plus what several nodes share: stock in its own table with
//! `CHECK (allocated <= stock)`, so the database refuses an oversell whatever a node's memory
//! believed; leases of stock per node; each customer's units per drop (the per-customer limit's
//! guard); and the leadership of cluster-wide roles. An order's reservation is its row, its
//! units taken from its node's lease (or from `stock.allocated` when the lease is short) and its
//! customer's units, changed in one transaction.
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

/// Versioned migrations; `floodgate_migrations` records which have run.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- Several nodes on one database. `stock.allocated` counts the units held by orders or leased to
-- a node; a lease's `remaining` units are the ones of its node's still unsold, so the units
-- orders hold are `allocated - SUM(remaining)` and `allocated <= stock` is the no-oversell guard.
ALTER TABLE stock RENAME COLUMN held TO allocated;

CREATE TABLE stock_leases (
    drop_id    TEXT NOT NULL,
    sku        TEXT NOT NULL,
    node       TEXT NOT NULL,
    remaining  BIGINT NOT NULL CHECK (remaining >= 0),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (drop_id, sku, node)
);
CREATE INDEX stock_leases_by_expiry ON stock_leases (expires_at);
CREATE INDEX stock_leases_by_node ON stock_leases (node);

-- The per-customer limit, guarded by the database across nodes.
ALTER TABLE drops ADD COLUMN customer_limit BIGINT;
UPDATE drops SET customer_limit = (spec::json ->> 'limit_per_customer')::bigint;
CREATE TABLE customer_holdings (
    drop_id  TEXT NOT NULL,
    customer TEXT NOT NULL,
    units    BIGINT NOT NULL CHECK (units >= 0),
    PRIMARY KEY (drop_id, customer)
);
INSERT INTO customer_holdings
    SELECT drop_id, customer, SUM(quantity) FROM orders
    WHERE state NOT IN ('rejected', 'released') GROUP BY drop_id, customer;

-- Who leads a cluster-wide role, until when (by the database's clock).
CREATE TABLE leadership (
    role       TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"#,
    r#"
-- Waiting rooms shared by the nodes. A room's row is locked by whoever admits, so counting the
-- passes in force and issuing new ones are one step across the cluster; its positions come from
-- the sequence `room_positions_<room_no>`, created with the room. Identities and draw keys are
-- stored order-preserving (the unsigned digest with its top bit flipped).
CREATE TABLE rooms (
    drop_id          TEXT PRIMARY KEY,
    room_no          BIGSERIAL UNIQUE,
    seed             BYTEA NOT NULL,
    drawn            BOOLEAN NOT NULL DEFAULT false,
    entrants         BIGINT NOT NULL DEFAULT 0,
    head             BIGINT NOT NULL DEFAULT 0,
    admitted         BIGINT NOT NULL DEFAULT 0
);

-- One place per identity per room. `state`: prequeue, waiting, admitted, held (an order is being
-- placed with the pass), spent, expired or skipped. The pass number is the position admitted.
CREATE TABLE room_places (
    drop_id     TEXT NOT NULL,
    identity    BIGINT NOT NULL,
    draw_key    BIGINT NOT NULL,
    state       TEXT NOT NULL,
    position    BIGINT,
    seen_at     TIMESTAMPTZ NOT NULL,
    admitted_at TIMESTAMPTZ,
    expires_at  TIMESTAMPTZ,
    PRIMARY KEY (drop_id, identity)
);
CREATE UNIQUE INDEX room_places_by_position ON room_places (drop_id, position);
CREATE INDEX room_places_waiting ON room_places (drop_id, position) WHERE state = 'waiting';
CREATE INDEX room_places_prequeue ON room_places (drop_id) WHERE state = 'prequeue';
CREATE INDEX room_places_in_force ON room_places (drop_id) WHERE state IN ('admitted', 'held');
CREATE INDEX room_places_by_turn ON room_places (drop_id, admitted_at);

-- A node whose lease request fell short while other nodes' leases hold units asks them to
-- give back what they will not sell soon.
ALTER TABLE stock_leases ADD COLUMN wanted BOOLEAN NOT NULL DEFAULT false;
"#,
    r#"
-- Orders and units per drop, SKU and state, kept by each node's writer in the transactions that
-- insert orders or change their state, so counting a drop's orders sums these rows instead of
-- reading every order. A row per node: nodes never wait for each other's tallies. A node's row
-- may go below zero when it moves orders another node took; the sums are exact.
CREATE TABLE order_tallies (
    drop_id TEXT NOT NULL,
    sku     TEXT NOT NULL,
    state   TEXT NOT NULL,
    node    TEXT NOT NULL,
    orders  BIGINT NOT NULL,
    units   BIGINT NOT NULL,
    PRIMARY KEY (drop_id, sku, state, node)
);
INSERT INTO order_tallies
    SELECT drop_id, sku, state, '', COUNT(*), SUM(quantity) FROM orders GROUP BY drop_id, sku, state;
"#,
];

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

/// A `BIGINT` count read back (never negative; a negative one reads as 0).
pub(super) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A duration as seconds, for `$n * interval '1 second'` (a `double precision`).
pub(super) fn seconds(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64()
}

/// A `u32` as PostgreSQL's `INTEGER`.
pub(super) fn integer(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Whether `error` is a violated `CHECK` constraint (such as `allocated <= stock`).
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
