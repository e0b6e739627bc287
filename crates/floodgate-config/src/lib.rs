//! floodgate's configuration file (`floodgate serve --config FILE`), read into the settings of
//! each part: the listeners' connection limits, the store, the downstream, the gateway and its
//! front door. Validated up front: every problem is reported with its key path in one go, and
//! every omitted key has a sensible default.

mod front_door;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Uri};
use toml::{Table, Value};

use floodgate_front_door::settings::FrontDoorConfig;
use front_door::{FrontDoorTables, read_front_door};

use floodgate_gateway::{DeliveryPace, GatewaySettings, IdentitySource, IntakeLimits};
use floodgate_http::server::ConnectionLimits;
use floodgate_http::tls::{LoadedTls, TlsFiles};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[server]`: listeners and request limits.
    pub server: ServerConfig,
    /// `[store]`: where and how orders are stored.
    pub store: StoreConfig,
    /// `[intake]`: order limits.
    pub intake: IntakeConfig,
    /// `[downstream]`: the legacy order system accepted orders are delivered to.
    pub downstream: DownstreamConfig,
    /// `[origin]`, `[[pools]]`, `[[routes]]`, `[cache]`: the rest of the shop's traffic.
    pub front_door: FrontDoorConfig,
    /// `[waiting_room]`: signing of tickets and passes, abandonment.
    pub waiting_room: WaitingRoomConfig,
    /// `[drops]`: who a customer is.
    pub drops: DropsConfig,
}

/// `[drops]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropsConfig {
    /// Where a customer's identity comes from.
    pub identity: IdentitySource,
}

/// `[waiting_room]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRoomConfig {
    /// Key that signs tickets and passes; `FLOODGATE_SECRET` overrides it. Empty: one is
    /// generated at start (tokens then do not survive a restart).
    pub secret: String,
    /// A waiter who has not polled for this long loses their place.
    pub abandon_after_s: u64,
    /// Admission halves while the orders waiting for delivery would take longer than this to
    /// deliver at `downstream.rate_per_second`.
    pub max_delivery_backlog_s: u64,
    /// The shop's accent colour on the waiting-room page (`#rgb` or `#rrggbb`).
    pub colour: String,
    /// The id that tokens signed with `secret` carry (0 to 255).
    pub key_id: u8,
    /// Keys of earlier rotations, `(id, secret)`: their tokens are still accepted.
    pub previous_keys: Vec<(u8, String)>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Public listener (shoppers, health).
    pub listen: SocketAddr,
    /// Admin listener (operators).
    pub admin_listen: SocketAddr,
    /// Admin bearer token; `FLOODGATE_ADMIN_TOKEN` overrides it. Empty: one is generated at start.
    pub admin_token: String,
    /// Time a client has to send a whole request head, from its first byte (a connection's
    /// first head: from the connection's start).
    pub header_read_timeout_ms: u64,
    /// A kept-alive connection with no new request for this long is closed.
    pub idle_timeout_ms: u64,
    /// Slowest a request body may arrive once `body_grace_ms` is spent.
    pub body_min_rate_bytes_per_s: u64,
    /// Time a request body may take before its rate is held to the minimum.
    pub body_grace_ms: u64,
    /// A write of an answer that makes no progress for this long closes the connection.
    pub send_timeout_ms: u64,
    /// Requests one connection carries before it is closed.
    pub max_requests_per_connection: u64,
    /// Connections open at once on each listener; beyond, only health checks are answered.
    pub max_connections: u64,
    /// Connections open at once from one client address on each listener; beyond, only health
    /// checks are answered.
    pub max_connections_per_ip: u64,
    /// Proxies (addresses or networks) whose `X-Forwarded-*` headers are believed; a
    /// client's own are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request body accepted (`413` beyond).
    pub max_body_bytes: u64,
    /// Time shutdown waits for admitted requests.
    pub shutdown_grace_ms: u64,
    /// Threads serving connections; 0: one per core.
    pub worker_threads: u64,
    /// Serve `/metrics` on the admin listener without the admin token (for a scraper that
    /// holds no secrets).
    pub metrics_public: bool,
    /// TLS on the public listener (`server.tls`); plain HTTP when unset.
    pub tls: Option<LoadedTls>,
    /// TLS on the admin listener (`server.admin_tls`), with client certificates when it names
    /// a `client_ca`; plain HTTP when unset.
    pub admin_tls: Option<LoadedTls>,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Directory of the embedded store.
    pub path: PathBuf,
    /// A PostgreSQL database shared by several nodes (`postgres://…`) instead of the embedded
    /// store; `FLOODGATE_STORE_URL` overrides it, so its password need not sit in the file.
    pub url: Option<String>,
    /// Most writes in one group commit.
    pub max_batch: u64,
    /// Writes that may queue for the disk before intake answers `503 overloaded`.
    pub queue_capacity: u64,
    /// Several nodes on `url`: how long a node's lease of stock lasts unrenewed, so how long a
    /// node that died strands its unsold units.
    pub lease_ttl_ms: u64,
    /// Several nodes on `url`: how long the delivery leader's term lasts unrenewed, so how soon
    /// a follower takes over from a leader that died.
    pub leader_ttl_ms: u64,
}

