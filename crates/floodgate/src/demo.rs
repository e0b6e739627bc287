//! `floodgate demo`: the same drop twice against a simulated legacy shop that takes 10 orders a
//! second — once straight at the shop, once through floodgate — measured by the load tester and
//! printed side by side.
//!
//! Every figure is measured: the shoppers' side by `floodgate loadtest` (in process, as a black
//! box over HTTP), the shop's side by the simulator's own ledger.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use floodgate_config::Config;
use floodgate_gateway::Listeners;
use floodgate_http::server::Listener;
use floodgate_loadtest::record::Phase;
use floodgate_loadtest::summary::StepStats;
use floodgate_loadtest::{Finished, Options, loadtest};
use floodgate_sim::legacy::{LegacyConfig, LegacyServer, LegacyStats};
use floodgate_sim::{HttpClient, Method};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::serve::{LogFormat, init_logs, run_gateway};

/// The legacy shop's capacity, in orders a second: the demo's premise.
const LEGACY_CAPACITY: u32 = 10;
/// How long the demo waits, after the run through floodgate, for delivery to finish.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// The demo's admin token: its gateway listens on loopback only and stops with the demo.
const ADMIN_TOKEN: &str = "demo";

/// Arguments of `floodgate demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Shoppers who come for the drop.
    #[arg(long, default_value_t = 5_000)]
    shoppers: u64,
    /// Units on sale.
    #[arg(long, default_value_t = 100)]
    stock: u64,
    /// Seconds over which the shoppers arrive.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Where the runs, their reports and `demo.json` are written.
    #[arg(long, default_value = "floodgate-demo")]
    dir: PathBuf,
}

/// One column of the side-by-side table.
#[derive(Debug, Serialize)]
struct Column {
    /// Orders shoppers were told were taken (2xx).
    orders_accepted: u64,
    /// Orders the legacy shop recorded by the end.
    orders_in_legacy_shop: u64,
    /// Units sold beyond the stock.
    oversold_units: u64,
    /// Orders shoppers were told were taken that nobody has.
    orders_lost: u64,
    /// Orders the shop took while the shopper was told it failed.
    orders_taken_behind_an_error: u64,
    /// Order attempts that ended in an error or a timeout, as shoppers saw them.
    order_errors_seen_by_shoppers: u64,
    /// Health checks that failed, of those made.
    health_checks_failed: u64,
    /// Health checks made.
    health_checks: u64,
    /// The most order requests the legacy shop had to start in any one second.
    legacy_peak_requests_per_second: u64,
    /// p50 and p99 of each step, milliseconds, from the step's intended start.
    steps: Vec<StepLatency>,
    /// The run's HTML report.
    report: PathBuf,
}

#[derive(Debug, Serialize)]
struct StepLatency {
    step: String,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs the demo on a new runtime.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.shoppers > 0, "--shoppers must be at least 1");
    ensure!(args.stock > 0, "--stock must be at least 1");
    ensure!(args.duration_s > 0, "--duration-s must be at least 1");
    // Errors only: the demo's own report is the output.
    init_logs("error", LogFormat::Text);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(demo(args))
}

async fn demo(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    say(&format!(
        "floodgate demo: {} shoppers within {} s for {} units; the legacy shop takes {LEGACY_CAPACITY} orders/s",
        args.shoppers, args.duration_s, args.stock
    ));

    say("1/2 the drop straight at the legacy shop …");
    let shop = start_legacy().await?;
    let scenario = scenario(&args, "demo-straight", STRAIGHT_ORDERING, "/shop/health");
    let straight = rehearse(&scenario, &format!("http://{}", shop.address()), &args.dir).await?;
    let straight = column(&straight, &shop.shop().stats(), &args, Through::Nothing);
    drop(shop);

    say("2/2 the same drop through floodgate …");
    let shop = start_legacy().await?;
    let through = through_floodgate(&args, &shop).await?;

    let table = render(&straight, &through);
    say(&table);
    let json =
        serde_json::to_vec_pretty(&json!({ "straight": straight, "through_floodgate": through }))?;
    std::fs::write(args.dir.join("demo.json"), json)?;
    say(&format!(
        "reports: {} (straight) and {} (through floodgate); the drop's own report {}; figures in {}",
        straight.report.display(),
        through.report.display(),
        args.dir.join("drop-report.html").display(),
        args.dir.join("demo.json").display()
    ));
    Ok(())
}

