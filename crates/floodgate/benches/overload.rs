//! Overload: an origin that serves 4 requests at a time, 20 ms each (200 requests a second),
//! offered ten times that through floodgate for 10 s (95 % browse, 5 % checkout: half the
//! origin's capacity; open-loop arrivals; shoppers who give up after 2 s), once with admission
//! on and once with it off.
//!
//! Prints, side by side: goodput (answers served in time, per second) against the origin's
//! capacity (target >= 90 %), health-check p99 (target < 50 ms), and how many checkouts were
//! shed in a second in which browsing was still being served (target 0).
//!
//! `cargo bench -p floodgate --bench overload`
#![allow(clippy::print_stdout)] // a benchmark program reports on stdout

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodgate_testkit::origin::{OriginConfig, TestOrigin};
use floodgate_testkit::{GatewayProcess, HttpClient, StatusCode};
use tokio::time::Instant;

const ORIGIN_SLOTS: usize = 4;
const SERVICE_TIME: Duration = Duration::from_millis(20);
const CAPACITY_PER_S: f64 = 200.0;
const OFFERED_PER_S: u64 = 2_000;
const RUN: Duration = Duration::from_secs(10);
const PATIENCE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Tally {
    served: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
    /// Served and shed per second of the run.
    served_in: [AtomicU64; SECONDS],
    shed_in: [AtomicU64; SECONDS],
}

/// Seconds of answers tracked: the run plus the shoppers' patience.
const SECONDS: usize = 13;

struct Outcome {
    browse: Tally,
    checkout: Tally,
    health_p99: Duration,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let on = runtime.block_on(run(true));
    let off = runtime.block_on(run(false));
    for (name, outcome) in [("admission on", &on), ("admission off", &off)] {
        let served = outcome.browse.served.load(Ordering::Relaxed)
            + outcome.checkout.served.load(Ordering::Relaxed);
        let goodput = served as f64 / RUN.as_secs_f64();
        let checkout_shed_beside_browse: u64 = (0..SECONDS)
            .filter(|&second| outcome.browse.served_in[second].load(Ordering::Relaxed) > 0)
            .map(|second| outcome.checkout.shed_in[second].load(Ordering::Relaxed))
            .sum();
        println!(
            "{name:>13}: goodput {goodput:.0}/s = {:.0} % of capacity (target >= 90 %); health p99 \
             {:.1} ms (target < 50); checkouts shed while browse was served {} (target 0); \
             checkout served {} shed {} failed {}; browse served {} shed {} failed {}",
            100.0 * goodput / CAPACITY_PER_S,
            outcome.health_p99.as_secs_f64() * 1e3,
            checkout_shed_beside_browse,
            outcome.checkout.served.load(Ordering::Relaxed),
            outcome.checkout.shed.load(Ordering::Relaxed),
            outcome.checkout.failed.load(Ordering::Relaxed),
            outcome.browse.served.load(Ordering::Relaxed),
            outcome.browse.shed.load(Ordering::Relaxed),
            outcome.browse.failed.load(Ordering::Relaxed),
        );
    }
}

async fn run(admission: bool) -> Outcome {
    let origin = TestOrigin::start(OriginConfig {
        capacity: Some(ORIGIN_SLOTS),
        service_time: SERVICE_TIME,
    })
    .await
    .expect("origin");
    let data = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[origin]\nurl = \"{}\"\nmax_concurrency = 16\n[admission]\nenabled = {admission}\n\
         [[routes]]\npath = \"/page/checkout/**\"\nclass = \"checkout\"\n\
         [[routes]]\npath = \"/page/browse/**\"\nclass = \"browse\"\n",
        origin.url()
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_floodgate"));
    let gateway = GatewayProcess::spawn(binary, data.path(), &config).expect("gateway");
    let client = HttpClient::new(PATIENCE);
    let outcome = Arc::new(Outcome {
        browse: Tally::default(),
        checkout: Tally::default(),
        health_p99: Duration::ZERO,
    });
    let started = Instant::now();
    let mut shoppers = tokio::task::JoinSet::new();
    let interval = Duration::from_secs(1) / OFFERED_PER_S as u32;
    let health = tokio::spawn(probe_health(
        client.clone(),
        format!("{}/healthz", gateway.public_url),
        started + RUN,
    ));
    for arrival in 0..(OFFERED_PER_S * RUN.as_secs()) {
        tokio::time::sleep_until(started + interval * arrival as u32).await;
        let checkout = arrival % 20 == 0;
        let url = format!(
            "{}/page/{}/item-{arrival}",
            gateway.public_url,
            if checkout { "checkout" } else { "browse" }
        );
        let (client, outcome) = (client.clone(), Arc::clone(&outcome));
        shoppers.spawn(async move {
            let tally = if checkout {
                &outcome.checkout
            } else {
                &outcome.browse
            };
            let answered = client.get(&url, &[]).await;
            let second = (started.elapsed().as_secs() as usize).min(SECONDS - 1);
            match answered {
                Ok(answer) if answer.status == StatusCode::OK => {
                    tally.served_in[second].fetch_add(1, Ordering::Relaxed);
                    &tally.served
                }
                Ok(answer) if answer.status == StatusCode::SERVICE_UNAVAILABLE => {
                    tally.shed_in[second].fetch_add(1, Ordering::Relaxed);
                    &tally.shed
                }
                _ => &tally.failed,
            }
            .fetch_add(1, Ordering::Relaxed);
        });
    }
    while shoppers.join_next().await.is_some() {}
    let health_p99 = health.await.expect("probe");
    let mut outcome = Arc::try_unwrap(outcome).unwrap_or_else(|_| panic!("shoppers are done"));
    outcome.health_p99 = health_p99;
    outcome
}

/// Asks `/healthz` every 20 ms until `until`; the 99th percentile of its latency.
async fn probe_health(client: HttpClient, url: String, until: Instant) -> Duration {
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let asked = Instant::now();
        let answered = client.get(&url, &[]).await;
        latencies.push(match answered {
            Ok(answer) if answer.status == StatusCode::OK => asked.elapsed(),
            _ => PATIENCE,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}