/// `[intake]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeConfig {
    /// Most units one order may ask for (`400 invalid_body` beyond).
    pub max_quantity_per_order: u64,
    /// Hours an idempotency key is remembered after its order was accepted.
    pub idempotency_retention_h: u64,
}

/// `[downstream]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamConfig {
    /// `POST` endpoint of the legacy order system. Without it orders are taken and kept, but
    /// not delivered.
    pub url: Option<Uri>,
    /// Most request starts in any one-second window.
    pub rate_per_second: u64,
    /// Most deliveries awaiting an answer at once.
    pub max_in_flight: u64,
    /// Attempts before an order is dead-lettered (`failed`).
    pub max_attempts: u64,
    /// How long one attempt may take.
    pub timeout_ms: u64,
    /// Backoff before the second attempt, at most; doubles per attempt (full jitter).
    pub backoff_base_ms: u64,
    /// Longest backoff.
    pub backoff_max_ms: u64,
    /// Failures in a row that open the circuit breaker.
    pub breaker_failures: u64,
    /// How long the breaker stays open at first.
    pub breaker_open_ms: u64,
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key's path, e.g. `server.listen`.
    pub path: String,
    /// What is wrong, lower case.
    pub problem: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.path, self.problem)
    }
}

impl Default for Config {
    fn default() -> Self {
        // A connection's limits are the protocol's own defaults, in the file's units.
        let limits = ConnectionLimits::default();
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let count = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
        Self {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
                admin_token: String::new(),
                header_read_timeout_ms: millis(limits.header_read_timeout),
                idle_timeout_ms: millis(limits.idle_timeout),
                body_min_rate_bytes_per_s: limits.body_min_rate_bytes_per_s,
                body_grace_ms: millis(limits.body_grace),
                send_timeout_ms: millis(limits.send_timeout),
                max_requests_per_connection: limits.max_requests_per_connection,
                max_connections: count(limits.max_connections),
                max_connections_per_ip: count(limits.max_connections_per_ip),
                trusted_proxies: Vec::new(),
                max_body_bytes: 64 * 1024,
                shutdown_grace_ms: millis(limits.shutdown_grace),
                worker_threads: 0,
                metrics_public: false,
                tls: None,
                admin_tls: None,
            },
            store: StoreConfig {
                path: PathBuf::from("./floodgate-data"),
                url: None,
                max_batch: 2_048,
                queue_capacity: 65_536,
                lease_ttl_ms: 15_000,
                leader_ttl_ms: 5_000,
            },
            intake: IntakeConfig {
                max_quantity_per_order: 100,
                idempotency_retention_h: 24,
            },
            downstream: DownstreamConfig {
                url: None,
                rate_per_second: 10,
                max_in_flight: 4,
                max_attempts: 8,
                timeout_ms: 5_000,
                backoff_base_ms: 500,
                backoff_max_ms: 30_000,
                breaker_failures: 5,
                breaker_open_ms: 5_000,
            },
            front_door: FrontDoorConfig::default(),
            waiting_room: WaitingRoomConfig {
                secret: String::new(),
                abandon_after_s: 60,
                max_delivery_backlog_s: 600,
                colour: "#1f6feb".into(),
                key_id: 1,
                previous_keys: Vec::new(),
            },
            drops: DropsConfig {
                identity: IdentitySource::Body,
            },
        }
    }
}

