//! The delivery loop: one task owns the pace, the breaker and every order it holds; attempts run
//! in their own tasks and report back.
//!
//! An order moves through four holding places, each in order:
//! `fresh` (read from the store, still `accepted`) → a claim batch (the attempt is being recorded;
//! one group commit for the whole batch) → `ready` (recorded, waiting for a start) → in flight.
//! A retryable failure parks it in `retries` until its backoff ends, then it is claimed again.
//! Claims run ahead of the pace, so a start is never held up by a disk write, and the pacer sees
//! the moment a request really starts.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use floodgate_core::delivery::{BreakerState, DispatchStats};
use floodgate_core::{Clock, Order, OrderId, OrderState};
use floodgate_store::{Delivery, StoreError};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

use crate::breaker::Breaker;
use crate::downstream::{Downstream, Verdict, verdict};
use crate::leadership::Fence;
use crate::outbox::Outbox;
use crate::pacer::Pacer;

/// How often the store is asked for new orders once the dispatcher has caught up.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long an order waits after the store could not record its step.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Orders read from the store per page at start-up.
const RESUME_PAGE: u32 = 1_000;

/// How often `submitting` orders nobody holds are looked for: left by a leader that lost its
/// term between recording an attempt and sending it.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// The `[downstream]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchSettings {
    /// Most request starts in any one-second window.
    pub rate_per_second: NonZeroU32,
    /// Most attempts awaiting an answer at once.
    pub max_in_flight: NonZeroU32,
    /// Attempts before an order is `failed` (dead-lettered).
    pub max_attempts: NonZeroU32,
    /// How long one attempt may take before it counts as timed out.
    pub timeout: Duration,
    /// Backoff before the second attempt, at most (full jitter); doubles per attempt.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Failures in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open at first.
    pub breaker_open: Duration,
}

/// Called once a rejected order's units are back in the store, so the intake can sell them.
pub type UnitsReturned = Arc<dyn Fn(&Order) + Send + Sync>;

/// A running dispatcher.
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<Mutex<DispatchStats>>,
}

impl Dispatcher {
    /// Starts delivering the orders in `outbox` to `downstream` whenever `fence` allows.
    pub fn start<O, D>(
        outbox: Arc<O>,
        downstream: Arc<D>,
        settings: DispatchSettings,
        clock: Clock,
        units_returned: UnitsReturned,
        fence: Arc<Fence>,
    ) -> Self
    where
        O: Outbox + ?Sized,
        D: Downstream + ?Sized,
    {
        let pacer = Pacer::new(settings.rate_per_second);
        let breaker = Breaker::new(settings.breaker_failures, settings.breaker_open);
        let stats = Arc::new(Mutex::new(DispatchStats {
            holding: 0,
            in_flight: 0,
            attempts: 0,
            confirmed: 0,
            rejected: 0,
            failed: 0,
            retried: 0,
            rate_per_second: pacer.rate(),
            limit_per_second: settings.rate_per_second.get(),
            breaker: breaker.state(),
            leading: false,
        }));
        let (stop, stopped) = watch::channel(false);
        let run = Run {
            outbox,
            downstream,
            clock,
            units_returned,
            pacer,
            breaker,
            fresh_target: fresh_target(&settings),
            settings,
            fresh: VecDeque::new(),
            claims: JoinSet::new(),
            claiming: 0,
            ready: VecDeque::new(),
            sends: JoinSet::new(),
            retries: BTreeMap::new(),
            retry_serial: 0,
            holding: HashSet::new(),
            next_poll: Instant::now(),
            fence,
            term: None,
            next_orphan_scan: Instant::now() + ORPHAN_SCAN_INTERVAL,
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(run.run(stopped));
        Self { stop, task, stats }
    }

    /// A snapshot of what it holds and has done.
    pub fn stats(&self) -> DispatchStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A reader of [`Self::stats`] that outlives a borrow of the dispatcher (for a metrics page).
    pub fn stats_reader(&self) -> impl Fn() -> DispatchStats + Send + Sync + 'static {
        let stats = Arc::clone(&self.stats);
        move || stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops starting attempts, waits for the ones in flight to be answered (or time out) and
    /// recorded, then returns. Orders claimed but not sent stay `submitting` and go out again
    /// after a restart.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "dispatcher task failed");
        }
    }
}

/// How many fresh orders to keep at hand: half a second's worth, enough for every slot.
fn fresh_target(settings: &DispatchSettings) -> usize {
    let half_second = settings.rate_per_second.get() as usize / 2;
    half_second
        .max(2 * settings.max_in_flight.get() as usize)
        .clamp(16, 4_096)
}

