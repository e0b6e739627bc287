//! The front door: everything on the public listener that is not floodgate's own API goes to the
//! shop's origin pools, routed by `[[routes]]`, rate limited, admitted by priority, and cached.
//!
//! One request: match the first route whose method and glob fit (else the `[origin]` default);
//! check its rate limits (`429`); serve it from the edge cache if it can (one origin request per
//! URL however many miss at once); otherwise take a slot in its pool (critical routes skip
//! this), wait briefly if the pool is full, or be shed (`503`); then forward it to an upstream
//! of the pool and stream the answer back.

mod admission;
mod cache;
mod pool;
mod proxy;
mod rate_limit;
pub mod settings;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use floodgate_core::{PathGlob, Priority};
use serde_json::json;

use admission::{Admission, Permit};
use cache::{EdgeCache, Entry, Fill, Filled, Lookup, Served, X_CACHE};
use floodgate_http::ClientAddr;
use floodgate_http::{retry_after_s, wants_html};
use pool::Pool;
use proxy::{Buffered, ProxyError};
use rate_limit::GlobalLimiter;
use settings::{Balance, ClientKey, FrontDoorConfig, ORIGIN_POOL, RouteCache, RouteConfig};
use upstream::UpstreamBody;

pub use proxy::{X_REQUEST_ID, encode_forwarded_head};
pub use rate_limit::KeyedLimiter;

/// Put on an answer by the front door: the priority class that served it, for the
/// application's latency lanes.
#[derive(Debug, Clone, Copy)]
pub struct ServedAs(pub Priority);

/// Waiters per pool, as a multiple of its maximum concurrency.
const QUEUE_PER_SLOT: usize = 4;
/// Seconds a shed shopper is told to wait.
const SHED_RETRY_AFTER_S: u32 = 2;
/// A request body up to this size is read whole before the request takes a slot in its pool,
/// so a client that trickles it holds no origin connection (nginx's `client_body_buffer_size`
/// is 16 KiB, beyond which it buffers to disk); a larger one streams, held to the listener's
/// minimum body rate.
const REQUEST_BUFFER_BYTES: usize = 64 * 1024;

/// The address a per-client limit counts against: for a trusted proxy, the address it says it
/// forwards for (the last of `X-Forwarded-For`, as nginx's `real_ip` takes it).
fn limited_address<'a>(client: &'a ClientAddr, headers: &'a HeaderMap) -> &'a [u8] {
    let forwarded_for = || {
        let line = headers.get_all(proxy::X_FORWARDED_FOR).iter().next_back()?;
        let last = line.as_bytes().rsplit(|&byte| byte == b',').next()?;
        Some(last.trim_ascii()).filter(|address| !address.is_empty())
    };
    client
        .is_trusted_proxy()
        .then(forwarded_for)
        .flatten()
        .unwrap_or(client.ip().as_bytes())
}

/// What the front door decides for a request before any I/O (see [`FrontDoor::decide`]).
pub enum Decision {
    /// No route, no origin.
    NotFound,
    /// Over a rate limit; retry after this long.
    RateLimited(Duration),
    /// Goes to its pool without a slot (critical, or admission off).
    Bypass(Priority),
    /// Took a slot in its pool.
    Admitted(Priority, Permit),
    /// Its pool is full: it would wait in the queue.
    MustWait(Priority),
}

/// What became of a route's requests, as `/metrics` counts them.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Sent to the origin (whatever it answered).
    Forwarded,
    /// Answered from the edge cache (fresh, or stale while refreshing or while the origin fails).
    CacheHit,
    /// Refused by admission: the pool was full for its class.
    Shed,
    /// Refused by a rate limit.
    RateLimited,
    /// The origin did not answer, or not in time.
    OriginError,
    /// The client's own body could not be read (`400`).
    ClientError,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 6] = [
        Self::Forwarded,
        Self::CacheHit,
        Self::Shed,
        Self::RateLimited,
        Self::OriginError,
        Self::ClientError,
    ];

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::CacheHit => "cache_hit",
            Self::Shed => "shed",
            Self::RateLimited => "rate_limited",
            Self::OriginError => "origin_error",
            Self::ClientError => "client_error",
        }
    }
}

