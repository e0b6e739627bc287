//! `floodgate serve`: opens the store, binds the listeners, starts the dispatcher, reloads on
//! SIGHUP, runs until SIGTERM or Ctrl-C.

use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use floodgate_config::{Config, DownstreamConfig, StoreConfig};
use floodgate_dispatch::{DispatchSettings, Dispatcher, Fence, HttpDownstream, Leadership};
use floodgate_gateway::{Clock, Gateway, Listeners, log_lines};
use floodgate_http::ConnectionLoops;
use floodgate_http::server::Listener;
use floodgate_http::tls::{LoadedTls, ServerTls};
use floodgate_store::{PostgresOptions, PostgresStore, SqliteOptions, SqliteStore, Store};
use tokio::net::TcpListener;

use crate::reload::Reloadable;

/// How log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event, with the id and line of the request it was logged for.
    Json,
}

/// Runs the gateway described by `config`: its connections on their own loops (one per core
/// unless `server.worker_threads` says otherwise), everything else on one runtime thread.
pub(crate) fn serve(
    config: Config,
    path: Option<PathBuf>,
    log_format: LogFormat,
) -> anyhow::Result<()> {
    init_logs("info", log_format);
    // Accept loops and background tasks (delivery, observation, pruning) take little: a second
    // thread would mostly be one more to wake.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(config, path))
}

/// Sends log lines to stderr, filtered by `RUST_LOG` or else `default_filter`.
pub(crate) fn init_logs(default_filter: &str, log_format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        // Colour only for a person at a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Text => logs
            .fmt_fields(log_lines::text_fields())
            .event_format(log_lines::TextLines)
            .init(),
        LogFormat::Json => logs.event_format(log_lines::JsonLines).init(),
    }
}

async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
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
    let secret = if config.waiting_room.secret.is_empty() {
        tracing::warn!(
            "no waiting_room.secret: one is generated, so tickets and passes do not survive a \
             restart nor work on another node; set FLOODGATE_SECRET (the same on every node)"
        );
        uuid::Uuid::new_v4().simple().to_string()
    } else {
        config.waiting_room.secret.clone()
    };
    // Read with the configuration: put in force as they were checked.
    let in_force = |loaded: &Option<LoadedTls>| {
        loaded
            .as_ref()
            .map(|loaded| ServerTls::new(Arc::clone(&loaded.config)))
    };
    let (public_tls, admin_tls) = (
        in_force(&config.server.tls),
        in_force(&config.server.admin_tls),
    );
    let listeners = Listeners {
        public: speaking(public, public_tls.clone(), "public")?,
        admin: speaking(admin, admin_tls.clone(), "admin")?,
    };
    let reloadable =
        Reloadable::listen(path, public_tls, admin_tls).context("cannot listen for SIGHUP")?;
    run_gateway(
        config,
        listeners,
        admin_token,
        secret,
        Some(reloadable),
        shutdown_signal(),
    )
    .await
}

/// `tcp` speaking `tls`, or plain HTTP without it; announced as `name` with its URL.
fn speaking(tcp: TcpListener, tls: Option<Arc<ServerTls>>, name: &str) -> anyhow::Result<Listener> {
    let address = tcp.local_addr()?;
    Ok(match tls {
        None => {
            announce(&format!("{name} http://{address}"));
            Listener::plain(tcp)
        }
        Some(tls) => {
            announce(&format!("{name} https://{address}"));
            Listener::tls(tcp, tls)
        }
    })
}

/// Runs the gateway and its dispatcher on bound listeners until `stop` completes, then drains.
pub(crate) async fn run_gateway(
    config: Config,
    listeners: Listeners,
    admin_token: String,
    secret: String,
    reloadable: Option<Reloadable>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = open_store(&config.store).await?;
    let clock = Clock::system();
    let gateway = Gateway::start(
        Arc::clone(&store),
        config.gateway_settings(admin_token, secret),
        clock.clone(),
    )
    .await
    .context("cannot rebuild state from the store")?;
    if let Some(url) = config.downstream.url.clone() {
        let timeout = Duration::from_millis(config.downstream.timeout_ms);
        gateway.probe_downstream_with(Box::new(move || {
            let url = url.clone();
            Box::pin(async move { HttpDownstream::check_reachable(&url, timeout).await })
        }));
    }
    if let Some(reloadable) = reloadable {
        tokio::spawn(reloadable.run(config.clone(), Arc::clone(&gateway)));
    }
    let delivery = start_delivery(&config, &store, &gateway, clock);
    if let Some((dispatcher, _)) = &delivery {
        gateway.report_delivery(Box::new(dispatcher.stats_reader()));
    }
    // The dispatcher stops first (its last answers are recorded) and resigns its term, then the
    // listeners drain and the store closes.
    let shutdown = async {
        stop.await;
        if let Some((dispatcher, leadership)) = delivery {
            dispatcher.stop().await;
            if let Some(leadership) = leadership {
                leadership.stop().await;
            }
        }
    };
    let loops = ConnectionLoops::start(
        config.connection_threads(),
        "floodgate-loop",
        floodgate_store::relay_answers_here,
    )
    .context("cannot start the threads that serve connections")?;
    floodgate_gateway::run(
        listeners,
        gateway,
        config.connection_limits(),
        loops,
        shutdown,
    )
    .await
    .context("shutdown did not complete cleanly")
}

