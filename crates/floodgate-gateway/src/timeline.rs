//! The gateway's once-a-second reading of itself: what the dashboard shows live, and what a
//! drop's report is later built from.
//!
//! Every second [`Timeline::record`] reads the running totals (requests by lane and class,
//! order outcomes, the waiting rooms, stock, orders by state, delivery) and turns the growth
//! since the last reading into a [`Frame`]: one JSON object the dashboard's event stream sends
//! to every viewer, so a hundred open dashboards cost one reading. The last few minutes of
//! frames are kept, so a dashboard opened mid-drop starts with history.
//!
//! Each drop also gets a [`DropSeries`] of running totals while it is on (from its pre-warm or
//! pre-queue to a minute after its end). Running totals make the series cheap to thin out: a
//! drop longer than [`MAX_DROP_SAMPLES`] seconds keeps every other sample and samples half as
//! often, so a day-long sale costs the same memory as a six-hour one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use floodgate_core::{DropId, LatencyCounts, OrderState, Priority, RoomTotals, Timestamp};
use floodgate_store::StateCount;
use serde::Serialize;
use tokio::sync::watch;

use crate::lock;
use crate::traffic::LANES;
use floodgate_front_door::Outcome;

/// Frames kept for a dashboard that opens mid-drop: five minutes.
pub(crate) const HISTORY_FRAMES: usize = 300;
/// Samples a drop's series holds before it halves its resolution (six hours at one a second).
pub(crate) const MAX_DROP_SAMPLES: usize = 6 * 3_600;
/// A drop is recorded until this long after its end, so the last deliveries and the queue's
/// emptying are in its report.
const AFTER_END_MS: i64 = 60_000;

/// Everything the dashboard shows for one second.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Frame {
    /// When it was read.
    pub(crate) at: Timestamp,
    /// Seconds since the previous frame (the rates below are per this span).
    pub(crate) span_s: f64,
    /// Answers and their latency per lane, over the span.
    pub(crate) lanes: Vec<LaneFrame>,
    /// The front door's requests per class and outcome, over the span.
    pub(crate) classes: Vec<ClassFrame>,
    /// Order requests by outcome, over the span.
    pub(crate) orders: BTreeMap<&'static str, u64>,
    /// The origin pools' adaptive limits and load, now.
    pub(crate) pools: Vec<PoolFrame>,
    /// Each drop, now.
    pub(crate) drops: Vec<DropFrame>,
    /// The dispatcher, when orders are delivered.
    pub(crate) delivery: Option<DeliveryFrame>,
}

/// One lane's answers over a frame's span.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LaneFrame {
    pub(crate) lane: &'static str,
    pub(crate) requests: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p90_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

/// One class's front-door requests over a frame's span.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClassFrame {
    pub(crate) class: &'static str,
    pub(crate) outcomes: BTreeMap<&'static str, u64>,
}

/// An origin pool now.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PoolFrame {
    pub(crate) pool: String,
    pub(crate) limit: u32,
    pub(crate) in_flight: u32,
}

/// A drop now.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DropFrame {
    pub(crate) drop: DropId,
    pub(crate) name: String,
    pub(crate) state: &'static str,
    pub(crate) stock: u64,
    pub(crate) available: u64,
    pub(crate) orders_by_state: BTreeMap<&'static str, u64>,
    pub(crate) room: Option<RoomFrame>,
}

/// A drop's waiting room now, and its arrivals (turned-away joins included) and admissions
/// over the span.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RoomFrame {
    pub(crate) waiting: u64,
    pub(crate) in_force: u32,
    pub(crate) eta_s: Option<u64>,
    pub(crate) arrivals: u64,
    pub(crate) admitted: u64,
}

/// The dispatcher now, and its sends over the span.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeliveryFrame {
    /// Requests started towards the downstream over the span.
    pub(crate) sent: u64,
    /// The current adaptive pace, and the configured limit.
    pub(crate) pace_per_s: f64,
    pub(crate) limit_per_s: u32,
    pub(crate) in_flight: usize,
    pub(crate) confirmed_total: u64,
    pub(crate) rejected_total: u64,
    pub(crate) failed_total: u64,
    pub(crate) breaker_open: bool,
    pub(crate) backlog_s: f64,
}

/// The running totals of one reading.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub(crate) at: Timestamp,
    /// Per lane, in `LANES` order.
    pub(crate) lanes: Vec<LatencyCounts>,
    /// Per class (in `Priority::ALL` order) and outcome (in `Outcome::ALL` order).
    pub(crate) classes: [[u64; Outcome::ALL.len()]; Priority::ALL.len()],
    /// Order outcomes in `metrics::ORDER_OUTCOMES` order.
    pub(crate) orders: Vec<u64>,
    /// Delivery attempts started.
    pub(crate) sent: u64,
    /// Per drop with a room.
    pub(crate) rooms: HashMap<DropId, RoomTotals>,
}

/// One second of a drop's life, as running totals (rates are differences of two samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DropSample {
    pub(crate) at: Timestamp,
    /// The waiting room's totals (all zero without a room).
    pub(crate) room: RoomTotals,
    /// Shoppers waiting now.
    pub(crate) waiting: u64,
    /// Units still on sale now.
    pub(crate) available: u64,
    /// The node's front-door requests shed, rate limited and failed by the origin so far,
    /// and its orders refused for want of capacity (`503`).
    pub(crate) shed: u64,
    pub(crate) rate_limited: u64,
    pub(crate) origin_errors: u64,
    pub(crate) orders_overloaded: u64,
}