/// A route's requests by outcome.
#[derive(Debug, Default)]
struct Counts([AtomicU64; Outcome::ALL.len()]);

impl Counts {
    fn add(&self, outcome: Outcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// One route's figures for `/metrics`.
pub struct RouteFigures<'a> {
    /// The route's name.
    pub route: &'a str,
    /// Its priority class.
    pub class: &'static str,
    /// Its requests so far, by outcome.
    pub counts: Vec<(Outcome, u64)>,
}

/// One pool's load for `/metrics`.
pub struct PoolFigures<'a> {
    /// The pool's name.
    pub pool: &'a str,
    /// Its adaptive concurrency limit now.
    pub limit: u32,
    /// Its requests in flight now.
    pub in_flight: u32,
}

/// The routes and pools, built once from the config.
pub struct FrontDoor {
    routes: Vec<Route>,
    /// Every pool, for its figures.
    pools: Vec<Arc<Pool>>,
    /// Requests no route took and no origin could.
    not_found: AtomicU64,
    /// Where unrouted requests go, if `origin.url` is set.
    fallback: Option<Route>,
    cache: Option<Arc<EdgeCache>>,
}

struct Route {
    methods: Vec<Method>,
    glob: Option<PathGlob>,
    target: Arc<Target>,
    per_client: Option<(KeyedLimiter, ClientKey)>,
    global: Option<GlobalLimiter>,
}

/// Where a route's requests go and how they are treated there.
struct Target {
    name: String,
    pool: Arc<Pool>,
    class: Priority,
    /// Whether requests take a slot in the pool (not for `critical`, nor with admission off).
    admitted: bool,
    timeout: Duration,
    cache: Option<RouteCache>,
    counts: Counts,
}

/// Why a request got no answer from the origin.
#[derive(Debug)]
enum Failure {
    Shed,
    /// Forwarding failed: the origin's failure, or the client's own body (`ProxyError::ClientBody`).
    Origin(ProxyError),
}

