//! The lease keeper of a node sharing its store: keeps each live SKU's lease about one second of
//! sales ahead, so the hot path sells from memory and the SKU's shared row is written a few times
//! a second for the whole cluster instead of once per batch per node.
//!
//! A shopper who finds the lease empty waits for one refill (single-flight per SKU) rather than
//! being told "sold out" while the pool still has units. Leases are renewed well before they
//! lapse, given back at a graceful shutdown, and a node that dies strands its lease only until
//! it lapses: every node reclaims lapsed leases, whoever held them. A lease that sells nothing
//! for a while goes back to the pool, and so does most of one that another node asked for (its
//! own request fell short), so the last units of a drop end up on the nodes whose shoppers still
//! want them; those shoppers are told "try again", never "sold out", meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use floodgate_core::{DropId, DropState, Timestamp};
use floodgate_store::{Cluster, StoreError};
use tokio::time::Instant;

use crate::lock;
use floodgate_core::ledger::SharedLedger as Ledger;

/// Seconds of sales one lease covers.
const LEASE_SECONDS: f64 = 1.0;
/// The smallest lease asked for: a drop's first orders arrive before any rate is known.
const MIN_BLOCK: u64 = 32;
/// The largest lease asked for, however fast the SKU sells.
const MAX_BLOCK: u64 = 50_000;
/// How much a sell rate fades per second once sales slow (a sudden rise counts at once).
const RATE_DECAY_PER_SECOND: f64 = 0.5;
/// How often lapsed leases, this node's or another's, are put back in the pool.
const RECLAIM_INTERVAL: Duration = Duration::from_secs(1);
/// A lease that sold nothing for this long is given back.
const IDLE_LEASE: Duration = Duration::from_secs(2);
/// Seconds of sales a node keeps of a lease another node asked for.
const WANTED_KEEP_SECONDS: f64 = 0.25;
/// How long after giving units back a node tops its lease up only for its own orders, so the
/// units go to the node that asked rather than straight back.
const GIVEN_BACK_HOLD_OFF: Duration = Duration::from_secs(1);

type SkuKey = (DropId, String);

/// What one SKU's lease keeping remembers.
#[derive(Debug, Default)]
struct SkuPace {
    /// Units sold, as last counted.
    sold: u64,
    /// Units per second, rising at once and fading slowly.
    rate: f64,
    /// When the last sale (or the first look) was seen.
    last_sale: Option<Instant>,
    /// When units of the lease were last given back.
    given_back: Option<Instant>,
}

/// One node's lease keeping.
pub(crate) struct StockLeases {
    ttl: Duration,
    /// One refill at a time per SKU; renewals wait for refills under way (a lease granted while
    /// a renewal's answer is in flight must not be mistaken for a lapsed one).
    refills: tokio::sync::RwLock<HashMap<SkuKey, Arc<tokio::sync::Mutex<()>>>>,
    paces: Mutex<HashMap<SkuKey, SkuPace>>,
    last_tended: Mutex<Option<Instant>>,
    next_renewal: Mutex<Instant>,
    next_reclaim: Mutex<Instant>,
}

impl StockLeases {
    pub(crate) fn new(ttl: Duration) -> Self {
        let now = Instant::now();
        Self {
            ttl,
            refills: tokio::sync::RwLock::default(),
            paces: Mutex::default(),
            last_tended: Mutex::new(None),
            next_renewal: Mutex::new(now),
            next_reclaim: Mutex::new(now),
        }
    }

