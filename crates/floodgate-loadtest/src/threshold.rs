//! Thresholds (SLOs) written as `"p99 < 200ms"` or `"error_rate < 0.1%"`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a threshold measures over a step in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A quantile of the response time from the intended start, e.g. 0.99.
    Quantile(f64),
    /// The mean response time.
    Mean,
    /// The slowest response.
    Max,
    /// The share of the step's outcomes that were errors or timeouts.
    ErrorRate,
}

/// A parsed condition; the limit is in microseconds for times and a fraction for rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// What is measured.
    pub metric: Metric,
    /// The value it must stay under.
    pub limit: f64,
    /// Whether equal to the limit still passes (`<=`).
    pub inclusive: bool,
    /// The condition as written.
    pub text: String,
}

impl Condition {
    /// Parses `"<metric> < <value>"`; times take `us`, `ms` or `s`, rates `%` or a plain fraction.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (left, right, inclusive) = if let Some((l, r)) = text.split_once("<=") {
            (l, r, true)
        } else if let Some((l, r)) = text.split_once('<') {
            (l, r, false)
        } else {
            return Err(format!(
                "{text:?}: expected \"<metric> < <limit>\", e.g. \"p99 < 200ms\""
            ));
        };
        let metric = match left.trim() {
            "mean" => Metric::Mean,
            "max" => Metric::Max,
            "error_rate" => Metric::ErrorRate,
            name => match name.strip_prefix('p').and_then(quantile_of) {
                Some(q) => Metric::Quantile(q),
                None => {
                    return Err(format!(
                        "{text:?}: unknown metric {name:?} (p50, p99, p99.9, mean, max, error_rate)"
                    ));
                }
            },
        };
        let right = right.trim();
        let limit = match metric {
            Metric::ErrorRate => match right.strip_suffix('%') {
                Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
                None => right.parse::<f64>(),
            }
            .map_err(|_| format!("{text:?}: the limit must be a rate like 0.1% or 0.001"))?,
            _ => duration_micros(right).ok_or_else(|| {
                format!("{text:?}: the limit must be a time like 200ms, 1.5s or 800us")
            })?,
        };
        if !limit.is_finite() || limit < 0.0 {
            return Err(format!("{text:?}: the limit must not be negative"));
        }
        Ok(Self {
            metric,
            limit,
            inclusive,
            text: text.trim().to_owned(),
        })
    }

    /// Whether `value` (µs or fraction) meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        if self.inclusive {
            value <= self.limit
        } else {
            value < self.limit
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// "99" → 0.99, "99.9" → 0.999, "50" → 0.5.
fn quantile_of(digits: &str) -> Option<f64> {
    let percent: f64 = digits.parse().ok()?;
    (percent > 0.0 && percent <= 100.0).then_some(percent / 100.0)
}

fn duration_micros(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let p99 = Condition::parse("p99 < 200ms").unwrap();
        assert_eq!(
            (p99.metric, p99.limit, p99.inclusive),
            (Metric::Quantile(0.99), 200_000.0, false)
        );
        assert_eq!(
            Condition::parse("p99.9 <= 1.5s").unwrap().limit,
            1_500_000.0
        );
        assert_eq!(Condition::parse("max < 800us").unwrap().metric, Metric::Max);
        let errors = Condition::parse("error_rate < 0.1%").unwrap();
        assert!((errors.limit - 0.001).abs() < 1e-12);
        assert!(errors.holds(0.0005) && !errors.holds(0.001));
        assert!(
            Condition::parse("error_rate <= 0.001")
                .unwrap()
                .holds(0.001)
        );
    }

    #[test]
    fn explains_what_it_cannot_read() {
        assert!(
            Condition::parse("p99 > 2ms")
                .unwrap_err()
                .contains("expected")
        );
        assert!(
            Condition::parse("latency < 2ms")
                .unwrap_err()
                .contains("unknown metric")
        );
        assert!(
            Condition::parse("p99 < 2 minutes")
                .unwrap_err()
                .contains("time like")
        );
        assert!(
            Condition::parse("p101 < 2ms")
                .unwrap_err()
                .contains("unknown metric")
        );
    }
}
