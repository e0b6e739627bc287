//! SQLite's side of group commit: a batch of writes in one transaction on the writer's
//! connection, with the background checkpointer running beside it.

use floodgate_core::{DropId, DropSpec, Order, OrderId, RequestFingerprint, Timestamp};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::checkpoint::Running;
use super::schema::backend;
use crate::writer::{
    Committer, Job, TallyChange, Write, reservations, tally_of_inserted, tally_of_move,
};
use crate::{Delivery, StoreError};

/// The writer's connection, and the checkpoints that run beside it until it is dropped.
pub(super) struct SqliteCommitter {
    pub(super) connection: Connection,
    pub(super) _checkpointing: Running,
}

impl Committer for SqliteCommitter {
    fn commit(&mut self, batch: &[Job]) -> Vec<Result<(), StoreError>> {
        commit(&mut self.connection, batch)
    }
}

/// Applies `batch` in one transaction; one result per job. Orders go first, reserved per SKU
/// with one guarded `UPDATE` for the whole batch; the rare other writes follow, each in a
/// savepoint so a refused one leaves its batch-mates standing. (The jobs of one batch were
/// concurrent, so any order among them is a valid serialisation.)
fn commit(connection: &mut Connection, batch: &[Job]) -> Vec<Result<(), StoreError>> {
    let outcome = (|| {
        let mut transaction = connection.transaction().map_err(backend)?;
        let orders = crate::writer::orders_of(batch);
        let mut results: Vec<Result<(), StoreError>> = vec![Ok(()); batch.len()];
        for ((index, _), result) in orders.iter().zip(accept_orders(&transaction, &orders)?) {
            results[*index] = result;
        }
        for (index, job) in batch.iter().enumerate() {
            if matches!(job.write, Write::AcceptOrder(_)) {
                continue;
            }
            let savepoint = transaction.savepoint().map_err(backend)?;
            results[index] = apply(&savepoint, &job.write);
            if results[index].is_ok() {
                savepoint.commit().map_err(backend)?;
            }
        }
        transaction.commit().map_err(backend)?;
        Ok(results)
    })();
    outcome.unwrap_or_else(|error: StoreError| {
        tracing::error!(%error, writes = batch.len(), "store commit failed");
        batch.iter().map(|_| Err(error.clone())).collect()
    })
}

fn apply(transaction: &Connection, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::PutDrop { drop_id, spec, now } => put_drop(transaction, drop_id, spec, *now),
        Write::Delivery {
            order_id,
            change,
            now,
        } => record_delivery(transaction, order_id, change, *now),
        Write::Heartbeat => transaction
            .execute("UPDATE heartbeat SET beats = beats + 1 WHERE id = 1", [])
            .map(drop)
            .map_err(backend),
        Write::AcceptOrder(_) | Write::Close => Ok(()),
    }
}

/// Reserves and inserts `orders`; one result each. An `Err` return fails the whole batch.
fn accept_orders(
    transaction: &Connection,
    orders: &[(usize, &Order)],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut results: Vec<Result<(), StoreError>> = vec![Ok(()); orders.len()];
    for ((drop_id, sku), units, members) in reservations(orders) {
        if reserve(transaction, drop_id, sku, units)? {
            continue;
        }
        for position in members {
            let order = orders[position].1;
            if !reserve(transaction, drop_id, sku, u64::from(order.quantity))? {
                results[position] = Err(refusal(transaction, order)?);
            }
        }
    }
    let mut insert = transaction
        .prepare_cached(
            "INSERT INTO orders (order_id, drop_id, sku, quantity, customer, state, attempts,
                 accepted_at, updated_at, downstream_ref, idempotency_key, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(backend)?;
    for ((_, order), result) in orders.iter().zip(results.iter_mut()) {
        if result.is_err() {
            continue;
        }
        let inserted = insert.execute(params![
            order.order_id.as_str(),
            order.drop_id.as_str(),
            order.sku,
            order.quantity,
            order.customer,
            order.state.as_str(),
            order.attempts,
            order.accepted_at.unix_millis(),
            order.updated_at.unix_millis(),
            order.downstream_ref,
            order.idempotency_key.as_str(),
            &order.fingerprint.0[..],
        ]);
        if let Err(error) = inserted {
            // Give the units back so the batch's other orders still commit.
            transaction
                .execute(
                    "UPDATE stock SET held = held - ?3 WHERE drop_id = ?1 AND sku = ?2",
                    params![order.drop_id.as_str(), order.sku, order.quantity],
                )
                .map_err(backend)?;
            *result = Err(match key_holder(transaction, order)? {
                Some(taken) => taken,
                None => backend(error),
            });
        }
    }
    let inserted = orders
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|((_, order), _)| *order);
    add_to_tallies(transaction, &tally_of_inserted(inserted))?;
    Ok(results)
}

