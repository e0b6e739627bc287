//! Thresholds, business checks, validity and the comparison, folded into one exit code.

use serde::Serialize;

use crate::compare::Comparison;
use crate::record::RunRecord;
use crate::scenario::Threshold;
use crate::summary::StepStats;
use crate::threshold::Metric;

/// Exit codes of `floodgate loadtest`.
pub mod exit {
    /// Valid, thresholds met, no regression.
    pub const OK: u8 = 0;
    /// A threshold (SLO) or a business check failed.
    pub const THRESHOLD: u8 = 1;
    /// Worse than the baseline beyond the noise bands.
    pub const REGRESSION: u8 = 2;
    /// The generator could not keep its schedule: the figures do not describe the target.
    pub const INVALID: u8 = 3;
}

/// One threshold's result.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdResult {
    /// The step key or `*`.
    pub step: String,
    /// The phase.
    pub phase: String,
    /// The condition as written.
    pub condition: String,
    /// The measured value: microseconds for times, a fraction for rates.
    pub value: f64,
    /// Whether a time (µs) rather than a rate.
    pub is_time: bool,
    /// Whether the condition held.
    pub passed: bool,
}

/// Everything that decides the exit code.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Why the run is invalid.
    pub invalid: Vec<String>,
    /// Every threshold.
    pub thresholds: Vec<ThresholdResult>,
    /// Business checks that failed.
    pub check_failures: Vec<String>,
    /// The baseline comparison, when one was asked for.
    pub comparison: Option<Comparison>,
}

impl Verdict {
    /// Judges `record`; `comparison` is its comparison with a baseline, if any.
    pub fn of(
        record: &RunRecord,
        thresholds: &[Threshold],
        comparison: Option<Comparison>,
    ) -> Self {
        let results = thresholds
            .iter()
            .filter_map(|threshold| {
                // A phase the profile does not have (no ramp in a constant run) has nothing to judge.
                let phase = record.phases.iter().find(|p| p.name == threshold.phase)?;
                let stats = StepStats::of(record, &threshold.step, phase);
                let value = stats.metric(threshold.condition.metric);
                Some(ThresholdResult {
                    step: threshold.step.clone(),
                    phase: threshold.phase.clone(),
                    condition: threshold.condition.text.clone(),
                    value,
                    is_time: threshold.condition.metric != Metric::ErrorRate,
                    passed: threshold.condition.holds(value),
                })
            })
            .collect();
        Self {
            invalid: record.generator.invalid.clone(),
            thresholds: results,
            check_failures: record.checks.failures.clone(),
            comparison,
        }
    }

    /// Invalid beats a breach, and a breach beats a regression: each makes the next meaningless.
    pub fn exit_code(&self) -> u8 {
        if !self.invalid.is_empty() {
            exit::INVALID
        } else if self.thresholds.iter().any(|t| !t.passed) || !self.check_failures.is_empty() {
            exit::THRESHOLD
        } else if self
            .comparison
            .as_ref()
            .is_some_and(|c| c.regressions().next().is_some())
        {
            exit::REGRESSION
        } else {
            exit::OK
        }
    }
}
