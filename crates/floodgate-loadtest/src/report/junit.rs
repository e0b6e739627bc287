//! JUnit XML: one test case per threshold, business check, regression finding and the run's
//! validity, so CI systems show a load test like any other suite.

use std::fmt::Write;

use super::html::escape;
use crate::record::RunRecord;
use crate::verdict::Verdict;

/// The run's verdict as a JUnit test suite.
pub fn junit(record: &RunRecord, verdict: &Verdict) -> String {
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    let invalid = (!verdict.invalid.is_empty()).then(|| verdict.invalid.join("; "));
    cases.push(("the generator kept its schedule".to_owned(), invalid));
    for t in &verdict.thresholds {
        let failure = (!t.passed).then(|| {
            format!(
                "measured {}",
                if t.is_time {
                    format!("{:.0} µs", t.value)
                } else {
                    format!("{:.4}", t.value)
                }
            )
        });
        cases.push((
            format!("{} @ {}: {}", t.step, t.phase, t.condition),
            failure,
        ));
    }
    if record.checks.drop.is_some() {
        let failures =
            (!verdict.check_failures.is_empty()).then(|| verdict.check_failures.join("; "));
        cases.push((
            "business checks: no oversell, no lost order, replays honoured".to_owned(),
            failures,
        ));
    }
    if let Some(comparison) = &verdict.comparison {
        for f in &comparison.findings {
            let failure = f
                .regressed
                .then(|| format!("baseline {:.4}, this run {:.4}", f.baseline, f.current));
            cases.push((
                format!(
                    "{} @ {}: {} vs run {}",
                    f.step, f.phase, f.metric, comparison.baseline
                ),
                failure,
            ));
        }
    }
    let failures = cases
        .iter()
        .filter(|(_, failure)| failure.is_some())
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"floodgate loadtest {}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" timestamp=\"{}\">",
        escape(&record.scenario),
        cases.len(),
        escape(&record.started_at)
    );
    for (name, failure) in &cases {
        match failure {
            None => {
                let _ = writeln!(
                    out,
                    "  <testcase classname=\"{}\" name=\"{}\"/>",
                    escape(&record.scenario),
                    escape(name)
                );
            }
            Some(message) => {
                let _ = writeln!(
                    out,
                    "  <testcase classname=\"{}\" name=\"{}\"><failure message=\"{}\"/></testcase>",
                    escape(&record.scenario),
                    escape(name),
                    escape(message)
                );
            }
        }
    }
    out.push_str("</testsuite>\n");
    out
}
