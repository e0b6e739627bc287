//! `GET /metrics`: the gateway in Prometheus text format (version 0.0.4).
//!
//! Gauges are read from the live state at scrape time (stock from the ledgers, orders by state
//! from the store, waiting rooms from their counters), so nothing is double-booked; only what
//! happened in between — order outcomes — is counted as it happens.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use floodgate_core::OrderState;
use floodgate_core::delivery::BreakerState;

use crate::Gateway;
use crate::error::ApiError;
use crate::intake::Placed;
use crate::waiting_room::Occupancy;
use floodgate_http::server::{ConnectionFigures, TimedOut};

/// Order outcomes as `floodgate_orders_total` labels them.
pub(crate) const ORDER_OUTCOMES: [&str; 5] =
    ["accepted", "replayed", "refused", "overloaded", "invalid"];

/// How a configuration reload (SIGHUP) ended, as `floodgate_config_reloads_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// What can change in place changed.
    Applied,
    /// The file has problems: nothing changed.
    Invalid,
    /// It changes what only a restart can: nothing changed.
    Refused,
}

impl ReloadOutcome {
    const ALL: [Self; 3] = [Self::Applied, Self::Invalid, Self::Refused];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Invalid => "invalid",
            Self::Refused => "refused",
        }
    }
}

/// One figure of a room, when it has one.
type RoomGauge = fn(&Occupancy) -> Option<f64>;

/// Counters of what happened between scrapes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    orders: [AtomicU64; ORDER_OUTCOMES.len()],
    reloads: [AtomicU64; ReloadOutcome::ALL.len()],
}

