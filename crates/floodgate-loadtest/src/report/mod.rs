//! Reports of a run: the same sections rendered as Markdown (terminal, CI comments), HTML with
//! charts, and JUnit XML.

mod html;
mod junit;
mod markdown;

pub use html::html;
pub use junit::junit;
pub use markdown::markdown;

use crate::metrics::Outcome;
use crate::record::{Phase, RunRecord, Sparse};
use crate::summary::StepStats;
use crate::verdict::{Verdict, exit};

/// A titled block of lines and tables, rendered by each format its own way.
struct Section {
    title: String,
    lines: Vec<String>,
    tables: Vec<Table>,
}

struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

fn verdict_line(verdict: &Verdict) -> String {
    let code = verdict.exit_code();
    let word = match code {
        exit::OK => "ok",
        exit::THRESHOLD => "threshold breached",
        exit::REGRESSION => "regression against the baseline",
        _ => "invalid run",
    };
    format!("Verdict: **{word}** (exit code {code})")
}

/// A time in microseconds, in the unit that reads best.
fn time(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.2} %", fraction * 100.0)
}

fn whole_run(record: &RunRecord) -> Phase {
    record
        .phases
        .iter()
        .find(|p| p.name == "all")
        .cloned()
        .unwrap_or(Phase {
            name: "all".to_owned(),
            from_s: 0,
            to_s: record.timeline.len() as u32,
        })
}

/// The sections every format shows, in order.
fn sections(record: &RunRecord, verdict: &Verdict) -> Vec<Section> {
    let mut sections = vec![
        overview(record, verdict),
        steps(record),
        phases(record),
        funnel(record),
    ];
    if record.checks.drop.is_some() {
        sections.push(business(record));
    }
    if !verdict.thresholds.is_empty() {
        sections.push(thresholds(verdict));
    }
    if let Some(comparison) = &verdict.comparison {
        let rows = comparison
            .findings
            .iter()
            .filter(|f| f.regressed || f.step == "*")
            .map(|f| {
                let show = |v: f64| match f.metric.as_str() {
                    "error_rate" => percent(v),
                    "ok_per_second" => format!("{v:.1}/s"),
                    _ => time(v),
                };
                let mark = if f.regressed { "REGRESSED" } else { "ok" };
                vec![
                    f.step.clone(),
                    f.phase.clone(),
                    f.metric.clone(),
                    show(f.baseline),
                    show(f.current),
                    mark.to_owned(),
                ]
            })
            .collect();
        let regressions = comparison.regressions().count();
        let mut lines = vec![format!(
            "{} figures compared, {regressions} worse than the noise bands (all steps together, and every regression, below).",
            comparison.findings.len()
        )];
        lines.extend(comparison.notes.iter().cloned());
        sections.push(Section {
            title: format!("Compared with run {}", comparison.baseline),
            lines,
            tables: vec![Table {
                headers: vec!["step", "phase", "metric", "baseline", "this run", ""],
                rows,
            }],
        });
    }
    sections
}

fn overview(record: &RunRecord, verdict: &Verdict) -> Section {
    let g = &record.generator;
    let mut lines = vec![
        verdict_line(verdict),
        format!(
            "Target {} · started {} · {} s · scenario {}",
            record.target,
            record.started_at,
            record.timeline.len(),
            record.scenario
        ),
        format!(
            "Generator: {} of {} planned arrivals started, {} late (> {} ms), runtime lag p99 {}, {} not started, {} unfinished at the end; peak memory {:.0} MiB",
            g.started,
            g.planned,
            g.late,
            g.max_lag_us / 1000,
            time(g.runtime_lag_p99_us as f64),
            g.not_started,
            g.unfinished,
            g.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        ),
    ];
    lines.extend(g.invalid.iter().map(|reason| format!("INVALID: {reason}")));
    Section {
        title: format!(
            "floodgate loadtest: {} (run {})",
            record.scenario, record.run_id
        ),
        lines,
        tables: vec![],
    }
}

fn step_row(name: &str, stats: &StepStats) -> Vec<String> {
    let count = |outcome: Outcome| {
        stats
            .outcomes
            .get(outcome.name())
            .copied()
            .unwrap_or(0)
            .to_string()
    };
    let errors: u64 = stats
        .outcomes
        .iter()
        .filter(|(n, _)| Outcome::is_error(n))
        .map(|(_, n)| n)
        .sum();
    vec![
        name.to_owned(),
        stats.ended.to_string(),
        count(Outcome::Ok),
        count(Outcome::Refused),
        count(Outcome::Abandoned),
        count(Outcome::GaveUp),
        errors.to_string(),
        percent(stats.error_rate),
        time(stats.response.p50),
        time(stats.response.p99),
        time(stats.response.max),
        time(stats.service.p99),
    ]
}

const STEP_HEADERS: [&str; 12] = [
    "step",
    "ended",
    "ok",
    "refused",
    "abandoned",
    "gave up",
    "errors",
    "error rate",
    "p50",
    "p99",
    "max",
    "p99 as sent",
];

