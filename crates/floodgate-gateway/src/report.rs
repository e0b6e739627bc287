//! A drop's report, `GET /admin/drops/{drop}/report`: what a shop reads after a drop to plan
//! the next one — arrivals over time, queue waits, time to sell out, conversion per step,
//! refusals, the delivery timeline and the dead letters. JSON for tools; a rendered page for
//! browsers (or `?format=html`).
//!
//! Orders, their states and their delivery come from the store, so those figures survive a
//! restart and match `GET /admin/orders` exactly. Arrivals, the queue and refusals come from
//! the drop's once-a-second [`DropSeries`], kept in memory while the node runs.
//!
//! Queue waits are read off the series as a bakery would: the queue is first come, first
//! served, so the wait of place `p` is from the second the queue's tail reached `p` to the
//! second its head did — one second's resolution, with no per-shopper record to keep.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use floodgate_core::{DropId, DropState, Order, OrderState, Timestamp};
use floodgate_store::OrderFilter;
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::error::ApiError;
use crate::timeline::{DropSample, DropSeries};
use floodgate_http::{escape_html, wants_html};

/// Orders read per store query while the report is built.
const PAGE: u32 = 1_000;
/// Dead letters listed in full; the rest are counted.
const MAX_DEAD_LETTERS_LISTED: usize = 1_000;
/// About this many buckets on a timeline, whatever the drop's length.
const TARGET_BUCKETS: i64 = 120;
/// Bucket widths a reader can add up in their head, in seconds.
const NICE_BUCKETS_S: [i64; 14] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    format: Option<String>,
}

/// The report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    drop: DropId,
    name: String,
    state: &'static str,
    starts_at: Timestamp,
    ends_at: Timestamp,
    generated_at: Timestamp,
    /// The drop is over (ended, or sold out with nothing left to deliver): the figures are final.
    complete: bool,
    stock: StockFigures,
    /// Orders and units per state, from the store.
    orders_by_state: BTreeMap<&'static str, StateFigures>,
    selling: Selling,
    funnel: Vec<FunnelStep>,
    queue: Option<QueueFigures>,
    /// The node's refusals while the drop was on (the front door's are not per drop).
    refusals: Refusals,
    timeline: Timeline,
    dead_letters_total: u64,
    dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Serialize)]
