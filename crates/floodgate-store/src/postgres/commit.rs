//! PostgreSQL's side of group commit: a batch of writes in one transaction on the writer's own
//! connection, driven by a runtime of the writer thread's own.
//!
//! A batch's orders cost a few round trips whatever their number: one guarded `UPDATE` per SKU
//! for the stock (of this node's lease, so the SKU's shared row stays cold), one upsert from
//! `UNNEST(…)` for the customers' holdings, one `INSERT … SELECT FROM UNNEST(…)` for the rows. A failed statement would
//! abort a PostgreSQL transaction, so the order insert skips a clashing id (`ON CONFLICT DO
//! NOTHING`) instead of failing, and the rare other writes each run in a savepoint.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use floodgate_core::{DropId, DropSpec, Order, OrderId, RequestFingerprint, Timestamp};
use tokio_postgres::ToStatement;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement, Transaction};

use super::connect;
use super::schema::{backend, bigint, integer, is_check_violation, migrate};
use crate::writer::{
    Committer, Job, TallyChange, Write, reservations, tally_of_inserted, tally_of_move,
};
use crate::{Delivery, StoreError};

/// The writer's runtime and connection.
pub(super) struct PostgresCommitter {
    /// Drives the writer's connection; only `Runtime::block_on` drives a current-thread
    /// runtime's I/O, so the connection lives beside it, not behind a handle.
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) connection: WriterConnection,
}

/// The writer's connection and its prepared statements.
pub(super) struct WriterConnection {
    pub(super) config: tokio_postgres::Config,
    /// The node this writer commits for (whose leases its orders draw on).
    pub(super) node: String,
    pub(super) client: Client,
    pub(super) statements: Statements,
    /// Set when a commit's outcome could not be learned: from then on every write fails (and
    /// `/readyz` with them), so memory never drifts from the store; a restart rebuilds it.
    pub(super) poisoned: Option<StoreError>,
}

/// How long the writer keeps trying to learn whether a commit cut off by a lost connection
/// went through: a database failover takes seconds, and every order of the batch waits.
const RESOLVE_PATIENCE: Duration = Duration::from_secs(30);
const RESOLVE_RETRY: Duration = Duration::from_millis(250);

impl WriterConnection {
    /// Connects, brings the schema up to date and prepares the statements.
    pub(super) async fn open(
        config: tokio_postgres::Config,
    ) -> Result<(Client, Statements), StoreError> {
        let mut client = connect(&config).await?;
        migrate(&mut client).await?;
        let statements = Statements::prepare(&client).await?;
        Ok((client, statements))
    }

    async fn reconnect(&mut self) -> Result<(), StoreError> {
        let (client, statements) = Self::open(self.config.clone()).await?;
        tracing::warn!("store connection re-established");
        (self.client, self.statements) = (client, statements);
        Ok(())
    }

    /// The batch's results after its connection broke during the transaction: the orders that
    /// made it into the database were committed, the rest were not. Other writes report the
    /// failure (their callers retry them).
    async fn resolve(&mut self, batch: &[Job], error: StoreError) -> Vec<Result<(), StoreError>> {
        let deadline = tokio::time::Instant::now() + RESOLVE_PATIENCE;
        let ids: Vec<String> = batch
            .iter()
            .filter_map(|job| match &job.write {
                Write::AcceptOrder(order) => Some(order.order_id.to_string()),
                _ => None,
            })
            .collect();
        loop {
            let found = match self.reconnect().await {
                Ok(()) => self
                    .client
                    .query(
                        "SELECT order_id FROM orders WHERE order_id = ANY($1)",
                        &[&ids],
                    )
                    .await
                    .map_err(backend),
                Err(reconnecting) => Err(reconnecting),
            };
            match found {
                Ok(rows) => {
                    let stored: HashSet<String> = rows.iter().map(|row| row.get(0)).collect();
                    return batch
                        .iter()
                        .map(|job| match &job.write {
                            Write::AcceptOrder(order)
                                if stored.contains(order.order_id.as_str()) =>
                            {
                                Ok(())
                            }
                            _ => Err(error.clone()),
                        })
                        .collect();
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(RESOLVE_RETRY).await;
                }
                Err(unresolved) => {
                    tracing::error!(%error, %unresolved, "cannot learn whether a commit went through; refusing every write until restarted");
                    let poison = StoreError::Backend(format!(
                        "the outcome of a commit is unknown ({error}); restart floodgate"
                    ));
                    self.poisoned = Some(poison.clone());
                    return batch.iter().map(|_| Err(poison.clone())).collect();
                }
            }
        }
    }
}