/// The store the config names: PostgreSQL at `store.url`, else the embedded SQLite store.
async fn open_store(config: &StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    let max_batch = usize::try_from(config.max_batch)?;
    let queue_capacity = usize::try_from(config.queue_capacity)?;
    if let Some(url) = &config.url {
        let options = PostgresOptions {
            max_batch,
            queue_capacity,
            ..PostgresOptions::default()
        };
        let node = options.node.clone();
        let store = PostgresStore::open(url, options)
            .await
            .context("cannot open the PostgreSQL store (store.url)")?;
        tracing::info!(%node, "store: PostgreSQL, shared with any other node on it");
        announce(&format!("node {node}"));
        return Ok(Arc::new(store));
    }
    let options = SqliteOptions {
        max_batch,
        queue_capacity,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&config.path, options)
        .with_context(|| format!("cannot open the store in {}", config.path.display()))?;
    Ok(Arc::new(store))
}

/// Starts delivering accepted orders, if a downstream is configured: at once on an unshared
/// store, else whenever this node leads delivery among the nodes sharing it.
fn start_delivery(
    config: &Config,
    store: &Arc<dyn Store>,
    gateway: &Arc<Gateway>,
    clock: Clock,
) -> Option<(Dispatcher, Option<Leadership>)> {
    let shared = store.cluster().is_some();
    let fence = if shared {
        Fence::shared()
    } else {
        Fence::solo_after_restart()
    };
    let dispatcher = start_dispatcher(
        &config.downstream,
        store,
        gateway,
        clock,
        Arc::clone(&fence),
    )?;
    let leadership = shared.then(|| {
        let term = Duration::from_millis(config.store.leader_ttl_ms);
        Leadership::start(Arc::clone(store), fence, term)
    });
    Some((dispatcher, leadership))
}

/// The dispatcher, if a downstream is configured.
fn start_dispatcher(
    config: &DownstreamConfig,
    store: &Arc<dyn Store>,
    gateway: &Arc<Gateway>,
    clock: Clock,
    fence: Arc<Fence>,
) -> Option<Dispatcher> {
    let Some(url) = config.url.clone() else {
        tracing::warn!("no downstream.url: orders are accepted and kept, but not delivered");
        return None;
    };
    tracing::info!(%url, rate_per_second = config.rate_per_second, "delivering to the downstream");
    let whole = |value: u64| {
        NonZeroU32::new(u32::try_from(value).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
    };
    let settings = DispatchSettings {
        rate_per_second: whole(config.rate_per_second),
        max_in_flight: whole(config.max_in_flight),
        max_attempts: whole(config.max_attempts),
        timeout: Duration::from_millis(config.timeout_ms),
        backoff_base: Duration::from_millis(config.backoff_base_ms),
        backoff_max: Duration::from_millis(config.backoff_max_ms),
        breaker_failures: u32::try_from(config.breaker_failures).unwrap_or(u32::MAX),
        breaker_open: Duration::from_millis(config.breaker_open_ms),
    };
    let intake = Arc::clone(gateway);
    Some(Dispatcher::start(
        Arc::clone(store),
        Arc::new(HttpDownstream::new(url, clock.clone())),
        settings,
        clock,
        Arc::new(move |order| intake.intake().return_units(order)),
        fence,
    ))
}

/// Start-up facts on stdout, one per line, for operators and for tests that bind port 0.
pub(crate) fn announce(line: &str) {
    #[allow(clippy::print_stdout)]
    {
        println!("floodgate {line}");
    }
}

pub(crate) async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
