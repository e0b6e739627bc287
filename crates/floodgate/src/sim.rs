//! `floodgate sim legacy`: the simulated legacy shop on a real socket, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use floodgate_sim::legacy::{LegacyConfig, LegacyServer};

/// The simulators.
#[derive(Debug, Subcommand)]
pub(crate) enum Simulator {
    /// A legacy shop: catalog pages under /shop/, POST /orders taking --capacity-rps orders a
    /// second and degrading above it, GET /sim/received and GET /sim/stats.
    Legacy(LegacyArgs),
}

/// How the simulated legacy shop behaves.
#[derive(Debug, Args)]
pub(crate) struct LegacyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Orders a second it takes before it degrades.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    capacity_rps: u32,
    /// Time to take an order at or below capacity.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Time to serve a catalog page.
    #[arg(long, default_value_t = 50)]
    page_latency_ms: u64,
    /// Share of orders answered 503 at random (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    error_rate: f64,
    /// Retry-After seconds sent with those 503s.
    #[arg(long)]
    retry_after_s: Option<u64>,
    /// Share of orders taken but answered too late for the caller (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    timeout_rate: f64,
    /// Share of orders whose connection is dropped unanswered (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    drop_rate: f64,
    /// Seconds after start-up when a full outage begins (with --outage-s).
    #[arg(long, requires = "outage_s")]
    outage_after_s: Option<u64>,
    /// How long the outage lasts, in seconds.
    #[arg(long, requires = "outage_after_s")]
    outage_s: Option<u64>,
    /// Orders of this SKU are refused for good (422).
    #[arg(long)]
    reject_sku: Option<String>,
    /// Seed of the fault dice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn share(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|share| (0.0..=1.0).contains(share))
        .ok_or_else(|| format!("{text:?} is not a share between 0 and 1"))
}

/// Runs a simulator until SIGTERM or Ctrl-C.
pub(crate) fn run(simulator: Simulator) -> anyhow::Result<()> {
    let Simulator::Legacy(args) = simulator;
    let config = LegacyConfig {
        capacity_rps: args.capacity_rps,
        latency: Duration::from_millis(args.latency_ms),
        page_latency: Duration::from_millis(args.page_latency_ms),
        error_rate: args.error_rate,
        retry_after_s: args.retry_after_s,
        timeout_rate: args.timeout_rate,
        drop_rate: args.drop_rate,
        outage: args
            .outage_after_s
            .zip(args.outage_s)
            .map(|(after, lasting)| (Duration::from_secs(after), Duration::from_secs(lasting))),
        reject_sku: args.reject_sku,
        seed: args.seed,
    };
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(async {
            let server = LegacyServer::start(args.listen, config)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            crate::serve::announce(&format!("sim legacy http://{}", server.address()));
            crate::serve::shutdown_signal().await;
            let stats = serde_json::to_string(&server.shop().stats())?;
            crate::serve::announce(&format!("sim legacy stats {stats}"));
            Ok(())
        })
}