struct StockFigures {
    units: u64,
    available: u64,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct StateFigures {
    orders: u64,
    units: u64,
}

#[derive(Debug, Serialize)]
struct Selling {
    /// Seconds from the start to the first accepted order.
    first_order_after_s: Option<f64>,
    /// Seconds from the start to the order that took the last unit (units returned later by
    /// refusals count as taken, so this is when the stock first ran out).
    sold_out_after_s: Option<f64>,
    customers: u64,
}

#[derive(Debug, Serialize)]
struct FunnelStep {
    step: &'static str,
    shoppers: u64,
    /// Share of the step before that reached this one.
    of_previous: Option<f64>,
}

#[derive(Debug, Serialize)]
struct QueueFigures {
    arrivals: u64,
    /// Joins answered "sold out" (a shopper who tried twice counts twice).
    turned_away: u64,
    /// Places handed out in the line (the rest got a pass at once).
    queued: u64,
    /// Places whose turn came (admitted, or skipped for going silent).
    turns: u64,
    longest_line: u64,
    wait_p50_s: Option<i64>,
    wait_p90_s: Option<i64>,
    wait_p99_s: Option<i64>,
    wait_max_s: Option<i64>,
}

#[derive(Debug, Default, Serialize)]
struct Refusals {
    shed: u64,
    rate_limited: u64,
    origin_errors: u64,
    orders_overloaded: u64,
}

#[derive(Debug, Serialize)]
struct Timeline {
    bucket_s: i64,
    buckets: Vec<Bucket>,
}

/// One bucket of the timeline; counts are of what happened in it, gauges are at its end.
#[derive(Debug, Default, Clone, Serialize)]
struct Bucket {
    at: Timestamp,
    arrivals: u64,
    admitted: u64,
    waiting: Option<u64>,
    available: Option<u64>,
    accepted: u64,
    confirmed: u64,
    rejected: u64,
    failed: u64,
}

#[derive(Debug, Serialize)]
struct DeadLetter {
    order_id: String,
    customer: String,
    sku: String,
    quantity: u32,
    attempts: u32,
    last_error: Option<String>,
    failed_at: Timestamp,
}

/// What the report keeps of each order while scanning them.
struct Scanned {
    accepted_at: i64,
    updated_at: i64,
    state: OrderState,
    quantity: u32,
}

/// `GET /admin/drops/{drop}/report`.
pub(crate) async fn drop_report(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
    Query(query): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let drop_id = DropId::parse(&drop).map_err(|_| ApiError::UnknownDrop)?;
    let html = match query.format.as_deref() {
        None => wants_html(&headers),
        Some("html") => true,
        Some("json") => false,
        Some(_) => {
            return Err(ApiError::InvalidBody("format must be html or json".into()));
        }
    };
    let report = build(&gateway, &drop_id).await?;
    Ok(if html {
        Html(render_html(&report)).into_response()
    } else {
        Json(report).into_response()
    })
}

async fn build(gateway: &Gateway, drop_id: &DropId) -> Result<Report, ApiError> {
    let now = gateway.clock.now();
    let (spec, state, available) = gateway
        .intake
        .with_drop(drop_id, |ledger| {
            (
                ledger.spec().clone(),
                ledger.state_at(now),
                ledger.available_total(),
            )
        })
        .ok_or(ApiError::UnknownDrop)?;
    let store = gateway.intake.store();
    let counts = store.order_counts(drop_id.clone()).await?;
    let mut orders = Vec::new();
    let mut customers = HashSet::new();
    let mut confirmed_customers = HashSet::new();
    let mut dead_letters = Vec::new();
    let mut after = None;
    loop {
        let filter = OrderFilter {
            drop_id: Some(drop_id.clone()),
            state: None,
            after: after.take(),
            limit: PAGE,
        };
        let page = store.orders(filter).await?;
        for order in &page {
            customers.insert(order.customer.clone());
            if order.state == OrderState::Confirmed {
                confirmed_customers.insert(order.customer.clone());
            }
            if order.state == OrderState::Failed && dead_letters.len() < MAX_DEAD_LETTERS_LISTED {
                dead_letters.push(dead_letter(order));
            }
            orders.push(Scanned {
                accepted_at: order.accepted_at.unix_millis(),
                updated_at: order.updated_at.unix_millis(),
                state: order.state,
                quantity: order.quantity,
            });
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.order_id.clone()),
            _ => break,
        }
    }
    orders.sort_by_key(|order| order.accepted_at);
    let stock: u64 = spec.skus.iter().map(|sku| sku.stock).sum();
    let series = gateway.timeline.drop_series(drop_id);
    let starts_ms = spec.starts_at.unix_millis();
    let after_start = |at: i64| (at - starts_ms) as f64 / 1e3;
    let sold_out_after_s = orders
        .iter()
        .scan(0u64, |taken, order| {
            *taken += u64::from(order.quantity);
            Some((*taken, order.accepted_at))
        })
        .find(|(taken, _)| *taken >= stock && stock > 0)
        .map(|(_, at)| after_start(at));
    let state_figures = |state: OrderState| {
        counts
            .get(&state)
            .map(|count| StateFigures {
                orders: count.orders,
                units: count.units,
            })
            .unwrap_or_default()
    };
    let undelivered = [OrderState::Accepted, OrderState::Submitting]
        .iter()
        .map(|state| state_figures(*state).orders)
        .sum::<u64>();
    let last_sample = series.samples.last().copied();
    let queue = spec
        .waiting_room
        .enabled
        .then(|| queue_figures(&series.samples));
    let mut funnel = Vec::new();
    if let Some(sample) = last_sample.filter(|_| spec.waiting_room.enabled) {
        funnel.push(("arrived", sample.room.arrivals + sample.room.turned_away));
        funnel.push(("admitted", sample.room.admitted));
    }
    funnel.push(("ordered", customers.len() as u64));
    funnel.push(("confirmed", confirmed_customers.len() as u64));
    let funnel = funnel
        .iter()
        .enumerate()
        .map(|(index, (step, shoppers))| FunnelStep {
            step,
            shoppers: *shoppers,
            of_previous: index.checked_sub(1).and_then(|previous| {
                let before = funnel[previous].1;
                (before > 0).then(|| *shoppers as f64 / before as f64)
            }),
        })
        .collect();
    let refusals = match (series.samples.first(), last_sample) {
        (Some(first), Some(last)) => Refusals {
            shed: last.shed - first.shed,
            rate_limited: last.rate_limited - first.rate_limited,
            origin_errors: last.origin_errors - first.origin_errors,
            orders_overloaded: last.orders_overloaded - first.orders_overloaded,
        },
        _ => Refusals::default(),
    };
    Ok(Report {
        drop: drop_id.clone(),
        name: spec.name.clone(),
        state: state.as_str(),
        starts_at: spec.starts_at,
        ends_at: spec.ends_at,
        generated_at: now,
        complete: state == DropState::Ended || (state == DropState::SoldOut && undelivered == 0),
        stock: StockFigures {
            units: stock,
            available,
        },
        orders_by_state: OrderState::ALL
            .iter()
            .map(|state| (state.as_str(), state_figures(*state)))
            .collect(),
        selling: Selling {
            first_order_after_s: orders.first().map(|order| after_start(order.accepted_at)),
            sold_out_after_s,
            customers: customers.len() as u64,
        },
        funnel,
        queue,
        refusals,
        timeline: timeline(&series, &orders, spec.starts_at),
        dead_letters_total: state_figures(OrderState::Failed).orders,
        dead_letters,
    })
}

