//! `floodgate serve`: opens the store, binds the listeners, runs until SIGTERM or Ctrl-C.

use std::sync::Arc;

use anyhow::Context;
use floodgate_gateway::{Clock, Config, Gateway, Listeners};
use floodgate_store::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;

/// Runs the gateway described by `config` on a new multi-threaded runtime.
pub(crate) fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let options = SqliteOptions {
        max_batch: usize::try_from(config.store.max_batch)?,
        queue_capacity: usize::try_from(config.store.queue_capacity)?,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&config.store.path, options)
        .with_context(|| format!("cannot open the store in {}", config.store.path.display()))?;
    let public = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let admin = TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.admin_listen)",
                config.server.admin_listen
            )
        })?;
    let admin_token = if config.server.admin_token.is_empty() {
        let generated = uuid::Uuid::new_v4().simple().to_string();
        announce(&format!(
            "admin-token {generated} (generated; set FLOODGATE_ADMIN_TOKEN to choose one)"
        ));
        generated
    } else {
        config.server.admin_token.clone()
    };
    let gateway = Gateway::start(
        Arc::new(store),
        config.gateway_settings(admin_token),
        Clock::system(),
    )
    .await
    .context("cannot rebuild state from the store")?;
    announce(&format!("public http://{}", public.local_addr()?));
    announce(&format!("admin http://{}", admin.local_addr()?));
    floodgate_gateway::run(
        Listeners { public, admin },
        gateway,
        config.connection_limits(),
        shutdown_signal(),
    )
    .await
    .context("shutdown did not complete cleanly")
}

/// Start-up facts on stdout, one per line, for operators and for tests that bind port 0.
fn announce(line: &str) {
    #[allow(clippy::print_stdout)]
    {
        println!("floodgate {line}");
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
