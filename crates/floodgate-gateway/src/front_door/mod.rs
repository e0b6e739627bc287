//! The front door: everything on the public listener that is not floodgate's own API goes to the
//! shop's origin pools, routed by `[[routes]]`, rate limited, admitted by priority, and cached.
//!
//! One request: match the first route whose method and glob fit (else the `[origin]` default);
//! check its rate limits (`429`); serve it from the edge cache if it can; otherwise take a slot
//! in its pool (critical routes skip this), wait briefly if the pool is full, or be shed
//! (`503`); then forward it to an upstream of the pool and stream the answer back.

mod admission;
mod pool;
mod proxy;
mod rate_limit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use floodgate_core::{PathGlob, Priority};
use serde_json::json;

use crate::config::front_door::{ClientKey, FrontDoorConfig, ORIGIN_POOL, RouteConfig};
use admission::Admission;
use pool::Pool;
use proxy::{Proxy, ProxyError};
use rate_limit::{GlobalLimiter, KeyedLimiter};

/// How long a request may wait for a slot in a full pool before it is shed: long enough to ride
/// out a burst, short enough that the shopper is told to retry while still looking.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Waiters per pool, as a multiple of its maximum concurrency.
const QUEUE_PER_SLOT: usize = 4;
/// Seconds a shed shopper is told to wait.
const SHED_RETRY_AFTER_S: u32 = 2;

/// The peer of a connection, put on each request by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// The routes and pools, built once from the config.
pub(crate) struct FrontDoor {
    routes: Vec<Route>,
    /// Where unrouted requests go, if `origin.url` is set.
    fallback: Option<Route>,
    proxy: Proxy,
}

struct Route {
    name: String,
    methods: Vec<Method>,
    glob: Option<PathGlob>,
    pool: Arc<Pool>,
    class: Priority,
    timeout: Duration,
    per_client: Option<(KeyedLimiter, ClientKey)>,
    global: Option<GlobalLimiter>,
}

impl FrontDoor {
    /// Builds the front door; the config has been validated, so every pool a route names exists.
    pub(crate) fn new(config: &FrontDoorConfig) -> Self {
        let admission = |max: u64| {
            let max = u32::try_from(max).unwrap_or(u32::MAX);
            Admission::new(max, max as usize * QUEUE_PER_SLOT, QUEUE_TIMEOUT)
        };
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
                crate::config::front_door::Balance::RoundRobin,
                admission(config.origin.max_concurrency),
            );
            pools.insert(ORIGIN_POOL.into(), Arc::new(origin));
        }
        let routes = config
            .routes
            .iter()
            .filter_map(|route| Some(Route::new(route, Arc::clone(pools.get(&route.pool)?))))
            .collect();
        let fallback = pools.get(ORIGIN_POOL).map(|origin| Route {
            name: ORIGIN_POOL.into(),
            methods: Vec::new(),
            glob: None,
            pool: Arc::clone(origin),
            class: config.origin.class,
            timeout: Duration::from_millis(config.origin.timeout_ms),
            per_client: None,
            global: None,
        });
        Self {
            routes,
            fallback,
            proxy: Proxy::new(),
        }
    }

    fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.matches(method, path))
            .or(self.fallback.as_ref())
    }

    /// Answers one request that none of floodgate's own endpoints took.
    pub(crate) async fn handle(&self, request: Request<Body>, client: SocketAddr) -> Response {
        let Some(route) = self.route(request.method(), request.uri().path()) else {
            return refusal(
                request.headers(),
                StatusCode::NOT_FOUND,
                "not_found",
                "nothing is served at this path",
                None,
            );
        };
        if let Err(wait) = route.check_rate_limits(request.headers(), client) {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
            return refusal(
                request.headers(),
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the indicated delay",
                Some(seconds),
            );
        }
        let permit = if route.class == Priority::Critical {
            None
        } else {
            match route.pool.admission.admit(route.class).await {
                Ok(permit) => Some(permit),
                Err(shed) => {
                    tracing::debug!(route = %route.name, class = route.class.as_str(), ?shed, "shed");
                    return refusal(
                        request.headers(),
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "the shop is busy; retry after the indicated delay",
                        Some(SHED_RETRY_AFTER_S),
                    );
                }
            }
        };
        let accept = request.headers().clone();
        let chosen = route.pool.choose();
        let forwarded = self
            .proxy
            .forward(&chosen.upstream.base, request, client, route.timeout)
            .await;
        match forwarded {
            Ok(response) => {
                let healthy = !response.status().is_server_error();
                chosen.upstream.record(healthy);
                proxy::relay(response, permit)
            }
            Err(error) => {
                chosen.upstream.record(false);
                if let Some(permit) = permit {
                    permit.finish(true);
                }
                tracing::warn!(route = %route.name, pool = %route.pool.name, upstream = %chosen.upstream.base, ?error, "origin failed");
                match error {
                    ProxyError::Timeout => refusal(
                        &accept,
                        StatusCode::GATEWAY_TIMEOUT,
                        "origin_timeout",
                        "the shop did not answer in time",
                        None,
                    ),
                    ProxyError::Unreachable(_) => refusal(
                        &accept,
                        StatusCode::BAD_GATEWAY,
                        "origin_unreachable",
                        "the shop could not be reached",
                        None,
                    ),
                }
            }
        }
    }
}

impl Route {
    fn new(config: &RouteConfig, pool: Arc<Pool>) -> Self {
        let limits = config.rate_limit.as_ref();
        Self {
            name: config.name.clone(),
            methods: config.methods.clone(),
            glob: Some(config.path.clone()),
            pool,
            class: config.class,
            timeout: Duration::from_millis(config.timeout_ms),
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
    fn check_rate_limits(&self, headers: &HeaderMap, client: SocketAddr) -> Result<(), Duration> {
        if let Some((limiter, key)) = &self.per_client {
            let by_header = match key {
                ClientKey::Header(name) => headers.get(name).and_then(|value| value.to_str().ok()),
                ClientKey::Ip => None,
            };
            match by_header {
                Some(value) => limiter.check(value)?,
                None => limiter.check(&client.ip().to_string())?,
            }
        }
        match &self.global {
            Some(limiter) => limiter.check(),
            None => Ok(()),
        }
    }
}

/// Whether the client reads HTML (a browser) rather than JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    accept.contains("text/html") && !accept.contains("application/json")
}

/// A refusal in the shape the client reads: a small page for browsers, the API's JSON error
/// otherwise.
fn refusal(
    headers: &HeaderMap,
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after_s: Option<u32>,
) -> Response {
    let mut response = if wants_html(headers) {
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