impl Config {
    /// Parses and validates a TOML configuration; omitted keys keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, Vec<ConfigProblem>> {
        let table: Table = text.parse().map_err(|error: toml::de::Error| {
            vec![ConfigProblem {
                path: "(file)".into(),
                problem: error.message().to_owned() + &location(text, &error),
            }]
        })?;
        let defaults = Self::default();
        let mut problems = Vec::new();
        let mut root = Section::root(&table, &mut problems);
        let server_table = root.table("server");
        let store_table = root.table("store");
        let intake_table = root.table("intake");
        let downstream_table = root.table("downstream");
        let front_door_tables = FrontDoorTables::take(&mut root);
        let waiting_room_table = root.table("waiting_room");
        let drops_table = root.table("drops");
        root.finish();

        let mut server = Section::new("server", server_table, &mut problems);
        let tls_table = server.table("tls");
        let admin_tls_table = server.table("admin_tls");
        let mut server_config = ServerConfig {
            listen: server.get("listen", defaults.server.listen, socket_addr),
            admin_listen: server.get("admin_listen", defaults.server.admin_listen, socket_addr),
            admin_token: server.get("admin_token", defaults.server.admin_token, text_value),
            header_read_timeout_ms: server.get(
                "header_read_timeout_ms",
                defaults.server.header_read_timeout_ms,
                integer(100, 600_000),
            ),
            idle_timeout_ms: server.get(
                "idle_timeout_ms",
                defaults.server.idle_timeout_ms,
                integer(100, 3_600_000),
            ),
            body_min_rate_bytes_per_s: server.get(
                "body_min_rate_bytes_per_s",
                defaults.server.body_min_rate_bytes_per_s,
                integer(1, 1 << 30),
            ),
            body_grace_ms: server.get(
                "body_grace_ms",
                defaults.server.body_grace_ms,
                integer(0, 600_000),
            ),
            send_timeout_ms: server.get(
                "send_timeout_ms",
                defaults.server.send_timeout_ms,
                integer(100, 600_000),
            ),
            max_requests_per_connection: server.get(
                "max_requests_per_connection",
                defaults.server.max_requests_per_connection,
                integer(1, 1 << 32),
            ),
            max_connections: server.get(
                "max_connections",
                defaults.server.max_connections,
                integer(1, 10_000_000),
            ),
            max_connections_per_ip: server.get(
                "max_connections_per_ip",
                defaults.server.max_connections_per_ip,
                integer(1, 10_000_000),
            ),
            trusted_proxies: server.get(
                "trusted_proxies",
                defaults.server.trusted_proxies,
                networks,
            ),
            max_body_bytes: server.get(
                "max_body_bytes",
                defaults.server.max_body_bytes,
                integer(1_024, 16 * 1024 * 1024),
            ),
            shutdown_grace_ms: server.get(
                "shutdown_grace_ms",
                defaults.server.shutdown_grace_ms,
                integer(0, 600_000),
            ),
            worker_threads: server.get(
                "worker_threads",
                defaults.server.worker_threads,
                integer(0, 1_024),
            ),
            metrics_public: server.get("metrics_public", defaults.server.metrics_public, boolean),
            tls: None,
            admin_tls: None,
        };
        server.finish();
        server_config.tls =
            tls_table.and_then(|table| read_tls("server.tls", table, &mut problems));
        server_config.admin_tls =
            admin_tls_table.and_then(|table| read_tls("server.admin_tls", table, &mut problems));

