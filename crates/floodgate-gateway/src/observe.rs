//! The once-a-second reading of the whole gateway: orders by state from the store (one query
//! per drop), the delivery backlog the waiting rooms slow down for, the dashboard's frame and
//! the drops' timelines. One reading serves all three, so the store is asked once a second
//! whatever the number of dashboards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use floodgate_core::{DropId, OrderState, Priority, Timestamp};
use floodgate_store::{StateCount, StoreError};

use crate::Gateway;
use crate::metrics::ORDER_OUTCOMES;
use crate::timeline::{
    ClassFrame, DeliveryFrame, DropFrame, DropSample, Frame, PoolFrame, RoomFrame, Totals,
    drop_is_on, lane_frame, orders_by_state,
};
use floodgate_front_door::Outcome;

/// What one reading found that its caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Time to deliver the orders waiting for the downstream at its configured rate (zero
    /// without a downstream).
    pub delivery_backlog: Duration,
}

impl Gateway {
    /// Takes the reading and starts the pre-warm passes that are due; `run` calls it every
    /// second.
    pub async fn observe(self: &Arc<Self>) -> Result<Observed, StoreError> {
        let now = self.clock.now();
        self.start_due_prewarms(now);
        let mut counts = HashMap::new();
        for drop_id in self.intake.drop_ids() {
            let drop_counts = self.intake.store().order_counts(drop_id.clone()).await?;
            counts.insert(drop_id, drop_counts);
        }
        let delivery_backlog = self.observe_backlog(&counts);
        let totals = self.totals(now);
        let previous = self.timeline.replace_totals(totals.clone());
        let base = previous.unwrap_or_else(|| Totals {
            at: now.add_millis(-1_000),
            lanes: vec![Default::default(); totals.lanes.len()],
            orders: vec![0; totals.orders.len()],
            ..Totals::default()
        });
        let frame = self.frame(&totals, &base, &counts, delivery_backlog);
        self.sample_drops(&totals, now);
        self.timeline.publish(frame);
        Ok(Observed { delivery_backlog })
    }

    /// Tells the waiting rooms whether the undelivered orders (accepted or being submitted,
    /// across drops) would take longer than allowed at the downstream's rate.
    fn observe_backlog(
        &self,
        counts: &HashMap<DropId, BTreeMap<OrderState, StateCount>>,
    ) -> Duration {
        let Some(pace) = self.delivery else {
            return Duration::ZERO;
        };
        let waiting: u64 = counts
            .values()
            .flat_map(|by_state| {
                [OrderState::Accepted, OrderState::Submitting]
                    .iter()
                    .filter_map(|state| by_state.get(state))
                    .map(|count| count.orders)
            })
            .sum();
        let backlog = Duration::from_secs_f64(waiting as f64 / pace.rate_per_second.max(1) as f64);
        self.rooms.observe_backlog(backlog > pace.max_backlog);
        let millis = u64::try_from(backlog.as_millis()).unwrap_or(u64::MAX);
        self.delivery_backlog_ms.store(millis, Ordering::Relaxed);
        backlog
    }

    fn totals(&self, now: Timestamp) -> Totals {
        let mut classes = [[0; Outcome::ALL.len()]; Priority::ALL.len()];
        for route in self.front_door.route_figures() {
            let class = Priority::ALL
                .iter()
                .position(|class| class.as_str() == route.class)
                .unwrap_or(0);
            for (outcome, count) in route.counts {
                classes[class][outcome as usize] += count;
            }
        }
        let rooms = self
            .intake
            .drop_ids()
            .into_iter()
            .filter_map(|drop_id| {
                let totals = self.rooms.occupancy(&drop_id, now)?.totals;
                Some((drop_id, totals))
            })
            .collect();
        Totals {
            at: now,
            lanes: self.traffic.snapshot(),
            classes,
            orders: self.counters.order_totals(),
            sent: self.delivery_reader.get().map_or(0, |read| read().attempts),
            rooms,
        }
    }