fn dead_letter(order: &Order) -> DeadLetter {
    DeadLetter {
        order_id: order.order_id.to_string(),
        customer: order.customer.clone(),
        sku: order.sku.clone(),
        quantity: order.quantity,
        attempts: order.attempts,
        last_error: order.last_error.clone(),
        failed_at: order.updated_at,
    }
}

/// Queue figures from the series: arrivals and places in line, and the waits of the places
/// whose turn came.
fn queue_figures(samples: &[DropSample]) -> QueueFigures {
    let waits = queue_waits(samples);
    let turns: u64 = waits.iter().map(|(_, places)| places).sum();
    let quantile = |q: f64| -> Option<i64> {
        let rank = ((q * turns as f64).ceil() as u64).max(1);
        let mut seen = 0;
        waits.iter().find_map(|(wait, places)| {
            seen += places;
            (seen >= rank).then_some(*wait)
        })
    };
    let last = samples.last().copied();
    QueueFigures {
        arrivals: last.map_or(0, |sample| sample.room.arrivals),
        turned_away: last.map_or(0, |sample| sample.room.turned_away),
        queued: last.map_or(0, |sample| sample.room.queued),
        turns,
        longest_line: samples
            .iter()
            .map(|sample| sample.waiting)
            .max()
            .unwrap_or(0),
        wait_p50_s: quantile(0.5),
        wait_p90_s: quantile(0.9),
        wait_p99_s: quantile(0.99),
        wait_max_s: waits.last().map(|(wait, _)| *wait),
    }
}

/// `(wait in seconds, places that waited that long)`, shortest first: place `p` joined in the
/// first sample whose tail reached `p` and had its turn in the first whose head did.
fn queue_waits(samples: &[DropSample]) -> Vec<(i64, u64)> {
    let mut waits: BTreeMap<i64, u64> = BTreeMap::new();
    let mut tail = 0;
    let mut served_through = 0;
    for sample in samples {
        let turn_at = sample.at.unix_millis();
        while served_through < sample.room.head {
            let place = served_through + 1;
            while samples[tail].room.queued < place {
                tail += 1;
            }
            let joined = &samples[tail];
            let through = sample.room.head.min(joined.room.queued);
            let wait_s = (turn_at - joined.at.unix_millis()) / 1_000;
            *waits.entry(wait_s).or_default() += through - served_through;
            served_through = through;
        }
    }
    waits.into_iter().collect()
}