type Claimed = Vec<(Order, Result<(), StoreError>)>;

/// How an attempt ended.
struct Attempted {
    order: Order,
    verdict: Verdict,
    /// The step recorded for a settled order (`None`: it will be retried).
    settled: Result<Option<Delivery>, StoreError>,
}

struct Run<O: ?Sized, D: ?Sized> {
    outbox: Arc<O>,
    downstream: Arc<D>,
    settings: DispatchSettings,
    clock: Clock,
    units_returned: UnitsReturned,
    pacer: Pacer,
    breaker: Breaker,
    fresh_target: usize,
    fresh: VecDeque<Order>,
    claims: JoinSet<Claimed>,
    /// Orders in the claim batch under way.
    claiming: usize,
    ready: VecDeque<Order>,
    sends: JoinSet<Attempted>,
    /// Orders waiting out a backoff, by when they are due (and arrival, for ties).
    retries: BTreeMap<(Instant, u64), Order>,
    retry_serial: u64,
    /// Every order in any of the places above, so a store read does not take one twice.
    holding: HashSet<OrderId>,
    next_poll: Instant,
    fence: Arc<Fence>,
    /// The term delivered under (`None`: another node delivers).
    term: Option<u64>,
    next_orphan_scan: Instant,
    stats: Arc<Mutex<DispatchStats>>,
}

