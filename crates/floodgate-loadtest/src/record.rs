//! The run record: everything a run measured, stored as `run.json` and read back for comparison.
//!
//! The timeline keeps every second's histograms (sparse: bucket value and count), so the figures
//! of any window of seconds — a phase, a minute — can be recomputed exactly later.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Bumped when the record's shape changes incompatibly.
pub const SCHEMA: u32 = 1;

/// A stored run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `YYYYmmdd-HHMMSS-<6 hex>`.
    pub run_id: String,
    /// floodgate's version.
    pub tool_version: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// The target URL.
    pub target: String,
    /// The scenario's name.
    pub scenario: String,
    /// SHA-256 of the scenario text.
    pub scenario_hash: String,
    /// The generating machine.
    pub machine: Machine,
    /// The step keys, in journey order.
    pub steps: Vec<String>,
    /// Named windows of the run clock.
    pub phases: Vec<Phase>,
    /// The generator's own account of itself.
    pub generator: GeneratorReport,
    /// One entry per second of the run.
    pub timeline: Vec<SecondRecord>,
    /// Business checks made against the target's public API.
    pub checks: Checks,
    /// Fairness of admission in the waiting room.
    pub fairness: Option<Fairness>,
}

/// Facts about the generating machine, compared before runs are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model from `/proc/cpuinfo`, when readable.
    pub cpu_model: String,
    /// `std::env::consts::OS` / `ARCH`.
    pub os: String,
    /// The host name.
    pub host: String,
}

/// A window of the run clock, `[from_s, to_s)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `all`, `ramp`, `peak` or `first_60s`.
    pub name: String,
    /// First second.
    pub from_s: u32,
    /// One past the last second.
    pub to_s: u32,
}

/// Whether the generator kept its schedule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// Arrivals the profile planned.
    pub planned: u64,
    /// Arrivals that started (however late).
    pub started: u64,
    /// Arrivals that started later than `max_lag`.
    pub late: u64,
    /// Arrivals never started because `max_shoppers` were alive.
    pub not_started: u64,
    /// Shoppers still in a journey when the drain time ran out.
    pub unfinished: u64,
    /// The lag limit used, in microseconds.
    pub max_lag_us: u64,
    /// The 99th percentile of the runtime probe's lateness, microseconds.
    pub runtime_lag_p99_us: u64,
    /// Peak resident memory of the generator process, in bytes (0 where unknown).
    pub peak_rss_bytes: u64,
    /// Why the run is invalid; empty when it is valid.
    pub invalid: Vec<String>,
}

/// What happened in one second of the run clock (steps count in the second they ended).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecondRecord {
    /// Seconds since the start.
    pub second: u32,
    /// Arrivals started in this second.
    pub arrivals: u64,
    /// Of those, late ones.
    pub late: u64,
    /// Start lag of the arrivals, microseconds.
    pub lag: Sparse,
    /// How late a probe task woke from 10 ms sleeps, microseconds: a busy generator shows here
    /// even when arrivals start on time and then queue inside it.
    pub runtime_lag: Sparse,
    /// Shoppers waiting in a queue step at the end of the second.
    pub waiting: u64,
    /// Shoppers in a journey at the end of the second.
    pub in_flight: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Per step key.
    pub steps: BTreeMap<String, StepSecond>,
    /// Journey milestones (time since arrival), per milestone name.
    pub milestones: BTreeMap<String, Sparse>,
}

/// One step's figures for one second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepSecond {
    /// Step outcomes by name (see `Outcome`).
    pub outcomes: BTreeMap<String, u64>,
    /// Time from the intended start to the end, microseconds: what a shopper felt.
    pub response: Sparse,
    /// Time from the last request's actual send to its answer, microseconds ("as sent").
    pub service: Sparse,
}

/// A histogram as `[bucket value, count]` pairs of its non-empty buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sparse(pub Vec<[u64; 2]>);

/// Significant digits of every histogram.
const SIGFIG: u8 = 3;

/// An empty histogram of the precision used throughout; it grows to the largest value recorded,
/// so the many per-second histograms of a run stay small.
pub fn histogram() -> Histogram<u64> {
    Histogram::new(SIGFIG).expect("3 significant digits is a valid precision")
}

/// Records `count` × `value`, growing the histogram as needed (values past `u64` range saturate).
pub fn record(histogram: &mut Histogram<u64>, value: u64, count: u64) {
    if histogram.record_n(value, count).is_err() {
        record(histogram, value, count);
    }
}

impl Sparse {
    /// The non-empty buckets of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self(
            histogram
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
        )
    }

    /// Adds the buckets into `histogram`; each lands in the bucket it came from.
    pub fn add_to(&self, histogram: &mut Histogram<u64>) {
        for &[value, count] in &self.0 {
            record(histogram, value, count);
        }
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Business checks of the target after the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checks {
    /// The drop checked, when the scenario placed orders.
    pub drop: Option<String>,
    /// Units available per SKU before the run.
    pub stock_before: BTreeMap<String, u64>,
    /// Units held by accepted orders per SKU that did not end rejected or released.
    pub units_held: BTreeMap<String, u64>,
    /// Distinct orders that got a 202.
    pub accepted_orders: u64,
    /// Their states after the run, as the target reports them.
    pub final_states: BTreeMap<String, u64>,
    /// Orders sent again with the same key.
    pub replays: u64,
    /// Replays answered with a different order id (must be 0).
    pub replay_mismatches: u64,
    /// Problems found; empty when the business held.
    pub failures: Vec<String>,
}

/// How closely admission followed arrival.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fairness {
    /// Shoppers admitted.
    pub admitted: u64,
    /// Share of admitted pairs admitted in the opposite order of their arrival (0: strict FIFO).
    pub inversion_share: f64,
    /// Spearman rank correlation of arrival order and admission order (1: strict FIFO).
    pub rank_correlation: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_histogram_rebuilds_the_same_quantiles() {
        let mut original = histogram();
        for v in (1..50_000u64).map(|i| i * i % 1_000_003) {
            record(&mut original, v, 1);
        }
        let mut rebuilt = histogram();
        Sparse::of(&original).add_to(&mut rebuilt);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                original.value_at_quantile(q),
                rebuilt.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(original.len(), rebuilt.len());
    }
}