impl FrontDoor {
    /// Builds the front door; the config has been validated, so every pool a route names exists.
    pub fn new(config: &FrontDoorConfig) -> Self {
        let queue_timeout = Duration::from_millis(config.admission.queue_timeout_ms);
        let admission = |max: u64| {
            let max = u32::try_from(max).unwrap_or(u32::MAX);
            Admission::new(max, max as usize * QUEUE_PER_SLOT, queue_timeout)
        };
        let admitted = |class: Priority| config.admission.enabled && class != Priority::Critical;
        let mut pools: HashMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|pool| {
                let built = Pool::new(
                    pool.name.clone(),
                    pool.upstreams.clone(),
                    pool.balance,
                    admission(pool.max_concurrency),
                );
                (pool.name.clone(), Arc::new(built))
            })
            .collect();
        if let Some(url) = &config.origin.url {
            let origin = Pool::new(
                ORIGIN_POOL.into(),
                vec![url.clone()],
                Balance::RoundRobin,
                admission(config.origin.max_concurrency),
            );
            pools.insert(ORIGIN_POOL.into(), Arc::new(origin));
        }
        let routes = config
            .routes
            .iter()
            .filter_map(|route| {
                let pool = Arc::clone(pools.get(&route.pool)?);
                Some(Route::new(route, pool, admitted(route.class)))
            })
            .collect();
        let fallback = pools.get(ORIGIN_POOL).map(|origin| Route {
            methods: Vec::new(),
            glob: None,
            target: Arc::new(Target {
                name: ORIGIN_POOL.into(),
                pool: Arc::clone(origin),
                class: config.origin.class,
                admitted: admitted(config.origin.class),
                timeout: Duration::from_millis(config.origin.timeout_ms),
                cache: None,
                counts: Counts::default(),
            }),
            per_client: None,
            global: None,
        });
        let cache = (config.cache.max_bytes > 0)
            .then(|| EdgeCache::new(usize::try_from(config.cache.max_bytes).unwrap_or(usize::MAX)));
        let mut pools: Vec<Arc<Pool>> = pools.into_values().collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            routes,
            pools,
            not_found: AtomicU64::new(0),
            fallback,
            cache,
        }
    }

    /// Each route's requests by outcome, the unrouted origin's last.
    pub fn route_figures(&self) -> impl Iterator<Item = RouteFigures<'_>> {
        self.routes.iter().chain(&self.fallback).map(|route| {
            let target = &route.target;
            RouteFigures {
                route: &target.name,
                class: target.class.as_str(),
                counts: Outcome::ALL
                    .iter()
                    .map(|&outcome| {
                        (
                            outcome,
                            target.counts.0[outcome as usize].load(Ordering::Relaxed),
                        )
                    })
                    .collect(),
            }
        })
    }

    /// Each pool's adaptive limit and requests in flight.
    pub fn pool_figures(&self) -> impl Iterator<Item = PoolFigures<'_>> {
        self.pools.iter().map(|pool| {
            let (limit, in_flight) = pool.admission.load();
            PoolFigures {
                pool: &pool.name,
                limit,
                in_flight,
            }
        })
    }

    /// Requests answered `404` because no route took them and there is no origin.
    pub fn not_found(&self) -> u64 {
        self.not_found.load(Ordering::Relaxed)
    }

    fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.matches(method, path))
            .or(self.fallback.as_ref())
    }

    /// Classifies a request, checks its rate limits and tries to take a slot in its pool, all
    /// without waiting: the admission decision on its own, as its benchmark measures it.
    pub fn decide(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        client: &ClientAddr,
    ) -> Decision {
        let Some(route) = self.route(method, path) else {
            return Decision::NotFound;
        };
        if let Err(wait) = route.check_rate_limits(headers, client) {
            return Decision::RateLimited(wait);
        }
        let target = &route.target;
        if !target.admitted {
            return Decision::Bypass(target.class);
        }
        match target.pool.admission.try_admit(target.class) {
            Some(permit) => Decision::Admitted(target.class, permit),
            None => Decision::MustWait(target.class),
        }
    }

    /// Opens idle connections to every upstream of every pool ahead of a surge: as many as the
    /// pool's concurrency limit could use, at most `most_per_upstream`; how many it opened.
    pub async fn open_connections(&self, most_per_upstream: usize) -> usize {
        let mut opened = 0;
        for pool in &self.pools {
            let (limit, _) = pool.admission.load();
            let count = most_per_upstream.min(limit as usize).max(1);
            for upstream in pool.upstreams() {
                opened += upstream.connections.open(count).await;
            }
        }
        opened
    }

    /// Whether the edge cache holds a fresh answer for `request`.
    pub fn holds_fresh<B>(&self, request: &Request<B>) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| matches!(cache.lookup(&cache.key(request)), Lookup::Fresh(_)))
    }

    /// Drops cached responses under `prefix`; how many went.
    pub fn purge(&self, prefix: &str) -> usize {
        self.cache.as_ref().map_or(0, |cache| cache.purge(prefix))
    }

    /// Answers one request that none of floodgate's own endpoints took, marked with the class
    /// that served it.
    pub async fn handle(&self, request: Request<Body>, client: &ClientAddr) -> Response {
        // The server has put the path in its one normal form and checked the one `Host`
        // (`server::request_target`): the route matched here is the path the origin is sent.
        let Some(route) = self.route(request.method(), request.uri().path()) else {
            self.not_found.fetch_add(1, Ordering::Relaxed);
            return refusal(
                wants_html(request.headers()),
                StatusCode::NOT_FOUND,
                "not_found",
                "nothing is served at this path",
                None,
            );
        };
        let mut response = self.answer(route, request, client).await;
        response
            .extensions_mut()
            .insert(ServedAs(route.target.class));
        response
    }

    async fn answer(&self, route: &Route, request: Request<Body>, client: &ClientAddr) -> Response {
        if let Err(wait) = route.check_rate_limits(request.headers(), client) {
            route.target.counts.add(Outcome::RateLimited);
            return refusal(
                wants_html(request.headers()),
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the indicated delay",
                Some(retry_after_s(wait)),
            );
        }
        let target = &route.target;
        match &self.cache {
            Some(cache) if target.cache.is_some() && EdgeCache::applies_to(&request) => {
                let key = cache.key(&request);
                match cache.lookup(&key) {
                    Lookup::Fresh(entry) => {
                        target.serve_cached(&entry, request.method(), Served::Hit)
                    }
                    // Boxed: the router copies every request's future whole, and the fill's
                    // is several kilobytes that a hit or a plain forward has no use for.
                    lookup => {
                        Box::pin(self.through_cache(cache, target, request, key, lookup, client))
                            .await
                    }
                }
            }
            _ => {
                let html = wants_html(request.headers());
                match target.fetch(request, client).await {
                    Ok((response, permit)) => {
                        let (parts, body) = response.into_parts();
                        proxy::relay(parts, body, permit)
                    }
                    Err(failure) => failure_response(html, failure),
                }
            }
        }
    }

    /// Serves a cacheable request the cache holds no fresh answer for (`lookup` says what it
    /// holds under `key`): a stale entry while it is refreshed, or the origin's answer fetched
    /// once for everyone asking at the same time.
    async fn through_cache(
        &self,
        cache: &Arc<EdgeCache>,
        target: &Arc<Target>,
        request: Request<Body>,
        key: String,
        lookup: Lookup,
        client: &ClientAddr,
    ) -> Response {
        let method = request.method().clone();
        let stale = match lookup {
            Lookup::Fresh(entry) => return target.serve_cached(&entry, &method, Served::Hit),
            Lookup::Revalidate(entry) => {
                if let Fill::Leader(fill) = cache.join_fill(&key) {
                    let refresh = copy_head(&request);
                    let (cache, target, client) =
                        (Arc::clone(cache), Arc::clone(target), client.clone());
                    tokio::spawn(async move {
                        let refresh = refresh.map(|()| Body::empty());
                        let (_, filled) =
                            fetch_into_cache(&cache, &target, refresh, &client, None).await;
                        fill.finish(filled);
                    });
                }
                return target.serve_cached(&entry, &method, Served::Stale);
            }
            Lookup::StaleIfError(entry) => Some(entry),
            Lookup::Miss => None,
        };
        match cache.join_fill(&key) {
            Fill::Leader(fill) => {
                let (response, filled) =
                    fetch_into_cache(cache, target, request, client, stale).await;
                fill.finish(filled);
                response
            }
            Fill::Follower(outcome) => match cache::followed(outcome, target.timeout).await {
                Some(entry) => target.serve_cached(&entry, &method, Served::Hit),
                // Nothing to share (not cacheable, or the fill failed): ask on our own.
                None => {
                    fetch_into_cache(cache, target, request, client, stale)
                        .await
                        .0
                }
            },
        }
    }
}

