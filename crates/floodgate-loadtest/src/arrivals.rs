//! Arrival profiles: when each shopper arrives, decided before the run and never by responses.
//!
//! Every profile is a sequence of segments whose arrival rate is linear in time (constant, ramp,
//! steps) or a pulse of shoppers spread over a jitter window. The n-th arrival of a segment is
//! placed where the segment's cumulative count `N(t) = a·t + (b−a)·t²/2d` reaches the n-th mark;
//! the marks are `n` (even spacing), `n + U[0,1)` (jittered) or a sum of unit exponentials
//! (Poisson), so the three spacings share one inversion.

use serde::{Deserialize, Serialize};

/// How arrivals are placed inside a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// Exactly evenly apart.
    #[default]
    Even,
    /// One arrival at a uniformly random moment of each even slot.
    Jittered,
    /// A Poisson process of the segment's rate: independent shoppers.
    Poisson,
}

/// One stretch of the profile with a linearly changing rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Segment {
    /// Seconds from the run's start.
    pub start_s: f64,
    /// Length in seconds; 0 for a burst where everyone arrives at once.
    pub duration_s: f64,
    /// Arrivals per second at the start.
    pub from_rate: f64,
    /// Arrivals per second at the end.
    pub to_rate: f64,
    /// Arrivals in the segment: the area under the rate, or the burst's size.
    pub shoppers: f64,
}

impl Segment {
    fn linear(start_s: f64, duration_s: f64, from_rate: f64, to_rate: f64) -> Self {
        let shoppers = (from_rate + to_rate) / 2.0 * duration_s;
        Self {
            start_s,
            duration_s,
            from_rate,
            to_rate,
            shoppers,
        }
    }

    fn pulse(start_s: f64, duration_s: f64, shoppers: f64) -> Self {
        let rate = if duration_s > 0.0 {
            shoppers / duration_s
        } else {
            0.0
        };
        Self {
            start_s,
            duration_s,
            from_rate: rate,
            to_rate: rate,
            shoppers,
        }
    }

    /// The offset inside the segment at which the cumulative count reaches `mark`.
    fn time_of(&self, mark: f64) -> f64 {
        let (a, b, d) = (self.from_rate, self.to_rate, self.duration_s);
        if d == 0.0 {
            return 0.0;
        }
        let slope = (b - a) / d;
        let t = if slope.abs() < 1e-12 {
            mark / a
        } else {
            // Solve slope/2·t² + a·t − mark = 0 for the root inside [0, d].
            (-a + (a * a + 2.0 * slope * mark).max(0.0).sqrt()) / slope
        };
        t.clamp(0.0, d)
    }

    /// Arrivals planned between `from_s` and `to_s` of the run clock (for phases and charts).
    fn shoppers_between(&self, from_s: f64, to_s: f64) -> f64 {
        let end = self.start_s + self.duration_s;
        if self.duration_s == 0.0 {
            return if (from_s..to_s).contains(&self.start_s) {
                self.shoppers
            } else {
                0.0
            };
        }
        let (lo, hi) = (from_s.max(self.start_s), to_s.min(end));
        if hi <= lo {
            return 0.0;
        }
        let cumulative = |t: f64| {
            let t = t - self.start_s;
            self.from_rate * t + (self.to_rate - self.from_rate) * t * t / (2.0 * self.duration_s)
        };
        cumulative(hi) - cumulative(lo)
    }
}

/// A whole arrival profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arrivals {
    /// Segments in time order.
    pub segments: Vec<Segment>,
    /// How arrivals are placed within a segment.
    pub spacing: Spacing,
}

/// The profile as written in a scenario's `[arrivals]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArrivalsSpec {
    /// A steady rate.
    Constant {
        /// Arrivals per second.
        rate: f64,
        /// How long.
        duration_s: f64,
        /// Placement within the second.
        #[serde(default)]
        spacing: Spacing,
    },
    /// A rate that changes linearly from `from` to `to`.
    Ramp {
        /// Arrivals per second at the start.
        from: f64,
        /// Arrivals per second at the end.
        to: f64,
        /// How long.
        duration_s: f64,
        /// Placement.
        #[serde(default)]
        spacing: Spacing,
    },
    /// Constant rates one after another.
    Steps {
        /// The stages, in order.
        steps: Vec<Stage>,
        /// Placement.
        #[serde(default)]
        spacing: Spacing,
    },
    /// Everyone at once: `shoppers` arrive at `at_s`, spread over `jitter_s` (0: the same instant).
    Pulse {
        /// How many shoppers.
        shoppers: u64,
        /// When, in seconds from the start.
        #[serde(default)]
        at_s: f64,
        /// Spread of the pulse in seconds.
        #[serde(default)]
        jitter_s: f64,
        /// Placement within the spread (jittered unless said otherwise).
        #[serde(default = "jittered")]
        spacing: Spacing,
    },
}

