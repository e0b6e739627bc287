//! floodgate's gateway: the public listener (health, drops, order intake, and the front door to
//! the shop's origin for everything else) and the admin listener (drop definitions, order
//! listing), on top of a [`Store`].
//!
//! The gateway never calls the downstream: delivering orders is the dispatcher's job, and the
//! store is the only link between the two.

mod admin_api;
mod body;
mod dashboard;
mod error;
mod intake;
pub mod log_lines;
mod metrics;
mod observe;
mod prewarm;
mod public_api;
mod queue_api;
mod report;
mod request_id;
mod stock_leases;
mod timeline;
mod traffic;
mod waiting_room;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floodgate_http::ConnectionLoops;
use floodgate_http::server::{self, ConnectionLimits, Listener};
use floodgate_store::{Store, StoreError};
use tokio::sync::watch;

pub use error::ApiError;
pub use floodgate_core::Clock;
pub use intake::{Intake, IntakeLimits, Placed};
pub use metrics::ReloadOutcome;
pub use observe::Observed;
pub use prewarm::DownstreamProbe;

/// How often expired idempotency keys are forgotten.
const KEY_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Where a customer's identity comes from (`drops.identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The `customer` field of the body: for demos and tests only, anyone can name anyone.
    Body,
    /// A header the shop's own login sets (`"header:<Name>"`); the body's `customer` must match.
    Header(axum::http::HeaderName),
    /// A signed visitor cookie floodgate issues on the first join (`"cookie"`); the visitor id is
    /// the customer, whatever the body says.
    Cookie,
}

/// Shared state of both listeners.
pub struct Gateway {
    intake: Intake,
    rooms: waiting_room::Rooms,
    /// Accent colour of the waiting-room page.
    room_colour: String,
    identity: IdentitySource,
    front_door: floodgate_front_door::FrontDoor,
    clock: Clock,
    admin_token: String,
    max_body_bytes: usize,
    /// Proxies whose forwarding headers are believed.
    trusted_proxies: Vec<ipnet::IpNet>,
    delivery: Option<DeliveryPace>,
    counters: metrics::Counters,
    /// Failed admin authentications by client address (see `admin_api`).
    admin_failures: floodgate_front_door::KeyedLimiter,
    /// Each listener's connections, for `/metrics`.
    public_connections: Arc<server::ConnectionStats>,
    admin_connections: Arc<server::ConnectionStats>,
    /// Latency of the public listener's answers, by lane.
    traffic: traffic::Traffic,
    /// The once-a-second record behind the dashboard and the drop reports.
    timeline: timeline::Timeline,
    /// The drops' pre-warm passes.
    prewarm: prewarm::Prewarm,
    metrics_public: bool,
    delivery_reader: std::sync::OnceLock<DeliveryReader>,
    /// The delivery backlog last observed, in milliseconds (for `/metrics`).
    delivery_backlog_ms: AtomicU64,
    // Set at shutdown so `/readyz` tells the load balancer to stop sending traffic.
    draining: AtomicBool,
}

/// The settings [`Gateway::start`] needs beyond the store.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Bearer token of the admin API (empty refuses every admin request).
    pub admin_token: String,
    /// `/metrics` needs no token.
    pub metrics_public: bool,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Proxies (`server.trusted_proxies`) whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Intake limits.
    pub intake: IntakeLimits,
    /// Routes, pools, rate limits and cache of the rest of the shop's traffic.
    pub front_door: floodgate_front_door::settings::FrontDoorConfig,
    /// Keys that sign waiting-room tickets and passes (the current one) and still accept
    /// tokens signed before a rotation (the previous ones).
    pub token_keys: floodgate_core::TokenKeys,
    /// A waiter silent this long loses their place.
    pub abandon_after: Duration,
    /// Accent colour of the waiting-room page (a CSS colour).
    pub room_colour: String,
    /// Where a customer's identity comes from.
    pub identity: IdentitySource,
    /// The delivery pace behind the intake, when orders are delivered at all.
    pub delivery: Option<DeliveryPace>,
}

/// Reads the dispatcher's figures at scrape time; the bin wires one in with
/// [`Gateway::report_delivery`] (the gateway reads them, it never calls the downstream).
pub type DeliveryReader = Box<dyn Fn() -> floodgate_core::delivery::DispatchStats + Send + Sync>;

/// How fast accepted orders leave for the downstream, and how far behind is too far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPace {
    /// `downstream.rate_per_second`.
    pub rate_per_second: u64,
    /// Waiting rooms admit fewer while the undelivered orders would take longer than this.
    pub max_backlog: Duration,
}