/// Fetches a cacheable request from the origin, keeps the answer if a shared cache may, and
/// falls back to `stale` when the origin fails.
async fn fetch_into_cache(
    cache: &EdgeCache,
    target: &Target,
    request: Request<Body>,
    client: &ClientAddr,
    stale: Option<Arc<Entry>>,
) -> (Response, Filled) {
    let head = copy_head(&request);
    let serve_stale = |stale: &Option<Arc<Entry>>| {
        stale.as_ref().map(|entry| {
            (
                target.serve_cached(entry, head.method(), Served::Stale),
                None,
            )
        })
    };
    let html = wants_html(head.headers());
    let (response, permit) = match target.fetch(request, client).await {
        Ok(fetched) => fetched,
        Err(failure) => {
            return serve_stale(&stale).unwrap_or_else(|| (failure_response(html, failure), None));
        }
    };
    if response.status().is_server_error()
        && let Some(served) = serve_stale(&stale)
    {
        return served;
    }
    let (mut parts, body) = response.into_parts();
    // The cache reads the answer's headers, and adds its own.
    proxy::read_answer_headers(&mut parts);
    match proxy::buffer(body, cache::MAX_ENTRY_BYTES).await {
        Buffered::Whole(bytes) => {
            if let Some(permit) = permit {
                permit.finish(false);
            }
            proxy::mark_passed_on(&mut parts);
            let policy = target.cache.as_ref().expect("cached routes have a policy");
            let filled =
                EdgeCache::entry_for(&head, parts.status, &parts.headers, bytes.clone(), policy)
                    .and_then(|entry| cache.insert(&head, entry));
            parts.headers.insert(X_CACHE, Served::Miss.header());
            (Response::from_parts(parts, Body::from(bytes)), filled)
        }
        Buffered::TooLarge(rest) => {
            parts.headers.insert(X_CACHE, Served::Miss.header());
            (proxy::relay(parts, rest, permit), None)
        }
        Buffered::Broken => {
            if let Some(permit) = permit {
                permit.finish(true);
            }
            let broken = Failure::Origin(ProxyError::Unreachable("answer broken off".into()));
            (
                serve_stale(&stale)
                    .map(|(response, _)| response)
                    .unwrap_or_else(|| failure_response(html, broken)),
                None,
            )
        }
    }
}