        let mut store = Section::new("store", store_table, &mut problems);
        let store_config = StoreConfig {
            path: store.get("path", defaults.store.path, |value| {
                text_value(value).map(PathBuf::from)
            }),
            url: store.get("url", defaults.store.url, |value| {
                postgres_url(value).map(Some)
            }),
            max_batch: store.get("max_batch", defaults.store.max_batch, integer(1, 100_000)),
            queue_capacity: store.get(
                "queue_capacity",
                defaults.store.queue_capacity,
                integer(1, 10_000_000),
            ),
            lease_ttl_ms: store.get(
                "lease_ttl_ms",
                defaults.store.lease_ttl_ms,
                integer(1_000, 3_600_000),
            ),
            leader_ttl_ms: store.get(
                "leader_ttl_ms",
                defaults.store.leader_ttl_ms,
                integer(1_000, 600_000),
            ),
        };
        store.finish();

        let mut intake = Section::new("intake", intake_table, &mut problems);
        let intake_config = IntakeConfig {
            max_quantity_per_order: intake.get(
                "max_quantity_per_order",
                defaults.intake.max_quantity_per_order,
                integer(1, 1_000_000),
            ),
            idempotency_retention_h: intake.get(
                "idempotency_retention_h",
                defaults.intake.idempotency_retention_h,
                integer(24, 24 * 365),
            ),
        };
        intake.finish();

        let mut downstream = Section::new("downstream", downstream_table, &mut problems);
        let wanted = defaults.downstream;
        let downstream_config = DownstreamConfig {
            url: downstream.get("url", wanted.url, |value| http_url(value).map(Some)),
            rate_per_second: downstream.get(
                "rate_per_second",
                wanted.rate_per_second,
                integer(1, 100_000),
            ),
            max_in_flight: downstream.get(
                "max_in_flight",
                wanted.max_in_flight,
                integer(1, 10_000),
            ),
            max_attempts: downstream.get("max_attempts", wanted.max_attempts, integer(1, 1_000)),
            timeout_ms: downstream.get("timeout_ms", wanted.timeout_ms, integer(100, 600_000)),
            backoff_base_ms: downstream.get(
                "backoff_base_ms",
                wanted.backoff_base_ms,
                integer(10, 3_600_000),
            ),
            backoff_max_ms: downstream.get(
                "backoff_max_ms",
                wanted.backoff_max_ms,
                integer(10, 86_400_000),
            ),
            breaker_failures: downstream.get(
                "breaker_failures",
                wanted.breaker_failures,
                integer(1, 1_000),
            ),
            breaker_open_ms: downstream.get(
                "breaker_open_ms",
                wanted.breaker_open_ms,
                integer(100, 3_600_000),
            ),
        };
        downstream.finish();
        let front_door_config = read_front_door(front_door_tables, &mut problems);
        let mut room = Section::new("waiting_room", waiting_room_table, &mut problems);
        let mut waiting_room_config = WaitingRoomConfig {
            secret: room.get("secret", defaults.waiting_room.secret, text_value),
            abandon_after_s: room.get(
                "abandon_after_s",
                defaults.waiting_room.abandon_after_s,
                integer(5, 3_600),
            ),
            max_delivery_backlog_s: room.get(
                "max_delivery_backlog_s",
                defaults.waiting_room.max_delivery_backlog_s,
                integer(1, 86_400),
            ),
            colour: room.get("colour", defaults.waiting_room.colour, hex_colour),
            key_id: room.get("key_id", defaults.waiting_room.key_id, key_id),
            previous_keys: Vec::new(),
        };
        let previous_tables = room.tables("previous_keys");
        room.finish();
        for (path, table) in previous_tables {
            let mut key = Section::new(path, Some(table), &mut problems);
            let id = key.get("id", 0, key_id);
            let secret = key.get("secret", String::new(), text_value);
            if secret.is_empty() {
                key.problem("secret", "is required");
            }
            if id == waiting_room_config.key_id
                || waiting_room_config
                    .previous_keys
                    .iter()
                    .any(|(seen, _)| *seen == id)
            {
                key.problem("id", format!("{id} is already in use"));
            }
            key.finish();
            waiting_room_config.previous_keys.push((id, secret));
        }
        let mut drops = Section::new("drops", drops_table, &mut problems);
        let drops_config = DropsConfig {
            identity: drops.get("identity", IdentitySource::Body, identity_source),
        };
        drops.finish();
        if downstream_config.backoff_max_ms < downstream_config.backoff_base_ms {
            problems.push(ConfigProblem {
                path: "downstream.backoff_max_ms".into(),
                problem: "must not be below downstream.backoff_base_ms".into(),
            });
        }