fn jittered() -> Spacing {
    Spacing::Jittered
}

/// One stage of a `steps` profile.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Arrivals per second.
    pub rate: f64,
    /// How long.
    pub duration_s: f64,
}

impl ArrivalsSpec {
    /// Validates the numbers and builds the profile; problems are reported against `path`.
    pub fn build(&self, path: &str, problems: &mut Vec<String>) -> Arrivals {
        let mut check = |ok: bool, what: &str| {
            if !ok {
                problems.push(format!("{path}: {what}"));
            }
        };
        let rate_ok = |rate: f64| rate.is_finite() && rate >= 0.0;
        let duration_ok = |d: f64| d.is_finite() && d > 0.0;
        let (segments, spacing) = match *self {
            Self::Constant {
                rate,
                duration_s,
                spacing,
            } => {
                check(
                    rate_ok(rate) && rate > 0.0,
                    "rate must be a positive number",
                );
                check(duration_ok(duration_s), "duration_s must be positive");
                (vec![Segment::linear(0.0, duration_s, rate, rate)], spacing)
            }
            Self::Ramp {
                from,
                to,
                duration_s,
                spacing,
            } => {
                check(
                    rate_ok(from) && rate_ok(to),
                    "from and to must be rates ≥ 0",
                );
                check(from + to > 0.0, "a ramp from 0 to 0 has no arrivals");
                check(duration_ok(duration_s), "duration_s must be positive");
                (vec![Segment::linear(0.0, duration_s, from, to)], spacing)
            }
            Self::Steps { ref steps, spacing } => {
                check(!steps.is_empty(), "steps must list at least one stage");
                let mut start = 0.0;
                let mut segments = Vec::with_capacity(steps.len());
                for (i, stage) in steps.iter().enumerate() {
                    check(rate_ok(stage.rate), &format!("steps[{i}].rate must be ≥ 0"));
                    check(
                        duration_ok(stage.duration_s),
                        &format!("steps[{i}].duration_s must be positive"),
                    );
                    segments.push(Segment::linear(
                        start,
                        stage.duration_s,
                        stage.rate,
                        stage.rate,
                    ));
                    start += stage.duration_s;
                }
                (segments, spacing)
            }
            Self::Pulse {
                shoppers,
                at_s,
                jitter_s,
                spacing,
            } => {
                check(shoppers > 0, "shoppers must be at least 1");
                check(at_s.is_finite() && at_s >= 0.0, "at_s must be ≥ 0");
                check(
                    jitter_s.is_finite() && jitter_s >= 0.0,
                    "jitter_s must be ≥ 0",
                );
                (
                    vec![Segment::pulse(at_s, jitter_s, shoppers as f64)],
                    spacing,
                )
            }
        };
        Arrivals { segments, spacing }
    }
}

impl Arrivals {
    /// Arrivals the profile plans (the expectation, for Poisson spacing).
    pub fn planned(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.shoppers.round() as u64)
            .sum()
    }

    /// When the last arrival is due, in seconds from the start.
    pub fn end_s(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| s.start_s + s.duration_s)
            .fold(0.0, f64::max)
    }

    /// Planned arrivals in each whole second of the profile.
    pub fn per_second(&self) -> Vec<f64> {
        // A burst at a whole second lands in that second, which the end time alone would miss.
        let seconds = self
            .segments
            .iter()
            .map(|s| {
                if s.duration_s == 0.0 {
                    s.start_s.floor() + 1.0
                } else {
                    (s.start_s + s.duration_s).ceil()
                }
            })
            .fold(1.0, f64::max) as usize;
        (0..seconds)
            .map(|s| {
                let (from, to) = (s as f64, s as f64 + 1.0);
                self.segments
                    .iter()
                    .map(|seg| seg.shoppers_between(from, to))
                    .sum()
            })
            .collect()
    }

    /// The arrival times in seconds from the start, in order; `seed` fixes the random spacings.
    pub fn schedule(&self, seed: u64) -> Schedule<'_> {
        Schedule {
            arrivals: self,
            rng: fastrand::Rng::with_seed(seed),
            segment: 0,
            index: 0,
            mark: None,
        }
    }
}

/// Iterator over arrival offsets (seconds), built by [`Arrivals::schedule`].
#[derive(Debug)]
pub struct Schedule<'a> {
    arrivals: &'a Arrivals,
    rng: fastrand::Rng,
    segment: usize,
    index: u64,
    /// The Poisson process's running sum of unit exponentials.
    mark: Option<f64>,
}

