//! Reading `[origin]`, `[[pools]]`, `[[routes]]`, `[cache]` and `[admission]` into the front
//! door's settings.

use std::collections::BTreeSet;

use floodgate_core::{PathGlob, Priority};
use http::{HeaderName, Method};
use toml::{Table, Value};

use floodgate_front_door::settings::{
    AdmissionConfig, Balance, CacheConfig, ClientKey, FrontDoorConfig, ORIGIN_POOL, OriginConfig,
    PoolConfig, RouteCache, RouteConfig, RouteRateLimit,
};

use super::{ConfigProblem, Section, boolean, http_url, integer, text_value};

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

/// Reads and cross-checks the front door's sections.
pub(super) fn read_front_door(
    tables: FrontDoorTables<'_>,
    problems: &mut Vec<ConfigProblem>,
) -> FrontDoorConfig {
    let defaults = FrontDoorConfig::default();
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
    FrontDoorConfig {
        origin,
        pools,
        routes,
        cache,
        admission,
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