        if server_config.listen == server_config.admin_listen && server_config.listen.port() != 0 {
            problems.push(ConfigProblem {
                path: "server.admin_listen".into(),
                problem: "must differ from server.listen".into(),
            });
        }
        if problems.is_empty() {
            Ok(Self {
                server: server_config,
                store: store_config,
                intake: intake_config,
                downstream: downstream_config,
                front_door: front_door_config,
                waiting_room: waiting_room_config,
                drops: drops_config,
            })
        } else {
            Err(problems)
        }
    }

    /// Applies environment overrides (`FLOODGATE_ADMIN_TOKEN`, `FLOODGATE_SECRET`,
    /// `FLOODGATE_STORE_URL`); `var` reads one variable.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(token) = var("FLOODGATE_ADMIN_TOKEN").filter(|token| !token.is_empty()) {
            self.server.admin_token = token;
        }
        if let Some(secret) = var("FLOODGATE_SECRET").filter(|secret| !secret.is_empty()) {
            self.waiting_room.secret = secret;
        }
        if let Some(url) = var("FLOODGATE_STORE_URL").filter(|url| !url.is_empty()) {
            self.store.url = Some(url);
        }
    }

    /// What the gateway needs, given the admin token and signing secret finally in force.
    pub fn gateway_settings(&self, admin_token: String, secret: String) -> GatewaySettings {
        GatewaySettings {
            admin_token,
            metrics_public: self.server.metrics_public,
            token_keys: floodgate_core::TokenKeys::new(
                (self.waiting_room.key_id, secret.into_bytes()),
                self.waiting_room
                    .previous_keys
                    .iter()
                    .map(|(id, secret)| (*id, secret.clone().into_bytes()))
                    .collect(),
            ),
            room_colour: self.waiting_room.colour.clone(),
            identity: self.drops.identity.clone(),
            abandon_after: Duration::from_secs(self.waiting_room.abandon_after_s),
            // Without a downstream nothing is delivered, so there is no pace to fall behind.
            delivery: self.downstream.url.as_ref().map(|_| DeliveryPace {
                rate_per_second: self.downstream.rate_per_second,
                max_backlog: Duration::from_secs(self.waiting_room.max_delivery_backlog_s),
            }),
            front_door: self.front_door.clone(),
            max_body_bytes: usize::try_from(self.server.max_body_bytes).unwrap_or(usize::MAX),
            trusted_proxies: self.server.trusted_proxies.clone(),
            intake: IntakeLimits {
                max_quantity_per_order: u32::try_from(self.intake.max_quantity_per_order)
                    .unwrap_or(u32::MAX),
                idempotency_retention: Duration::from_secs(
                    self.intake.idempotency_retention_h * 3_600,
                ),
                lease_ttl: Duration::from_millis(self.store.lease_ttl_ms),
            },
        }
    }

    /// How listeners treat connections.
    pub fn connection_limits(&self) -> ConnectionLimits {
        let count = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        let server = &self.server;
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            body_min_rate_bytes_per_s: server.body_min_rate_bytes_per_s,
            body_grace: Duration::from_millis(server.body_grace_ms),
            send_timeout: Duration::from_millis(server.send_timeout_ms),
            max_requests_per_connection: server.max_requests_per_connection,
            max_connections: count(server.max_connections),
            max_connections_per_ip: count(server.max_connections_per_ip),
            shutdown_grace: Duration::from_millis(server.shutdown_grace_ms),
        }
    }

    /// How many threads serve connections: `server.worker_threads`, or one per core.
    pub fn connection_threads(&self) -> NonZeroUsize {
        usize::try_from(self.server.worker_threads)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }
}

