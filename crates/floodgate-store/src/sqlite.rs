//! The embedded default backend: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Writes go through the group-commit [`writer`](crate::writer); reads use a small pool of
//! read-only connections on tokio's blocking threads, so a lookup never waits behind an fsync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use floodgate_core::{
    DropId, DropSpec, IdempotencyKey, Order, OrderId, OrderState, RequestFingerprint, Timestamp,
};
use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::Semaphore;

mod checkpoint;
mod commit;
mod schema;

use checkpoint::Checkpointer;
use commit::SqliteCommitter;
use schema::{ORDER_COLUMNS, backend, map_file, order_from_row, prepare_writer};

use crate::writer::{Write, WriterHandle};
use crate::{
    CommitFigures, Delivery, Holding, OrderFilter, Snapshot, StateCount, Store, StoreError,
    StoreFuture, StoredKey,
};

/// The database file inside the data directory.
const DATABASE_FILE: &str = "floodgate.db";

/// Tuning of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers get `Overloaded`.
    pub queue_capacity: usize,
    /// Read connections open at once.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_batch: 2_048,
            queue_capacity: 65_536,
            readers: 4,
        }
    }
}

/// The SQLite store, cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: WriterHandle,
    readers: Arc<ReaderPool>,
    /// The directory of the database, whose disk [`Store::check_writable`] measures.
    data_dir: std::path::PathBuf,
}

/// Free space below which the store does not call itself writable: a write into space the
/// write-ahead log already holds can succeed on a full disk while the next batch, or the
/// checkpoint that moves it into the database, cannot.
const MIN_FREE_BYTES: u64 = 8 * 1024 * 1024;

impl SqliteStore {
    /// Opens (or creates) the store in `data_dir`, migrating its schema.
    pub fn open(data_dir: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Backend(format!("cannot create {}: {error}", data_dir.display()))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let mut connection = Connection::open(&path).map_err(backend)?;
        prepare_writer(&mut connection)?;
        let checkpoints = Checkpointer::open(&path)?;
        let open = move || {
            Ok(SqliteCommitter {
                connection,
                _checkpointing: checkpoints.start(),
            })
        };
        let (writer, _thread) =
            WriterHandle::spawn(open, options.max_batch, options.queue_capacity)?;
        let readers = Arc::new(ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(options.readers.max(1)),
        });
        Ok(Self {
            writer,
            readers,
            data_dir: data_dir.to_owned(),
        })
    }

    fn read<T, F>(&self, query: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        Box::pin(async move { readers.run(query).await })
    }
}

impl Store for SqliteStore {
    fn load(&self, keys_since: Timestamp) -> StoreFuture<'_, Snapshot> {
        self.read(move |connection| load(connection, keys_since).map_err(backend))
    }

    fn put_drop(&self, drop_id: DropId, spec: DropSpec, now: Timestamp) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.submit(Write::PutDrop { drop_id, spec, now }))
    }

    fn accept_order(&self, order: Order) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.submit(Write::AcceptOrder(order)))
    }

    fn order(&self, order_id: OrderId) -> StoreFuture<'_, Option<Order>> {
        self.read(move |connection| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
            let mut rows = statement
                .query_map([order_id.as_str()], order_from_row)
                .map_err(backend)?;
            rows.next().transpose().map_err(backend)
        })
    }

    fn orders(&self, filter: OrderFilter) -> StoreFuture<'_, Vec<Order>> {
        self.read(move |connection| {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders
                 WHERE (?1 IS NULL OR drop_id = ?1) AND (?2 IS NULL OR state = ?2)
                   AND seq > COALESCE((SELECT seq FROM orders WHERE order_id = ?3), 0)
                 ORDER BY seq LIMIT ?4"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
            let rows = statement
                .query_map(
                    params![
                        filter.drop_id.as_ref().map(DropId::as_str),
                        filter.state.map(OrderState::as_str),
                        filter.after.as_ref().map(OrderId::as_str),
                        filter.limit,
                    ],
                    order_from_row,
                )
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
    }

    fn order_counts(&self, drop_id: DropId) -> StoreFuture<'_, BTreeMap<OrderState, StateCount>> {
        self.read(move |connection| {
            counts_by_sku_and_state(connection, &drop_id).map(crate::counts_by_state)
        })
    }

    fn sku_units(&self, drop_id: DropId) -> StoreFuture<'_, BTreeMap<(String, OrderState), u64>> {
        self.read(move |connection| {
            counts_by_sku_and_state(connection, &drop_id).map(crate::units_by_sku_and_state)
        })
    }

    fn record_delivery(
        &self,
        order_id: OrderId,
        change: Delivery,
        now: Timestamp,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.submit(Write::Delivery {
            order_id,
            change,
            now,
        }))
    }

    fn check_writable(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let free = rustix::fs::statvfs(&self.data_dir)
                .map(|disk| disk.f_bavail.saturating_mul(disk.f_frsize))
                .map_err(|error| {
                    StoreError::Backend(format!("cannot measure the disk: {error}"))
                })?;
            if free < MIN_FREE_BYTES {
                return Err(StoreError::Backend(format!(
                    "{} has {free} bytes free, below {MIN_FREE_BYTES}",
                    self.data_dir.display()
                )));
            }
            self.writer.submit(Write::Heartbeat).await
        })
    }

    fn commit_figures(&self) -> Option<CommitFigures> {
        Some(self.writer.figures())
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            match self.writer.submit(Write::Close).await {
                Err(StoreError::Closed) | Ok(()) => Ok(()),
                Err(error) => Err(error),
            }
        })
    }
}

