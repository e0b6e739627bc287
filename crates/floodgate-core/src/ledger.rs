//! The stock ledger of one drop: units available per SKU, units held per customer, and the
//! drop's idempotency keys, kept together so one lock decides an order.
//!
//! The ledger answers `sold_out` and `limit_reached` from memory. A winning order takes its units
//! here first and gives them back if its durable write fails, so memory never promises more than
//! the store holds. The store repeats the stock check in the same transaction (the last guard).

use std::collections::HashMap;

use crate::drop::SpecProblem;
use crate::sharded_map::ShardedMap;
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
    stock: u64,
    held: u64,
}

impl SkuUnits {
    fn available(&self) -> u64 {
        // Saturating: after an operator lowers the stock, in-flight orders may briefly hold more.
        self.stock.saturating_sub(self.held)
    }
}

/// The live counters of one drop.
#[derive(Debug)]
pub struct DropLedger {
    spec: DropSpec,
    skus: HashMap<String, SkuUnits>,
    held_by_customer: ShardedMap<String, u64>,
    /// The drop's idempotency keys, decided under the same lock as the stock.
    pub keys: KeyTable,
}

impl DropLedger {
    /// A ledger with every unit available.
    pub fn new(spec: DropSpec) -> Self {
        let skus = spec
            .skus
            .iter()
            .map(|sku| {
                (
                    sku.sku.clone(),
                    SkuUnits {
                        stock: sku.stock,
                        held: 0,
                    },
                )
            })
            .collect();
        Self {
            spec,
            skus,
            held_by_customer: ShardedMap::new(),
            keys: KeyTable::default(),
        }
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

    /// Units of `sku` still on sale (`None` for an unknown SKU).
    pub fn available(&self, sku: &str) -> Option<u64> {
        self.skus.get(sku).map(SkuUnits::available)
    }

    /// Units of `sku` held by orders (`None` for an unknown SKU).
    pub fn held(&self, sku: &str) -> Option<u64> {
        self.skus.get(sku).map(|units| units.held)
    }

    /// Units on sale across all SKUs.
    pub fn available_total(&self) -> u64 {
        self.skus.values().map(SkuUnits::available).sum()
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
        if available == 0 {
            return Err(Refusal::SoldOut);
        }
        if available < wanted {
            return Err(Refusal::InsufficientStock { available });
        }
        let held = self.held_by_customer.get(customer).copied().unwrap_or(0);
        let limit = self.spec.limit_per_customer;
        if held + wanted > u64::from(limit) {
            return Err(Refusal::LimitReached { limit, held });
        }
        self.hold(customer, sku, wanted);
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

    /// Counts units that a stored order holds, while rebuilding the ledger at start-up.
    pub fn restore_holding(&mut self, customer: &str, sku: &str, quantity: u64) {
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
    pub fn apply_spec(&mut self, spec: DropSpec) {
        self.skus = spec
            .skus
            .iter()
            .map(|declared| {
                let held = self.skus.get(&declared.sku).map_or(0, |units| units.held);
                (
                    declared.sku.clone(),
                    SkuUnits {
                        stock: declared.stock,
                        held,
                    },
                )
            })
            .collect();
        self.spec = spec;
    }

    fn hold(&mut self, customer: &str, sku: &str, quantity: u64) {
        if let Some(units) = self.skus.get_mut(sku) {
            units.held += quantity;
        }
        *self
            .held_by_customer
            .entry(customer.to_owned())
            .or_default() += quantity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SkuSpec, WaitingRoomSpec};

    const LIVE: Timestamp = Timestamp::from_unix_millis(150);

    fn ledger(stock: u64, limit: u32) -> DropLedger {
        DropLedger::new(DropSpec {
            name: "drop".into(),
            starts_at: Timestamp::from_unix_millis(100),
            ends_at: Timestamp::from_unix_millis(200),
            limit_per_customer: limit,
            skus: vec![SkuSpec {
                sku: "a".into(),
                name: "A".into(),
                price_cents: 1,
                stock,
            }],
            waiting_room: WaitingRoomSpec::default(),
            paused: false,
            prewarm_s: 0,
            expected_shoppers: 0,
            prewarm_paths: Vec::new(),
        })
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
