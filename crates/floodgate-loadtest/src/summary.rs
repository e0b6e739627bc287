//! Figures of a step over a phase, recomputed from the stored timeline.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::arrivals::Arrivals;
use crate::metrics::Outcome;
use crate::record::{Fairness, Phase, RunRecord, SecondRecord, histogram};

/// Latency quantiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Quantiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let q = |q: f64| histogram.value_at_quantile(q) as f64;
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: histogram.max() as f64,
            mean: histogram.mean(),
        }
    }

    /// The quantile `q` of the underlying histogram, from the kept ones.
    pub fn at(&self, q: f64) -> Option<f64> {
        [
            (0.5, self.p50),
            (0.9, self.p90),
            (0.99, self.p99),
            (0.999, self.p999),
            (1.0, self.max),
        ]
        .iter()
        .find(|(kept, _)| (kept - q).abs() < 1e-9)
        .map(|&(_, value)| value)
    }
}

/// A step's (or every step's) figures over a phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepStats {
    /// Steps that ended in the phase, abandoned ones included.
    pub ended: u64,
    /// By outcome name.
    pub outcomes: BTreeMap<String, u64>,
    /// Errors and timeouts over steps that ended other than abandoned.
    pub error_rate: f64,
    /// From the intended start: what shoppers felt.
    pub response: Quantiles,
    /// From the actual send ("as sent").
    pub service: Quantiles,
    /// Successful steps per second over the phase.
    pub ok_per_second: f64,
    /// Histogram of the response times, for quantiles the summary does not keep.
    #[serde(skip)]
    pub response_histogram: Option<Histogram<u64>>,
}

impl StepStats {
    /// Figures of `step` (a key, or `*` for all steps) over `phase`.
    pub fn of(record: &RunRecord, step: &str, phase: &Phase) -> Self {
        let mut response = histogram();
        let mut service = histogram();
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        for second in seconds_in(&record.timeline, phase) {
            for (key, figures) in &second.steps {
                if step != "*" && key != step {
                    continue;
                }
                figures.response.add_to(&mut response);
                figures.service.add_to(&mut service);
                for (outcome, n) in &figures.outcomes {
                    *outcomes.entry(outcome.clone()).or_default() += n;
                }
            }
        }
        let ended = outcomes.values().sum();
        let counted = ended
            - outcomes
                .get(Outcome::Abandoned.name())
                .copied()
                .unwrap_or(0);
        let errors: u64 = outcomes
            .iter()
            .filter(|(name, _)| Outcome::is_error(name))
            .map(|(_, n)| n)
            .sum();
        let ok = outcomes.get(Outcome::Ok.name()).copied().unwrap_or(0);
        let span = f64::from(phase.to_s.saturating_sub(phase.from_s).max(1));
        Self {
            ended,
            error_rate: if counted == 0 {
                0.0
            } else {
                errors as f64 / counted as f64
            },
            response: Quantiles::of(&response),
            service: Quantiles::of(&service),
            ok_per_second: ok as f64 / span,
            outcomes,
            response_histogram: Some(response),
        }
    }

    /// The value of a threshold metric: microseconds for times, a fraction for the error rate.
    pub fn metric(&self, metric: crate::threshold::Metric) -> f64 {
        use crate::threshold::Metric;
        match metric {
            Metric::ErrorRate => self.error_rate,
            Metric::Mean => self.response.mean,
            Metric::Max => self.response.max,
            Metric::Quantile(q) => self.response.at(q).unwrap_or_else(|| {
                self.response_histogram
                    .as_ref()
                    .map_or(0.0, |h| h.value_at_quantile(q) as f64)
            }),
        }
    }
}

/// Seconds of the timeline inside `phase`.
pub fn seconds_in<'a>(
    timeline: &'a [SecondRecord],
    phase: &Phase,
) -> impl Iterator<Item = &'a SecondRecord> {
    timeline
        .iter()
        .filter(move |s| (phase.from_s..phase.to_s).contains(&s.second))
}

