//! `[origin]`, `[[pools]]`, `[[routes]]` and `[cache]`: where the rest of the shop's traffic goes
//! and how it is admitted, limited and cached.

use std::collections::BTreeSet;

use axum::http::{HeaderName, Method, Uri};
use floodgate_core::{PathGlob, Priority};
use toml::{Table, Value};

use super::{ConfigProblem, Section, boolean, http_url, integer, text_value};

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

/// The front door's tables, taken from the file's root.
pub(super) struct FrontDoorTables<'t> {
    origin: Option<&'t Table>,
    pools: Vec<(String, &'t Table)>,
    routes: Vec<(String, &'t Table)>,
    cache: Option<&'t Table>,
    admission: Option<&'t Table>,
}

impl<'t> FrontDoorTables<'t> {
    pub(super) fn take(root: &mut Section<'t, '_>) -> Self {
        Self {
            origin: root.table("origin"),
            pools: root.tables("pools"),
            routes: root.tables("routes"),
            cache: root.table("cache"),
            admission: root.table("admission"),
        }
    }
}

impl FrontDoorConfig {
    /// Reads and cross-checks the front door's sections.
    pub(super) fn read(tables: FrontDoorTables<'_>, problems: &mut Vec<ConfigProblem>) -> Self {
        let defaults = Self::default();
        let FrontDoorTables {
            origin: origin_table,
            pools: pool_tables,
            routes: route_tables,
            cache: cache_table,
            admission: admission_table,
        } = tables;

        let mut section = Section::new("origin", origin_table, problems);
        let origin = OriginConfig {
            url: section.get("url", None, |value| http_url(value).map(Some)),
            timeout_ms: section.get(
                "timeout_ms",
                defaults.origin.timeout_ms,
                integer(10, 600_000),
            ),
            class: section.get("class", defaults.origin.class, class),
            max_concurrency: section.get(
                "max_concurrency",
                defaults.origin.max_concurrency,
                integer(1, 100_000),
            ),
        };
        section.finish();

        let pools: Vec<PoolConfig> = pool_tables
            .into_iter()
            .map(|(path, table)| read_pool(path, table, problems))
            .collect();
        let mut names = BTreeSet::from([ORIGIN_POOL.to_owned()]);
        for (index, pool) in pools.iter().enumerate() {
            if !names.insert(pool.name.clone()) {
                problems.push(ConfigProblem {
                    path: format!("pools[{index}].name"),
                    problem: format!("{:?} is taken (\"origin\" is [origin])", pool.name),
                });
            }
        }
        let routes: Vec<RouteConfig> = route_tables
            .into_iter()
            .map(|(path, table)| read_route(path, table, origin.timeout_ms, problems))
            .collect();
        for (index, route) in routes.iter().enumerate() {
            let problem = if !names.contains(&route.pool) {
                Some(format!("no pool is named {:?}", route.pool))
            } else if route.pool == ORIGIN_POOL && origin.url.is_none() {
                Some("routes to the origin need origin.url".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                problems.push(ConfigProblem {
                    path: format!("routes[{index}].pool"),
                    problem,
                });
            }
        }

        let mut section = Section::new("cache", cache_table, problems);
        let cache = CacheConfig {
            max_bytes: section.get(
                "max_bytes",
                defaults.cache.max_bytes,
                integer(0, 64 * 1024 * 1024 * 1024),
            ),
        };
        section.finish();

        let mut section = Section::new("admission", admission_table, problems);
        let admission = AdmissionConfig {
            enabled: section.get("enabled", defaults.admission.enabled, boolean),
            queue_timeout_ms: section.get(
                "queue_timeout_ms",
                defaults.admission.queue_timeout_ms,
                integer(0, 60_000),
            ),
        };
        section.finish();
        Self {
            origin,
            pools,
            routes,
            cache,
            admission,
        }
    }
}

fn read_pool(path: String, table: &Table, problems: &mut Vec<ConfigProblem>) -> PoolConfig {
    let mut section = Section::new(path, Some(table), problems);
    let name = section.get("name", String::new(), pool_name);
    let upstreams = section.get("upstreams", Vec::new(), |value| {
        let items = value.as_array().ok_or("must be an array of URLs")?;
        if items.is_empty() {
            return Err("must name at least one upstream".into());
        }
        items.iter().map(http_url).collect()
    });
    let balance = section.get("balance", Balance::RoundRobin, |value| {
        match text_value(value)?.as_str() {
            "round_robin" => Ok(Balance::RoundRobin),
            "least_in_flight" => Ok(Balance::LeastInFlight),
            other => Err(format!(
                "{other:?} is not \"round_robin\" or \"least_in_flight\""
            )),
        }
    });
    let max_concurrency = section.get("max_concurrency", 256, integer(1, 100_000));
    if name.is_empty() {
        section.problem("name", "is required");
    }
    if upstreams.is_empty() {
        section.problem("upstreams", "is required");
    }
    section.finish();
    PoolConfig {
        name,
        upstreams,
        balance,
        max_concurrency,
    }
}

fn read_route(
    path: String,
    table: &Table,
    default_timeout_ms: u64,
    problems: &mut Vec<ConfigProblem>,
) -> RouteConfig {
    let mut section = Section::new(path.clone(), Some(table), problems);
    let name = section.get("name", path.clone(), text_value);
    let methods = section.get("methods", Vec::new(), |value| {
        let items = value
            .as_array()
            .ok_or("must be an array such as [\"GET\", \"HEAD\"]")?;
        items
            .iter()
            .map(|item| {
                let text = text_value(item)?;
                Method::from_bytes(text.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("{text:?} is not an HTTP method"))
            })
            .collect()
    });
    let glob = section.get("path", None, |value| {
        let text = text_value(value)?;
        PathGlob::parse(&text)
            .map(Some)
            .map_err(|error| format!("{text:?}: {error}"))
    });
    let pool = section.get("pool", ORIGIN_POOL.to_owned(), pool_name);
    let class = section.get("class", Priority::Browse, class);
    let timeout_ms = section.get("timeout_ms", default_timeout_ms, integer(10, 600_000));
    let cache_table = section.table("cache");
    let limit_table = section.table("rate_limit");
    if glob.is_none() && !table.contains_key("path") {
        section.problem("path", "is required");
    }
    section.finish();
    let cache = cache_table.map(|table| read_cache(format!("{path}.cache"), table, problems));
    let rate_limit =
        limit_table.map(|table| read_rate_limit(format!("{path}.rate_limit"), table, problems));
    RouteConfig {
        name,
        methods,
        path: glob.unwrap_or_else(|| PathGlob::parse("/**").expect("a valid glob")),
        pool,
        class,
        timeout_ms,
        cache,
        rate_limit,
    }
}

fn read_cache(path: String, table: &Table, problems: &mut Vec<ConfigProblem>) -> RouteCache {
    let mut section = Section::new(path, Some(table), problems);
    let cache = RouteCache {
        ttl_s: section.get("ttl_s", None, |value| {
            integer(0, 31_536_000)(value).map(Some)
        }),
        stale_while_revalidate_s: section.get("stale_while_revalidate_s", 0, integer(0, 86_400)),
        stale_if_error_s: section.get("stale_if_error_s", 0, integer(0, 604_800)),
    };
    section.finish();
    cache
}

fn read_rate_limit(
    path: String,
    table: &Table,
    problems: &mut Vec<ConfigProblem>,
) -> RouteRateLimit {
    let mut section = Section::new(path, Some(table), problems);
    let per_second = |value: &Value| {
        integer(1, 100_000_000)(value).map(|rate| Some(u32::try_from(rate).unwrap_or(u32::MAX)))
    };
    let per_client_per_s = section.get("per_client_per_s", None, per_second);
    let burst = section.get("burst", 1, integer(1, 1_000_000));
    let key = section.get("key", ClientKey::Ip, |value| {
        let text = text_value(value)?;
        match text.strip_prefix("header:") {
            None if text == "ip" => Ok(ClientKey::Ip),
            Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
                .map(ClientKey::Header)
                .map_err(|_| format!("{name:?} is not a header name")),
            None => Err(format!("{text:?} is not \"ip\" or \"header:<Name>\"")),
        }
    });
    let global_per_s = section.get("global_per_s", None, per_second);
    if per_client_per_s.is_none() && global_per_s.is_none() {
        section.problem("per_client_per_s", "set it, global_per_s, or both");
    }
    section.finish();
    RouteRateLimit {
        per_client_per_s,
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
        key,
        global_per_s,
    }
}

fn pool_name(value: &Value) -> Result<String, String> {
    let name = text_value(value)?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a name of letters, digits, '-' and '_'"
        ))
    }
}

fn class(value: &Value) -> Result<Priority, String> {
    let text = text_value(value)?;
    Priority::parse(&text).ok_or_else(|| {
        let names: Vec<&str> = Priority::ALL.iter().map(|class| class.as_str()).collect();
        format!("{text:?} is not one of {}", names.join(", "))
    })
}