impl Gateway {
    /// Rebuilds the in-memory state from `store` and returns a gateway ready to serve.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: GatewaySettings,
        clock: Clock,
    ) -> Result<Arc<Self>, StoreError> {
        let rooms = waiting_room::Rooms::new(
            settings.token_keys,
            i64::try_from(settings.abandon_after.as_millis()).unwrap_or(i64::MAX),
            &store,
        );
        let intake = Intake::restore(store, settings.intake, clock.now()).await?;
        Ok(Arc::new(Self {
            intake,
            front_door: floodgate_front_door::FrontDoor::new(&settings.front_door),
            room_colour: settings.room_colour,
            identity: settings.identity,
            rooms,
            clock,
            admin_token: settings.admin_token,
            max_body_bytes: settings.max_body_bytes,
            trusted_proxies: settings.trusted_proxies,
            delivery: settings.delivery,
            counters: metrics::Counters::default(),
            admin_failures: floodgate_front_door::KeyedLimiter::new(
                admin_api::AUTH_FAILURES_PER_S,
                admin_api::AUTH_FAILURE_BURST,
            ),
            public_connections: Arc::default(),
            admin_connections: Arc::default(),
            traffic: traffic::Traffic::default(),
            timeline: timeline::Timeline::default(),
            prewarm: prewarm::Prewarm::default(),
            delivery_reader: std::sync::OnceLock::new(),
            delivery_backlog_ms: AtomicU64::new(0),
            metrics_public: settings.metrics_public,
            draining: AtomicBool::new(false),
        }))
    }

    /// The order intake.
    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    /// Counts a configuration reload for `/metrics`.
    pub fn count_reload(&self, outcome: ReloadOutcome) {
        self.counters.reload(outcome);
    }

    /// Lets `/metrics` read the dispatcher's figures; a second reader is ignored.
    pub fn report_delivery(&self, reader: DeliveryReader) {
        let _ = self.delivery_reader.set(reader);
    }

    /// Who the holder of a token must be, by `drops.identity`: the trusted header's or the
    /// visitor cookie's identity, which a request without them lacks (`None` in body mode, where
    /// anyone can name anyone and a token is bound to nothing the request proves).
    pub(crate) fn token_holder(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<floodgate_core::Identity>, ApiError> {
        match &self.identity {
            IdentitySource::Body => Ok(None),
            IdentitySource::Header(header) => headers
                .get(header)
                .and_then(|value| value.to_str().ok())
                .map(|name| Some(floodgate_core::Identity::of(name)))
                .ok_or_else(|| ApiError::MissingIdentity(header.to_string())),
            IdentitySource::Cookie => visitor_cookie(headers)
                .and_then(|cookie| self.rooms.keys().open_value(cookie))
                .map(|visitor| Some(floodgate_core::Identity::of(visitor)))
                .ok_or(ApiError::MissingVisitor),
        }
    }

    /// Who a request comes from, by `drops.identity`: the body's `customer` (checked against the
    /// trusted header in header mode), or the visitor of a signed cookie in cookie mode, where a
    /// request without one gets a new visitor when `may_issue` (joining) and is refused otherwise.
    pub(crate) fn resolve_customer(
        &self,
        headers: &axum::http::HeaderMap,
        claimed: String,
        may_issue: bool,
    ) -> Result<Customer, ApiError> {
        let name = match &self.identity {
            IdentitySource::Body => claimed,
            IdentitySource::Header(header) => {
                let named = headers
                    .get(header)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| ApiError::MissingIdentity(header.to_string()))?;
                if named != claimed {
                    return Err(ApiError::IdentityMismatch);
                }
                claimed
            }
            IdentitySource::Cookie => {
                let keys = self.rooms.keys();
                if let Some(visitor) = visitor_cookie(headers).and_then(|c| keys.open_value(c)) {
                    return Ok(Customer {
                        name: visitor.to_owned(),
                        new_cookie: None,
                    });
                }
                if !may_issue {
                    return Err(ApiError::MissingVisitor);
                }
                let visitor = format!("v-{}", uuid::Uuid::new_v4().simple());
                let cookie = format!(
                    "{VISITOR_COOKIE}={}; Path=/; Max-Age={VISITOR_COOKIE_MAX_AGE_S}; HttpOnly; Secure; SameSite=Lax",
                    keys.sign_value(&visitor)
                );
                let new_cookie = axum::http::HeaderValue::from_str(&cookie).ok();
                return Ok(Customer {
                    name: visitor,
                    new_cookie,
                });
            }
        };
        Ok(Customer {
            name,
            new_cookie: None,
        })
    }
}

/// The visitor cookie of `drops.identity = "cookie"`.
const VISITOR_COOKIE: &str = "floodgate_visitor";
/// A visitor stays the same customer for a year, longer than any drop and its limits.
const VISITOR_COOKIE_MAX_AGE_S: u32 = 365 * 24 * 3_600;

/// The visitor cookie's signed value, from any `Cookie` header.
fn visitor_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| {
            cookie
                .trim()
                .strip_prefix(VISITOR_COOKIE)?
                .strip_prefix('=')
        })
}

/// Who a request comes from, and the visitor cookie to set when one was just issued.
pub(crate) struct Customer {
    pub(crate) name: String,
    pub(crate) new_cookie: Option<axum::http::HeaderValue>,
}

