//! The group-commit writer: one thread owns the only write connection, takes every write queued
//! since its last commit, applies them in one transaction and fsyncs once, then answers each.
//!
//! Batches form by themselves: while one commit waits on the disk, new writes queue up, and the
//! next commit takes them all. No timer is needed, so a lone order is not delayed, and under load
//! the batch grows until one fsync serves hundreds of orders. Each write runs in a savepoint, so
//! one refused write (an oversell) does not undo its batch-mates.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use floodgate_core::{DropId, DropSpec, Order, Timestamp};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::schema::backend;

/// A write waiting for the writer thread.
pub(crate) enum Write {
    PutDrop {
        drop_id: DropId,
        spec: DropSpec,
        now: Timestamp,
    },
    AcceptOrder(Order),
    Heartbeat,
    /// Ends the writer once everything queued before it is committed.
    Close,
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The sending side of the writer; dropping every clone also stops the thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    // Bounded so a disk that cannot keep up turns into `Overloaded` answers, not unbounded memory.
    jobs: SyncSender<Job>,
}

impl WriterHandle {
    /// Starts the writer thread on `connection`.
    pub(crate) fn spawn(
        connection: Connection,
        max_batch: usize,
        queue_capacity: usize,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (jobs, queued) = mpsc::sync_channel(queue_capacity);
        let thread = std::thread::Builder::new()
            .name("floodgate-store-writer".into())
            .spawn(move || run(connection, queued, max_batch))?;
        Ok((Self { jobs }, thread))
    }

    /// Queues `write` and waits until it is committed (or refused).
    pub(crate) async fn submit(&self, write: Write) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job { write, reply })
            .map_err(|error| match error {
                TrySendError::Full(_) => StoreError::Overloaded,
                TrySendError::Disconnected(_) => StoreError::Closed,
            })?;
        // A dropped reply means the writer stopped before reaching this job: it was not written.
        answer.await.unwrap_or(Err(StoreError::Closed))
    }
}

fn run(mut connection: Connection, queued: Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Ok(first) = queued.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queued.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = commit(&mut connection, &batch);
        let closing = batch.iter().any(|job| matches!(job.write, Write::Close));
        for (job, result) in batch.drain(..).zip(results) {
            // The caller may have gone (client hung up); the write stands either way.
            let _ = job.reply.send(result);
        }
        if closing {
            break;
        }
    }
    tracing::debug!("store writer stopped");
}

/// Applies `batch` in one transaction; one result per job.
fn commit(connection: &mut Connection, batch: &[Job]) -> Vec<Result<(), StoreError>> {
    let outcome = (|| {
        let mut transaction = connection.transaction().map_err(backend)?;
        let mut results = Vec::with_capacity(batch.len());
        for job in batch {
            let savepoint = transaction.savepoint().map_err(backend)?;
            let result = apply(&savepoint, &job.write);
            if result.is_ok() {
                savepoint.commit().map_err(backend)?;
            }
            results.push(result);
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
        Write::AcceptOrder(order) => accept_order(transaction, order),
        Write::Heartbeat => transaction
            .execute("UPDATE heartbeat SET beats = beats + 1 WHERE id = 1", [])
            .map(drop)
            .map_err(backend),
        Write::Close => Ok(()),
    }
}

fn put_drop(
    transaction: &Connection,
    drop_id: &DropId,
    spec: &DropSpec,
    now: Timestamp,
) -> Result<(), StoreError> {
    let below_held = |sku: &str| StoreError::StockBelowHeld {
        drop_id: drop_id.clone(),
        sku: sku.to_owned(),
    };
    let spec_json =
        serde_json::to_string(spec).map_err(|error| StoreError::Backend(error.to_string()))?;
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
    for (sku, held) in rows.iter().filter(|(sku, _)| spec.sku(sku).is_none()) {
        if *held > 0 {
            return Err(below_held(sku));
        }
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
                Some(ErrorCode::ConstraintViolation) => below_held(&sku.sku),
                _ => backend(error),
            })?;
    }
    Ok(())
}

fn accept_order(transaction: &Connection, order: &Order) -> Result<(), StoreError> {
    let drop_id = order.drop_id.as_str();
    let reserved = transaction
        .prepare_cached(
            "UPDATE stock SET held = held + ?3 WHERE drop_id = ?1 AND sku = ?2 AND held + ?3 <= stock",
        )
        .and_then(|mut statement| statement.execute(params![drop_id, order.sku, order.quantity]))
        .map_err(backend)?;
    if reserved == 0 {
        let known = transaction
            .query_row(
                "SELECT 1 FROM stock WHERE drop_id = ?1 AND sku = ?2",
                params![drop_id, order.sku],
                |_| Ok(()),
            )
            .optional()
            .map_err(backend)?;
        let (drop_id, sku) = (order.drop_id.clone(), order.sku.clone());
        return Err(match known {
            Some(()) => StoreError::Oversell { drop_id, sku },
            None => StoreError::UnknownSku { drop_id, sku },
        });
    }
    transaction
        .prepare_cached(
            "INSERT INTO orders (order_id, drop_id, sku, quantity, customer, state, attempts,
                 accepted_at, updated_at, downstream_ref, idempotency_key, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                order.order_id.as_str(),
                drop_id,
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
            ])
        })
        .map(drop)
        .map_err(backend)
}
