//! What the front door is configured with: `[origin]`, `[[pools]]`, `[[routes]]`, `[cache]` and
//! `[admission]`, as the application's config reads them.

use axum::http::{HeaderName, Method, Uri};
use floodgate_core::{PathGlob, Priority};

/// The name under which routes refer to `[origin]`.
pub const ORIGIN_POOL: &str = "origin";

/// Everything the front door is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontDoorConfig {
    /// `[origin]`.
    pub origin: OriginConfig,
    /// `[[pools]]`, besides the origin's own.
    pub pools: Vec<PoolConfig>,
    /// `[[routes]]`, matched in order; the first match wins.
    pub routes: Vec<RouteConfig>,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[admission]`.
    pub admission: AdmissionConfig,
}

/// `[admission]`: how pools take requests once they are full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Adaptive limits, priority partitions and shedding; off, every request goes straight to
    /// its pool (for comparison runs, never for a drop).
    pub enabled: bool,
    /// How long a request may wait for a slot before `503 overloaded`.
    pub queue_timeout_ms: u64,
}

/// `[origin]`: the shop's own site. Requests no route claims go here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Base URL; without it, unrouted requests get `404`.
    pub url: Option<Uri>,
    /// How long the origin may take to start answering (`504` beyond).
    pub timeout_ms: u64,
    /// Priority class of unrouted requests.
    pub class: Priority,
    /// Most requests in flight to it (the ceiling of its adaptive limit).
    pub max_concurrency: u64,
}

/// How a pool spreads requests over its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In turn.
    RoundRobin,
    /// To the upstream with the fewest requests in flight.
    LeastInFlight,
}

/// `[[pools]]`: upstreams that serve one part of the shop, with their own concurrency budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Name routes refer to.
    pub name: String,
    /// Base URLs.
    pub upstreams: Vec<Uri>,
    /// How requests are spread.
    pub balance: Balance,
    /// Most requests in flight to the pool (the bulkhead; ceiling of its adaptive limit).
    pub max_concurrency: u64,
}

/// `[[routes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Name in logs and metrics.
    pub name: String,
    /// Methods matched; empty matches all.
    pub methods: Vec<Method>,
    /// Path glob (`*` one segment, `**` any depth).
    pub path: PathGlob,
    /// Pool that serves it.
    pub pool: String,
    /// Priority class.
    pub class: Priority,
    /// How long the upstream may take to start answering (`504` beyond).
    pub timeout_ms: u64,
    /// Edge caching, if enabled.
    pub cache: Option<RouteCache>,
    /// Rate limits, if any.
    pub rate_limit: Option<RouteRateLimit>,
}

/// A route's cache policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness to use instead of the origin's `Cache-Control`.
    pub ttl_s: Option<u64>,
    /// How long past freshness a stale copy is served while one request refreshes it.
    pub stale_while_revalidate_s: u64,
    /// How long past freshness a stale copy is served when the origin fails.
    pub stale_if_error_s: u64,
}

/// Whose requests a per-client limit counts together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// The peer's IP address.
    Ip,
    /// A request header (such as the shop's customer id); requests without it count by IP.
    Header(HeaderName),
}

/// A route's rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRateLimit {
    /// Requests per second per client.
    pub per_client_per_s: Option<u32>,
    /// Burst per client.
    pub burst: u32,
    /// What identifies a client.
    pub key: ClientKey,
    /// Requests per second for the whole route.
    pub global_per_s: Option<u32>,
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most bytes of cached responses held (least recently used go first).
    pub max_bytes: u64,
}

impl Default for FrontDoorConfig {
    fn default() -> Self {
        Self {
            origin: OriginConfig {
                url: None,
                timeout_ms: 10_000,
                class: Priority::Browse,
                max_concurrency: 256,
            },
            pools: Vec::new(),
            routes: Vec::new(),
            cache: CacheConfig {
                max_bytes: 64 * 1024 * 1024,
            },
            admission: AdmissionConfig {
                enabled: true,
                queue_timeout_ms: 1_000,
            },
        }
    }
}