/// One table of the file, tracking which keys were read so the rest can be reported unknown.
struct Section<'t, 'p> {
    path: String,
    table: Option<&'t Table>,
    known: Vec<&'static str>,
    problems: &'p mut Vec<ConfigProblem>,
}

impl<'t, 'p> Section<'t, 'p> {
    fn root(table: &'t Table, problems: &'p mut Vec<ConfigProblem>) -> Self {
        Self {
            path: String::new(),
            table: Some(table),
            known: Vec::new(),
            problems,
        }
    }

    fn new(
        path: impl Into<String>,
        table: Option<&'t Table>,
        problems: &'p mut Vec<ConfigProblem>,
    ) -> Self {
        Self {
            path: path.into(),
            table,
            known: Vec::new(),
            problems,
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn table(&mut self, key: &'static str) -> Option<&'t Table> {
        self.known.push(key);
        match self.table?.get(key)? {
            Value::Table(table) => Some(table),
            _ => {
                let path = self.key_path(key);
                self.problems.push(ConfigProblem {
                    path,
                    problem: "must be a table".into(),
                });
                None
            }
        }
    }

    /// An array of tables (`[[key]]`), each with its path (`key[2]`).
    fn tables(&mut self, key: &'static str) -> Vec<(String, &'t Table)> {
        self.known.push(key);
        let Some(value) = self.table.and_then(|table| table.get(key)) else {
            return Vec::new();
        };
        let path = self.key_path(key);
        let Value::Array(items) = value else {
            self.problems.push(ConfigProblem {
                path,
                problem: format!("must be an array of tables ([[{key}]])"),
            });
            return Vec::new();
        };
        let mut tables = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            match item {
                Value::Table(table) => tables.push((item_path, table)),
                _ => self.problems.push(ConfigProblem {
                    path: item_path,
                    problem: "must be a table".into(),
                }),
            }
        }
        tables
    }

    /// Reports a problem with the value of `key`.
    fn problem(&mut self, key: &str, problem: impl Into<String>) {
        let path = self.key_path(key);
        self.problems.push(ConfigProblem {
            path,
            problem: problem.into(),
        });
    }

    fn get<T>(
        &mut self,
        key: &'static str,
        default: T,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> T {
        self.known.push(key);
        let Some(value) = self.table.and_then(|table| table.get(key)) else {
            return default;
        };
        parse(value).unwrap_or_else(|problem| {
            let path = self.key_path(key);
            self.problems.push(ConfigProblem { path, problem });
            default
        })
    }

    fn finish(self) {
        let Some(table) = self.table else { return };
        for key in table
            .keys()
            .filter(|key| !self.known.contains(&key.as_str()))
        {
            let path = self.key_path(key);
            let problem = format!("unknown key (known here: {})", self.known.join(", "));
            self.problems.push(ConfigProblem { path, problem });
        }
    }
}

/// A listener's TLS files, read here: `check-config` finds a bad one, and what is served is
/// what was checked.
fn read_tls(path: &str, table: &Table, problems: &mut Vec<ConfigProblem>) -> Option<LoadedTls> {
    let mut section = Section::new(path, Some(table), problems);
    let file = |value: &Value| text_value(value).map(|text| Some(PathBuf::from(text)));
    let cert = section.get("cert", None, file);
    let key = section.get("key", None, file);
    let client_ca = section.get("client_ca", None, file);
    for (name, value) in [("cert", &cert), ("key", &key)] {
        if value.is_none() && !table.contains_key(name) {
            section.problem(name, "is required");
        }
    }
    section.finish();
    let files = TlsFiles {
        cert: cert?,
        key: key?,
        client_ca,
    };
    match LoadedTls::load(files) {
        Ok(loaded) => Some(loaded),
        Err(error) => {
            problems.push(ConfigProblem {
                path: path.to_owned(),
                problem: error.to_string(),
            });
            None
        }
    }
}

fn socket_addr(value: &Value) -> Result<SocketAddr, String> {
    let text = text_value(value)?;
    text.parse()
        .map_err(|_| format!("{text:?} is not an address such as \"127.0.0.1:8080\""))
}

fn http_url(value: &Value) -> Result<Uri, String> {
    let text = text_value(value)?;
    let example = "an http:// URL such as \"http://127.0.0.1:9000/orders\"";
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not {example}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => Err(format!(
            "https is not supported yet; use {example} (a local TLS proxy can add https)"
        )),
        _ => Err(format!("{text:?} is not {example}")),
    }
}

/// A list of addresses and networks: `"10.0.0.0/8"`, `"192.0.2.7"`, `"2001:db8::/32"`.
fn networks(value: &Value) -> Result<Vec<ipnet::IpNet>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("must be an array of addresses, not {}", value.type_str()))?;
    items
        .iter()
        .map(|item| {
            let text = text_value(item)?;
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|network| network.trunc())
                .map_err(|_| {
                    format!("{text:?} is not an address or network such as \"10.0.0.0/8\"")
                })
        })
        .collect()
}