/// The statements every batch runs, prepared once.
pub(super) struct Statements {
    take_from_lease: Statement,
    return_to_lease: Statement,
    take_from_pool: Statement,
    return_to_pool: Statement,
    hold_for_customers: Statement,
    release_for_customer: Statement,
    insert: Statement,
    add_to_tallies: Statement,
}

/// Adds changes to this node's tally rows: `$1`..`$5` the changes' columns, `$6` the node.
const ADD_TO_TALLIES: &str =
    "INSERT INTO order_tallies AS tally (drop_id, sku, state, node, orders, units)
     SELECT change.drop_id, change.sku, change.state, $6, change.orders, change.units
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[])
         AS change (drop_id, sku, state, orders, units)
     ON CONFLICT (drop_id, sku, state, node)
     DO UPDATE SET orders = tally.orders + excluded.orders, units = tally.units + excluded.units";

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Self, StoreError> {
        let prepare = |sql: &'static str| async move { client.prepare(sql).await.map_err(backend) };
        Ok(Self {
            take_from_lease: prepare(
                "UPDATE stock_leases SET remaining = remaining - $4
                 WHERE drop_id = $1 AND sku = $2 AND node = $3 AND remaining >= $4
                   AND expires_at > now()",
            )
            .await?,
            return_to_lease: prepare(
                "UPDATE stock_leases SET remaining = remaining + $4
                 WHERE drop_id = $1 AND sku = $2 AND node = $3",
            )
            .await?,
            take_from_pool: prepare(
                "UPDATE stock SET allocated = allocated + $3
                 WHERE drop_id = $1 AND sku = $2 AND allocated + $3 <= stock",
            )
            .await?,
            return_to_pool: prepare(
                "UPDATE stock SET allocated = allocated - $3 WHERE drop_id = $1 AND sku = $2",
            )
            .await?,
            // A customer's row is theirs alone, so it is no hot row; the limit is read from the
            // drop in the same statement. Rows are locked in one order on every node, so two
            // nodes' batches with the same customers wait for each other instead of deadlocking.
            hold_for_customers: prepare(
                "INSERT INTO customer_holdings AS held (drop_id, customer, units)
                 SELECT wanted.drop_id, wanted.customer, wanted.units
                 FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS wanted (drop_id, customer, units)
                 JOIN drops ON drops.drop_id = wanted.drop_id
                 WHERE wanted.units <= drops.customer_limit
                 ORDER BY wanted.drop_id, wanted.customer
                 ON CONFLICT (drop_id, customer) DO UPDATE SET units = held.units + excluded.units
                 WHERE held.units + excluded.units
                     <= (SELECT customer_limit FROM drops WHERE drops.drop_id = held.drop_id)
                 RETURNING drop_id, customer",
            )
            .await?,
            release_for_customer: prepare(
                "UPDATE customer_holdings SET units = units - $3 WHERE drop_id = $1 AND customer = $2",
            )
            .await?,
            insert: prepare(
                "INSERT INTO orders (order_id, drop_id, sku, quantity, customer, state, attempts,
                     accepted_at, updated_at, downstream_ref, idempotency_key, fingerprint)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[],
                     $6::text[], $7::int4[], $8::int8[], $9::int8[], $10::text[], $11::text[],
                     $12::bytea[])
                 ON CONFLICT DO NOTHING
                 RETURNING order_id",
            )
            .await?,
            add_to_tallies: prepare(ADD_TO_TALLIES).await?,
        })
    }
}

impl Committer for PostgresCommitter {
    fn commit(&mut self, batch: &[Job]) -> Vec<Result<(), StoreError>> {
        self.runtime.block_on(self.connection.commit(batch))
    }
}

