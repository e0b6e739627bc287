//! The group-commit writer, whatever the backend: one thread owns the only write connection,
//! takes every write queued since its last commit, hands them to the backend's [`Committer`] to
//! apply in one transaction (one fsync), then answers each.
//!
//! Batches form by themselves: while one commit waits on the disk, new writes queue up, and the
//! next commit takes them all. No timer is needed, so a lone order is not delayed, and under load
//! the batch grows until one fsync serves hundreds of orders. A refused write (an oversell) does
//! not undo its batch-mates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use floodgate_core::{DropId, DropSpec, Order, OrderId, OrderState, Timestamp};
use tokio::sync::oneshot;

use crate::relay::{Answers, Reply};
use crate::{CommitFigures, Delivery, StoreError};

/// A write waiting for the writer thread.
pub(crate) enum Write {
    PutDrop {
        drop_id: DropId,
        spec: DropSpec,
        now: Timestamp,
    },
    AcceptOrder(Order),
    Delivery {
        order_id: OrderId,
        change: Delivery,
        now: Timestamp,
    },
    Heartbeat,
    /// Ends the writer once everything queued before it is committed.
    Close,
}

/// A write and who waits for its outcome.
pub(crate) struct Job {
    pub(crate) write: Write,
    reply: Reply,
}

/// The orders of `batch`, each with its place in it: a committer applies them first, together.
pub(crate) fn orders_of(batch: &[Job]) -> Vec<(usize, &Order)> {
    batch
        .iter()
        .enumerate()
        .filter_map(|(index, job)| match &job.write {
            Write::AcceptOrder(order) => Some((index, order)),
            _ => None,
        })
        .collect()
}

/// A backend's side of group commit: applies a batch in one transaction.
pub(crate) trait Committer {
    /// Applies `batch`; one result per job, in order. A failure of the whole transaction is
    /// that error for every job.
    fn commit(&mut self, batch: &[Job]) -> Vec<Result<(), StoreError>>;
}

/// The sending side of the writer; dropping every clone also stops the thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    // Bounded so a disk that cannot keep up turns into `Overloaded` answers, not unbounded memory.
    jobs: SyncSender<Job>,
    figures: Arc<Figures>,
}

/// The writer's running counts, read by [`WriterHandle::figures`].
#[derive(Default)]
struct Figures {
    commits: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
    nanos: AtomicU64,
}

impl Figures {
    fn record(&self, batch: usize, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(batch as u64, Ordering::Relaxed);
        self.largest_batch
            .fetch_max(batch as u64, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl WriterHandle {
    /// Starts the writer thread, whose first act is `open`ing the backend's write connection
    /// (on the thread, so a backend may keep thread-bound state); waits until it has.
    pub(crate) fn spawn<C, F>(
        open: F,
        max_batch: usize,
        queue_capacity: usize,
    ) -> Result<(Self, JoinHandle<()>), StoreError>
    where
        C: Committer,
        F: FnOnce() -> Result<C, StoreError> + Send + 'static,
    {
        let (jobs, queued) = mpsc::sync_channel(queue_capacity);
        let (opened, open_outcome) = mpsc::channel();
        let figures = Arc::new(Figures::default());
        let counted = Arc::clone(&figures);
        let thread = std::thread::Builder::new()
            .name("floodgate-store-writer".into())
            .spawn(move || match open() {
                Ok(committer) => {
                    let _ = opened.send(Ok(()));
                    run(committer, queued, max_batch, &counted);
                }
                Err(error) => {
                    let _ = opened.send(Err(error));
                }
            })
            .map_err(|error| StoreError::Backend(format!("cannot start the writer: {error}")))?;
        open_outcome
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Backend("the writer died opening".into())))?;
        Ok((Self { jobs, figures }, thread))
    }

    /// The commits so far.
    pub(crate) fn figures(&self) -> CommitFigures {
        let figures = &self.figures;
        CommitFigures {
            commits: figures.commits.load(Ordering::Relaxed),
            writes: figures.writes.load(Ordering::Relaxed),
            largest_batch: figures.largest_batch.load(Ordering::Relaxed),
            seconds: figures.nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Queues `write` and waits until it is committed (or refused).
    pub(crate) async fn submit(&self, write: Write) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job {
                write,
                reply: Reply::here(reply),
            })
            .map_err(|error| match error {
                TrySendError::Full(_) => StoreError::Overloaded,
                TrySendError::Disconnected(_) => StoreError::Closed,
            })?;
        // A dropped reply means the writer stopped before reaching this job: it was not written.
        answer.await.unwrap_or(Err(StoreError::Closed))
    }
}

fn run(mut committer: impl Committer, queued: Receiver<Job>, max_batch: usize, figures: &Figures) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Ok(first) = queued.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queued.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Measures the writer's own commits for operators; no decision depends on it.
        #[allow(clippy::disallowed_types)]
        let started = std::time::Instant::now();
        let results = committer.commit(&batch);
        figures.record(batch.len(), started.elapsed());
        let closing = batch.iter().any(|job| matches!(job.write, Write::Close));
        let mut answers = Answers::default();
        for (job, result) in batch.drain(..).zip(results) {
            answers.add(job.reply, result);
        }
        answers.deliver();
        if closing {
            break;
        }
    }
    tracing::debug!("store writer stopped");
}