impl<O: Outbox + ?Sized, D: Downstream + ?Sized> Run<O, D> {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            let now = Instant::now();
            self.follow_fence(now).await;
            if self.term.is_some() {
                self.read_fresh(now).await;
                self.claim_due(now);
                self.start_ready(now);
            }
            self.publish();
            let wake = self.next_wake(now);
            tokio::select! {
                _ = stopped.changed() => break,
                Some(claimed) = self.claims.join_next(), if !self.claims.is_empty() => {
                    self.on_claimed(claimed);
                }
                Some(attempted) = self.sends.join_next(), if !self.sends.is_empty() => {
                    self.on_attempted(attempted);
                }
                () = sleep_until(wake) => {}
            }
        }
        while let Some(claimed) = self.claims.join_next().await {
            self.on_claimed(claimed);
        }
        while let Some(attempted) = self.sends.join_next().await {
            self.on_attempted(attempted);
        }
        self.publish();
        tracing::debug!("dispatcher stopped");
    }

    /// Starts delivering when this node gains a term (resuming what was left `submitting`),
    /// stops when it loses it, and looks for orphaned attempts now and then while it leads.
    async fn follow_fence(&mut self, now: Instant) {
        let term = self.fence.term_at(now);
        if term == self.term {
            if term.is_some() && now >= self.next_orphan_scan {
                self.next_orphan_scan = now + ORPHAN_SCAN_INTERVAL;
                self.resume().await;
            }
            return;
        }
        if self.term.is_some() {
            tracing::warn!("delivery term lost: holding off; the new leader resends what was left");
            // What is not in flight is still in the store, for the next leader.
            let parked = std::mem::take(&mut self.retries).into_values();
            for order in self
                .fresh
                .drain(..)
                .chain(self.ready.drain(..))
                .chain(parked)
            {
                self.holding.remove(&order.order_id);
            }
        }
        self.term = term;
        if term.is_some() {
            self.next_orphan_scan = now + ORPHAN_SCAN_INTERVAL;
            self.resume().await;
        }
    }

    /// Orders left `submitting` (by an earlier run, or another node's) may have reached the
    /// downstream: they are sent again first, with the same key.
    async fn resume(&mut self) {
        let mut after = None;
        loop {
            let page = match self
                .outbox
                .waiting(OrderState::Submitting, after.clone(), RESUME_PAGE)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "cannot read unfinished deliveries; they wait for a restart");
                    return;
                }
            };
            let full = page.len() == RESUME_PAGE as usize;
            after = page.last().map(|order| order.order_id.clone());
            let now = Instant::now();
            for order in page {
                if self.holding.insert(order.order_id.clone()) {
                    self.schedule(order, now);
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Tops up `fresh` from the store's `accepted` orders once it runs low.
    async fn read_fresh(&mut self, now: Instant) {
        if self.fresh.len() >= self.fresh_target / 2 || now < self.next_poll {
            return;
        }
        // The first rows include the accepted orders already held; ask for enough beyond them.
        let limit = self.fresh_target + self.fresh.len() + self.claiming;
        let limit_u32 = u32::try_from(limit).unwrap_or(u32::MAX);
        match self
            .outbox
            .waiting(OrderState::Accepted, None, limit_u32)
            .await
        {
            Ok(orders) => {
                self.next_poll = if orders.len() < limit {
                    now + POLL_INTERVAL
                } else {
                    now
                };
                for order in orders {
                    if self.holding.insert(order.order_id.clone()) {
                        self.fresh.push_back(order);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read accepted orders; trying again shortly");
                self.next_poll = now + STORE_RETRY;
            }
        }
    }

    /// Records the next attempts of due retries, then of fresh orders, as one batch.
    fn claim_due(&mut self, now: Instant) {
        let room = (self.settings.max_in_flight.get() as usize).saturating_sub(self.ready.len());
        if !self.claims.is_empty() || room == 0 {
            return;
        }
        let mut batch = Vec::with_capacity(room);
        while batch.len() < room {
            match self.retries.first_entry() {
                Some(entry) if entry.key().0 <= now => batch.push(entry.remove()),
                _ => break,
            }
        }
        while batch.len() < room {
            let Some(order) = self.fresh.pop_front() else {
                break;
            };
            batch.push(order);
        }
        if batch.is_empty() {
            return;
        }
        self.claiming = batch.len();
        let outbox = Arc::clone(&self.outbox);
        let now = self.clock.now();
        self.claims.spawn(async move {
            let mut recording = JoinSet::new();
            for (index, order) in batch.into_iter().enumerate() {
                let outbox = Arc::clone(&outbox);
                recording.spawn(async move {
                    let recorded = outbox
                        .record(order.order_id.clone(), Delivery::Attempt, now)
                        .await;
                    (index, order, recorded)
                });
            }
            let mut claimed = recording.join_all().await;
            claimed.sort_by_key(|(index, ..)| *index);
            claimed
                .into_iter()
                .map(|(_, order, recorded)| (order, recorded))
                .collect()
        });
    }

    fn on_claimed(&mut self, claimed: Result<Claimed, JoinError>) {
        self.claiming = 0;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                // Nothing was lost: the orders are still in the store and are read again.
                tracing::error!(%error, "claim task failed");
                self.holding.clear();
                self.fresh.clear();
                self.retries.clear();
                self.ready.clear();
                return;
            }
        };
        let now = Instant::now();
        for (mut order, recorded) in claimed {
            if self.term.is_none() {
                // Claimed under a term since lost: the next leader finds it `submitting`.
                self.holding.remove(&order.order_id);
                continue;
            }
            match recorded {
                Ok(()) => {
                    order.state = OrderState::Submitting;
                    order.attempts += 1;
                    self.ready.push_back(order);
                }
                Err(StoreError::WrongState { .. } | StoreError::UnknownOrder(_)) => {
                    // Settled by someone else (an operator) since it was read.
                    self.holding.remove(&order.order_id);
                }
                Err(error) => {
                    tracing::warn!(%error, order = %order.order_id, "cannot record an attempt");
                    self.schedule(order, now + STORE_RETRY);
                }
            }
        }
    }

    /// Starts every ready order the pace, the breaker and `max_in_flight` allow.
    fn start_ready(&mut self, now: Instant) {
        while !self.ready.is_empty()
            && self.sends.len() < self.settings.max_in_flight.get() as usize
            && self.pacer.may_start(now)
            && self.breaker.try_start(now, self.sends.len())
        {
            let Some(order) = self.ready.pop_front() else {
                break;
            };
            self.pacer.record_start(now);
            self.sends.spawn(attempt(
                Arc::clone(&self.outbox),
                Arc::clone(&self.downstream),
                order,
                self.settings.clone(),
                self.clock.clone(),
            ));
        }
    }

    fn on_attempted(&mut self, attempted: Result<Attempted, JoinError>) {
        let Attempted {
            order,
            verdict,
            settled,
        } = match attempted {
            Ok(attempted) => attempted,
            Err(error) => {
                // The order stays `submitting` in the store and is resent after a restart.
                tracing::error!(%error, "delivery task failed");
                return;
            }
        };
        let now = Instant::now();
        let mut retry_after = None;
        match &verdict {
            Verdict::Retry {
                retry_after: asked,
                overload,
                ..
            } => {
                self.breaker.on_failure(now);
                if *overload {
                    self.pacer.on_overload(now);
                }
                if let Some(delay) = asked {
                    self.pacer.hold_until(now + *delay);
                }
                retry_after = *asked;
            }
            Verdict::Confirmed { .. } | Verdict::Rejected { .. } => {
                self.breaker.on_success();
                self.pacer.on_success();
            }
        }
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.attempts += 1;
        match settled {
            Ok(Some(step)) => {
                self.holding.remove(&order.order_id);
                match step {
                    Delivery::Rejected { reason } => {
                        stats.rejected += 1;
                        tracing::info!(order = %order.order_id, %reason, "rejected downstream; units returned");
                        (self.units_returned)(&order);
                    }
                    Delivery::Failed { reason } => {
                        stats.failed += 1;
                        tracing::warn!(order = %order.order_id, %reason, "dead-lettered");
                    }
                    _ => stats.confirmed += 1,
                }
            }
            Ok(None) => {
                stats.retried += 1;
                drop(stats);
                let delay = self
                    .backoff(order.attempts)
                    .max(retry_after.unwrap_or_default());
                self.schedule(order, now + delay);
            }
            Err(StoreError::WrongState { .. } | StoreError::UnknownOrder(_)) => {
                self.holding.remove(&order.order_id);
            }
            Err(error) => {
                drop(stats);
                // Sent again later with the same key; the downstream answers 409 if it has it.
                tracing::warn!(%error, order = %order.order_id, "cannot record a delivery outcome");
                self.schedule(order, now + STORE_RETRY);
            }
        }
    }

    /// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
    /// Jitter"): uniformly random up to `base × 2^(attempt − 1)`, capped.
    fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let cap = self
            .settings
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.settings.backoff_max);
        cap.mul_f64(fastrand::f64())
    }

    fn schedule(&mut self, order: Order, due: Instant) {
        self.retry_serial += 1;
        self.retries.insert((due, self.retry_serial), order);
    }

    /// The next moment something can happen without an answer arriving first.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + POLL_INTERVAL;
        let room = self.sends.len() < self.settings.max_in_flight.get() as usize;
        if !self.ready.is_empty() && room {
            let start = self.pacer.next_start().unwrap_or(now);
            match self.breaker.state() {
                BreakerState::Closed => wake = wake.min(start),
                BreakerState::Open if self.sends.is_empty() => {
                    let reopen = self.breaker.reopens_at().unwrap_or(now);
                    wake = wake.min(start.max(reopen));
                }
                // Waiting for the probe's answer, or for earlier attempts to come back.
                BreakerState::Open | BreakerState::HalfOpen => {}
            }
        }
        let claim_room = self.ready.len() < self.settings.max_in_flight.get() as usize;
        if self.claims.is_empty()
            && claim_room
            && let Some(((due, _), _)) = self.retries.first_key_value()
        {
            wake = wake.min(*due);
        }
        if self.fresh.len() < self.fresh_target / 2 {
            wake = wake.min(self.next_poll);
        }
        wake
    }

    fn publish(&self) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.holding = self.holding.len();
        stats.in_flight = self.sends.len();
        stats.rate_per_second = self.pacer.rate();
        stats.breaker = self.breaker.state();
        stats.leading = self.term.is_some();
    }
}