impl Iterator for Schedule<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        loop {
            let segment = self.arrivals.segments.get(self.segment)?;
            let mark = match self.arrivals.spacing {
                _ if segment.duration_s == 0.0 => self.index as f64,
                Spacing::Even => self.index as f64,
                Spacing::Jittered => self.index as f64 + self.rng.f64(),
                Spacing::Poisson => {
                    let exponential = -(1.0 - self.rng.f64()).ln();
                    self.mark.unwrap_or(0.0) + exponential
                }
            };
            let fits = match self.arrivals.spacing {
                Spacing::Poisson if segment.duration_s > 0.0 => mark < segment.shoppers,
                _ => (self.index as f64) < segment.shoppers.round(),
            };
            if !fits {
                self.segment += 1;
                self.index = 0;
                self.mark = None;
                continue;
            }
            self.index += 1;
            self.mark = Some(mark);
            return Some(segment.start_s + segment.time_of(mark));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(spec: ArrivalsSpec) -> Arrivals {
        let mut problems = Vec::new();
        let arrivals = spec.build("arrivals", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        arrivals
    }

    fn constant(rate: f64, duration_s: f64, spacing: Spacing) -> Arrivals {
        build(ArrivalsSpec::Constant {
            rate,
            duration_s,
            spacing,
        })
    }

    #[test]
    fn constant_even_arrivals_are_evenly_spaced() {
        let times: Vec<f64> = constant(10.0, 2.0, Spacing::Even).schedule(1).collect();
        assert_eq!(times.len(), 20);
        for (i, t) in times.iter().enumerate() {
            assert!((t - i as f64 * 0.1).abs() < 1e-9, "{i}: {t}");
        }
    }

    #[test]
    fn every_spacing_keeps_order_and_the_rate() {
        for spacing in [Spacing::Even, Spacing::Jittered, Spacing::Poisson] {
            let times: Vec<f64> = constant(1000.0, 10.0, spacing).schedule(7).collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{spacing:?} out of order"
            );
            let within = |n: usize| n.abs_diff(10_000) <= 300;
            assert!(within(times.len()), "{spacing:?}: {}", times.len());
            assert!(times.iter().all(|&t| (0.0..=10.0).contains(&t)));
        }
    }

    #[test]
    fn a_ramp_puts_three_quarters_of_its_arrivals_in_the_second_half() {
        let arrivals = build(ArrivalsSpec::Ramp {
            from: 0.0,
            to: 100.0,
            duration_s: 10.0,
            spacing: Spacing::Even,
        });
        let times: Vec<f64> = arrivals.schedule(1).collect();
        assert_eq!(times.len(), 500);
        let late = times.iter().filter(|&&t| t >= 5.0).count();
        assert!((370..=380).contains(&late), "{late}");
        let per_second = arrivals.per_second();
        assert!((per_second[0] - 5.0).abs() < 1e-9 && (per_second[9] - 95.0).abs() < 1e-9);
    }

    #[test]
    fn a_pulse_lands_inside_its_window_and_a_zero_jitter_pulse_at_one_instant() {
        let spread = build(ArrivalsSpec::Pulse {
            shoppers: 1000,
            at_s: 2.0,
            jitter_s: 0.5,
            spacing: Spacing::Jittered,
        });
        let times: Vec<f64> = spread.schedule(3).collect();
        assert_eq!(times.len(), 1000);
        assert!(times.iter().all(|&t| (2.0..=2.5).contains(&t)));
        let burst = build(ArrivalsSpec::Pulse {
            shoppers: 50,
            at_s: 1.0,
            jitter_s: 0.0,
            spacing: Spacing::Jittered,
        });
        assert!(burst.schedule(3).all(|t| t == 1.0));
        assert_eq!(burst.schedule(3).count(), 50);
        assert_eq!(burst.per_second(), vec![0.0, 50.0]);
    }

    #[test]
    fn steps_follow_each_other() {
        let arrivals = build(ArrivalsSpec::Steps {
            steps: vec![
                Stage {
                    rate: 10.0,
                    duration_s: 1.0,
                },
                Stage {
                    rate: 100.0,
                    duration_s: 2.0,
                },
            ],
            spacing: Spacing::Even,
        });
        assert_eq!(arrivals.planned(), 210);
        let times: Vec<f64> = arrivals.schedule(1).collect();
        assert_eq!(times.iter().filter(|&&t| t < 1.0).count(), 10);
        assert_eq!(arrivals.end_s(), 3.0);
    }

    #[test]
    fn bad_numbers_are_reported_with_their_path() {
        let mut problems = Vec::new();
        ArrivalsSpec::Constant {
            rate: -1.0,
            duration_s: 0.0,
            spacing: Spacing::Even,
        }
        .build("arrivals", &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("arrivals: rate"));
    }
}
