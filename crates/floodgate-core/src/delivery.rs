//! What delivery to the legacy order system reports while it runs: the figures the
//! dispatcher keeps, shown by the gateway's metrics and dashboard. Here, below both, so the
//! gateway reads them without depending on the dispatcher.

use serde::Serialize;

/// Where the breaker stands, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Nothing is sent until the open period ends.
    Open,
    /// One probe is out; its answer decides.
    HalfOpen,
}

/// What the dispatcher holds and has done since it started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DispatchStats {
    /// Orders read from the store and not yet settled (in flight included).
    pub holding: usize,
    /// Attempts awaiting an answer.
    pub in_flight: usize,
    /// Attempts started.
    pub attempts: u64,
    /// Orders the downstream took.
    pub confirmed: u64,
    /// Orders the downstream refused for good (units returned).
    pub rejected: u64,
    /// Orders dead-lettered after their last attempt.
    pub failed: u64,
    /// Attempts that will be retried.
    pub retried: u64,
    /// The current adaptive pace, starts per second.
    pub rate_per_second: f64,
    /// The configured limit.
    pub limit_per_second: u32,
    /// The breaker.
    pub breaker: BreakerState,
    /// This node delivers now (the only node, or the leader of several).
    pub leading: bool,
}
