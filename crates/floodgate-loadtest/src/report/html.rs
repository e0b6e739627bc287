//! The HTML report: one self-contained, well-formed file with hand-drawn SVG charts and no
//! external assets, so it opens anywhere, from a CI artifact or an email.

use std::fmt::Write;

use super::{Section, sections, time};
use crate::metrics::Outcome;
use crate::record::{RunRecord, SecondRecord, histogram};
use crate::verdict::Verdict;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 28.0;
const COLOURS: [&str; 6] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
];

/// Escapes text for XML content and attributes.
pub(super) use floodgate_http::escape_html as escape;

/// The run's report as one HTML page.
pub fn html(record: &RunRecord, verdict: &Verdict) -> String {
    let mut out = String::new();
    let title = escape(&format!(
        "floodgate loadtest: {} ({})",
        record.scenario, record.run_id
    ));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>{title}</title>\n\
         <style>body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:62em;padding:0 1em;color:#111}}\
         table{{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}th{{background:#f3f4f6}}svg{{display:block;margin:.4em 0 1.2em}}\
         .axis{{stroke:#999;stroke-width:1}}.grid{{stroke:#eee;stroke-width:1}}text{{font:11px system-ui,sans-serif;fill:#444}}</style>\n\
         </head>\n<body>\n"
    );
    let sections = sections(record, verdict);
    let mut sections = sections.into_iter();
    if let Some(first) = sections.next() {
        write_section(&mut out, &first, "h1");
    }
    out.push_str("<h2>Over time</h2>\n");
    charts(&mut out, &record.timeline);
    for section in sections {
        write_section(&mut out, &section, "h2");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn write_section(out: &mut String, section: &Section, heading: &str) {
    let _ = writeln!(out, "<{heading}>{}</{heading}>", escape(&section.title));
    for line in &section.lines {
        // The Markdown emphasis of the verdict line becomes <strong>.
        let mut parts = escape(line)
            .split("**")
            .map(str::to_owned)
            .collect::<Vec<_>>();
        for (i, part) in parts.iter_mut().enumerate() {
            if i % 2 == 1 {
                *part = format!("<strong>{part}</strong>");
            }
        }
        let _ = writeln!(out, "<p>{}</p>", parts.concat());
    }
    for table in &section.tables {
        out.push_str("<table>\n<tr>");
        for header in &table.headers {
            let _ = write!(out, "<th>{}</th>", escape(header));
        }
        out.push_str("</tr>\n");
        for row in &table.rows {
            out.push_str("<tr>");
            for cell in row {
                let _ = write!(out, "<td>{}</td>", escape(cell));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
}

struct Series {
    name: &'static str,
    values: Vec<f64>,
}

fn charts(out: &mut String, timeline: &[SecondRecord]) {
    let per_second =
        |f: &dyn Fn(&SecondRecord) -> f64| timeline.iter().map(f).collect::<Vec<f64>>();
    let outcome = |s: &SecondRecord, names: &[&str]| -> f64 {
        s.steps
            .values()
            .flat_map(|step| &step.outcomes)
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, n)| *n as f64)
            .sum()
    };
    let rate = [
        Series {
            name: "arrivals/s",
            values: per_second(&|s| s.arrivals as f64),
        },
        Series {
            name: "answers/s",
            values: per_second(&|s| s.statuses.values().sum::<u64>() as f64),
        },
        Series {
            name: "steps ok/s",
            values: per_second(&|s| outcome(s, &[Outcome::Ok.name()])),
        },
    ];
    line_chart(out, "Rate", &rate, |v| format!("{v:.0}"));

    let quantile = |s: &SecondRecord, q: f64, as_sent: bool| -> f64 {
        let mut h = histogram();
        for step in s.steps.values() {
            if as_sent {
                &step.service
            } else {
                &step.response
            }
            .add_to(&mut h);
        }
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64
        }
    };
    let latency = [
        Series {
            name: "p50",
            values: per_second(&|s| quantile(s, 0.5, false)),
        },
        Series {
            name: "p99",
            values: per_second(&|s| quantile(s, 0.99, false)),
        },
        Series {
            name: "p99 as sent",
            values: per_second(&|s| quantile(s, 0.99, true)),
        },
    ];
    line_chart(
        out,
        "Step latency from the intended start (all steps)",
        &latency,
        time,
    );

    let queue = [
        Series {
            name: "waiting in a queue",
            values: per_second(&|s| s.waiting as f64),
        },
        Series {
            name: "in a journey",
            values: per_second(&|s| s.in_flight as f64),
        },
    ];
    line_chart(out, "Shoppers", &queue, |v| format!("{v:.0}"));

    let class = |s: &SecondRecord, low: u16| -> f64 {
        s.statuses
            .range(low..low + 100)
            .map(|(_, n)| *n as f64)
            .sum()
    };
    let statuses = [
        Series {
            name: "2xx",
            values: per_second(&|s| class(s, 200)),
        },
        Series {
            name: "3xx",
            values: per_second(&|s| class(s, 300)),
        },
        Series {
            name: "4xx",
            values: per_second(&|s| class(s, 400)),
        },
        Series {
            name: "5xx",
            values: per_second(&|s| class(s, 500)),
        },
        Series {
            name: "no answer",
            values: per_second(&|s| outcome(s, &["timeout", "connection_error"])),
        },
    ];
    line_chart(out, "Answers by status", &statuses, |v| format!("{v:.0}"));
}

/// A round number at or above `value`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= value)
        .unwrap_or(10.0 * magnitude)
}

fn line_chart(out: &mut String, title: &str, series: &[Series], label: impl Fn(f64) -> String) {
    let seconds = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let top = nice_ceiling(
        series
            .iter()
            .flat_map(|s| &s.values)
            .copied()
            .fold(0.0, f64::max),
    );
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |i: usize| LEFT + plot_w * i as f64 / (seconds - 1) as f64;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"16\" style=\"font-weight:600\">{}</text>",
        escape(title)
    );
    for tick in 0..=4 {
        let value = top * f64::from(tick) / 4.0;
        let at = y(value);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{at:.1}\" x2=\"{:.1}\" y2=\"{at:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            at + 4.0,
            escape(&label(value))
        );
    }
    let x_step = nice_ceiling(seconds as f64 / 8.0) as usize;
    for second in (0..seconds).step_by(x_step.max(1)) {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{second} s</text>",
            x(second),
            HEIGHT - 8.0
        );
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .map(|(t, &v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" points=\"{}\"/>",
            points.join(" ")
        );
        let legend_x = LEFT + 200.0 + 120.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{legend_x:.1}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"17\">{}</text>",
            legend_x + 14.0,
            escape(s.name)
        );
    }
    out.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(4800.0), 5000.0);
    }
}