impl WriterConnection {
    async fn commit(&mut self, batch: &[Job]) -> Vec<Result<(), StoreError>> {
        {
            let fail_all = |error: &StoreError| batch.iter().map(|_| Err(error.clone())).collect();
            if let Some(poison) = &self.poisoned {
                return fail_all(poison);
            }
            // A connection lost between batches: nothing of this batch was sent yet.
            if self.client.is_closed()
                && let Err(error) = self.reconnect().await
            {
                tracing::error!(%error, "store unreachable");
                return fail_all(&error);
            }
            match commit(&mut self.client, &self.statements, &self.node, batch).await {
                Ok(results) => results,
                // The COMMIT was sent and no answer came: it may or may not have gone through.
                Err(Failed::AtCommit(error)) => self.resolve(batch, error).await,
                Err(Failed::Before(error)) => {
                    tracing::error!(%error, writes = batch.len(), "store commit failed");
                    fail_all(&error)
                }
            }
        }
    }
}

/// How a batch's transaction failed.
enum Failed {
    /// Before the `COMMIT`: nothing of the batch was committed.
    Before(StoreError),
    /// At the `COMMIT`, without an answer: the outcome is unknown.
    AtCommit(StoreError),
}

impl From<StoreError> for Failed {
    fn from(error: StoreError) -> Self {
        Self::Before(error)
    }
}

/// Applies `batch` in one transaction; one result per job. Orders first, then the other writes
/// each in a savepoint, so a refused one leaves its batch-mates standing.
async fn commit(
    client: &mut Client,
    statements: &Statements,
    node: &str,
    batch: &[Job],
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    let mut transaction = client.transaction().await.map_err(backend)?;
    let orders = crate::writer::orders_of(batch);
    let mut results: Vec<Result<(), StoreError>> = vec![Ok(()); batch.len()];
    let writer = Batch {
        transaction: &transaction,
        statements,
        node,
    };
    let accepted = accept_orders(&writer, &orders).await?;
    for ((index, _), result) in orders.iter().zip(accepted) {
        results[*index] = result;
    }
    for (index, job) in batch.iter().enumerate() {
        if matches!(job.write, Write::AcceptOrder(_) | Write::Close) {
            continue;
        }
        let savepoint = transaction.savepoint("write").await.map_err(backend)?;
        results[index] = apply(&savepoint, node, &job.write).await;
        if results[index].is_ok() {
            savepoint.commit().await.map_err(backend)?;
        } else {
            savepoint.rollback().await.map_err(backend)?;
        }
    }
    match transaction.commit().await {
        Ok(()) => Ok(results),
        // The server answered the COMMIT with an error: it did not commit.
        Err(error) if error.as_db_error().is_some() => Err(Failed::Before(backend(error))),
        Err(error) => Err(Failed::AtCommit(backend(error))),
    }
}

async fn apply(transaction: &Transaction<'_>, node: &str, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::PutDrop { drop_id, spec, now } => put_drop(transaction, drop_id, spec, *now).await,
        Write::Delivery {
            order_id,
            change,
            now,
        } => record_delivery(transaction, node, order_id, change, *now).await,
        Write::Heartbeat => transaction
            .execute("UPDATE heartbeat SET beats = beats + 1 WHERE id = 1", &[])
            .await
            .map(drop)
            .map_err(backend),
        Write::AcceptOrder(_) | Write::Close => Ok(()),
    }
}

/// Where an order's units came from, so a refusal later in the batch puts them back there.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// This node's lease of the SKU.
    Lease,
    /// The SKU's unleased units (the lease was short or had lapsed).
    Pool,
}

/// The writer's view of a batch: its statements and the node it writes for.
struct Batch<'a> {
    transaction: &'a Transaction<'a>,
    statements: &'a Statements,
    node: &'a str,
}

