//! Drains 10,000 accepted orders into the simulated legacy shop and prints how well the pace
//! was kept, as the shop measured it:
//!
//! - at 2,000/s over HTTP from the SQLite store, in real time;
//! - at 10/s in process, on paused time (17 minutes of drop in a second or two).
//!
//! `cargo bench -p floodgate-dispatch --bench drain`
//!
//! Targets: achieved rate / limit ≥ 0.95; worst one-second window / limit ≤ 1.00; duplicates 0.
#![allow(clippy::print_stdout)] // a benchmark program reports on stdout

#[path = "../tests/support/mod.rs"]
mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use floodgate_core::{Clock, Order};
use floodgate_dispatch::{Dispatcher, Downstream, Fence, HttpDownstream, Outbox};
use floodgate_testkit::legacy::{LegacyConfig, LegacyServer, LegacyShop};
use support::{MemoryOutbox, T0, orders, settings, store_with};

const ORDERS: u64 = 10_000;

fn main() {
    let real_time = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    real_time.block_on(over_http(2_000));
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    paused.block_on(in_process(10));
}

async fn over_http(rate: u32) {
    let (store, _data) = store_with(ORDERS).await;
    let shop_config = LegacyConfig {
        capacity_rps: rate,
        latency: Duration::from_millis(5),
        ..LegacyConfig::default()
    };
    let server = LegacyServer::start("127.0.0.1:0".parse().expect("address"), shop_config)
        .await
        .expect("legacy shop");
    let downstream =
        HttpDownstream::new(server.orders_url().parse().expect("url"), Clock::system());
    let mut settings = settings(rate);
    settings.max_in_flight = NonZeroU32::new(64).expect("non-zero");
    let downstream = Arc::new(downstream);
    drain(
        &store,
        downstream,
        settings,
        server.shop(),
        "over HTTP, real time",
    )
    .await;
}

async fn in_process(rate: u32) {
    let outbox = MemoryOutbox::new(orders(ORDERS));
    let shop = Arc::new(LegacyShop::new(LegacyConfig {
        capacity_rps: rate,
        ..LegacyConfig::default()
    }));
    drain(
        &outbox,
        Arc::clone(&shop),
        settings(rate),
        &shop,
        "in process, paused time",
    )
    .await;
}

async fn drain<O: Outbox, D: Downstream>(
    outbox: &Arc<O>,
    downstream: Arc<D>,
    settings: floodgate_dispatch::DispatchSettings,
    shop: &LegacyShop,
    how: &str,
) {
    let limit = settings.rate_per_second.get();
    let started = tokio::time::Instant::now();
    let dispatcher = Dispatcher::start(
        Arc::clone(outbox),
        downstream,
        settings,
        Clock::manual(T0).0,
        Arc::new(|_: &Order| {}),
        Fence::solo(),
    );
    while shop.stats().received < ORDERS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    dispatcher.stop().await;
    let stats = shop.stats();
    let received = shop.received();
    let span = (received[received.len() - 1].received_ms - received[0].received_ms) as f64 / 1e3;
    let achieved = (received.len() - 1) as f64 / span;
    println!(
        "limit {limit}/s {how}: {ORDERS} orders in {:.1} s; achieved {achieved:.1}/s = {:.3} of \
         the limit (target >= 0.95); worst one-second window {} = {:.3} of the limit (target <= \
         1.00); duplicates {} (target 0)",
        elapsed.as_secs_f64(),
        achieved / f64::from(limit),
        stats.max_starts_in_any_second,
        stats.max_starts_in_any_second as f64 / f64::from(limit),
        stats.duplicates,
    );
}