fn steps(record: &RunRecord) -> Section {
    let all = whole_run(record);
    let rows = record
        .steps
        .iter()
        .map(|key| step_row(key, &StepStats::of(record, key, &all)))
        .chain(std::iter::once(step_row(
            "all steps",
            &StepStats::of(record, "*", &all),
        )))
        .collect();
    Section {
        title: "Steps, whole run".to_owned(),
        lines: vec![
            "Times run from each step's intended start (coordinated omission corrected); \"as sent\" runs from the request's actual send.".to_owned(),
        ],
        tables: vec![Table { headers: STEP_HEADERS.to_vec(), rows }],
    }
}

fn phases(record: &RunRecord) -> Section {
    let rows = record
        .phases
        .iter()
        .map(|phase| {
            let name = format!("{} [{}–{} s)", phase.name, phase.from_s, phase.to_s);
            step_row(&name, &StepStats::of(record, "*", phase))
        })
        .collect();
    let mut headers = STEP_HEADERS.to_vec();
    headers[0] = "phase (all steps)";
    Section {
        title: "Phases".to_owned(),
        lines: vec![],
        tables: vec![Table { headers, rows }],
    }
}

fn funnel(record: &RunRecord) -> Section {
    let all = whole_run(record);
    let mut rows = Vec::new();
    let mut first_reached: Option<(String, u64)> = None;
    for key in &record.steps {
        let journey = key.split('/').next().unwrap_or_default();
        let stats = StepStats::of(record, key, &all);
        let ok = stats.outcomes.get(Outcome::Ok.name()).copied().unwrap_or(0);
        if first_reached.as_ref().is_none_or(|(j, _)| j != journey) {
            first_reached = Some((journey.to_owned(), stats.ended));
        }
        let entered = first_reached.as_ref().map_or(0, |(_, n)| *n);
        let conversion = if entered == 0 {
            0.0
        } else {
            ok as f64 / entered as f64
        };
        let step_conversion = if stats.ended == 0 {
            0.0
        } else {
            ok as f64 / stats.ended as f64
        };
        rows.push(vec![
            key.clone(),
            stats.ended.to_string(),
            ok.to_string(),
            percent(step_conversion),
            percent(conversion),
        ]);
    }
    let mut milestones = Vec::new();
    for name in ["admitted", "accepted", "confirmed"] {
        let mut histogram = crate::record::histogram();
        for second in &record.timeline {
            second
                .milestones
                .get(name)
                .unwrap_or(&Sparse::default())
                .add_to(&mut histogram);
        }
        if !histogram.is_empty() {
            milestones.push(vec![
                format!("arrival → {name}"),
                histogram.len().to_string(),
                time(histogram.value_at_quantile(0.5) as f64),
                time(histogram.value_at_quantile(0.99) as f64),
                time(histogram.max() as f64),
            ]);
        }
    }
    let mut lines = Vec::new();
    if let Some(fairness) = &record.fairness {
        lines.push(format!(
            "Fairness: {} admitted; {} of admitted pairs were admitted out of arrival order; rank correlation of arrival and admission {:.3} (1 = strict FIFO).",
            fairness.admitted,
            percent(fairness.inversion_share),
            fairness.rank_correlation
        ));
    }
    let mut tables = vec![Table {
        headers: vec![
            "step",
            "reached",
            "ok",
            "step conversion",
            "of journey entries",
        ],
        rows,
    }];
    if !milestones.is_empty() {
        tables.push(Table {
            headers: vec!["milestone", "shoppers", "p50", "p99", "max"],
            rows: milestones,
        });
    }
    Section {
        title: "Funnel".to_owned(),
        lines,
        tables,
    }
}

fn business(record: &RunRecord) -> Section {
    let checks = &record.checks;
    let mut lines = vec![format!(
        "Drop {}: {} orders accepted; replays {} with {} mismatches.",
        checks.drop.as_deref().unwrap_or(""),
        checks.accepted_orders,
        checks.replays,
        checks.replay_mismatches
    )];
    let states: Vec<String> = checks
        .final_states
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    if !states.is_empty() {
        lines.push(format!(
            "Orders' states after the run: {}.",
            states.join(", ")
        ));
    }
    if checks.failures.is_empty() {
        lines.push(
            "Business checks: all held (no oversell, no lost order, replays honoured).".to_owned(),
        );
    }
    lines.extend(checks.failures.iter().map(|f| format!("FAILED: {f}")));
    let rows = checks
        .stock_before
        .iter()
        .map(|(sku, before)| {
            vec![
                sku.clone(),
                before.to_string(),
                checks.units_held.get(sku).copied().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    Section {
        title: "Business checks".to_owned(),
        lines,
        tables: vec![Table {
            headers: vec!["sku", "available before", "held by accepted orders"],
            rows,
        }],
    }
}

fn thresholds(verdict: &Verdict) -> Section {
    let rows = verdict
        .thresholds
        .iter()
        .map(|t| {
            let value = if t.is_time {
                time(t.value)
            } else {
                percent(t.value)
            };
            let result = if t.passed { "passed" } else { "BREACHED" };
            vec![
                t.step.clone(),
                t.phase.clone(),
                t.condition.clone(),
                value,
                result.to_owned(),
            ]
        })
        .collect();
    Section {
        title: "Thresholds".to_owned(),
        lines: vec![],
        tables: vec![Table {
            headers: vec!["step", "phase", "condition", "measured", "result"],
            rows,
        }],
    }
}