/// Reserves and inserts `orders`; one result each. An `Err` return fails the whole batch.
async fn accept_orders(
    batch: &Batch<'_>,
    orders: &[(usize, &Order)],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut results: Vec<Result<(), StoreError>> = vec![Ok(()); orders.len()];
    let mut sources = vec![Source::Pool; orders.len()];
    for ((drop_id, sku), units, members) in reservations(orders) {
        if let Some(source) = batch.take(drop_id, sku, units).await? {
            for &position in &members {
                sources[position] = source;
            }
            continue;
        }
        for position in members {
            let order = orders[position].1;
            match batch.take(drop_id, sku, u64::from(order.quantity)).await? {
                Some(source) => sources[position] = source,
                None => results[position] = Err(refusal(batch.transaction, order).await?),
            }
        }
    }
    for (position, refused) in batch.hold_for_customers(orders, &results).await? {
        batch.untake(orders[position].1, sources[position]).await?;
        results[position] = Err(refused);
    }
    let kept: Vec<&Order> = orders
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|((_, order), _)| *order)
        .collect();
    if kept.is_empty() {
        return Ok(results);
    }
    // In key order, for the same reason as the customers' rows: the unique index on keys
    // makes a batch wait for another node's batch holding the same key.
    let mut kept = kept;
    kept.sort_by(|a, b| (&a.drop_id, &a.idempotency_key).cmp(&(&b.drop_id, &b.idempotency_key)));
    let inserted = batch.insert(&kept).await?;
    for (position, ((_, order), result)) in orders.iter().zip(results.iter_mut()).enumerate() {
        if result.is_ok() && !inserted.contains(order.order_id.as_str()) {
            // Its key (or, never in practice, its id) is taken: give its units back so the
            // batch's other orders commit.
            batch.untake(order, sources[position]).await?;
            batch.release_for_customer(order).await?;
            *result = Err(taken(batch.transaction, order).await?);
        }
    }
    let inserted = kept
        .into_iter()
        .filter(|order| inserted.contains(order.order_id.as_str()));
    add_to_tallies(
        batch.transaction,
        &batch.statements.add_to_tallies,
        batch.node,
        &tally_of_inserted(inserted),
    )
    .await?;
    Ok(results)
}