    /// Leases at least `needed` more units of `sku` unless the ledger has them by the time this
    /// call's turn comes.
    pub(crate) async fn refill(
        &self,
        cluster: &dyn Cluster,
        ledger: &Ledger,
        drop_id: &DropId,
        sku: &str,
        needed: u64,
    ) -> Result<(), StoreError> {
        let key = (drop_id.clone(), sku.to_owned());
        let known = self.refills.read().await.get(&key).cloned();
        let gate = match known {
            Some(gate) => gate,
            None => Arc::clone(self.refills.write().await.entry(key.clone()).or_default()),
        };
        let _no_renewal_meanwhile = self.refills.read().await;
        let _one_refill = gate.lock().await;
        let (available, elsewhere) = {
            let drop = lock(ledger);
            let available = drop
                .supply()
                .into_iter()
                .find(|(name, ..)| name == sku)
                .map_or(0, |(_, available, _)| available);
            (available, drop.available(sku).unwrap_or(0) - available)
        };
        if available >= needed {
            return Ok(());
        }
        // Half of what is left at most, so the last units are spread over the nodes still
        // selling (the store grants no more than its pool holds).
        let wanted = self
            .block(&key)
            .min(elsewhere.div_ceil(2))
            .max(needed - available);
        let grant = cluster
            .lease_stock(drop_id.clone(), sku.to_owned(), wanted, self.ttl)
            .await?;
        lock(ledger).grant(sku, grant.granted, grant.elsewhere);
        tracing::debug!(drop = %drop_id, sku, granted = grant.granted, unleased = grant.unleased, "stock leased");
        Ok(())
    }

    /// Called every few hundred milliseconds: measures each SKU's sell rate, tops up the live
    /// SKUs' leases running low, renews leases well before they lapse and reclaims lapsed ones.
    pub(crate) async fn tend(
        &self,
        cluster: &dyn Cluster,
        ledgers: &[(DropId, Ledger)],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let elapsed = self.since_last_tended();
        let wanted: HashSet<SkuKey> = cluster.wanted_leases().await?.into_iter().collect();
        let (mut low, mut returns) = (Vec::new(), Vec::new());
        for (drop_id, ledger) in ledgers {
            let (live, supply) = {
                let drop = lock(ledger);
                (
                    matches!(drop.state_at(now), DropState::Live | DropState::SoldOut),
                    drop.supply(),
                )
            };
            for (sku, available, sold) in supply {
                let key = (drop_id.clone(), sku);
                let (block, sold_lately) = self.measure(&key, sold, elapsed);
                if wanted.contains(&key) {
                    // An idle lease keeps nothing, however fast it once sold.
                    let keep = if sold_lately {
                        (self.rate(&key) * WANTED_KEEP_SECONDS) as u64
                    } else {
                        0
                    };
                    returns.push((drop_id, ledger, key.1, keep));
                } else if available > 0 && !sold_lately {
                    returns.push((drop_id, ledger, key.1, 0));
                } else if live && available < block / 2 && !self.gave_back_lately(&key) {
                    low.push((drop_id, ledger, key.1));
                }
            }
        }
        for (drop_id, ledger, sku, keep) in returns {
            let units = lock(ledger).surrender(&sku, keep);
            if units == 0 {
                continue;
            }
            self.with_pace(&(drop_id.clone(), sku.clone()), |pace| {
                pace.given_back = Some(Instant::now());
            });
            let returned = cluster
                .return_stock(drop_id.clone(), sku.clone(), units)
                .await;
            if let Err(error) = returned {
                lock(ledger).regain(&sku, units);
                return Err(error);
            }
            tracing::debug!(drop = %drop_id, sku, units, "stock lease returned");
        }
        for (drop_id, ledger, sku) in low {
            if lock(ledger).available(&sku).unwrap_or(0) > 0 {
                self.refill(cluster, ledger, drop_id, &sku, 1).await?;
            }
        }
        let instant = Instant::now();
        if due(&self.next_renewal, instant, self.ttl / 3) {
            self.renew(cluster, ledgers).await?;
        }
        if due(&self.next_reclaim, instant, RECLAIM_INTERVAL) {
            let reclaimed = cluster.reclaim_lapsed_leases().await?;
            if reclaimed > 0 {
                tracing::info!(
                    units = reclaimed,
                    "lapsed stock leases returned to the pool"
                );
            }
        }
        Ok(())
    }

    /// Gives every unit this node could still sell back to the pool (a graceful shutdown: no
    /// order is being placed any more).
    pub(crate) async fn return_all(
        &self,
        cluster: &dyn Cluster,
        ledgers: &[(DropId, Ledger)],
    ) -> Result<u64, StoreError> {
        for (_, ledger) in ledgers {
            let mut drop = lock(ledger);
            for (sku, ..) in drop.supply() {
                drop.surrender(&sku, 0);
            }
        }
        cluster.return_all_stock().await
    }