/// The method, URI and headers of a request, without its body.
fn copy_head(request: &Request<Body>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.headers_mut() = request.headers().clone();
    head
}

impl Target {
    /// Answers from the edge cache, counted as a cache hit.
    fn serve_cached(&self, entry: &Entry, method: &Method, served: Served) -> Response {
        self.counts.add(Outcome::CacheHit);
        entry.respond(method, served)
    }

    /// Reads a small body whole, takes a slot in the pool (unless critical), forwards, and
    /// records the upstream's health: only the upstream's own failures count against it.
    async fn fetch(
        &self,
        request: Request<Body>,
        client: &ClientAddr,
    ) -> Result<(axum::http::Response<UpstreamBody>, Option<Permit>), Failure> {
        let request = self.read_small_body(request).await?;
        let permit = if !self.admitted {
            None
        } else {
            let admitted = self.pool.admission.admit(self.class).await;
            Some(admitted.map_err(|shed| {
                tracing::debug!(route = %self.name, class = self.class.as_str(), ?shed, "shed");
                self.counts.add(Outcome::Shed);
                Failure::Shed
            })?)
        };
        let chosen = self.pool.choose();
        match proxy::forward(chosen.upstream, request, client, self.timeout).await {
            Ok(response) => {
                chosen.upstream.record(!response.status().is_server_error());
                self.counts.add(Outcome::Forwarded);
                Ok((response, permit))
            }
            Err(ProxyError::ClientBody) => {
                self.counts.add(Outcome::ClientError);
                if let Some(permit) = permit {
                    permit.finish(false);
                }
                Err(Failure::Origin(ProxyError::ClientBody))
            }
            Err(error) => {
                chosen.upstream.record(false);
                self.counts.add(Outcome::OriginError);
                if let Some(permit) = permit {
                    permit.finish(true);
                }
                tracing::warn!(route = %self.name, pool = %self.pool.name, upstream = %chosen.upstream.base, ?error, "origin failed");
                Err(Failure::Origin(error))
            }
        }
    }

