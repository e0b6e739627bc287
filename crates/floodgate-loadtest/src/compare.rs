//! Comparison with a baseline run: per step and per phase, with noise bands.

use serde::Serialize;

use crate::record::RunRecord;
use crate::scenario::CompareSettings;
use crate::summary::StepStats;

/// One figure compared.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A step key, or `*` for all steps together.
    pub step: String,
    /// The phase.
    pub phase: String,
    /// `p50`, `p99` (µs), `error_rate` (fraction) or `ok_per_second`.
    pub metric: String,
    /// The baseline's value.
    pub baseline: f64,
    /// This run's value.
    pub current: f64,
    /// Worse than the noise band allows.
    pub regressed: bool,
}

/// The comparison of a run with its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The baseline's run id.
    pub baseline: String,
    /// Every figure compared.
    pub findings: Vec<Finding>,
    /// Caveats, such as a different generating machine.
    pub notes: Vec<String>,
}

impl Comparison {
    /// The findings worse than noise.
    pub fn regressions(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.regressed)
    }
}

/// Compares `current` with `baseline`; runs of different scenarios are refused.
pub fn compare(
    current: &RunRecord,
    baseline: &RunRecord,
    bands: &CompareSettings,
) -> Result<Comparison, String> {
    if current.schema != baseline.schema {
        return Err(format!(
            "run {} has record schema {}, this run {}: not comparable",
            baseline.run_id, baseline.schema, current.schema
        ));
    }
    if current.scenario_hash != baseline.scenario_hash {
        return Err(format!(
            "run {} used a different scenario (\"{}\", sha256 {}…; this run \"{}\", {}…): not comparable",
            baseline.run_id,
            baseline.scenario,
            &baseline.scenario_hash[..12.min(baseline.scenario_hash.len())],
            current.scenario,
            &current.scenario_hash[..12.min(current.scenario_hash.len())],
        ));
    }
    let mut notes = Vec::new();
    if current.machine != baseline.machine {
        notes.push(format!(
            "the baseline ran on another machine ({} × {}, {}); differences may be the machine's",
            baseline.machine.cpus, baseline.machine.cpu_model, baseline.machine.host
        ));
    }
    if current.target != baseline.target {
        notes.push(format!(
            "the baseline ran against {}, this run against {}",
            baseline.target, current.target
        ));
    }
    let min_delta_us = bands.min_delta.as_micros() as f64;
    let mut findings = Vec::new();
    let steps = std::iter::once("*").chain(current.steps.iter().map(String::as_str));
    for step in steps {
        for phase in &current.phases {
            let Some(base_phase) = baseline.phases.iter().find(|p| p.name == phase.name) else {
                continue;
            };
            let now = StepStats::of(current, step, phase);
            let before = StepStats::of(baseline, step, base_phase);
            if now.ended < bands.min_samples || before.ended < bands.min_samples {
                continue;
            }
            let mut finding = |metric: &str, baseline: f64, current: f64, regressed: bool| {
                findings.push(Finding {
                    step: step.to_owned(),
                    phase: phase.name.clone(),
                    metric: metric.to_owned(),
                    baseline,
                    current,
                    regressed,
                });
            };
            let slower = |before: f64, now: f64| {
                now > before * (1.0 + bands.noise) && now - before > min_delta_us
            };
            finding(
                "p50",
                before.response.p50,
                now.response.p50,
                slower(before.response.p50, now.response.p50),
            );
            finding(
                "p99",
                before.response.p99,
                now.response.p99,
                slower(before.response.p99, now.response.p99),
            );
            let more_errors = now.error_rate - before.error_rate > bands.error_rate_points / 100.0;
            finding("error_rate", before.error_rate, now.error_rate, more_errors);
            let fewer = now.ok_per_second < before.ok_per_second * (1.0 - bands.noise).max(0.0);
            finding(
                "ok_per_second",
                before.ok_per_second,
                now.ok_per_second,
                fewer,
            );
        }
    }
    Ok(Comparison {
        baseline: baseline.run_id.clone(),
        findings,
        notes,
    })
}
