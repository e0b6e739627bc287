//! The stock ledger of one drop: units available per SKU, units held per customer, and the
//! drop's idempotency keys, kept together so one lock decides an order.
//!
//! The ledger answers `sold_out` and `limit_reached` from memory. A winning order takes its units
//! here first and gives them back if its durable write fails, so memory never promises more than
//! the store holds. The store repeats the stock check in the same transaction (the last guard).
//!
//! On a store several nodes share, a ledger is *leased*: each SKU's stock here is only the units
//! this node has leased (and sold), topped up by the gateway's lease keeper; the units no node
//! has leased yet, and those other nodes' leases still hold, are known only as last seen
//! (`elsewhere`). A shopper still sees them as on sale: a node never says "sold out" while units
//! sit in another node's lease.

use std::collections::HashMap;

use crate::drop::SpecProblem;
use crate::sharded_map::{Entry, ShardedMap};
use crate::{DropSpec, DropState, KeyTable, Timestamp};

/// Why an order cannot be had, decided in memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The drop does not sell that SKU.
    #[error("the drop has no sku {0:?}")]
    UnknownSku(String),
    /// Orders are not open.
    #[error("the drop is {} and takes no orders", .0.as_str())]
    NotLive(DropState),
    /// No unit of that SKU is available.
    #[error("the sku is sold out")]
    SoldOut,
    /// Fewer units are available than asked for.
    #[error("only {available} units are available")]
    InsufficientStock {
        /// Units still available.
        available: u64,
    },
    /// This node's lease of the SKU is short but units are on sale elsewhere (the shared pool,
    /// or other nodes' leases that will come back): lease more, then ask again (a leased ledger
    /// only; never shown to a shopper).
    #[error("the node's lease of the sku is short")]
    LeaseShort,
    /// The customer would exceed the per-customer limit.
    #[error("the limit is {limit} units per customer and {held} are already held")]
    LimitReached {
        /// The drop's limit.
        limit: u32,
        /// Units the customer already holds.
        held: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SkuUnits {
    /// Units this ledger may sell: the SKU's stock, or (leased) the units leased to this node.
    stock: u64,
    held: u64,
    /// Leased ledger: units on sale outside this ledger, in the shared pool or other nodes'
    /// leases, as last seen. Always 0 else.
    elsewhere: u64,
}

impl SkuUnits {
    /// Units this ledger can sell at once.
    fn available(&self) -> u64 {
        // Saturating: after an operator lowers the stock, in-flight orders may briefly hold more.
        self.stock.saturating_sub(self.held)
    }

    /// Units a shopper may still get: this ledger's, and the pool's.
    fn on_sale(&self) -> u64 {
        self.available() + self.elsewhere
    }
}

/// A drop's ledger as the intake and the node's stock leases share it.
pub type SharedLedger = std::sync::Arc<std::sync::Mutex<DropLedger>>;

/// The live counters of one drop.
#[derive(Debug)]
pub struct DropLedger {
    spec: DropSpec,
    skus: HashMap<String, SkuUnits>,
    held_by_customer: ShardedMap<String, u64>,
    /// Sells from leases of a shared stock rather than from the whole stock.
    leased: bool,
    /// The drop's idempotency keys, decided under the same lock as the stock.
    pub keys: KeyTable,
}

impl DropLedger {
    /// A ledger with every unit available.
    pub fn new(spec: DropSpec) -> Self {
        Self::with_supply(spec, false)
    }

    /// A ledger of a stock several nodes share: nothing to sell until leases are granted, with
    /// every unit presumed in the pool.
    pub fn leased(spec: DropSpec) -> Self {
        Self::with_supply(spec, true)
    }

    fn with_supply(spec: DropSpec, leased: bool) -> Self {
        let skus = spec
            .skus
            .iter()
            .map(|sku| {
                let units = if leased {
                    SkuUnits {
                        stock: 0,
                        held: 0,
                        elsewhere: sku.stock,
                    }
                } else {
                    SkuUnits {
                        stock: sku.stock,
                        held: 0,
                        elsewhere: 0,
                    }
                };
                (sku.sku.clone(), units)
            })
            .collect();
        Self {
            spec,
            skus,
            held_by_customer: ShardedMap::new(),
            leased,
            keys: KeyTable::default(),
        }
    }

    /// Whether this ledger sells from leases.
    pub fn is_leased(&self) -> bool {
        self.leased
    }

    /// Makes room for `customers` more customers' holdings and idempotency keys.
    pub fn presize(&mut self, customers: usize) {
        self.held_by_customer.reserve(customers);
        self.keys.reserve(customers);
    }

    /// The drop as declared.
    pub fn spec(&self) -> &DropSpec {
        &self.spec
    }

    /// Units of `sku` still on sale (`None` for an unknown SKU); for a leased ledger, this
    /// node's and the pool's.
    pub fn available(&self, sku: &str) -> Option<u64> {
        self.skus.get(sku).map(SkuUnits::on_sale)
    }

    /// Each SKU with the units this ledger can sell at once and those it has sold, for the
    /// lease keeper.
    pub fn supply(&self) -> Vec<(String, u64, u64)> {
        self.skus
            .iter()
            .map(|(sku, units)| (sku.clone(), units.available(), units.held))
            .collect()
    }

    /// Adds `granted` leased units of `sku`; `elsewhere` is what is left on sale outside this
    /// ledger.
    pub fn grant(&mut self, sku: &str, granted: u64, elsewhere: u64) {
        if let Some(units) = self.skus.get_mut(sku) {
            units.stock += granted;
        }
        self.see_elsewhere(sku, elsewhere);
    }

    /// The units of `sku` on sale outside this ledger (the pool, other nodes' leases) were last
    /// seen to be `elsewhere`.
    pub fn see_elsewhere(&mut self, sku: &str, elsewhere: u64) {
        if self.leased
            && let Some(units) = self.skus.get_mut(sku)
        {
            units.elsewhere = elsewhere;
        }
    }

    /// Takes back the units of `sku` this ledger could still sell beyond `keep`, to return them
    /// to the pool; how many.
    pub fn surrender(&mut self, sku: &str, keep: u64) -> u64 {
        let Some(units) = self.skus.get_mut(sku) else {
            return 0;
        };
        let surrendered = units.available().saturating_sub(keep);
        units.stock -= surrendered;
        surrendered
    }

    /// Takes `units` surrendered units of `sku` back (their return to the pool failed).
    pub fn regain(&mut self, sku: &str, units: u64) {
        if let Some(sku) = self.skus.get_mut(sku) {
            sku.stock += units;
        }
    }

    /// The lease of `sku` lapsed in the store: nothing more to sell from it.
    pub fn lease_lapsed(&mut self, sku: &str) {
        if let Some(units) = self.skus.get_mut(sku) {
            units.stock = units.stock.min(units.held);
        }
    }

    /// Units of `sku` held by orders (`None` for an unknown SKU).
    pub fn held(&self, sku: &str) -> Option<u64> {
        self.skus.get(sku).map(|units| units.held)
    }

    /// Units on sale across all SKUs.
    pub fn available_total(&self) -> u64 {
        self.skus.values().map(SkuUnits::on_sale).sum()
    }

    /// The drop's state at `now`.
    pub fn state_at(&self, now: Timestamp) -> DropState {
        self.spec.state_at(now, self.available_total())
    }

    /// Takes `quantity` units of `sku` for `customer` if the drop allows it at `now`.
    pub fn reserve(
        &mut self,
        customer: &str,
        sku: &str,
        quantity: u32,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let state = self.state_at(now);
        let Some(units) = self.skus.get(sku) else {
            return Err(Refusal::UnknownSku(sku.to_owned()));
        };
        if !matches!(state, DropState::Live | DropState::SoldOut) {
            return Err(Refusal::NotLive(state));
        }
        let available = units.available();
        let wanted = u64::from(quantity);
        if available < wanted && units.elsewhere > 0 {
            return Err(Refusal::LeaseShort);
        }
        if available == 0 {
            return Err(Refusal::SoldOut);
        }
        if available < wanted {
            return Err(Refusal::InsufficientStock { available });
        }
        // One probe of a table of millions, and an unknown customer is inserted only if the
        // order fits the limit.
        let limit = self.spec.limit_per_customer;
        let held = match self.held_by_customer.entry(customer.to_owned()) {
            Entry::Occupied(known) if *known.get() + wanted > u64::from(limit) => {
                return Err(Refusal::LimitReached {
                    limit,
                    held: *known.get(),
                });
            }
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(_) if wanted > u64::from(limit) => {
                return Err(Refusal::LimitReached { limit, held: 0 });
            }
            Entry::Vacant(vacant) => vacant.insert(0),
        };
        *held += wanted;
        self.hold_units(sku, wanted);
        Ok(())
    }

    /// Gives back units taken by [`reserve`](Self::reserve) or restored from the store.
    pub fn release(&mut self, customer: &str, sku: &str, quantity: u32) {
        let quantity = u64::from(quantity);
        if let Some(units) = self.skus.get_mut(sku) {
            units.held = units.held.saturating_sub(quantity);
        }
        if let Some(held) = self.held_by_customer.get_mut(customer) {
            *held = held.saturating_sub(quantity);
            if *held == 0 {
                self.held_by_customer.remove(customer);
            }
        }
    }

    /// Gives back the units of an order the downstream rejected: the store has put them back
    /// on sale (for a leased ledger, into the pool, not into this node's lease).
    pub fn return_rejected(&mut self, customer: &str, sku: &str, quantity: u32) {
        self.release(customer, sku, quantity);
        if self.leased
            && let Some(units) = self.skus.get_mut(sku)
        {
            units.stock = units.stock.saturating_sub(u64::from(quantity));
            units.elsewhere += u64::from(quantity);
        }
    }

    /// Counts units that a stored order holds, while rebuilding the ledger at start-up.
    pub fn restore_holding(&mut self, customer: &str, sku: &str, quantity: u64) {
        if self.leased
            && let Some(units) = self.skus.get_mut(sku)
        {
            // Sold through some node's lease, and no longer in the pool.
            units.stock += quantity;
            units.elsewhere = units.elsewhere.saturating_sub(quantity);
        }
        self.hold(customer, sku, quantity);
    }

    /// Checks that `spec` would strand no held units: a SKU's stock may not go below what its
    /// orders hold, and a SKU with holds may not disappear.
    pub fn check_spec(&self, spec: &DropSpec) -> Result<(), Vec<SpecProblem>> {
        let mut problems = Vec::new();
        for (sku, units) in &self.skus {
            let new_stock = spec.sku(sku).map_or(0, |declared| declared.stock);
            if units.held > new_stock {
                let path = match spec.skus.iter().position(|declared| &declared.sku == sku) {
                    Some(index) => format!("skus[{index}].stock"),
                    None => "skus".to_owned(),
                };
                let problem = format!(
                    "{} units of {sku} are held by orders; stock may not go lower",
                    units.held
                );
                problems.push(SpecProblem { path, problem });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Replaces the spec, keeping every hold. The store has accepted `spec`, so it stands even if
    /// orders still in flight now hold more than the new stock: those orders will be refused by
    /// the store and give their units back, and until then nothing is available.
    /// A leased ledger keeps its leases; the pool is presumed to hold the rest of the new
    /// stock until the next lease says how much it has.
    pub fn apply_spec(&mut self, spec: DropSpec) {
        self.skus = spec
            .skus
            .iter()
            .map(|declared| {
                let old = self.skus.get(&declared.sku);
                let held = old.map_or(0, |units| units.held);
                let units = if self.leased {
                    let leased = old.map_or(0, |units| units.stock);
                    SkuUnits {
                        stock: leased,
                        held,
                        elsewhere: declared.stock.saturating_sub(leased),
                    }
                } else {
                    SkuUnits {
                        stock: declared.stock,
                        held,
                        elsewhere: 0,
                    }
                };
                (declared.sku.clone(), units)
            })
            .collect();
        self.spec = spec;
    }

    fn hold(&mut self, customer: &str, sku: &str, quantity: u64) {
        self.hold_units(sku, quantity);
        *self
            .held_by_customer
            .entry(customer.to_owned())
            .or_default() += quantity;
    }

    /// Counts `quantity` more of a SKU's units as held (the customer's side is the caller's).
    fn hold_units(&mut self, sku: &str, quantity: u64) {
        if let Some(units) = self.skus.get_mut(sku) {
            units.held += quantity;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SkuSpec;

    const LIVE: Timestamp = Timestamp::from_unix_millis(150);

    fn ledger(stock: u64, limit: u32) -> DropLedger {
        DropLedger::new(DropSpec::new(
            "drop".into(),
            Timestamp::from_unix_millis(100),
            Timestamp::from_unix_millis(200),
            limit,
            vec![SkuSpec {
                sku: "a".into(),
                name: "A".into(),
                price_cents: 1,
                stock,
            }],
        ))
    }

    #[test]
    fn sells_until_sold_out_then_refuses() {
        let mut drop = ledger(3, 10);
        assert_eq!(drop.reserve("c1", "a", 2, LIVE), Ok(()));
        assert_eq!(
            drop.reserve("c2", "a", 2, LIVE),
            Err(Refusal::InsufficientStock { available: 1 })
        );
        assert_eq!(drop.reserve("c2", "a", 1, LIVE), Ok(()));
        assert_eq!(drop.reserve("c3", "a", 1, LIVE), Err(Refusal::SoldOut));
        assert_eq!(drop.state_at(LIVE), DropState::SoldOut);
        drop.release("c1", "a", 2);
        assert_eq!(drop.available("a"), Some(2));
        assert_eq!(drop.state_at(LIVE), DropState::Live);
    }

    #[test]
    fn holds_the_per_customer_limit_across_orders() {
        let mut drop = ledger(100, 3);
        assert_eq!(drop.reserve("c1", "a", 2, LIVE), Ok(()));
        assert_eq!(
            drop.reserve("c1", "a", 2, LIVE),
            Err(Refusal::LimitReached { limit: 3, held: 2 })
        );
        assert_eq!(drop.reserve("c1", "a", 1, LIVE), Ok(()));
        drop.release("c1", "a", 1);
        assert_eq!(drop.reserve("c1", "a", 1, LIVE), Ok(()));
    }

    #[test]
    fn refuses_outside_the_sale_and_unknown_skus() {
        let mut drop = ledger(5, 5);
        let before = Timestamp::from_unix_millis(50);
        let after = Timestamp::from_unix_millis(200);
        assert_eq!(
            drop.reserve("c", "a", 1, before),
            Err(Refusal::NotLive(DropState::Scheduled))
        );
        assert_eq!(
            drop.reserve("c", "a", 1, after),
            Err(Refusal::NotLive(DropState::Ended))
        );
        assert_eq!(
            drop.reserve("c", "zz", 1, LIVE),
            Err(Refusal::UnknownSku("zz".into()))
        );
        assert_eq!(drop.available("a"), Some(5));
    }

    #[test]
    fn a_leased_ledger_sells_only_what_it_leased_and_shows_the_pool_too() {
        let mut drop = DropLedger::leased(ledger(10, 10).spec().clone());
        assert_eq!(drop.available("a"), Some(10));
        assert_eq!(drop.reserve("c1", "a", 1, LIVE), Err(Refusal::LeaseShort));
        drop.grant("a", 3, 7);
        assert_eq!(drop.reserve("c1", "a", 2, LIVE), Ok(()));
        assert_eq!(drop.reserve("c2", "a", 2, LIVE), Err(Refusal::LeaseShort));
        assert_eq!(drop.available("a"), Some(8));
        assert_eq!(drop.surrender("a", 0), 1);
        assert_eq!(drop.supply(), vec![("a".to_owned(), 0, 2)]);
        drop.grant("a", 0, 0);
        assert_eq!(drop.reserve("c2", "a", 1, LIVE), Err(Refusal::SoldOut));
        assert_eq!(drop.state_at(LIVE), DropState::SoldOut);
        drop.return_rejected("c1", "a", 2);
        assert_eq!(drop.supply(), vec![("a".to_owned(), 0, 0)]);
        assert_eq!(drop.available("a"), Some(2));
        assert_eq!(drop.reserve("c2", "a", 1, LIVE), Err(Refusal::LeaseShort));
    }

    #[test]
    fn a_lapsed_lease_leaves_nothing_to_sell_but_what_is_held() {
        let mut drop = DropLedger::leased(ledger(10, 10).spec().clone());
        drop.grant("a", 5, 5);
        drop.reserve("c1", "a", 2, LIVE).unwrap();
        drop.lease_lapsed("a");
        assert_eq!(drop.supply(), vec![("a".to_owned(), 0, 2)]);
        drop.release("c1", "a", 2);
        assert_eq!(drop.supply(), vec![("a".to_owned(), 2, 0)]);
    }

    #[test]
    fn stock_cannot_drop_below_what_orders_hold() {
        let mut drop = ledger(5, 5);
        drop.reserve("c", "a", 4, LIVE).unwrap();
        let mut smaller = drop.spec().clone();
        smaller.skus[0].stock = 3;
        let problems = drop.check_spec(&smaller).unwrap_err();
        assert_eq!(problems[0].path, "skus[0].stock");
        let mut without_a = smaller.clone();
        without_a.skus.clear();
        assert_eq!(drop.check_spec(&without_a).unwrap_err()[0].path, "skus");
        drop.apply_spec(smaller.clone());
        assert_eq!(drop.available("a"), Some(0));
        smaller.skus[0].stock = 6;
        assert_eq!(drop.check_spec(&smaller), Ok(()));
        drop.apply_spec(smaller);
        assert_eq!(drop.available("a"), Some(2));
    }
}