fn add_to_tallies(transaction: &Connection, changes: &[TallyChange<'_>]) -> Result<(), StoreError> {
    let mut upsert = transaction
        .prepare_cached(
            "INSERT INTO order_tallies (drop_id, sku, state, orders, units) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (drop_id, sku, state)
             DO UPDATE SET orders = orders + excluded.orders, units = units + excluded.units",
        )
        .map_err(backend)?;
    for change in changes {
        upsert
            .execute(params![
                change.drop_id,
                change.sku,
                change.state.as_str(),
                change.orders,
                change.units
            ])
            .map_err(backend)?;
    }
    Ok(())
}

/// The order already stored under `order`'s key, as the refusal of `order`.
fn key_holder(transaction: &Connection, order: &Order) -> Result<Option<StoreError>, StoreError> {
    let holder = transaction
        .query_row(
            "SELECT order_id, fingerprint FROM orders WHERE drop_id = ?1 AND idempotency_key = ?2",
            params![order.drop_id.as_str(), order.idempotency_key.as_str()],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)),
        )
        .optional()
        .map_err(backend)?;
    Ok(holder.and_then(|(order_id, fingerprint)| {
        Some(StoreError::KeyTaken {
            drop_id: order.drop_id.clone(),
            order_id: OrderId::parse(&order_id)?,
            fingerprint: RequestFingerprint(fingerprint.try_into().ok()?),
        })
    }))
}

/// Adds `units` to a SKU's held units if they fit its stock; whether they did.
fn reserve(
    transaction: &Connection,
    drop_id: &str,
    sku: &str,
    units: u64,
) -> Result<bool, StoreError> {
    transaction
        .prepare_cached(
            "UPDATE stock SET held = held + ?3 WHERE drop_id = ?1 AND sku = ?2 AND held + ?3 <= stock",
        )
        .and_then(|mut statement| statement.execute(params![drop_id, sku, units]))
        .map(|changed| changed == 1)
        .map_err(backend)
}

/// Why an order's units did not fit: its SKU is unknown, or the stock is short.
fn refusal(transaction: &Connection, order: &Order) -> Result<StoreError, StoreError> {
    let known = transaction
        .query_row(
            "SELECT 1 FROM stock WHERE drop_id = ?1 AND sku = ?2",
            params![order.drop_id.as_str(), order.sku],
            |_| Ok(()),
        )
        .optional()
        .map_err(backend)?;
    Ok(StoreError::not_fitting(order, known.is_some()))
}

fn record_delivery(
    transaction: &Connection,
    order_id: &OrderId,
    change: &Delivery,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (state, drop_id, sku, quantity) = transaction
        .query_row(
            "SELECT state, drop_id, sku, quantity FROM orders WHERE order_id = ?1",
            [order_id.as_str()],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u32>(3)?,
                ))
            },
        )
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::UnknownOrder(order_id.clone()))?;
    let update = change.update(order_id, &state)?;
    transaction
        .prepare_cached(&format!(
            "UPDATE orders SET state = ?2, attempts = {}, updated_at = ?3,
                 downstream_ref = COALESCE(?4, downstream_ref), last_error = COALESCE(?5, last_error)
             WHERE order_id = ?1",
            update.attempts
        ))
        .and_then(|mut statement| {
            statement.execute(params![
                order_id.as_str(),
                update.to.as_str(),
                now.unix_millis(),
                update.reference,
                update.error
            ])
        })
        .map_err(backend)?;
    if !update.to.holds_stock() {
        transaction
            .execute(
                "UPDATE stock SET held = held - ?3 WHERE drop_id = ?1 AND sku = ?2",
                params![drop_id, sku, quantity],
            )
            .map_err(backend)?;
    }
    add_to_tallies(
        transaction,
        &tally_of_move(&drop_id, &sku, quantity, update.from, update.to),
    )
}

fn put_drop(
    transaction: &Connection,
    drop_id: &DropId,
    spec: &DropSpec,
    now: Timestamp,
) -> Result<(), StoreError> {
    let spec_json = crate::spec_json(spec)?;
    transaction
        .execute(
            "INSERT INTO drops (drop_id, spec, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (drop_id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
            params![drop_id.as_str(), spec_json, now.unix_millis()],
        )
        .map_err(backend)?;
    let mut existing = transaction
        .prepare("SELECT sku, held FROM stock WHERE drop_id = ?1")
        .map_err(backend)?;
    let rows = existing
        .query_map([drop_id.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend)?;
    for sku in crate::skus_to_remove(drop_id, spec, rows)? {
        transaction
            .execute(
                "DELETE FROM stock WHERE drop_id = ?1 AND sku = ?2",
                params![drop_id.as_str(), sku],
            )
            .map_err(backend)?;
    }
    for sku in &spec.skus {
        transaction
            .execute(
                "INSERT INTO stock (drop_id, sku, stock) VALUES (?1, ?2, ?3)
                 ON CONFLICT (drop_id, sku) DO UPDATE SET stock = excluded.stock",
                params![drop_id.as_str(), sku.sku, sku.stock],
            )
            .map_err(|error| match error.sqlite_error_code() {
                Some(ErrorCode::ConstraintViolation) => crate::below_held(drop_id, &sku.sku),
                _ => backend(error),
            })?;
    }
    Ok(())
}
