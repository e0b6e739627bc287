//! PostgreSQL as the nodes' [`Cluster`], off the writer's connection so its batches never wait
//! for it. A lease is granted in a transaction of its own that locks the SKU's row first (a
//! data-modifying CTE that read the free units and took them in one statement was seen to take
//! more than was free under concurrent grants; the `allocated <= stock` check caught it); the
//! other calls are one statement each, data-modifying CTEs keeping a lease's row and its SKU's
//! row in step.

use std::time::Duration;

use floodgate_core::{DropId, DropSpec, IdempotencyKey, Order};

use super::PostgresStore;
use super::schema::{ORDER_COLUMNS, backend, bigint, order_from_row, seconds, unsigned};
use crate::{Cluster, LeaseGrant, LeaseHeld, StoreError, StoreFuture, Term};

impl Cluster for PostgresStore {
    fn node(&self) -> &str {
        &self.node
    }

    fn lease_stock(
        &self,
        drop_id: DropId,
        sku: String,
        wanted: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, LeaseGrant> {
        Box::pin(async move {
            let mut coordinator = self.coordinator().await?;
            let transaction = coordinator.transaction().await.map_err(backend)?;
            let (drop, node) = (drop_id.as_str(), self.node.as_str());
            // Locks are taken lease first, then the SKU's row, as the writer's batches take
            // them (their orders draw on the lease, then the pool), so the two never deadlock.
            transaction
                .execute(
                    "SELECT 1 FROM stock_leases
                     WHERE drop_id = $1 AND sku = $2 AND node = $3 FOR UPDATE",
                    &[&drop, &sku, &node],
                )
                .await
                .map_err(backend)?;
            // The SKU's row is locked for the grant (the one write to it per lease), so nothing
            // moves its count between reading what is free and taking it.
            let before: i64 = transaction
                .query_opt(
                    "SELECT stock - allocated FROM stock
                     WHERE drop_id = $1 AND sku = $2 FOR UPDATE",
                    &[&drop, &sku],
                )
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::UnknownSku {
                    drop_id: drop_id.clone(),
                    sku: sku.clone(),
                })?
                .get(0);
            let units = bigint(wanted).min(before.max(0));
            if units > 0 {
                transaction
                    .execute(
                        "UPDATE stock SET allocated = allocated + $3
                         WHERE drop_id = $1 AND sku = $2",
                        &[&drop, &sku, &units],
                    )
                    .await
                    .map_err(backend)?;
                transaction
                    .execute(
                        "INSERT INTO stock_leases (drop_id, sku, node, remaining, expires_at)
                         VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second')
                         ON CONFLICT (drop_id, sku, node) DO UPDATE
                         SET remaining = stock_leases.remaining + excluded.remaining,
                             expires_at = excluded.expires_at",
                        &[&drop, &sku, &node, &units, &seconds(ttl)],
                    )
                    .await
                    .map_err(backend)?;
            }
            let leased_elsewhere: i64 = transaction
                .query_one(
                    "SELECT COALESCE(SUM(remaining), 0)::int8 FROM stock_leases
                     WHERE drop_id = $1 AND sku = $2 AND node <> $3",
                    &[&drop, &sku, &node],
                )
                .await
                .map_err(backend)?
                .get(0);
            transaction.commit().await.map_err(backend)?;
            if units < bigint(wanted) {
                // Short: the nodes whose leases hold units are asked to give most back (after
                // the commit: other nodes' lease rows are never locked along with the SKU's).
                coordinator
                    .execute(
                        "UPDATE stock_leases SET wanted = true
                         WHERE drop_id = $1 AND sku = $2 AND node <> $3 AND remaining > 0",
                        &[&drop, &sku, &node],
                    )
                    .await
                    .map_err(backend)?;
            }
            let unleased = unsigned(before - units);
            Ok(LeaseGrant {
                granted: unsigned(units),
                unleased,
                elsewhere: unleased + unsigned(leased_elsewhere),
            })
        })
    }