    /// Extends this node's leases; a SKU whose lease the store no longer has sells no more
    /// from it.
    async fn renew(
        &self,
        cluster: &dyn Cluster,
        ledgers: &[(DropId, Ledger)],
    ) -> Result<(), StoreError> {
        let _no_refill_under_way = self.refills.write().await;
        let held: HashSet<(DropId, String)> = cluster
            .renew_leases(self.ttl)
            .await?
            .into_iter()
            .map(|lease| (lease.drop_id, lease.sku))
            .collect();
        for (drop_id, ledger) in ledgers {
            let mut drop = lock(ledger);
            for (sku, available, _) in drop.supply() {
                if available > 0 && !held.contains(&(drop_id.clone(), sku.clone())) {
                    tracing::warn!(drop = %drop_id, sku, units = available, "stock lease lapsed; its units went back to the pool");
                    drop.lease_lapsed(&sku);
                }
            }
        }
        Ok(())
    }

    /// Updates the SKU's sell rate from units sold since the last call; the lease size it calls
    /// for, and whether it sold within [`IDLE_LEASE`].
    fn measure(&self, key: &SkuKey, sold: u64, elapsed: Option<Duration>) -> (u64, bool) {
        let now = Instant::now();
        self.with_pace(key, |pace| {
            if pace.last_sale.is_none() || sold != pace.sold {
                pace.last_sale = Some(now);
            }
            let sold_lately = pace.last_sale.is_some_and(|at| now - at < IDLE_LEASE);
            if let Some(elapsed) = elapsed.filter(|elapsed| !elapsed.is_zero()) {
                let seconds = elapsed.as_secs_f64();
                let recent = sold.saturating_sub(pace.sold) as f64 / seconds;
                pace.rate = recent.max(pace.rate * RATE_DECAY_PER_SECOND.powf(seconds));
            }
            pace.sold = sold;
            (block_for(pace.rate), sold_lately)
        })
    }

    fn block(&self, key: &SkuKey) -> u64 {
        block_for(self.rate(key))
    }

    fn rate(&self, key: &SkuKey) -> f64 {
        self.with_pace(key, |pace| pace.rate)
    }

    fn gave_back_lately(&self, key: &SkuKey) -> bool {
        self.with_pace(key, |pace| {
            pace.given_back
                .is_some_and(|at| at.elapsed() < GIVEN_BACK_HOLD_OFF)
        })
    }

    fn with_pace<T>(&self, key: &SkuKey, read: impl FnOnce(&mut SkuPace) -> T) -> T {
        let mut paces = self.paces.lock().unwrap_or_else(PoisonError::into_inner);
        read(paces.entry(key.clone()).or_default())
    }

    fn since_last_tended(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut last = self
            .last_tended
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let elapsed = last.map(|last| now - last);
        *last = Some(now);
        elapsed
    }
}

/// The lease size for a SKU selling `rate` units a second.
fn block_for(rate: f64) -> u64 {
    ((rate * LEASE_SECONDS).ceil() as u64).clamp(MIN_BLOCK, MAX_BLOCK)
}

/// Whether the moment in `next` has come; if so, the next one is `every` later.
fn due(next: &Mutex<Instant>, now: Instant, every: Duration) -> bool {
    let mut next = next.lock().unwrap_or_else(PoisonError::into_inner);
    if now < *next {
        return false;
    }
    *next = now + every;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_covers_a_second_of_sales_within_bounds() {
        assert_eq!(block_for(0.0), MIN_BLOCK);
        assert_eq!(block_for(1_234.5), 1_235);
        assert_eq!(block_for(1e9), MAX_BLOCK);
    }

    #[test]
    fn the_sell_rate_rises_at_once_and_fades_slowly() {
        let leases = StockLeases::new(Duration::from_secs(10));
        let key = (DropId::parse("d").unwrap(), "a".to_owned());
        leases.measure(&key, 0, None);
        assert_eq!(
            leases.measure(&key, 500, Some(Duration::from_millis(100))),
            (5_000, true)
        );
        let (faded, _) = leases.measure(&key, 500, Some(Duration::from_secs(1)));
        assert_eq!(faded, 2_500);
    }
}