    /// `request` with its body read whole when it is small (see [`REQUEST_BUFFER_BYTES`]),
    /// else with what was read ahead of the rest; a body that breaks off is the client's `400`.
    async fn read_small_body(&self, request: Request<Body>) -> Result<Request<Body>, Failure> {
        if http_body::Body::is_end_stream(request.body()) {
            return Ok(request);
        }
        let (parts, body) = request.into_parts();
        let body = match proxy::buffer(body, REQUEST_BUFFER_BYTES).await {
            Buffered::Whole(bytes) => Body::from(bytes),
            Buffered::TooLarge(prefixed) => Body::new(*prefixed),
            Buffered::Broken => {
                self.counts.add(Outcome::ClientError);
                return Err(Failure::Origin(ProxyError::ClientBody));
            }
        };
        Ok(Request::from_parts(parts, body))
    }
}

fn failure_response(html: bool, failure: Failure) -> Response {
    match failure {
        Failure::Shed => refusal(
            html,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the shop is busy; retry after the indicated delay",
            Some(SHED_RETRY_AFTER_S),
        ),
        Failure::Origin(ProxyError::Timeout) => refusal(
            html,
            StatusCode::GATEWAY_TIMEOUT,
            "origin_timeout",
            "the shop did not answer in time",
            None,
        ),
        Failure::Origin(ProxyError::ClientBody) => refusal(
            html,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the request body could not be read",
            None,
        ),
        Failure::Origin(ProxyError::Unreachable(_)) => refusal(
            html,
            StatusCode::BAD_GATEWAY,
            "origin_unreachable",
            "the shop could not be reached",
            None,
        ),
    }
}

impl Route {
    fn new(config: &RouteConfig, pool: Arc<Pool>, admitted: bool) -> Self {
        let limits = config.rate_limit.as_ref();
        Self {
            methods: config.methods.clone(),
            glob: Some(config.path.clone()),
            target: Arc::new(Target {
                name: config.name.clone(),
                pool,
                class: config.class,
                admitted,
                timeout: Duration::from_millis(config.timeout_ms),
                cache: config.cache.clone(),
                counts: Counts::default(),
            }),
            per_client: limits.and_then(|limits| {
                let rate = limits.per_client_per_s?;
                Some((KeyedLimiter::new(rate, limits.burst), limits.key.clone()))
            }),
            global: limits
                .and_then(|limits| limits.global_per_s)
                .map(GlobalLimiter::new),
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.glob.as_ref().is_none_or(|glob| glob.matches(path))
    }

    /// The per-client limit first (a greedy client must not spend the route's global budget).
    fn check_rate_limits(&self, headers: &HeaderMap, client: &ClientAddr) -> Result<(), Duration> {
        if let Some((limiter, key)) = &self.per_client {
            let by_header = match key {
                ClientKey::Header(name) => headers.get(name),
                ClientKey::Ip => None,
            };
            let key = by_header
                .and_then(|value| value.to_str().ok())
                .or_else(|| std::str::from_utf8(limited_address(client, headers)).ok())
                .unwrap_or_default();
            limiter.check(key)?;
        }
        match &self.global {
            Some(limiter) => limiter.check(),
            None => Ok(()),
        }
    }
}

/// A refusal in the shape the client reads: a small page for browsers (`html`), the API's JSON
/// error otherwise.
fn refusal(
    html: bool,
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after_s: Option<u32>,
) -> Response {
    let mut response = if html {
        let wait = retry_after_s
            .map(|seconds| {
                format!(
                    "<p>Please try again in {seconds} second{}.</p>",
                    if seconds == 1 { "" } else { "s" }
                )
            })
            .unwrap_or_default();
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{status}</title>\
             <meta name=\"viewport\" content=\"width=device-width\"></head>\
             <body><h1>{message}</h1>{wait}</body></html>"
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response()
    } else {
        (
            status,
            axum::Json(json!({ "error": code, "message": message })),
        )
            .into_response()
    };
    if let Some(seconds) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