/// A batch's orders grouped for reservation: per drop and SKU, the units of all its orders and
/// their positions in `orders`. Each group's stock is raised once when the whole group fits —
/// the common case — and only a group that would oversell is retried order by order, so exactly
/// the orders that fit are kept.
pub(crate) fn reservations<'o>(
    orders: &[(usize, &'o Order)],
) -> Vec<((&'o str, &'o str), u64, Vec<usize>)> {
    let mut groups: HashMap<(&str, &str), (u64, Vec<usize>)> = HashMap::new();
    for (position, (_, order)) in orders.iter().enumerate() {
        let group = groups
            .entry((order.drop_id.as_str(), order.sku.as_str()))
            .or_default();
        group.0 += u64::from(order.quantity);
        group.1.push(position);
    }
    groups
        .into_iter()
        .map(|(key, (units, members))| (key, units, members))
        .collect()
}

/// Orders and units to add to a drop's tally under one SKU and state. Both backends keep the
/// tally in the transaction that inserts an order or moves it to another state, so counting a
/// drop's orders (once a second, for the dashboard and the delivery backlog) reads a few rows
/// instead of every order: that scan grew with the orders and, under a million orders, took a
/// fifth of the intake's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TallyChange<'a> {
    pub(crate) drop_id: &'a str,
    pub(crate) sku: &'a str,
    pub(crate) state: OrderState,
    pub(crate) orders: i64,
    pub(crate) units: i64,
}

/// What inserting `orders` adds: one change per drop, SKU and state.
pub(crate) fn tally_of_inserted<'o>(
    orders: impl IntoIterator<Item = &'o Order>,
) -> Vec<TallyChange<'o>> {
    let mut sums: BTreeMap<(&str, &str, OrderState), (i64, i64)> = BTreeMap::new();
    for order in orders {
        let sum = sums
            .entry((order.drop_id.as_str(), order.sku.as_str(), order.state))
            .or_default();
        sum.0 += 1;
        sum.1 += i64::from(order.quantity);
    }
    sums.into_iter()
        .map(|((drop_id, sku, state), (orders, units))| TallyChange {
            drop_id,
            sku,
            state,
            orders,
            units,
        })
        .collect()
}

/// What moving one order of `quantity` units from `from` to `to` changes; nothing when the
/// state stays.
pub(crate) fn tally_of_move<'a>(
    drop_id: &'a str,
    sku: &'a str,
    quantity: u32,
    from: OrderState,
    to: OrderState,
) -> Vec<TallyChange<'a>> {
    if from == to {
        return Vec::new();
    }
    let change = |state, sign: i64| TallyChange {
        drop_id,
        sku,
        state,
        orders: sign,
        units: sign * i64::from(quantity),
    };
    vec![change(from, -1), change(to, 1)]
}