/// The public listener's router.
pub fn public_router(gateway: Arc<Gateway>) -> axum::Router {
    public_api::router(gateway)
}

/// The admin listener's router.
pub fn admin_router(gateway: Arc<Gateway>) -> axum::Router {
    admin_api::router(gateway)
}

/// The two sockets the gateway serves.
pub struct Listeners {
    /// Shoppers' traffic.
    pub public: Listener,
    /// Operators' traffic.
    pub admin: Listener,
}

/// Serves both listeners on `loops` until `shutdown` completes, then drains: `/readyz` turns
/// `503`, no new connections are accepted, admitted requests finish, and the store commits what
/// it was given.
pub async fn run(
    listeners: Listeners,
    gateway: Arc<Gateway>,
    limits: ConnectionLimits,
    loops: ConnectionLoops,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    // Both listeners' connections; the loops stop once both have drained.
    let loops = Arc::new(loops);
    gateway.prewarm.open_on(Arc::clone(&loops));
    // Closed by `run` itself once `shutdown` completes; every serve loop watches it.
    let (stop, stopped) = watch::channel(false);
    let wall_clock: server::WallClock = {
        let clock = gateway.clock.clone();
        Arc::new(move || clock.now().unix_millis())
    };
    let public_gate = public_api::PublicGate::new(Arc::clone(&gateway));
    let public = tokio::spawn(server::serve(
        listeners.public,
        move |client| public_gate.connection(client),
        limits,
        Arc::clone(&loops),
        stopped.clone(),
        Arc::clone(&wall_clock),
        Arc::clone(&gateway.public_connections),
    ));
    let admin_router = admin_router(Arc::clone(&gateway));
    let admin = tokio::spawn(server::serve(
        listeners.admin,
        move |client| admin_api::AdminConnection {
            router: admin_router.clone(),
            client,
        },
        limits,
        loops,
        stopped.clone(),
        wall_clock,
        Arc::clone(&gateway.admin_connections),
    ));
    let pruner = tokio::spawn(prune_keys(Arc::clone(&gateway), stopped.clone()));
    let lease_keeper = tokio::spawn(tend_leases(Arc::clone(&gateway), stopped.clone()));
    let observer = tokio::spawn(observe_every_second(Arc::clone(&gateway), stopped));
    shutdown.await;
    tracing::info!("shutting down: draining requests");
    gateway.draining.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
    let _ = tokio::join!(public, admin, pruner, lease_keeper, observer);
    if let Err(error) = gateway.intake.return_leases().await {
        tracing::warn!(%error, "cannot return leased stock; it goes back once the leases lapse");
    }
    gateway.intake.store().close().await?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// How often a node sharing its store tends its leases of stock.
const LEASE_TEND_INTERVAL: Duration = Duration::from_millis(100);
/// How often a node sharing its store advances the shared waiting rooms it serves.
const ROOM_TEND_INTERVAL: Duration = Duration::from_millis(250);
/// How often a node sharing its store looks for drops defined or changed through another.
const DROP_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

async fn tend_leases(gateway: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    if gateway.intake.store().cluster().is_none() {
        return;
    }
    let mut ticks = tokio::time::interval(LEASE_TEND_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_follow = tokio::time::Instant::now();
    let mut next_rooms = next_follow;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if tokio::time::Instant::now() >= next_follow {
                    next_follow += DROP_FOLLOW_INTERVAL;
                    if let Err(error) = gateway.intake.follow_drops().await {
                        tracing::warn!(%error, "cannot read the drops other nodes defined");
                    }
                }
                if let Err(error) = gateway.intake.tend_leases(gateway.clock.now()).await {
                    tracing::warn!(%error, "cannot tend the stock leases; trying again shortly");
                }
                if tokio::time::Instant::now() >= next_rooms {
                    next_rooms += ROOM_TEND_INTERVAL;
                    gateway.rooms.tend(&gateway.intake, gateway.clock.now()).await;
                }
            }
            () = server::stop_requested(&mut stopped) => return,
        }
    }
}

/// How often the gateway reads itself (see [`Gateway::observe`]): the dashboard's refresh,
/// the drop reports' resolution, and how soon the waiting rooms learn the delivery backlog.
const OBSERVE_INTERVAL: Duration = Duration::from_secs(1);

async fn observe_every_second(gateway: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(OBSERVE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(error) = gateway.observe().await {
                    tracing::warn!(%error, "cannot read the orders by state for the timeline");
                }
            }
            () = server::stop_requested(&mut stopped) => return,
        }
    }
}

async fn prune_keys(gateway: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(KEY_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => gateway.intake.prune_keys(gateway.clock.now()),
            () = server::stop_requested(&mut stopped) => return,
        }
    }
}

/// Locks a piece of the gateway's shared state (a ledger, a room's view, the timeline). Every
/// change under these locks is a few plain assignments, so a panic while one is held cannot
/// leave half an update behind, and a poisoned lock is still safe to use.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