/// The drop's life in buckets: the series' arrivals, admissions and gauges, and the store's
/// acceptances and delivery outcomes.
fn timeline(series: &DropSeries, orders: &[Scanned], starts_at: Timestamp) -> Timeline {
    let times = series
        .samples
        .iter()
        .map(|sample| sample.at.unix_millis())
        .chain(orders.iter().flat_map(|o| [o.accepted_at, o.updated_at]));
    // From the first thing recorded (a drop defined long after its start date begins there),
    // or from the start when nothing is.
    let (first, last) = times.fold((i64::MAX, i64::MIN), |(lo, hi), at| {
        (lo.min(at), hi.max(at))
    });
    let first = if first == i64::MAX {
        starts_at.unix_millis()
    } else {
        first
    };
    let last = last.max(first);
    let span_s = (last - first) / 1_000 + 1;
    let wanted = (span_s + TARGET_BUCKETS - 1) / TARGET_BUCKETS;
    let bucket_s = NICE_BUCKETS_S
        .into_iter()
        .find(|nice| *nice >= wanted.max(series.resolution_s))
        .unwrap_or_else(|| wanted.max(series.resolution_s));
    let origin = first - first.rem_euclid(bucket_s * 1_000);
    let count = usize::try_from((last - origin) / (bucket_s * 1_000) + 1).unwrap_or(1);
    let mut buckets: Vec<Bucket> = (0..count)
        .map(|index| Bucket {
            at: Timestamp::from_unix_millis(origin + index as i64 * bucket_s * 1_000),
            ..Bucket::default()
        })
        .collect();
    let bucket_of = |at: i64| {
        usize::try_from((at - origin) / (bucket_s * 1_000))
            .unwrap_or(0)
            .min(count - 1)
    };
    let mut previous: Option<&DropSample> = None;
    for sample in &series.samples {
        let bucket = &mut buckets[bucket_of(sample.at.unix_millis())];
        if let Some(before) = previous {
            bucket.arrivals += sample.room.arrivals + sample.room.turned_away
                - before.room.arrivals
                - before.room.turned_away;
            bucket.admitted += sample.room.admitted - before.room.admitted;
        } else {
            bucket.arrivals += sample.room.arrivals + sample.room.turned_away;
            bucket.admitted += sample.room.admitted;
        }
        bucket.waiting = Some(sample.waiting);
        bucket.available = Some(sample.available);
        previous = Some(sample);
    }
    for order in orders {
        buckets[bucket_of(order.accepted_at)].accepted += 1;
        let settled = &mut buckets[bucket_of(order.updated_at)];
        match order.state {
            OrderState::Confirmed => settled.confirmed += 1,
            OrderState::Rejected => settled.rejected += 1,
            OrderState::Failed => settled.failed += 1,
            _ => {}
        }
    }
    Timeline { bucket_s, buckets }
}

/// One series of a chart: its name, colour, and value in a bucket.
struct Series {
    name: &'static str,
    colour: &'static str,
    value: fn(&Bucket) -> f64,
}

impl Series {
    const fn new(name: &'static str, colour: &'static str, value: fn(&Bucket) -> f64) -> Self {
        Self {
            name,
            colour,
            value,
        }
    }
}

/// One chart of the report page.
struct Chart {
    title: &'static str,
    /// Counts per bucket (the title says the bucket's width), rather than a level at its end.
    per_bucket: bool,
    /// Only for drops with a waiting room.
    needs_room: bool,
    /// Stacked, bottom first.
    series: &'static [Series],
}

const CHARTS: [Chart; 5] = [
    Chart {
        title: "Arrivals and admissions",
        per_bucket: true,
        needs_room: true,
        series: &[
            Series::new("arrived", "#2f81f7", |b| b.arrivals as f64),
            Series::new("admitted", "#3fb950", |b| b.admitted as f64),
        ],
    },
    Chart {
        title: "Shoppers waiting",
        per_bucket: false,
        needs_room: true,
        series: &[Series::new("waiting", "#a371f7", |b| {
            b.waiting.unwrap_or(0) as f64
        })],
    },
    Chart {
        title: "Units on sale",
        per_bucket: false,
        needs_room: false,
        series: &[Series::new("available", "#d29922", |b| {
            b.available.unwrap_or(0) as f64
        })],
    },
    Chart {
        title: "Orders accepted",
        per_bucket: true,
        needs_room: false,
        series: &[Series::new("accepted", "#2f81f7", |b| b.accepted as f64)],
    },
    Chart {
        title: "Deliveries to the order system",
        per_bucket: true,
        needs_room: false,
        series: &[
            Series::new("confirmed", "#3fb950", |b| b.confirmed as f64),
            Series::new("rejected", "#d29922", |b| b.rejected as f64),
            Series::new("dead-lettered", "#f85149", |b| b.failed as f64),
        ],
    },
];