    fn renew_leases(&self, ttl: Duration) -> StoreFuture<'_, Vec<LeaseHeld>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "UPDATE stock_leases SET expires_at = now() + $2 * interval '1 second'
                     WHERE node = $1 AND expires_at > now()
                     RETURNING drop_id, sku, remaining",
                    &[&self.node, &seconds(ttl)],
                )
                .await
                .map_err(backend)?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    Some(LeaseHeld {
                        drop_id: DropId::parse(row.get(0)).ok()?,
                        sku: row.get(1),
                        remaining: unsigned(row.get(2)),
                    })
                })
                .collect())
        })
    }

    fn return_stock(&self, drop_id: DropId, sku: String, units: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.reader()
                .await?
                .execute(
                    "WITH returned AS (
                         UPDATE stock_leases SET remaining = remaining - $4
                         WHERE drop_id = $1 AND sku = $2 AND node = $3 AND remaining >= $4
                         RETURNING 1
                     )
                     UPDATE stock SET allocated = allocated - $4
                     WHERE drop_id = $1 AND sku = $2 AND EXISTS (SELECT 1 FROM returned)",
                    &[&drop_id.as_str(), &sku, &self.node, &bigint(units)],
                )
                .await
                .map(drop)
                .map_err(backend)
        })
    }

    fn wanted_leases(&self) -> StoreFuture<'_, Vec<(DropId, String)>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "UPDATE stock_leases SET wanted = false WHERE node = $1 AND wanted
                     RETURNING drop_id, sku",
                    &[&self.node],
                )
                .await
                .map_err(backend)?;
            Ok(rows
                .iter()
                .filter_map(|row| Some((DropId::parse(row.get(0)).ok()?, row.get(1))))
                .collect())
        })
    }

    fn return_all_stock(&self) -> StoreFuture<'_, u64> {
        Box::pin(release_leases(self, "node = $1", Some(&self.node)))
    }

    fn reclaim_lapsed_leases(&self) -> StoreFuture<'_, u64> {
        Box::pin(release_leases(self, "expires_at < now()", None))
    }

    fn lead(&self, role: &str, ttl: Duration) -> StoreFuture<'_, Option<Term>> {
        let role = role.to_owned();
        Box::pin(async move {
            // Kept by its holder, taken over only once expired: the database's clock decides,
            // so two nodes never both believe they hold an unexpired term.
            let row = self
                .reader()
                .await?
                .query_opt(
                    "INSERT INTO leadership AS lead (role, node, term, expires_at)
                     VALUES ($1, $2, 1, now() + $3 * interval '1 second')
                     ON CONFLICT (role) DO UPDATE
                     SET term = CASE WHEN lead.node = excluded.node THEN lead.term
                                     ELSE lead.term + 1 END,
                         node = excluded.node,
                         expires_at = excluded.expires_at
                     WHERE lead.node = excluded.node OR lead.expires_at < now()
                     RETURNING term, term <> COALESCE(
                         (SELECT term FROM leadership WHERE role = $1 AND node = $2), -1)",
                    &[&role, &self.node, &seconds(ttl)],
                )
                .await
                .map_err(backend)?;
            // The sub-select reads the table as it was before the statement: a term this node
            // did not already hold is a takeover.
            Ok(row.map(|row| Term {
                number: unsigned(row.get(0)),
                taken_over: row.get(1),
            }))
        })
    }

    fn stock_elsewhere(&self) -> StoreFuture<'_, Vec<(DropId, String, u64)>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT drop_id, sku, stock - allocated + COALESCE((
                         SELECT SUM(remaining) FROM stock_leases AS lease
                         WHERE lease.drop_id = stock.drop_id AND lease.sku = stock.sku
                           AND lease.node <> $1
                     ), 0)::int8
                     FROM stock",
                    &[&self.node],
                )
                .await
                .map_err(backend)?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    let drop_id = DropId::parse(row.get(0)).ok()?;
                    Some((drop_id, row.get(1), unsigned(row.get(2))))
                })
                .collect())
        })
    }

    fn order_by_key(&self, drop_id: DropId, key: IdempotencyKey) -> StoreFuture<'_, Option<Order>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE drop_id = $1 AND idempotency_key = $2"
            );
            let row = self
                .reader()
                .await?
                .query_opt(&sql, &[&drop_id.as_str(), &key.as_str()])
                .await
                .map_err(backend)?;
            row.as_ref().map(order_from_row).transpose()
        })
    }

    fn drops(&self) -> StoreFuture<'_, Vec<(DropId, DropSpec)>> {
        Box::pin(async move { super::load_drops(&*self.reader().await?).await })
    }

    fn resign(&self, role: &str) -> StoreFuture<'_, ()> {
        let role = role.to_owned();
        Box::pin(async move {
            self.reader()
                .await?
                .execute(
                    "UPDATE leadership SET expires_at = now() WHERE role = $1 AND node = $2",
                    &[&role, &self.node],
                )
                .await
                .map(drop)
                .map_err(backend)
        })
    }
}

/// Deletes the leases `condition` picks and puts their unsold units back in the pool; how
/// many units came back.
async fn release_leases(
    store: &PostgresStore,
    condition: &'static str,
    node: Option<&str>,
) -> Result<u64, StoreError> {
    let sql = format!(
        "WITH gone AS (
             DELETE FROM stock_leases WHERE {condition} RETURNING drop_id, sku, remaining
         ), units AS (
             SELECT drop_id, sku, SUM(remaining) AS units FROM gone GROUP BY drop_id, sku
         ), returned AS (
             UPDATE stock SET allocated = allocated - units.units FROM units
             WHERE stock.drop_id = units.drop_id AND stock.sku = units.sku
             RETURNING units.units
         )
         SELECT COALESCE(SUM(units), 0)::int8 FROM returned"
    );
    let client = store.reader().await?;
    let row = match node {
        Some(node) => client.query_one(&sql, &[&node]).await,
        None => client.query_one(&sql, &[]).await,
    }
    .map_err(backend)?;
    Ok(unsigned(row.get(0)))
}
