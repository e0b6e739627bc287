//! How fast the public listener answers, by lane: floodgate's own endpoints (health, orders,
//! the waiting room, the rest of the API) and the front door's priority classes. Each request
//! is one record in its lane's histogram, in the shard of the thread that served it; the
//! timeline reads the lanes once a second for the dashboard.
//!
//! The time measured is from the request's arrival at the router to its answer's head: a
//! proxied body that streams for longer is the origin's business, not floodgate's wait.

use axum::response::Response;
use floodgate_core::{LatencyCounts, LatencyHistogram, Priority};
use floodgate_front_door::ServedAs;

/// The lanes, in the order the dashboard lists them.
pub(crate) const LANES: [&str; 9] = [
    "health",
    "orders",
    "queue",
    "api",
    "critical",
    "checkout",
    "cart",
    "browse",
    "background",
];
/// Where the front door's classes start in [`LANES`] (in `Priority::ALL` order).
const FIRST_CLASS_LANE: usize = 4;

/// A latency histogram per lane.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    lanes: [LatencyHistogram; LANES.len()],
}

impl Traffic {
    /// Every lane's counts so far, in [`LANES`] order.
    pub(crate) fn snapshot(&self) -> Vec<LatencyCounts> {
        self.lanes.iter().map(LatencyHistogram::snapshot).collect()
    }
}

/// The lane of one of floodgate's own endpoints, by path; `None` for the front door's.
fn own_lane(path: &str) -> Option<usize> {
    if path == "/healthz" || path == "/readyz" {
        Some(0)
    } else if path.starts_with("/api/drops/") && path.ends_with("/orders") {
        Some(1)
    } else if path.starts_with("/api/queue/") || path.ends_with("/queue") {
        Some(2)
    } else if path.starts_with("/api/") {
        Some(3)
    } else {
        None
    }
}

/// One request's timing, from its arrival to its answer's head.
pub(crate) struct Timing {
    own: Option<usize>,
    started: tokio::time::Instant,
}

impl Timing {
    /// Starts timing a request for `path`.
    pub(crate) fn start(path: &str) -> Self {
        Self {
            own: own_lane(path),
            started: tokio::time::Instant::now(),
        }
    }
}

impl Traffic {
    /// Records a request's time in its lane: its own endpoint's, or the class that served it.
    pub(crate) fn record(&self, timing: Timing, response: &Response) {
        let lane = timing.own.or_else(|| {
            let class = response.extensions().get::<ServedAs>()?.0;
            Priority::ALL
                .iter()
                .position(|&candidate| candidate == class)
                .map(|index| FIRST_CLASS_LANE + index)
        });
        if let Some(lane) = lane {
            let micros = u64::try_from(timing.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.lanes[lane].record(micros);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_endpoints_have_their_lanes() {
        let cases = [
            ("/healthz", Some("health")),
            ("/readyz", Some("health")),
            ("/api/drops/d/orders", Some("orders")),
            ("/api/drops/d/queue", Some("queue")),
            ("/api/queue/t/events", Some("queue")),
            ("/api/orders/o", Some("api")),
            ("/shop/rod", None),
        ];
        for (path, lane) in cases {
            assert_eq!(own_lane(path).map(|index| LANES[index]), lane, "{path}");
        }
        for (index, class) in Priority::ALL.iter().enumerate() {
            assert_eq!(LANES[FIRST_CLASS_LANE + index], class.as_str());
        }
    }
}