/// The phases of a run: `all`, `first_60s`, and `ramp` and `peak` from the planned arrivals —
/// the peak spans the seconds planned at ≥ 90 % of the busiest second, the ramp the seconds
/// before it. Steps count in the second they ended, so the peak is stretched to the run's end
/// when the profile ends at its peak.
pub fn phases(arrivals: &Arrivals, run_seconds: u32) -> Vec<Phase> {
    let phase = |name: &str, from_s: u32, to_s: u32| Phase {
        name: name.to_owned(),
        from_s,
        to_s,
    };
    let mut phases = vec![
        phase("all", 0, run_seconds),
        phase("first_60s", 0, run_seconds.min(60)),
    ];
    let per_second = arrivals.per_second();
    let busiest = per_second.iter().copied().fold(0.0, f64::max);
    let is_peak = |n: &f64| *n >= 0.9 * busiest && busiest > 0.0;
    if let (Some(first), Some(last)) = (
        per_second.iter().position(is_peak),
        per_second.iter().rposition(is_peak),
    ) {
        let first = first as u32;
        let mut last = last as u32 + 1;
        if last as usize == per_second.len() {
            last = run_seconds.max(last);
        }
        if first > 0 {
            phases.push(phase("ramp", 0, first));
        }
        phases.push(phase("peak", first, last));
    }
    phases
}

/// How far admission order strayed from arrival order.
pub fn fairness(mut admissions: Vec<(u64, u64)>) -> Option<Fairness> {
    let n = admissions.len();
    if n < 2 {
        return None;
    }
    admissions.sort_by_key(|&(arrival, admitted_at)| (admitted_at, arrival));
    let mut arrivals: Vec<u64> = admissions.iter().map(|&(arrival, _)| arrival).collect();
    let mut ranks_by_arrival: Vec<(u64, usize)> =
        arrivals.iter().enumerate().map(|(i, &a)| (a, i)).collect();
    ranks_by_arrival.sort_unstable();
    let d_squared: f64 = ranks_by_arrival
        .iter()
        .enumerate()
        .map(|(arrival_rank, &(_, admission_rank))| {
            (arrival_rank as f64 - admission_rank as f64).powi(2)
        })
        .sum();
    let nf = n as f64;
    let inversions = count_inversions(&mut arrivals);
    Some(Fairness {
        admitted: n as u64,
        inversion_share: inversions as f64 / (nf * (nf - 1.0) / 2.0),
        rank_correlation: 1.0 - 6.0 * d_squared / (nf * (nf * nf - 1.0)),
    })
}

/// Pairs out of order, by merge sort; sorts `values`.
fn count_inversions(values: &mut [u64]) -> u64 {
    let n = values.len();
    if n < 2 {
        return 0;
    }
    let (left, right) = values.split_at_mut(n / 2);
    let mut inversions = count_inversions(left) + count_inversions(right);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if left[i] <= right[j] {
            merged.push(left[i]);
            i += 1;
        } else {
            merged.push(right[j]);
            inversions += (left.len() - i) as u64;
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    values.copy_from_slice(&merged);
    inversions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrivals::{ArrivalsSpec, Spacing, Stage};

    #[test]
    fn fifo_admission_is_perfectly_fair_and_reversed_admission_is_not() {
        let fifo = fairness((0..100).map(|i| (i, i * 10)).collect()).unwrap();
        assert_eq!(fifo.inversion_share, 0.0);
        assert!((fifo.rank_correlation - 1.0).abs() < 1e-9);
        let reversed = fairness((0..100).map(|i| (i, 1000 - i)).collect()).unwrap();
        assert!((reversed.inversion_share - 1.0).abs() < 1e-9);
        assert!((reversed.rank_correlation + 1.0).abs() < 1e-9);
    }

    #[test]
    fn inversions_are_counted_exactly() {
        assert_eq!(count_inversions(&mut [3, 1, 2]), 2);
        assert_eq!(count_inversions(&mut [1, 2, 3, 4]), 0);
        assert_eq!(count_inversions(&mut [4, 3, 2, 1]), 6);
    }

    #[test]
    fn a_step_profile_has_a_ramp_then_a_peak() {
        let mut problems = Vec::new();
        let arrivals = ArrivalsSpec::Steps {
            steps: vec![
                Stage {
                    rate: 10.0,
                    duration_s: 3.0,
                },
                Stage {
                    rate: 100.0,
                    duration_s: 5.0,
                },
                Stage {
                    rate: 10.0,
                    duration_s: 2.0,
                },
            ],
            spacing: Spacing::Even,
        }
        .build("arrivals", &mut problems);
        let phases = phases(&arrivals, 12);
        let find = |name: &str| phases.iter().find(|p| p.name == name).unwrap();
        assert_eq!((find("ramp").from_s, find("ramp").to_s), (0, 3));
        assert_eq!((find("peak").from_s, find("peak").to_s), (3, 8));
        assert_eq!(find("all").to_s, 12);
        assert_eq!(find("first_60s").to_s, 12);
    }
}