impl Counters {
    /// Counts an order request's outcome.
    pub(crate) fn order(&self, placed: &Result<Placed, ApiError>) {
        let outcome = match placed {
            Ok(Placed::Accepted(_)) => 0,
            Ok(Placed::Replayed(_)) => 1,
            Err(ApiError::Refused(_)) => 2,
            Err(ApiError::Overloaded) => 3,
            Err(_) => 4,
        };
        self.orders[outcome].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a configuration reload's outcome.
    pub(crate) fn reload(&self, outcome: ReloadOutcome) {
        self.reloads[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Order requests so far, in [`ORDER_OUTCOMES`] order.
    pub(crate) fn order_totals(&self) -> Vec<u64> {
        self.orders
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }
}

/// Prometheus text: each family's `# HELP` and `# TYPE`, then its samples.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(text));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub(crate) async fn render(gateway: &Gateway) -> Result<String, ApiError> {
    let mut page = Exposition::default();
    page.family(
        "floodgate_ready",
        "gauge",
        "1 while the node takes traffic, 0 while it drains.",
    );
    page.sample(
        "floodgate_ready",
        &[],
        if gateway.draining.load(Ordering::Relaxed) {
            0.0
        } else {
            1.0
        },
    );

    front_door(&mut page, &gateway.front_door);

    page.family(
        "floodgate_orders_total",
        "counter",
        "Order requests that reached the intake, by outcome, since start.",
    );
    for (outcome, count) in ORDER_OUTCOMES.iter().zip(gateway.counters.order_totals()) {
        page.sample(
            "floodgate_orders_total",
            &[("outcome", outcome)],
            count as f64,
        );
    }

    page.family(
        "floodgate_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP) since start, by outcome.",
    );
    for (outcome, count) in ReloadOutcome::ALL.iter().zip(&gateway.counters.reloads) {
        page.sample(
            "floodgate_config_reloads_total",
            &[("outcome", outcome.as_str())],
            count.load(Ordering::Relaxed) as f64,
        );
    }

    if let Some(commits) = gateway.intake.store().commit_figures() {
        store_figures(&mut page, &commits);
    }

    let drops = gateway.intake.drop_ids();
    page.family(
        "floodgate_stock_units",
        "gauge",
        "Units per SKU: the stock, those held by orders (reserved until the order system confirms), those still on sale.",
    );
    for drop_id in &drops {
        let by_state = gateway.intake.store().sku_units(drop_id.clone()).await?;
        let units_in = |sku: &str, states: &[OrderState]| -> u64 {
            states
                .iter()
                .filter_map(|state| by_state.get(&(sku.to_owned(), *state)))
                .sum()
        };
        let skus = gateway.intake.with_drop(drop_id, |ledger| {
            ledger
                .spec()
                .skus
                .iter()
                .map(|sku| {
                    let held = ledger.held(&sku.sku).unwrap_or(0);
                    (sku.sku.clone(), sku.stock, held)
                })
                .collect::<Vec<_>>()
        });
        for (sku, stock, held) in skus.into_iter().flatten() {
            let reserved = units_in(&sku, &[OrderState::Accepted, OrderState::Submitting]);
            let confirmed = units_in(&sku, &[OrderState::Confirmed]);
            for (state, units) in [
                ("total", stock),
                ("held", held),
                ("available", stock.saturating_sub(held)),
                ("reserved", reserved),
                ("confirmed", confirmed),
            ] {
                let labels = [
                    ("drop", drop_id.as_str()),
                    ("sku", sku.as_str()),
                    ("state", state),
                ];
                page.sample("floodgate_stock_units", &labels, units as f64);
            }
        }
    }

    page.family(
        "floodgate_expected_load",
        "gauge",
        "Shoppers a drop expects, from its pre-warm to its end (0 otherwise): for autoscalers.",
    );
    let now = gateway.clock.now();
    for drop_id in &drops {
        let expected = gateway.intake.with_drop(drop_id, |ledger| {
            let spec = ledger.spec();
            if spec.expects_load(now) {
                spec.expected_shoppers
            } else {
                0
            }
        });
        if let Some(expected) = expected {
            let labels = [("drop", drop_id.as_str())];
            page.sample("floodgate_expected_load", &labels, expected as f64);
        }
    }

    page.family(
        "floodgate_drop_orders",
        "gauge",
        "Orders per drop by state, from the store.",
    );
    for drop_id in &drops {
        let counts = gateway.intake.store().order_counts(drop_id.clone()).await?;
        for state in OrderState::ALL {
            let orders = counts.get(&state).map_or(0, |count| count.orders);
            let labels = [("drop", drop_id.as_str()), ("state", state.as_str())];
            page.sample("floodgate_drop_orders", &labels, orders as f64);
        }
    }

    let rooms: Vec<_> = drops
        .iter()
        .filter_map(|drop_id| Some((drop_id.as_str(), gateway.rooms.occupancy(drop_id, now)?)))
        .collect();
    let room_gauges: [(&str, &str, RoomGauge); 4] = [
        (
            "floodgate_waiting_room_waiting",
            "Shoppers waiting in a drop's room.",
            |room| Some(room.waiting as f64),
        ),
        (
            "floodgate_waiting_room_passes_in_force",
            "Passes issued and neither spent nor expired, per drop.",
            |room| Some(f64::from(room.in_force)),
        ),
        (
            "floodgate_waiting_room_admitted_last_minute",
            "Shoppers admitted over the last minute, per drop.",
            |room| Some(room.admitted_last_minute as f64),
        ),
        (
            "floodgate_waiting_room_eta_seconds",
            "The ETA the last waiter is told, per drop (absent until the rate is known).",
            |room| room.eta_of_last.map(|eta| eta as f64),
        ),
    ];
    for (name, help, value) in room_gauges {
        page.family(name, "gauge", help);
        for (drop_id, room) in &rooms {
            if let Some(value) = value(room) {
                page.sample(name, &[("drop", drop_id)], value);
            }
        }
    }

    connection_figures(
        &mut page,
        &[
            ("public", gateway.public_connections.figures()),
            ("admin", gateway.admin_connections.figures()),
        ],
    );
    if let Some(read) = gateway.delivery_reader.get() {
        delivery_figures(&mut page, &read());
    }
    if gateway.delivery.is_some() {
        // As the backlog watcher last counted it (every second), not counted again per scrape.
        let backlog_ms = gateway.delivery_backlog_ms.load(Ordering::Relaxed);
        page.family(
            "floodgate_delivery_backlog_seconds",
            "gauge",
            "Time to deliver the orders waiting for the downstream at its configured rate.",
        );
        page.sample(
            "floodgate_delivery_backlog_seconds",
            &[],
            backlog_ms as f64 / 1e3,
        );
    }
    Ok(page.out)
}

fn connection_figures(page: &mut Exposition, listeners: &[(&str, ConnectionFigures)]) {
    page.family(
        "floodgate_connections_open",
        "gauge",
        "Client connections open, by listener.",
    );
    for (listener, figures) in listeners {
        let labels = [("listener", *listener)];
        page.sample("floodgate_connections_open", &labels, figures.open as f64);
    }
    page.family(
        "floodgate_connections_beyond_cap_total",
        "counter",
        "Connections beyond a connection cap (max_connections, max_connections_per_ip): \
         answered for a health check only, then closed.",
    );
    for (listener, figures) in listeners {
        for (cap, count) in [
            ("max_connections", figures.beyond_listener),
            ("max_connections_per_ip", figures.beyond_client_address),
        ] {
            let labels = [("listener", *listener), ("cap", cap)];
            page.sample(
                "floodgate_connections_beyond_cap_total",
                &labels,
                count as f64,
            );
        }
    }
    page.family(
        "floodgate_connections_timed_out_total",
        "counter",
        "Connections closed by a client-side limit: head (header_read_timeout_ms), idle \
         (idle_timeout_ms), body (body_min_rate_bytes_per_s), send (send_timeout_ms).",
    );
    for (listener, figures) in listeners {
        for (limit, count) in figures.timed_out {
            let limit = match limit {
                TimedOut::Head => "head",
                TimedOut::Idle => "idle",
                TimedOut::Body => "body",
                TimedOut::Send => "send",
            };
            let labels = [("listener", *listener), ("limit", limit)];
            page.sample(
                "floodgate_connections_timed_out_total",
                &labels,
                count as f64,
            );
        }
    }
}

fn store_figures(page: &mut Exposition, commits: &floodgate_store::CommitFigures) {
    let counters = [
        (
            "floodgate_store_commits_total",
            "Store transactions committed (each a batch of writes).",
            commits.commits as f64,
        ),
        (
            "floodgate_store_writes_total",
            "Writes committed; over the commits, the mean batch size.",
            commits.writes as f64,
        ),
        (
            "floodgate_store_commit_seconds_total",
            "Time spent committing; over the commits, the mean commit time.",
            commits.seconds,
        ),
    ];
    for (name, help, value) in counters {
        page.family(name, "counter", help);
        page.sample(name, &[], value);
    }
    page.family(
        "floodgate_store_largest_batch",
        "gauge",
        "The largest batch committed at once.",
    );
    page.sample(
        "floodgate_store_largest_batch",
        &[],
        commits.largest_batch as f64,
    );
}

fn front_door(page: &mut Exposition, front_door: &floodgate_front_door::FrontDoor) {
    page.family(
        "floodgate_requests_total",
        "counter",
        "Requests to the shop's own site by route, priority class and outcome.",
    );
    for figures in front_door.route_figures() {
        for (outcome, count) in &figures.counts {
            let labels = [
                ("route", figures.route),
                ("class", figures.class),
                ("outcome", outcome.label()),
            ];
            page.sample("floodgate_requests_total", &labels, *count as f64);
        }
    }
    page.family(
        "floodgate_requests_not_found_total",
        "counter",
        "Requests no route took, with no origin to send them to.",
    );
    page.sample(
        "floodgate_requests_not_found_total",
        &[],
        front_door.not_found() as f64,
    );
    page.family(
        "floodgate_pool_limit",
        "gauge",
        "A pool's adaptive concurrency limit.",
    );
    let pools: Vec<_> = front_door.pool_figures().collect();
    for figures in &pools {
        page.sample(
            "floodgate_pool_limit",
            &[("pool", figures.pool)],
            f64::from(figures.limit),
        );
    }
    page.family(
        "floodgate_pool_in_flight",
        "gauge",
        "Requests a pool has in flight.",
    );
    for figures in &pools {
        page.sample(
            "floodgate_pool_in_flight",
            &[("pool", figures.pool)],
            f64::from(figures.in_flight),
        );
    }
}

fn delivery_figures(page: &mut Exposition, figures: &floodgate_core::delivery::DispatchStats) {
    page.family(
        "floodgate_delivery_leader",
        "gauge",
        "1 while this node delivers (the only node, or the leader of those sharing the store).",
    );
    page.sample(
        "floodgate_delivery_leader",
        &[],
        f64::from(u8::from(figures.leading)),
    );
    page.family(
        "floodgate_delivery_attempts_total",
        "counter",
        "Delivery attempts started.",
    );
    page.sample(
        "floodgate_delivery_attempts_total",
        &[],
        figures.attempts as f64,
    );
    page.family(
        "floodgate_delivery_retries_total",
        "counter",
        "Attempts that will be retried.",
    );
    page.sample(
        "floodgate_delivery_retries_total",
        &[],
        figures.retried as f64,
    );
    page.family(
        "floodgate_delivery_orders_total",
        "counter",
        "Orders settled by the downstream's answer, by outcome.",
    );
    for (outcome, count) in [
        ("confirmed", figures.confirmed),
        ("rejected", figures.rejected),
        ("failed", figures.failed),
    ] {
        page.sample(
            "floodgate_delivery_orders_total",
            &[("outcome", outcome)],
            count as f64,
        );
    }
    page.family(
        "floodgate_delivery_in_flight",
        "gauge",
        "Attempts awaiting an answer.",
    );
    page.sample(
        "floodgate_delivery_in_flight",
        &[],
        figures.in_flight as f64,
    );
    page.family(
        "floodgate_delivery_rate_per_second",
        "gauge",
        "The dispatcher's current pace (adaptive, never above the limit).",
    );
    page.sample(
        "floodgate_delivery_rate_per_second",
        &[],
        figures.rate_per_second,
    );
    page.family(
        "floodgate_delivery_rate_limit_per_second",
        "gauge",
        "downstream.rate_per_second.",
    );
    page.sample(
        "floodgate_delivery_rate_limit_per_second",
        &[],
        f64::from(figures.limit_per_second),
    );
    page.family(
        "floodgate_delivery_breaker_open",
        "gauge",
        "1 while the circuit breaker holds deliveries back (open or probing).",
    );
    page.sample(
        "floodgate_delivery_breaker_open",
        &[],
        if figures.breaker == BreakerState::Closed {
            0.0
        } else {
            1.0
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_the_text_format() {
        let mut page = Exposition::default();
        page.family("x_total", "counter", "Things.");
        page.sample("x_total", &[("a", "q\"u\\o\nte")], 3.0);
        page.sample("x_total", &[], 0.5);
        assert_eq!(
            page.out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"q\\\"u\\\\o\\nte\"} 3\nx_total 0.5\n"
        );
    }
}