fn postgres_url(value: &Value) -> Result<String, String> {
    let text = text_value(value)?;
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text)
    } else {
        Err(
            "must be a postgres:// URL such as \"postgres://floodgate@db.internal/floodgate\""
                .into(),
        )
    }
}

fn text_value(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("must be a string, not {}", value.type_str()))
}

fn key_id(value: &Value) -> Result<u8, String> {
    integer(0, 255)(value).map(|id| u8::try_from(id).unwrap_or(u8::MAX))
}

fn identity_source(value: &Value) -> Result<IdentitySource, String> {
    let text = text_value(value)?;
    match text.strip_prefix("header:") {
        None if text == "body" => Ok(IdentitySource::Body),
        Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
            .map(IdentitySource::Header)
            .map_err(|_| format!("{name:?} is not a header name")),
        None if text == "cookie" => Ok(IdentitySource::Cookie),
        None => Err(format!(
            "{text:?} is not \"body\", \"cookie\" or \"header:<Name>\""
        )),
    }
}

/// A colour safe to put in a stylesheet: `#rgb` or `#rrggbb`, nothing else.
fn hex_colour(value: &Value) -> Result<String, String> {
    let text = text_value(value)?;
    let digits = text.strip_prefix('#').unwrap_or("");
    if matches!(digits.len(), 3 | 6) && digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(text)
    } else {
        Err(format!("{text:?} is not a colour such as \"#1f6feb\""))
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("must be true or false, not {}", value.type_str()))
}

fn integer(min: u64, max: u64) -> impl FnOnce(&Value) -> Result<u64, String> {
    move |value| {
        let number = value
            .as_integer()
            .ok_or_else(|| format!("must be an integer, not {}", value.type_str()))?;
        u64::try_from(number)
            .ok()
            .filter(|number| (min..=max).contains(number))
            .ok_or_else(|| format!("must be between {min} and {max}, not {number}"))
    }
}

