//! The Markdown summary: printed at the end of a run and saved for CI comments.

use std::fmt::Write;

use super::{Section, sections};
use crate::record::RunRecord;
use crate::verdict::Verdict;

/// The run's summary as Markdown.
pub fn markdown(record: &RunRecord, verdict: &Verdict) -> String {
    let mut out = String::new();
    for (
        i,
        Section {
            title,
            lines,
            tables,
        },
    ) in sections(record, verdict).iter().enumerate()
    {
        let level = if i == 0 { "#" } else { "##" };
        let _ = writeln!(out, "{level} {title}\n");
        for line in lines {
            let _ = writeln!(out, "{line}\n");
        }
        for table in tables {
            let _ = writeln!(out, "| {} |", table.headers.join(" | "));
            let _ = writeln!(out, "|{}", " --- |".repeat(table.headers.len()));
            for row in &table.rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
            out.push('\n');
        }
    }
    out
}