fn load(connection: &Connection, keys_since: Timestamp) -> rusqlite::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut drops = connection.prepare("SELECT drop_id, spec FROM drops ORDER BY drop_id")?;
    for row in drops.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })? {
        let (drop_id, spec) = row?;
        let corrupt = |error: String| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, error.into())
        };
        let drop_id = DropId::parse(&drop_id).map_err(|error| corrupt(error.to_string()))?;
        let spec: DropSpec =
            serde_json::from_str(&spec).map_err(|error| corrupt(error.to_string()))?;
        snapshot.drops.push((drop_id, spec));
    }
    let mut holdings = connection.prepare(
        "SELECT drop_id, customer, sku, SUM(quantity) FROM orders
         WHERE state NOT IN ('rejected', 'released') GROUP BY drop_id, customer, sku",
    )?;
    for row in holdings.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
        ))
    })? {
        let (drop_id, customer, sku, units) = row?;
        if let Ok(drop_id) = DropId::parse(&drop_id) {
            snapshot.holdings.push(Holding {
                drop_id,
                customer,
                sku,
                units,
            });
        }
    }
    let mut keys = connection.prepare(
        "SELECT drop_id, idempotency_key, fingerprint, order_id, accepted_at FROM orders
         WHERE accepted_at >= ?1",
    )?;
    for row in keys.query_map([keys_since.unix_millis()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Vec<u8>>(2)?,
            row.get::<_, String>(3)?,
            row.get(4)?,
        ))
    })? {
        let (drop_id, key, fingerprint, order_id, accepted_at) = row?;
        let parsed = (
            DropId::parse(&drop_id).ok(),
            IdempotencyKey::parse(&key).ok(),
            <[u8; 32]>::try_from(fingerprint).ok(),
            OrderId::parse(&order_id),
        );
        if let (Some(drop_id), Some(key), Some(fingerprint), Some(order_id)) = parsed {
            snapshot.keys.push(StoredKey {
                drop_id,
                key,
                fingerprint: RequestFingerprint(fingerprint),
                order_id,
                accepted_at: Timestamp::from_unix_millis(accepted_at),
            });
        }
    }
    Ok(snapshot)
}

/// Read-only connections, opened on demand up to the permit count and then reused.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    // Caps open read connections (each holds a file handle and page cache).
    permits: Semaphore,
}

impl ReaderPool {
    async fn run<T, F>(self: Arc<Self>, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(&self);
        tokio::task::spawn_blocking(move || {
            let idle = pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let connection = match idle {
                Some(connection) => connection,
                None => pool.open()?,
            };
            let result = query(&connection);
            pool.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(connection);
            result
        })
        .await
        .map_err(|error| StoreError::Backend(format!("read task failed: {error}")))?
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags).map_err(backend)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        map_file(&connection)?;
        Ok(connection)
    }
}

/// A drop's orders and units per SKU and state: `(sku, state, orders, units)`.
fn counts_by_sku_and_state(
    connection: &Connection,
    drop_id: &DropId,
) -> Result<Vec<crate::TallyRow>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT sku, state, orders, units FROM order_tallies WHERE drop_id = ?1 AND orders <> 0",
        )
        .map_err(backend)?;
    let rows = statement
        .query_map([drop_id.as_str()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u64>(2)?,
                row.get::<_, u64>(3)?,
            ))
        })
        .map_err(backend)?;
    let mut counts = Vec::new();
    for row in rows {
        let (sku, state, orders, units) = row.map_err(backend)?;
        if let Some(state) = OrderState::parse(&state) {
            counts.push((sku, state, orders, units));
        }
    }
    Ok(counts)
}