fn location(text: &str, error: &toml::de::Error) -> String {
    error.span().map_or_else(String::new, |span| {
        let line = text[..span.start.min(text.len())].lines().count().max(1);
        format!(" (line {line})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_keys_are_read_and_their_ids_must_differ() {
        let config = Config::from_toml(
            r#"
            [waiting_room]
            secret = "new"
            key_id = 3
            previous_keys = [{ id = 2, secret = "old" }, { id = 1, secret = "older" }]
            "#,
        )
        .unwrap();
        assert_eq!(config.waiting_room.key_id, 3);
        assert_eq!(
            config.waiting_room.previous_keys,
            [(2, "old".to_owned()), (1, "older".to_owned())]
        );
        assert_eq!(
            problem_paths(
                "[waiting_room]\nkey_id = 1\nprevious_keys = [{ id = 1, secret = \"x\" }, { id = 300 }]\n",
            ),
            [
                "waiting_room.previous_keys[0].id",
                "waiting_room.previous_keys[1].id",
                "waiting_room.previous_keys[1].secret"
            ]
        );
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        assert_eq!(Config::from_toml(""), Ok(Config::default()));
    }

    #[test]
    fn reads_every_key() {
        let config = Config::from_toml(
            r#"
            [server]
            listen = "0.0.0.0:80"
            admin_listen = "127.0.0.1:9999"
            admin_token = "s3cret"
            header_read_timeout_ms = 2000
            max_body_bytes = 4096
            shutdown_grace_ms = 0
            metrics_public = true
            [store]
            path = "/var/lib/floodgate"
            max_batch = 64
            queue_capacity = 1000
            [intake]
            max_quantity_per_order = 3
            idempotency_retention_h = 48
            [downstream]
            url = "http://127.0.0.1:9000/orders"
            rate_per_second = 25
            max_in_flight = 2
            max_attempts = 3
            timeout_ms = 1500
            backoff_base_ms = 100
            backoff_max_ms = 2000
            breaker_failures = 4
            breaker_open_ms = 1000
            "#,
        )
        .unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(config.server.admin_token, "s3cret");
        assert!(config.server.metrics_public);
        assert_eq!(config.store.path, PathBuf::from("/var/lib/floodgate"));
        assert_eq!(config.intake.max_quantity_per_order, 3);
        let downstream = &config.downstream;
        assert_eq!(
            downstream.url.as_ref().map(ToString::to_string).as_deref(),
            Some("http://127.0.0.1:9000/orders")
        );
        assert_eq!(
            (
                downstream.rate_per_second,
                downstream.max_in_flight,
                downstream.max_attempts
            ),
            (25, 2, 3)
        );
        assert_eq!(
            (downstream.timeout_ms, downstream.breaker_open_ms),
            (1_500, 1_000)
        );
        assert_eq!(
            config.connection_limits().header_read_timeout,
            Duration::from_secs(2)
        );
    }

    /// The key paths of the problems `text` has, in the order reported.
    fn problem_paths(text: &str) -> Vec<String> {
        Config::from_toml(text)
            .unwrap_err()
            .into_iter()
            .map(|problem| problem.path)
            .collect()
    }

    #[test]
    fn reports_every_problem_with_its_path_at_once() {
        let paths = problem_paths(
            r#"
            colour = "blue"
            [server]
            listen = "localhost"
            max_body_bytes = -1
            lisen = "x"
            [store]
            max_batch = "many"
            url = "mysql://nope"
            [intake]
            idempotency_retention_h = 1
            [downstream]
            url = "https://legacy.example/orders"
            rate_per_second = 0
            backoff_base_ms = 5000
            backoff_max_ms = 1000
            [drops]
            identity = "session"
            "#,
        );
        assert_eq!(
            paths,
            [
                "colour",
                "server.listen",
                "server.max_body_bytes",
                "server.lisen",
                "store.url",
                "store.max_batch",
                "intake.idempotency_retention_h",
                "downstream.url",
                "downstream.rate_per_second",
                "drops.identity",
                "downstream.backoff_max_ms"
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let problems = Config::from_toml("[server]\nlisten = \n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].problem.contains("line 2"), "{}", problems[0]);
    }

    #[test]
    fn the_environment_overrides_the_token_and_the_store() {
        let mut config = Config::default();
        config.apply_env(|name| match name {
            "FLOODGATE_ADMIN_TOKEN" => Some("from-env".to_owned()),
            "FLOODGATE_STORE_URL" => Some("postgres://db.internal/floodgate".to_owned()),
            _ => None,
        });
        assert_eq!(config.server.admin_token, "from-env");
        assert_eq!(
            config.store.url.as_deref(),
            Some("postgres://db.internal/floodgate")
        );
    }
}