    fn frame(
        &self,
        totals: &Totals,
        base: &Totals,
        counts: &HashMap<DropId, BTreeMap<OrderState, StateCount>>,
        delivery_backlog: Duration,
    ) -> Frame {
        let now = totals.at;
        let lanes = totals
            .lanes
            .iter()
            .zip(&base.lanes)
            .enumerate()
            .map(|(lane, (now, then))| lane_frame(lane, &now.since(then)))
            .collect();
        let classes = Priority::ALL
            .iter()
            .enumerate()
            .map(|(class, priority)| ClassFrame {
                class: priority.as_str(),
                outcomes: Outcome::ALL
                    .iter()
                    .map(|outcome| {
                        let index = *outcome as usize;
                        let grown = totals.classes[class][index] - base.classes[class][index];
                        (outcome.label(), grown)
                    })
                    .collect(),
            })
            .collect();
        let orders = ORDER_OUTCOMES
            .iter()
            .zip(totals.orders.iter().zip(&base.orders))
            .map(|(outcome, (now, then))| (*outcome, now - then))
            .collect();
        let pools = self
            .front_door
            .pool_figures()
            .map(|pool| PoolFrame {
                pool: pool.pool.to_owned(),
                limit: pool.limit,
                in_flight: pool.in_flight,
            })
            .collect();
        let drops = counts
            .iter()
            .filter_map(|(drop_id, by_state)| {
                let (on, name, state, stock, available) =
                    self.intake.with_drop(drop_id, |ledger| {
                        let spec = ledger.spec();
                        let stock = spec.skus.iter().map(|sku| sku.stock).sum::<u64>();
                        (
                            drop_is_on(spec, now),
                            spec.name.clone(),
                            ledger.state_at(now).as_str(),
                            stock,
                            ledger.available_total(),
                        )
                    })?;
                // The dashboard shows the drops that are on, not every drop ever defined.
                if !on {
                    return None;
                }
                let room = self.rooms.occupancy(drop_id, now).map(|room| {
                    let before = base.rooms.get(drop_id).copied().unwrap_or_default();
                    RoomFrame {
                        waiting: room.waiting,
                        in_force: room.in_force,
                        eta_s: room.eta_of_last,
                        arrivals: room.totals.arrivals + room.totals.turned_away
                            - before.arrivals
                            - before.turned_away,
                        admitted: room.totals.admitted - before.admitted,
                    }
                });
                Some(DropFrame {
                    drop: drop_id.clone(),
                    name,
                    state,
                    stock,
                    available,
                    orders_by_state: orders_by_state(by_state),
                    room,
                })
            })
            .collect();
        let delivery = self.delivery_reader.get().map(|read| {
            let stats = read();
            DeliveryFrame {
                sent: totals.sent.saturating_sub(base.sent),
                pace_per_s: stats.rate_per_second,
                limit_per_s: stats.limit_per_second,
                in_flight: stats.in_flight,
                confirmed_total: stats.confirmed,
                rejected_total: stats.rejected,
                failed_total: stats.failed,
                breaker_open: stats.breaker != floodgate_core::delivery::BreakerState::Closed,
                backlog_s: delivery_backlog.as_secs_f64(),
            }
        });
        let mut frame = Frame {
            at: now,
            span_s: ((now.unix_millis() - base.at.unix_millis()) as f64 / 1e3).max(0.001),
            lanes,
            classes,
            orders,
            pools,
            drops,
            delivery,
        };
        frame.drops.sort_by(|a, b| a.drop.cmp(&b.drop));
        frame
    }

    /// Adds a sample to the series of every drop that is on.
    fn sample_drops(&self, totals: &Totals, now: Timestamp) {
        let class_total = |outcome: Outcome| -> u64 {
            totals
                .classes
                .iter()
                .map(|by_outcome| by_outcome[outcome as usize])
                .sum()
        };
        let overloaded = ORDER_OUTCOMES
            .iter()
            .position(|outcome| *outcome == "overloaded")
            .map_or(0, |index| totals.orders[index]);
        for drop_id in self.intake.drop_ids() {
            let Some((on, available)) = self.intake.with_drop(&drop_id, |ledger| {
                (drop_is_on(ledger.spec(), now), ledger.available_total())
            }) else {
                continue;
            };
            if !on {
                continue;
            }
            let room = self.rooms.occupancy(&drop_id, now);
            let sample = DropSample {
                at: now,
                room: room.as_ref().map(|room| room.totals).unwrap_or_default(),
                waiting: room.as_ref().map_or(0, |room| room.waiting),
                available,
                shed: class_total(Outcome::Shed),
                rate_limited: class_total(Outcome::RateLimited),
                origin_errors: class_total(Outcome::OriginError),
                orders_overloaded: overloaded,
            };
            self.timeline.sample_drop(&drop_id, sample);
        }
    }
}
