//! The PostgreSQL backend (`store.url = "postgres://…"`): the store a highly available database
//! gives, and the one several nodes share. Besides the [`Store`] it is the nodes' [`Cluster`]:
//! stock leases per node and the leadership of cluster-wide roles (`cluster`).
//!
//! Writes go through the same group-commit [`writer`](crate::writer) as SQLite's: its thread owns
//! the one write connection, driven by a small runtime of its own, and commits each batch in one
//! transaction (a committed PostgreSQL transaction is durable: `synchronous_commit` on, as by
//! default). Reads share a few connections on the caller's runtime; each pipelines the queries
//! sent to it at once.

mod cluster;
mod commit;
mod rooms;
mod schema;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use floodgate_core::{
    DropId, DropSpec, IdempotencyKey, Order, OrderId, OrderState, RequestFingerprint, Timestamp,
};
use tokio_postgres::{Client, NoTls};

use crate::writer::{Write, WriterHandle};
use crate::{
    Cluster, CommitFigures, Delivery, Holding, OrderFilter, Snapshot, StateCount, Store,
    StoreError, StoreFuture, StoredKey,
};
use commit::{PostgresCommitter, WriterConnection};
use schema::{ORDER_COLUMNS, backend, order_from_row};

/// How long a connection attempt may take unless the URL says (`connect_timeout`): the writer
/// holds its batch while it reconnects.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Tuning of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers get `Overloaded`.
    pub queue_capacity: usize,
    /// Read connections.
    pub readers: usize,
    /// This node's name among the nodes sharing the database; unique per running process.
    pub node: String,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_batch: 2_048,
            queue_capacity: 65_536,
            readers: 2,
            node: default_node_name(),
        }
    }
}

/// A name no other running process has: leases and leadership belong to a process, not to a
/// machine, so a restarted node never mistakes its predecessor's lease for its own.
fn default_node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Randomly keyed per process: enough to tell apart processes that reuse a pid.
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("node-{}-{:08x}", std::process::id(), salt as u32)
}

/// The PostgreSQL store, cheap to share behind an `Arc`.
pub struct PostgresStore {
    node: String,
    writer: WriterHandle,
    config: tokio_postgres::Config,
    /// Each replaced by a new connection once it is found closed (the database restarted).
    readers: Vec<RwLock<Arc<Client>>>,
    next_reader: AtomicUsize,
    /// The connection for work that needs a transaction of its own (stock leases, waiting-room
    /// advances), one at a time.
    coordinator: tokio::sync::Mutex<Client>,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a libpq key=value string),
    /// bringing its schema up to date; the read connections run on the calling runtime.
    pub async fn open(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|error| StoreError::Backend(format!("invalid store.url: {error}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let writer_config = config.clone();
        let node = options.node.clone();
        let open = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| StoreError::Backend(format!("no writer runtime: {error}")))?;
            let (client, statements) =
                runtime.block_on(WriterConnection::open(writer_config.clone()))?;
            Ok(PostgresCommitter {
                runtime,
                connection: WriterConnection {
                    config: writer_config,
                    node: node.clone(),
                    client,
                    statements,
                    poisoned: None,
                },
            })
        };
        let (max_batch, queue_capacity) = (options.max_batch, options.queue_capacity);
        let (writer, _thread) = tokio::task::spawn_blocking(move || {
            WriterHandle::spawn(open, max_batch, queue_capacity)
        })
        .await
        .map_err(|error| StoreError::Backend(format!("writer start failed: {error}")))??;
        let mut readers = Vec::new();
        for _ in 0..options.readers.max(1) {
            readers.push(RwLock::new(Arc::new(connect(&config).await?)));
        }
        let coordinator = tokio::sync::Mutex::new(connect(&config).await?);
        Ok(Self {
            node: options.node,
            writer,
            config,
            readers,
            next_reader: AtomicUsize::new(0),
            coordinator,
        })
    }

    /// A read connection, reconnected first if the database closed it.
    async fn reader(&self) -> Result<Arc<Client>, StoreError> {
        let next = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let slot = &self.readers[next % self.readers.len()];
        let client = Arc::clone(&slot.read().unwrap_or_else(PoisonError::into_inner));
        if !client.is_closed() {
            return Ok(client);
        }
        let fresh = Arc::new(connect(&self.config).await?);
        *slot.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// The coordinator's connection, reconnected first if the database closed it.
    async fn coordinator(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, StoreError> {
        let mut coordinator = self.coordinator.lock().await;
        if coordinator.is_closed() {
            *coordinator = connect(&self.config).await?;
        }
        Ok(coordinator)
    }
}

/// Opens a connection, driven by a task on the current runtime until the client is dropped.
pub(crate) async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(backend)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "store connection closed");
        }
    });
    Ok(client)
}