/// `chart` over `buckets`: bars per bucket, series stacked, as inline SVG with a legend.
fn bar_chart(chart: &Chart, buckets: &[Bucket], bucket_s: i64) -> String {
    let stacked = |bucket: &Bucket| -> Vec<f64> {
        chart
            .series
            .iter()
            .map(|series| (series.value)(bucket))
            .collect()
    };
    let top = buckets
        .iter()
        .map(|bucket| stacked(bucket).iter().sum::<f64>())
        .fold(0.0, f64::max)
        .max(1.0);
    let (width, height) = (720.0, 160.0);
    let step = width / buckets.len().max(1) as f64;
    let mut svg = String::new();
    for (index, bucket) in buckets.iter().enumerate() {
        let mut base = height;
        for (series, value) in chart.series.iter().zip(stacked(bucket)) {
            let bar = value / top * (height - 4.0);
            if bar > 0.0 {
                let _ = write!(
                    svg,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bar:.1}" fill="{}"/>"#,
                    index as f64 * step,
                    base - bar,
                    (step * 0.85).max(0.5),
                    series.colour
                );
                base -= bar;
            }
        }
    }
    let legend: String = chart
        .series
        .iter()
        .map(|series| {
            format!(
                r#"<span><i style="background:{}"></i>{}</span>"#,
                series.colour, series.name
            )
        })
        .collect();
    let title = if chart.per_bucket {
        format!("{} per {bucket_s} s", chart.title)
    } else {
        chart.title.to_owned()
    };
    format!(
        r#"<section><h2>{title}</h2><div class="top">top: {top}</div><svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{svg}</svg><div class="legend">{legend}</div></section>"#
    )
}

fn seconds(value: Option<f64>) -> String {
    value.map_or("–".into(), |s| format!("{s:.1} s"))
}