async fn start_legacy() -> anyhow::Result<LegacyServer> {
    let config = LegacyConfig {
        capacity_rps: LEGACY_CAPACITY,
        ..LegacyConfig::default()
    };
    LegacyServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .context("cannot start the simulated legacy shop")
}

async fn rehearse(scenario: &str, target: &str, dir: &Path) -> anyhow::Result<Finished> {
    let options = Options {
        scenario_text: scenario.to_owned(),
        target: target.to_owned(),
        runs_dir: dir.join("runs"),
        baseline: None,
        progress: std::io::stderr().is_terminal(),
    };
    Ok(loadtest(options).await?)
}

/// Runs floodgate in front of `shop`, sends the drop through it, waits for delivery, stops it.
async fn through_floodgate(args: &Args, shop: &LegacyServer) -> anyhow::Result<Column> {
    let store = tempfile::tempdir().context("cannot create the demo's store directory")?;
    // The product page is cached at the edge for ten seconds, the rest of the shop passes.
    let config = Config::from_toml(&format!(
        "{shop}[store]\npath = \"{store}\"\n\
         [[routes]]\nname = \"product\"\npath = \"/shop/sneaker\"\nclass = \"browse\"\n\
         cache = {{ ttl_s = 10, stale_while_revalidate_s = 30 }}\n",
        shop = shop.floodgate_config(LEGACY_CAPACITY),
        store = store.path().display(),
    ))
    .map_err(|problems| anyhow::anyhow!("the demo's own configuration is invalid: {problems:?}"))?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let public = TcpListener::bind(loopback).await?;
    let admin = TcpListener::bind(loopback).await?;
    let (public_url, admin_url) = (
        format!("http://{}", public.local_addr()?),
        format!("http://{}", admin.local_addr()?),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(run_gateway(
        config,
        Listeners {
            public: Listener::plain(public),
            admin: Listener::plain(admin),
        },
        ADMIN_TOKEN.to_owned(),
        uuid::Uuid::new_v4().simple().to_string(),
        None,
        async {
            let _ = stopped.await;
        },
    ));
    say(&format!(
        "   floodgate: public {public_url}, metrics {admin_url}/metrics (Authorization: Bearer {ADMIN_TOKEN})"
    ));
    say(&format!(
        "   live dashboard while it runs: {admin_url}/admin/dashboard#token={ADMIN_TOKEN}"
    ));

    let client = HttpClient::new(Duration::from_secs(10));
    // The drop starts now, so its report's "after the start" figures read as in a real drop.
    let starts_at = floodgate_gateway::Clock::system().now();
    let drop = json!({
        "name": "Demo drop", "starts_at": starts_at, "ends_at": starts_at.add_millis(3_600_000),
        "limit_per_customer": 1,
        "skus": [{"sku": "sneaker", "name": "Sneaker", "price_cents": 12_000, "stock": args.stock}],
        "waiting_room": {"enabled": true, "max_active": 50, "prequeue_s": 0, "pass_ttl_s": 300},
        "expected_shoppers": args.shoppers, "prewarm_paths": ["/shop/sneaker"],
    });
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let created = client
        .send(
            Method::PUT,
            &format!("{admin_url}/admin/drops/demo"),
            &[("authorization", &authorization)],
            Some(&drop),
        )
        .await
        .map_err(|error| anyhow::anyhow!("cannot create the demo drop: {error}"))?;
    ensure!(
        created.status.is_success(),
        "creating the demo drop answered {}",
        created.status
    );

    let finished = rehearse(
        &scenario(args, "demo-through-floodgate", THROUGH_ORDERING, "/healthz"),
        &public_url,
        &args.dir,
    )
    .await?;
    let accepted = finished.record.checks.accepted_orders;
    say(&format!(
        "   {accepted} orders accepted; floodgate delivers them at {LEGACY_CAPACITY}/s …"
    ));
    let deadline = Instant::now() + SETTLE_LIMIT;
    while (shop.shop().stats().received) < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let column = column(&finished, &shop.shop().stats(), args, Through::Floodgate);
    save_drop_report(&client, &admin_url, &authorization, &args.dir).await?;
    let _ = stop.send(());
    gateway.await.context("the demo gateway panicked")??;
    Ok(column)
}

/// Keeps the drop's report, as the shop would read it after the drop: JSON and the page.
async fn save_drop_report(
    client: &HttpClient,
    admin_url: &str,
    authorization: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    for format in ["json", "html"] {
        let url = format!("{admin_url}/admin/drops/demo/report?format={format}");
        let (status, _, body) = client
            .send_bytes(
                Method::GET,
                &url,
                &[("authorization", authorization)],
                bytes::Bytes::new(),
            )
            .await
            .map_err(|error| anyhow::anyhow!("cannot read the drop report: {error}"))?;
        ensure!(status.is_success(), "the drop report answered {status}");
        let path = dir.join(format!("drop-report.{format}"));
        std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Through {
    Nothing,
    Floodgate,
}

fn column(finished: &Finished, legacy: &LegacyStats, args: &Args, through: Through) -> Column {
    let record = &finished.record;
    let all = Phase {
        name: "all".to_owned(),
        from_s: 0,
        to_s: u32::MAX,
    };
    let stats = |step: &str| StepStats::of(record, step, &all);
    let count =
        |stats: &StepStats, outcome: &str| stats.outcomes.get(outcome).copied().unwrap_or(0);
    let order = stats("shopper/order");
    let health = stats("health/check");
    let order_errors = ["http_error", "timeout", "connection_error"]
        .iter()
        .map(|o| count(&order, o))
        .sum();
    let (accepted, lost, held) = match through {
        // The shop answers 201 only for an order it recorded; without stock of its own, every
        // unit it took beyond the drop's stock is oversold.
        Through::Nothing => (count(&order, "ok"), 0, legacy.received),
        // The load tester's checks: every 202 looked up, units held by orders not refused; the
        // shop's own count is the other witness.
        Through::Floodgate => {
            let checks = &record.checks;
            let lost = checks.final_states.get("unknown").copied().unwrap_or(0);
            (
                checks.accepted_orders,
                lost,
                checks.units_held.values().sum::<u64>().max(legacy.received),
            )
        }
    };
    let steps = record
        .steps
        .iter()
        .map(|key| {
            let stats = stats(key);
            StepLatency {
                step: key.clone(),
                p50_ms: stats.response.p50 / 1e3,
                p99_ms: stats.response.p99 / 1e3,
            }
        })
        .collect();
    Column {
        orders_accepted: accepted,
        orders_in_legacy_shop: legacy.received,
        oversold_units: held.saturating_sub(args.stock),
        orders_lost: lost,
        orders_taken_behind_an_error: match through {
            Through::Nothing => legacy.received.saturating_sub(accepted),
            Through::Floodgate => 0,
        },
        order_errors_seen_by_shoppers: order_errors,
        health_checks_failed: health.ended - count(&health, "ok"),
        health_checks: health.ended,
        legacy_peak_requests_per_second: legacy.max_starts_in_any_second,
        steps,
        report: finished.dir.join("report.html"),
    }
}

fn render(straight: &Column, through: &Column) -> String {
    let rows: Vec<(String, String, String)> = [
        (
            "orders accepted (told to shoppers)",
            straight.orders_accepted,
            through.orders_accepted,
        ),
        (
            "orders the legacy shop has",
            straight.orders_in_legacy_shop,
            through.orders_in_legacy_shop,
        ),
        (
            "units oversold",
            straight.oversold_units,
            through.oversold_units,
        ),
        ("orders lost", straight.orders_lost, through.orders_lost),
        (
            "orders taken while the shopper saw an error",
            straight.orders_taken_behind_an_error,
            through.orders_taken_behind_an_error,
        ),
        (
            "order errors and timeouts seen by shoppers",
            straight.order_errors_seen_by_shoppers,
            through.order_errors_seen_by_shoppers,
        ),
        (
            "legacy shop: most order requests in one second",
            straight.legacy_peak_requests_per_second,
            through.legacy_peak_requests_per_second,
        ),
    ]
    .into_iter()
    .map(|(label, a, b)| (label.to_owned(), a.to_string(), b.to_string()))
    .chain(std::iter::once((
        "health checks failed".to_owned(),
        format!(
            "{} of {}",
            straight.health_checks_failed, straight.health_checks
        ),
        format!(
            "{} of {}",
            through.health_checks_failed, through.health_checks
        ),
    )))
    .chain(latency_rows(straight, through))
    .collect();
    let width = rows
        .iter()
        .map(|(label, _, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut table = format!(
        "\n{:width$}  {:>24}  {:>24}\n",
        "", "straight at the shop", "through floodgate"
    );
    for (label, a, b) in rows {
        table.push_str(&format!("{label:width$}  {a:>24}  {b:>24}\n"));
    }
    table
}

/// p50 / p99 per step; steps only one side has show "–" on the other.
fn latency_rows(straight: &Column, through: &Column) -> Vec<(String, String, String)> {
    let mut unique: Vec<&str> = Vec::new();
    for step in straight.steps.iter().chain(&through.steps) {
        if !unique.contains(&step.step.as_str()) {
            unique.push(&step.step);
        }
    }
    let cell = |column: &Column, step: &str| {
        column
            .steps
            .iter()
            .find(|s| s.step == step)
            .map_or("–".to_owned(), |s| {
                format!("{:.1} / {:.1} ms", s.p50_ms, s.p99_ms)
            })
    };
    unique
        .into_iter()
        .map(|step| {
            (
                format!("{step} p50 / p99"),
                cell(straight, step),
                cell(through, step),
            )
        })
        .collect()
}

/// Shoppers straight at the shop: the product page, then the order at its order endpoint.
const STRAIGHT_ORDERING: &str = r#"[[journeys.steps]]
name = "order"
post = "/orders"
body = '{{"order_id":"{run}-{shopper}","drop":"{drop}","sku":"{sku}","quantity":1,"customer":"{customer}","accepted_at":"2026-01-01T00:00:00Z"}}'
headers = { "Idempotency-Key" = "{run}-{shopper}" }"#;

/// Shoppers through floodgate: the product page, the waiting room, the order with the pass.
const THROUGH_ORDERING: &str = r#"[[journeys.steps]]
name = "queue"
queue = "poll"
give_up_after_s = 120
[[journeys.steps]]
name = "order"
order = {}
retries = 3"#;

/// The demo's scenario `name`: a pulse of shoppers who see the product page, then order as
/// `ordering` says; `health_path` is the target's health check.
fn scenario(args: &Args, name: &str, ordering: &str, health_path: &str) -> String {
    format!(
        r#"name = "{name}"
seed = 7
[arrivals]
shape = "pulse"
shoppers = {shoppers}
jitter_s = {duration}
[http]
timeout_ms = 5000
[generator]
drain_s = 150
[values]
drop = "demo"
skus = ["sneaker"]
[[journeys]]
name = "shopper"
weight = 19
[[journeys.steps]]
name = "product page"
get = "/shop/sneaker"
{ordering}
[[journeys]]
name = "health"
weight = 1
[[journeys.steps]]
name = "check"
get = "{health_path}"
"#,
        shoppers = args.shoppers,
        duration = args.duration_s,
    )
}

/// Progress and results on stdout.
fn say(line: &str) {
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
}