impl Store for PostgresStore {
    fn load(&self, keys_since: Timestamp) -> StoreFuture<'_, Snapshot> {
        Box::pin(async move { load(&*self.reader().await?, keys_since).await })
    }

    fn put_drop(&self, drop_id: DropId, spec: DropSpec, now: Timestamp) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.submit(Write::PutDrop { drop_id, spec, now }))
    }

    fn accept_order(&self, order: Order) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.submit(Write::AcceptOrder(order)))
    }

    fn order(&self, order_id: OrderId) -> StoreFuture<'_, Option<Order>> {
        Box::pin(async move {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1");
            let row = self
                .reader()
                .await?
                .query_opt(&sql, &[&order_id.as_str()])
                .await
                .map_err(backend)?;
            row.as_ref().map(order_from_row).transpose()
        })
    }

    fn orders(&self, filter: OrderFilter) -> StoreFuture<'_, Vec<Order>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders
                 WHERE ($1::text IS NULL OR drop_id = $1) AND ($2::text IS NULL OR state = $2)
                   AND seq > COALESCE((SELECT seq FROM orders WHERE order_id = $3), 0)
                 ORDER BY seq LIMIT $4"
            );
            let rows = self
                .reader()
                .await?
                .query(
                    &sql,
                    &[
                        &filter.drop_id.as_ref().map(DropId::as_str),
                        &filter.state.map(OrderState::as_str),
                        &filter.after.as_ref().map(OrderId::as_str),
                        &i64::from(filter.limit),
                    ],
                )
                .await
                .map_err(backend)?;
            rows.iter().map(order_from_row).collect()
        })
    }

    fn order_counts(&self, drop_id: DropId) -> StoreFuture<'_, BTreeMap<OrderState, StateCount>> {
        Box::pin(async move {
            let rows = counts_by_sku_and_state(&*self.reader().await?, &drop_id).await?;
            Ok(crate::counts_by_state(rows))
        })
    }

    fn sku_units(&self, drop_id: DropId) -> StoreFuture<'_, BTreeMap<(String, OrderState), u64>> {
        Box::pin(async move {
            let rows = counts_by_sku_and_state(&*self.reader().await?, &drop_id).await?;
            Ok(crate::units_by_sku_and_state(rows))
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
        Box::pin(self.writer.submit(Write::Heartbeat))
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.submit(Write::Close))
    }

    fn commit_figures(&self) -> Option<CommitFigures> {
        Some(self.writer.figures())
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }
}

/// A drop's orders and units per SKU and state: `(sku, state, orders, units)`.
async fn counts_by_sku_and_state(
    client: &Client,
    drop_id: &DropId,
) -> Result<Vec<crate::TallyRow>, StoreError> {
    let rows = client
        .query(
            "SELECT sku, state, SUM(orders)::int8, SUM(units)::int8 FROM order_tallies
             WHERE drop_id = $1 GROUP BY sku, state HAVING SUM(orders) <> 0",
            &[&drop_id.as_str()],
        )
        .await
        .map_err(backend)?;
    let unsigned = |value: i64| u64::try_from(value).unwrap_or(0);
    Ok(rows
        .iter()
        .filter_map(|row| {
            let state = OrderState::parse(row.get(1))?;
            Some((
                row.get(0),
                state,
                unsigned(row.get(2)),
                unsigned(row.get(3)),
            ))
        })
        .collect())
}

/// Every drop, by id.
async fn load_drops(client: &Client) -> Result<Vec<(DropId, DropSpec)>, StoreError> {
    let corrupt = |what: String| StoreError::Backend(format!("stored drop is malformed: {what}"));
    let mut drops = Vec::new();
    for row in client
        .query("SELECT drop_id, spec FROM drops ORDER BY drop_id", &[])
        .await
        .map_err(backend)?
    {
        let drop_id = DropId::parse(row.get(0)).map_err(|error| corrupt(error.to_string()))?;
        let spec: DropSpec =
            serde_json::from_str(row.get(1)).map_err(|error| corrupt(error.to_string()))?;
        drops.push((drop_id, spec));
    }
    Ok(drops)
}

async fn load(client: &Client, keys_since: Timestamp) -> Result<Snapshot, StoreError> {
    let mut snapshot = Snapshot {
        drops: load_drops(client).await?,
        ..Snapshot::default()
    };
    for row in client
        .query(
            "SELECT drop_id, customer, sku, SUM(quantity)::int8 FROM orders
             WHERE state NOT IN ('rejected', 'released') GROUP BY drop_id, customer, sku",
            &[],
        )
        .await
        .map_err(backend)?
    {
        if let Ok(drop_id) = DropId::parse(row.get(0)) {
            snapshot.holdings.push(Holding {
                drop_id,
                customer: row.get(1),
                sku: row.get(2),
                units: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
            });
        }
    }
    for row in client
        .query(
            "SELECT drop_id, idempotency_key, fingerprint, order_id, accepted_at FROM orders
             WHERE accepted_at >= $1",
            &[&keys_since.unix_millis()],
        )
        .await
        .map_err(backend)?
    {
        let parsed = (
            DropId::parse(row.get(0)).ok(),
            IdempotencyKey::parse(row.get(1)).ok(),
            <[u8; 32]>::try_from(row.get::<_, Vec<u8>>(2)).ok(),
            OrderId::parse(row.get(3)),
        );
        if let (Some(drop_id), Some(key), Some(fingerprint), Some(order_id)) = parsed {
            snapshot.keys.push(StoredKey {
                drop_id,
                key,
                fingerprint: RequestFingerprint(fingerprint),
                order_id,
                accepted_at: Timestamp::from_unix_millis(row.get(4)),
            });
        }
    }
    Ok(snapshot)
}