/// One attempt: send, then record the outcome if it settles the order.
async fn attempt<O, D>(
    outbox: Arc<O>,
    downstream: Arc<D>,
    order: Order,
    settings: DispatchSettings,
    clock: Clock,
) -> Attempted
where
    O: Outbox + ?Sized,
    D: Downstream + ?Sized,
{
    let reply = tokio::time::timeout(settings.timeout, downstream.deliver(&order))
        .await
        .ok();
    let verdict = verdict(reply);
    let step = match &verdict {
        Verdict::Confirmed { reference } => Some(Delivery::Confirmed {
            reference: reference.clone(),
        }),
        Verdict::Rejected { reason } => Some(Delivery::Rejected {
            reason: reason.clone(),
        }),
        Verdict::Retry { reason, .. } if order.attempts >= settings.max_attempts.get() => {
            Some(Delivery::Failed {
                reason: format!(
                    "{reason} (attempt {} of {})",
                    order.attempts, settings.max_attempts
                ),
            })
        }
        Verdict::Retry { .. } => None,
    };
    let settled = match step {
        Some(step) => outbox
            .record(order.order_id.clone(), step.clone(), clock.now())
            .await
            .map(|()| Some(step)),
        None => Ok(None),
    };
    Attempted {
        order,
        verdict,
        settled,
    }
}