fn render_html(report: &Report) -> String {
    let charts: String = CHARTS
        .iter()
        .filter(|chart| !chart.needs_room || report.queue.is_some())
        .map(|chart| bar_chart(chart, &report.timeline.buckets, report.timeline.bucket_s))
        .collect();
    let funnel: String = report
        .funnel
        .iter()
        .map(|step| {
            let share = step
                .of_previous
                .map_or(String::new(), |share| format!("{:.1} %", share * 100.0));
            format!(
                "<tr><td>{}</td><td>{}</td><td>{share}</td></tr>",
                step.step, step.shoppers
            )
        })
        .collect();
    let states: String = OrderState::ALL
        .iter()
        .filter_map(|state| Some((state.as_str(), report.orders_by_state.get(state.as_str())?)))
        .map(|(state, figures)| {
            format!(
                r#"<tr data-state="{state}"><td>{state}</td><td>{}</td><td>{}</td></tr>"#,
                figures.orders, figures.units
            )
        })
        .collect();
    let queue = report.queue.as_ref().map_or(String::new(), |queue| {
        let wait = |s: Option<i64>| s.map_or("–".into(), |s| format!("{s} s"));
        format!(
            "<section><h2>Queue</h2><table><tr><td>arrivals</td><td>{}</td></tr>\
             <tr><td>turned away: sold out</td><td>{}</td></tr><tr><td>places in line</td><td>{}</td></tr><tr><td>turns</td><td>{}</td></tr>\
             <tr><td>longest line</td><td>{}</td></tr><tr><td>wait p50 / p90 / p99 / max</td>\
             <td>{} / {} / {} / {}</td></tr></table></section>",
            queue.arrivals,
            queue.turned_away,
            queue.queued,
            queue.turns,
            queue.longest_line,
            wait(queue.wait_p50_s),
            wait(queue.wait_p90_s),
            wait(queue.wait_p99_s),
            wait(queue.wait_max_s)
        )
    });
    let dead_letters: String = report
        .dead_letters
        .iter()
        .map(|letter| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{} × {}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&letter.order_id),
                escape_html(&letter.customer),
                letter.quantity,
                escape_html(&letter.sku),
                letter.attempts,
                escape_html(letter.last_error.as_deref().unwrap_or(""))
            )
        })
        .collect();
    let refusals = &report.refusals;
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Drop report · {name}</title><style>
body{{margin:0;font:14px/1.4 system-ui,sans-serif;background:#0f1720;color:#e6edf3}}
header,main{{padding:12px 16px}} header{{border-bottom:1px solid #26333f}} h1{{font-size:20px;margin:0}}
main{{display:grid;gap:12px;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr))}}
section{{background:#17212b;border-radius:8px;padding:10px 12px;min-width:0}}
h2{{color:#9fb0c0;font-size:12px;text-transform:uppercase;letter-spacing:.04em;margin:0 0 6px}}
svg{{width:100%;height:140px;background:#121b24;border-radius:4px;display:block}}
.top,.legend,.dim{{color:#9fb0c0;font-size:12px}} .legend span{{margin-right:12px}}
.legend i{{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}}
table{{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}}
td,th{{padding:2px 4px;border-bottom:1px solid #26333f;text-align:right}} td:first-child,th:first-child{{text-align:left}}
</style></head><body><header><h1>{name}</h1><div class="dim">drop <b>{drop}</b> · {state} · {starts} → {ends} ·
{complete} · generated {generated}</div></header><main>
<section><h2>Selling</h2><table><tr><td>stock</td><td id="stock">{units}</td></tr>
<tr><td>still on sale</td><td>{available}</td></tr>
<tr><td>first order after the start</td><td>{first}</td></tr>
<tr><td>sold out after the start</td><td id="sold-out-after">{sold_out}</td></tr>
<tr><td>customers with an order</td><td>{customers}</td></tr></table></section>
<section><h2>Conversion</h2><table><tr><th>step</th><th>shoppers</th><th>of the step before</th></tr>{funnel}</table></section>
<section><h2>Orders by state</h2><table><tr><th>state</th><th>orders</th><th>units</th></tr>{states}</table></section>
{queue}
<section><h2>Refused while the drop was on (whole node)</h2><table>
<tr><td>shed by priority</td><td>{shed}</td></tr><tr><td>rate limited</td><td>{limited}</td></tr>
<tr><td>origin errors</td><td>{origin}</td></tr><tr><td>orders refused for capacity (503)</td><td>{overloaded}</td></tr></table></section>
{charts}
<section><h2>Dead letters ({dead_total})</h2><table><tr><th>order</th><th>customer</th><th>units</th><th>attempts</th><th>last error</th></tr>{dead_letters}</table></section>
</main></body></html>"#,
        name = escape_html(&report.name),
        drop = report.drop,
        state = report.state,
        starts = report.starts_at.to_rfc3339(),
        ends = report.ends_at.to_rfc3339(),
        complete = if report.complete {
            "final"
        } else {
            "still running: figures will change"
        },
        generated = report.generated_at.to_rfc3339(),
        units = report.stock.units,
        available = report.stock.available,
        first = seconds(report.selling.first_order_after_s),
        sold_out = seconds(report.selling.sold_out_after_s),
        customers = report.selling.customers,
        shed = refusals.shed,
        limited = refusals.rate_limited,
        origin = refusals.origin_errors,
        overloaded = refusals.orders_overloaded,
        dead_total = report.dead_letters_total,
    )
}

#[cfg(test)]
mod tests {
    use floodgate_core::RoomTotals;

    use super::*;

    fn sample(second: i64, queued: u64, head: u64) -> DropSample {
        DropSample {
            at: Timestamp::from_unix_millis(second * 1_000),
            room: RoomTotals {
                arrivals: queued,
                turned_away: 0,
                queued,
                head,
                admitted: head,
            },
            waiting: queued - head,
            available: 0,
            shed: 0,
            rate_limited: 0,
            origin_errors: 0,
            orders_overloaded: 0,
        }
    }

    #[test]
    fn waits_are_read_first_come_first_served() {
        // Ten join at 0 s, ten more at 2 s; five have their turn at 1 s, ten at 4 s, five at 10 s.
        let samples = [
            sample(0, 10, 0),
            sample(1, 10, 5),
            sample(2, 20, 5),
            sample(4, 20, 15),
            sample(10, 20, 20),
        ];
        assert_eq!(queue_waits(&samples), [(1, 5), (2, 5), (4, 5), (8, 5)]);
        let figures = queue_figures(&samples);
        assert_eq!((figures.turns, figures.longest_line), (20, 15));
        assert_eq!(
            (figures.wait_p50_s, figures.wait_p99_s, figures.wait_max_s),
            (Some(2), Some(8), Some(8))
        );
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape_html(r#"<b class="x">&'"#),
            "&lt;b class=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