/// A drop's samples, thinned as they grow.
#[derive(Debug, Clone, Default)]
pub(crate) struct DropSeries {
    /// Seconds between samples: 1, doubling whenever the series fills up.
    pub(crate) resolution_s: i64,
    pub(crate) samples: Vec<DropSample>,
}

impl DropSeries {
    fn push(&mut self, sample: DropSample) {
        let resolution_s = self.resolution_s.max(1);
        if let Some(last) = self.samples.last()
            && sample.at.unix_millis() - last.at.unix_millis() < resolution_s * 1_000 - 500
        {
            return;
        }
        if self.samples.len() >= MAX_DROP_SAMPLES {
            let mut index = 0;
            self.samples.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            self.resolution_s = resolution_s * 2;
        } else {
            self.resolution_s = resolution_s;
        }
        self.samples.push(sample);
    }
}

/// Whether a drop is recorded at `now`: from when floodgate starts getting ready for it (the
/// earlier of its pre-warm and its pre-queue) until a minute after its end.
pub(crate) fn drop_is_on(spec: &floodgate_core::DropSpec, now: Timestamp) -> bool {
    let opens = spec.prewarm_starts_at().min(spec.prequeue_opens_at());
    now >= opens && now < spec.ends_at.add_millis(AFTER_END_MS)
}

/// The frames and the drops' series.
pub(crate) struct Timeline {
    /// Every dashboard's event stream watches this; the newest frame replaces the last.
    latest: watch::Sender<Option<Arc<Frame>>>,
    history: Mutex<VecDeque<Arc<Frame>>>,
    drops: Mutex<HashMap<DropId, DropSeries>>,
    previous: Mutex<Option<Totals>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            latest: watch::channel(None).0,
            history: Mutex::new(VecDeque::with_capacity(HISTORY_FRAMES)),
            drops: Mutex::new(HashMap::new()),
            previous: Mutex::new(None),
        }
    }
}

impl Timeline {
    /// New frames as they are made.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<Frame>>> {
        self.latest.subscribe()
    }

    /// The frames kept, oldest first.
    pub(crate) fn history(&self) -> Vec<Arc<Frame>> {
        lock(&self.history).iter().cloned().collect()
    }

    /// A copy of `drop_id`'s series.
    pub(crate) fn drop_series(&self, drop_id: &DropId) -> DropSeries {
        lock(&self.drops).get(drop_id).cloned().unwrap_or_default()
    }

    /// Forgets a drop's series (its definition was replaced by one with another schedule).
    pub(crate) fn forget(&self, drop_id: &DropId) {
        lock(&self.drops).remove(drop_id);
    }

    /// Appends a sample to `drop_id`'s series.
    pub(crate) fn sample_drop(&self, drop_id: &DropId, sample: DropSample) {
        lock(&self.drops)
            .entry(drop_id.clone())
            .or_default()
            .push(sample);
    }

    /// Keeps `totals` as the base of the next frame; returns the previous reading (none on the
    /// first).
    pub(crate) fn replace_totals(&self, totals: Totals) -> Option<Totals> {
        lock(&self.previous).replace(totals)
    }

    /// Publishes a frame to the dashboards and the history.
    pub(crate) fn publish(&self, frame: Frame) {
        let frame = Arc::new(frame);
        {
            let mut history = lock(&self.history);
            if history.len() == HISTORY_FRAMES {
                history.pop_front();
            }
            history.push_back(Arc::clone(&frame));
        }
        self.latest.send_replace(Some(frame));
    }
}

/// The orders of each state, by name, from the store's counts.
pub(crate) fn orders_by_state(
    counts: &BTreeMap<OrderState, StateCount>,
) -> BTreeMap<&'static str, u64> {
    OrderState::ALL
        .iter()
        .map(|state| (state.as_str(), counts.get(state).map_or(0, |c| c.orders)))
        .collect()
}

/// One lane's figures from the counts of a span.
pub(crate) fn lane_frame(lane: usize, counts: &LatencyCounts) -> LaneFrame {
    let millis = |q: f64| counts.quantile_micros(q).map(|micros| micros as f64 / 1e3);
    LaneFrame {
        lane: LANES[lane],
        requests: counts.count(),
        p50_ms: millis(0.5),
        p90_ms: millis(0.9),
        p99_ms: millis(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(second: i64) -> DropSample {
        DropSample {
            at: Timestamp::from_unix_millis(second * 1_000),
            room: RoomTotals::default(),
            waiting: 0,
            available: 0,
            shed: 0,
            rate_limited: 0,
            origin_errors: u64::try_from(second).unwrap(),
            orders_overloaded: 0,
        }
    }

    #[test]
    fn a_full_series_halves_its_resolution() {
        let mut series = DropSeries::default();
        let seconds = i64::try_from(MAX_DROP_SAMPLES).unwrap() + 10;
        for second in 0..seconds {
            series.push(sample(second));
        }
        assert_eq!(series.resolution_s, 2);
        assert!(series.samples.len() <= MAX_DROP_SAMPLES);
        let gaps: Vec<i64> = series
            .samples
            .windows(2)
            .map(|pair| (pair[1].at.unix_millis() - pair[0].at.unix_millis()) / 1_000)
            .collect();
        assert!(gaps.iter().all(|gap| *gap == 2), "evenly thinned");
        assert_eq!(
            series.samples.last().unwrap().origin_errors,
            u64::try_from(seconds - 2).unwrap(),
            "the newest totals are kept"
        );
    }
}