/// Adds `changes` to `node`'s tally rows with `statement` ([`ADD_TO_TALLIES`], prepared or not).
async fn add_to_tallies<'c, S: ToStatement + ?Sized>(
    transaction: &Transaction<'_>,
    statement: &S,
    node: &str,
    changes: &[TallyChange<'c>],
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let column =
        |read: fn(&TallyChange<'c>) -> &'c str| changes.iter().map(read).collect::<Vec<_>>();
    transaction
        .execute(
            statement,
            &[
                &column(|c| c.drop_id),
                &column(|c| c.sku),
                &column(|c| c.state.as_str()),
                &changes.iter().map(|c| c.orders).collect::<Vec<_>>(),
                &changes.iter().map(|c| c.units).collect::<Vec<_>>(),
                &node,
            ],
        )
        .await
        .map(drop)
        .map_err(backend)
}

impl Batch<'_> {
    /// Takes `units` of a SKU from this node's lease, else from the pool; `None` if neither
    /// has them.
    async fn take(
        &self,
        drop_id: &str,
        sku: &str,
        units: u64,
    ) -> Result<Option<Source>, StoreError> {
        let units = bigint(units);
        let (statements, transaction) = (self.statements, self.transaction);
        if changed_one(
            transaction,
            &statements.take_from_lease,
            &[&drop_id, &sku, &self.node, &units],
        )
        .await?
        {
            return Ok(Some(Source::Lease));
        }
        if changed_one(
            transaction,
            &statements.take_from_pool,
            &[&drop_id, &sku, &units],
        )
        .await?
        {
            return Ok(Some(Source::Pool));
        }
        Ok(None)
    }

    /// Puts an order's units back where [`Self::take`] found them.
    async fn untake(&self, order: &Order, source: Source) -> Result<(), StoreError> {
        let units = bigint(u64::from(order.quantity));
        let (drop_id, sku) = (order.drop_id.as_str(), order.sku.as_str());
        let done = match source {
            Source::Lease => {
                self.transaction
                    .execute(
                        &self.statements.return_to_lease,
                        &[&drop_id, &sku, &self.node, &units],
                    )
                    .await
            }
            Source::Pool => {
                self.transaction
                    .execute(&self.statements.return_to_pool, &[&drop_id, &sku, &units])
                    .await
            }
        };
        done.map(drop).map_err(backend)
    }

    /// Adds the units of every order still standing to its customer's holding, where the
    /// drop's limit allows; the positions of the orders refused, with why.
    async fn hold_for_customers(
        &self,
        orders: &[(usize, &Order)],
        results: &[Result<(), StoreError>],
    ) -> Result<Vec<(usize, StoreError)>, StoreError> {
        let mut wanted: HashMap<(&str, &str), (u64, Vec<usize>)> = HashMap::new();
        for (position, ((_, order), result)) in orders.iter().zip(results).enumerate() {
            if result.is_ok() {
                let entry = wanted
                    .entry((order.drop_id.as_str(), order.customer.as_str()))
                    .or_default();
                entry.0 += u64::from(order.quantity);
                entry.1.push(position);
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (mut drops, mut customers, mut units) = (Vec::new(), Vec::new(), Vec::new());
        for ((drop_id, customer), (sum, _)) in &wanted {
            drops.push(*drop_id);
            customers.push(*customer);
            units.push(bigint(*sum));
        }
        let held: HashSet<(String, String)> = self
            .transaction
            .query(
                &self.statements.hold_for_customers,
                &[&drops, &customers, &units],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut refused = Vec::new();
        for ((drop_id, customer), (_, members)) in wanted {
            if held.contains(&(drop_id.to_owned(), customer.to_owned())) {
                continue;
            }
            // Orders through other nodes got there first (rare: each node's memory keeps its
            // own shoppers within the limit).
            let limit: i64 = self
                .transaction
                .query_one(
                    "SELECT customer_limit FROM drops WHERE drop_id = $1",
                    &[&drop_id],
                )
                .await
                .map_err(backend)?
                .get(0);
            for position in members {
                let order = orders[position].1;
                refused.push((
                    position,
                    StoreError::LimitReached {
                        drop_id: order.drop_id.clone(),
                        customer: order.customer.clone(),
                        limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    },
                ));
            }
        }
        Ok(refused)
    }

    async fn release_for_customer(&self, order: &Order) -> Result<(), StoreError> {
        let units = bigint(u64::from(order.quantity));
        self.transaction
            .execute(
                &self.statements.release_for_customer,
                &[&order.drop_id.as_str(), &order.customer, &units],
            )
            .await
            .map(drop)
            .map_err(backend)
    }

    /// Inserts `kept`; the ids of those inserted (a taken key or id skips its order).
    async fn insert(&self, kept: &[&Order]) -> Result<HashSet<String>, StoreError> {
        let column =
            |read: fn(&Order) -> String| kept.iter().map(|order| read(order)).collect::<Vec<_>>();
        let inserted = self
            .transaction
            .query(
                &self.statements.insert,
                &[
                    &column(|o| o.order_id.to_string()),
                    &column(|o| o.drop_id.to_string()),
                    &column(|o| o.sku.clone()),
                    &kept.iter().map(|o| integer(o.quantity)).collect::<Vec<_>>(),
                    &column(|o| o.customer.clone()),
                    &column(|o| o.state.as_str().to_owned()),
                    &kept.iter().map(|o| integer(o.attempts)).collect::<Vec<_>>(),
                    &kept
                        .iter()
                        .map(|o| o.accepted_at.unix_millis())
                        .collect::<Vec<_>>(),
                    &kept
                        .iter()
                        .map(|o| o.updated_at.unix_millis())
                        .collect::<Vec<_>>(),
                    &kept
                        .iter()
                        .map(|o| o.downstream_ref.clone())
                        .collect::<Vec<_>>(),
                    &column(|o| o.idempotency_key.as_str().to_owned()),
                    &kept
                        .iter()
                        .map(|o| o.fingerprint.0.to_vec())
                        .collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(inserted.iter().map(|row| row.get(0)).collect())
    }
}

/// Runs `statement`; whether it changed exactly one row.
async fn changed_one(
    transaction: &Transaction<'_>,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<bool, StoreError> {
    transaction
        .execute(statement, params)
        .await
        .map(|changed| changed == 1)
        .map_err(backend)
}

/// Why `order` was not inserted: the order already stored under its key, else its id's clash.
async fn taken(transaction: &Transaction<'_>, order: &Order) -> Result<StoreError, StoreError> {
    let holder = transaction
        .query_opt(
            "SELECT order_id, fingerprint FROM orders WHERE drop_id = $1 AND idempotency_key = $2",
            &[&order.drop_id.as_str(), &order.idempotency_key.as_str()],
        )
        .await
        .map_err(backend)?;
    let stored = holder.and_then(|row| {
        let order_id = OrderId::parse(row.get(0))?;
        let fingerprint = <[u8; 32]>::try_from(row.get::<_, Vec<u8>>(1)).ok()?;
        Some((order_id, RequestFingerprint(fingerprint)))
    });
    Ok(match stored {
        Some((order_id, fingerprint)) if order_id != order.order_id => StoreError::KeyTaken {
            drop_id: order.drop_id.clone(),
            order_id,
            fingerprint,
        },
        _ => StoreError::Backend(format!("order id {} is taken", order.order_id)),
    })
}

/// Why an order's units did not fit: its SKU is unknown, or the stock is short.
async fn refusal(transaction: &Transaction<'_>, order: &Order) -> Result<StoreError, StoreError> {
    let known = transaction
        .query_opt(
            "SELECT 1 FROM stock WHERE drop_id = $1 AND sku = $2",
            &[&order.drop_id.as_str(), &order.sku],
        )
        .await
        .map_err(backend)?;
    Ok(StoreError::not_fitting(order, known.is_some()))
}

async fn record_delivery(
    transaction: &Transaction<'_>,
    node: &str,
    order_id: &OrderId,
    change: &Delivery,
    now: Timestamp,
) -> Result<(), StoreError> {
    let row = transaction
        .query_opt(
            "SELECT state, drop_id, sku, quantity FROM orders WHERE order_id = $1 FOR UPDATE",
            &[&order_id.as_str()],
        )
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::UnknownOrder(order_id.clone()))?;
    let (state, drop_id, sku, quantity): (String, String, String, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let update = change.update(order_id, &state)?;
    transaction
        .execute(
            &format!(
                "UPDATE orders SET state = $2, attempts = {}, updated_at = $3,
                     downstream_ref = COALESCE($4, downstream_ref), last_error = COALESCE($5, last_error)
                 WHERE order_id = $1",
                update.attempts
            ),
            &[
                &order_id.as_str(),
                &update.to.as_str(),
                &now.unix_millis(),
                &update.reference,
                &update.error,
            ],
        )
        .await
        .map_err(backend)?;
    if !update.to.holds_stock() {
        // Back to the pool, whichever node's lease the units came from.
        transaction
            .execute(
                "UPDATE stock SET allocated = allocated - $3 WHERE drop_id = $1 AND sku = $2",
                &[&drop_id, &sku, &i64::from(quantity)],
            )
            .await
            .map_err(backend)?;
        transaction
            .execute(
                "UPDATE customer_holdings SET units = units - $3
                 WHERE drop_id = $1 AND customer = (SELECT customer FROM orders WHERE order_id = $2)",
                &[&drop_id, &order_id.as_str(), &i64::from(quantity)],
            )
            .await
            .map_err(backend)?;
    }
    let quantity = u32::try_from(quantity).unwrap_or(0);
    let moved = tally_of_move(&drop_id, &sku, quantity, update.from, update.to);
    add_to_tallies(transaction, ADD_TO_TALLIES, node, &moved).await
}

async fn put_drop(
    transaction: &Transaction<'_>,
    drop_id: &DropId,
    spec: &DropSpec,
    now: Timestamp,
) -> Result<(), StoreError> {
    let spec_json = crate::spec_json(spec)?;
    transaction
        .execute(
            "INSERT INTO drops (drop_id, spec, updated_at, customer_limit) VALUES ($1, $2, $3, $4)
             ON CONFLICT (drop_id) DO UPDATE SET spec = excluded.spec,
                 updated_at = excluded.updated_at, customer_limit = excluded.customer_limit",
            &[
                &drop_id.as_str(),
                &spec_json,
                &now.unix_millis(),
                &i64::from(spec.limit_per_customer),
            ],
        )
        .await
        .map_err(backend)?;
    let rows = transaction
        .query(
            "SELECT sku, allocated FROM stock WHERE drop_id = $1 FOR UPDATE",
            &[&drop_id.as_str()],
        )
        .await
        .map_err(backend)?;
    let existing = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    for sku in crate::skus_to_remove(drop_id, spec, existing)? {
        transaction
            .execute(
                "DELETE FROM stock WHERE drop_id = $1 AND sku = $2",
                &[&drop_id.as_str(), &sku],
            )
            .await
            .map_err(backend)?;
    }
    for sku in &spec.skus {
        transaction
            .execute(
                "INSERT INTO stock (drop_id, sku, stock) VALUES ($1, $2, $3)
                 ON CONFLICT (drop_id, sku) DO UPDATE SET stock = excluded.stock",
                &[&drop_id.as_str(), &sku.sku, &bigint(sku.stock)],
            )
            .await
            .map_err(|error| {
                if is_check_violation(&error) {
                    crate::below_held(drop_id, &sku.sku)
                } else {
                    backend(error)
                }
            })?;
    }
    Ok(())
}
