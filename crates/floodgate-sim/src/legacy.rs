//! A simulated legacy shop: a catalog and an order endpoint that takes `capacity_rps` orders a
//! second and degrades like a real overloaded system above that, with faults to inject.
//!
//! [`LegacyShop`] is the simulation itself, driven by `tokio::time` so tests can pause time. It is
//! reachable two ways: over HTTP ([`LegacyServer`], `floodgate sim legacy`), and in process as a
//! [`Downstream`] for paused-time tests of the dispatcher. Both see the same answers.
//!
//! `POST /orders` at or below capacity: `201 {"reference"}`, or `409` with the same reference for
//! an `Idempotency-Key` seen before. Above capacity (starts in the last second / capacity):
//! up to 1.5× the latency climbs with the square of the load, up to 3× it answers
//! `503 Retry-After: 1`, beyond that it hangs. `GET /sim/received` lists every order taken,
//! `GET /sim/stats` counts starts, duplicates and the most starts seen in any one-second window.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use floodgate_core::Order;
use floodgate_dispatch::{Downstream, Reply, ReplyFuture, order_body};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Load (starts in the last second / capacity) above which answers slow down.
const SLOW_LOAD: f64 = 1.0;
/// Load above which orders get `503`.
const SHED_LOAD: f64 = 1.5;
/// Load above which requests hang.
const HANG_LOAD: f64 = 3.0;
/// How long a hanging request hangs.
const HANG: Duration = Duration::from_secs(120);
/// Largest order body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How the simulated shop behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyConfig {
    /// Orders a second it takes without degrading.
    pub capacity_rps: u32,
    /// Time to take an order at or below capacity.
    pub latency: Duration,
    /// Time to serve a catalog page.
    pub page_latency: Duration,
    /// Share of orders answered `503` at random.
    pub error_rate: f64,
    /// `Retry-After` seconds on those `503`s.
    pub retry_after_s: Option<u64>,
    /// Share of orders taken but answered only after [`HANG`] (the caller times out).
    pub timeout_rate: f64,
    /// Share of orders whose connection is dropped before they are taken.
    pub drop_rate: f64,
    /// A full outage: starts this long after start-up, lasts `.1`; every connection is dropped.
    pub outage: Option<(Duration, Duration)>,
    /// Orders of this SKU are refused for good (`422`).
    pub reject_sku: Option<String>,
    /// Seed of the fault dice.
    pub seed: u64,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            capacity_rps: 10,
            latency: Duration::from_millis(20),
            page_latency: Duration::from_millis(50),
            error_rate: 0.0,
            retry_after_s: None,
            timeout_rate: 0.0,
            drop_rate: 0.0,
            outage: None,
            reject_sku: None,
            seed: 1,
        }
    }
}

/// An order the shop took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received {
    /// `order_id` from the body.
    pub order_id: String,
    /// The `Idempotency-Key` it came with.
    pub idempotency_key: String,
    /// The shop's reference.
    pub reference: String,
    /// Milliseconds after start-up.
    pub received_ms: u64,
}

/// What the shop has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegacyStats {
    /// The configured capacity.
    pub capacity_rps: u32,
    /// `POST /orders` requests that started.
    pub starts: u64,
    /// Orders taken (first time their key was seen).
    pub received: u64,
    /// Requests whose key had been taken before.
    pub duplicates: u64,
    /// The most starts in any one-second window.
    pub max_starts_in_any_second: u64,
}

/// An answer the shop gives, `after` a delay.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Respond {
    after: Duration,
    status: StatusCode,
    body: String,
    retry_after: Option<u64>,
}

/// What the shop does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Respond(Respond),
    /// Never answers in time.
    Hang,
    /// Closes the connection without an answer.
    Drop,
}

#[derive(Debug)]
struct Ledger {
    /// Start times since start-up, in order.
    starts: Vec<Duration>,
    received: Vec<Received>,
    references: HashMap<String, String>,
    duplicates: u64,
    dice: fastrand::Rng,
}

/// The simulated shop.
#[derive(Debug)]
pub struct LegacyShop {
    config: LegacyConfig,
    started: Instant,
    ledger: Mutex<Ledger>,
}

impl LegacyShop {
    /// A shop opening now.
    pub fn new(config: LegacyConfig) -> Self {
        let dice = fastrand::Rng::with_seed(config.seed);
        Self {
            config,
            started: Instant::now(),
            ledger: Mutex::new(Ledger {
                starts: Vec::new(),
                received: Vec::new(),
                references: HashMap::new(),
                duplicates: 0,
                dice,
            }),
        }
    }

    /// Every order taken, in the order taken.
    pub fn received(&self) -> Vec<Received> {
        self.ledger().received.clone()
    }

    /// The ids of the orders taken, sorted; an order taken twice as new is there twice.
    pub fn order_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .ledger()
            .received
            .iter()
            .map(|received| received.order_id.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Counts of what the shop has seen.
    pub fn stats(&self) -> LegacyStats {
        let ledger = self.ledger();
        LegacyStats {
            capacity_rps: self.config.capacity_rps,
            starts: ledger.starts.len() as u64,
            received: ledger.received.len() as u64,
            duplicates: ledger.duplicates,
            max_starts_in_any_second: most_in_one_second(&ledger.starts),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_order(&self, key: Option<&str>, body: &[u8]) -> Answer {
        let since_start = Instant::now().duration_since(self.started);
        let mut ledger = self.ledger();
        ledger.starts.push(since_start);
        if let Some((after, lasting)) = self.config.outage
            && since_start >= after
            && since_start < after + lasting
        {
            return Answer::Drop;
        }
        // Starts in the second up to now, this one included.
        let recent = match since_start.checked_sub(Duration::from_secs(1)) {
            Some(second_ago) => {
                ledger.starts.len() - ledger.starts.partition_point(|at| *at <= second_ago)
            }
            None => ledger.starts.len(),
        };
        let load = recent as f64 / f64::from(self.config.capacity_rps.max(1));
        if load > HANG_LOAD {
            return Answer::Hang;
        }
        if load > SHED_LOAD {
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "overloaded"}),
            )
            .with_retry_after(Some(1));
        }
        let latency = if load > SLOW_LOAD {
            self.config.latency.mul_f64(load * load * 4.0)
        } else {
            self.config.latency
        };
        if ledger.dice.f64() < self.config.drop_rate {
            return Answer::Drop;
        }
        if ledger.dice.f64() < self.config.error_rate {
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "try later"}),
            )
            .with_retry_after(self.config.retry_after_s);
        }
        let Some(key) = key else {
            return respond(
                StatusCode::BAD_REQUEST,
                json!({"error": "Idempotency-Key required"}),
            );
        };
        let order: serde_json::Value = match serde_json::from_slice(body) {
            Ok(order) => order,
            Err(_) => return respond(StatusCode::BAD_REQUEST, json!({"error": "invalid JSON"})),
        };
        if let Some(reference) = ledger.references.get(key).cloned() {
            ledger.duplicates += 1;
            return respond(StatusCode::CONFLICT, json!({ "reference": reference })).after(latency);
        }
        if self.config.reject_sku.is_some()
            && order["sku"].as_str() == self.config.reject_sku.as_deref()
        {
            return respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "unknown sku"}),
            );
        }
        let reference = format!("L-{:06}", ledger.received.len() + 1);
        ledger.references.insert(key.to_owned(), reference.clone());
        ledger.received.push(Received {
            order_id: order["order_id"].as_str().unwrap_or_default().to_owned(),
            idempotency_key: key.to_owned(),
            reference: reference.clone(),
            received_ms: since_start.as_millis() as u64,
        });
        if ledger.dice.f64() < self.config.timeout_rate {
            return Answer::Hang;
        }
        respond(StatusCode::CREATED, json!({ "reference": reference })).after(latency)
    }
}

fn respond(status: StatusCode, body: serde_json::Value) -> Answer {
    Answer::Respond(Respond {
        after: Duration::ZERO,
        status,
        body: body.to_string(),
        retry_after: None,
    })
}

impl Answer {
    fn after(self, delay: Duration) -> Self {
        match self {
            Self::Respond(respond) => Self::Respond(Respond {
                after: delay,
                ..respond
            }),
            other => other,
        }
    }

    fn with_retry_after(self, seconds: Option<u64>) -> Self {
        match self {
            Self::Respond(respond) => Self::Respond(Respond {
                retry_after: seconds,
                ..respond
            }),
            other => other,
        }
    }
}

/// The most entries of sorted `starts` that fit in any half-open one-second window.
fn most_in_one_second(starts: &[Duration]) -> u64 {
    let mut most = 0;
    let mut first = 0;
    for (last, at) in starts.iter().enumerate() {
        while *at - starts[first] >= Duration::from_secs(1) {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most as u64
}

impl Downstream for LegacyShop {
    fn deliver<'a>(&'a self, order: &'a Order) -> ReplyFuture<'a> {
        Box::pin(async move {
            let body = order_body(order);
            match self.take_order(Some(order.order_id.as_str()), body.to_string().as_bytes()) {
                Answer::Respond(respond) => {
                    tokio::time::sleep(respond.after).await;
                    let reference = serde_json::from_str::<serde_json::Value>(&respond.body)
                        .ok()
                        .and_then(|body| body["reference"].as_str().map(str::to_owned));
                    Reply::Answered {
                        status: respond.status,
                        retry_after: respond.retry_after.map(Duration::from_secs),
                        reference,
                    }
                }
                Answer::Hang => std::future::pending().await,
                Answer::Drop => Reply::Unreachable("connection closed".into()),
            }
        })
    }
}

/// The shop served over HTTP/1.1 until dropped.
pub struct LegacyServer {
    address: SocketAddr,
    shop: Arc<LegacyShop>,
    task: JoinHandle<()>,
}

impl LegacyServer {
    /// Binds `listen` and serves a new shop on it.
    pub async fn start(listen: SocketAddr, config: LegacyConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let shop = Arc::new(LegacyShop::new(config));
        let task = tokio::spawn(accept(listener, Arc::clone(&shop)));
        Ok(Self {
            address,
            shop,
            task,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>/orders`.
    pub fn orders_url(&self) -> String {
        format!("http://{}/orders", self.address)
    }

    /// The `[origin]` and `[downstream]` sections of a floodgate configuration in front of this
    /// shop, delivering at most `rate_per_second` orders a second.
    pub fn floodgate_config(&self, rate_per_second: u32) -> String {
        format!(
            "[origin]\nurl = \"http://{}\"\n[downstream]\nurl = \"{}\"\nrate_per_second = {rate_per_second}\n",
            self.address,
            self.orders_url()
        )
    }

    /// The shop behind it.
    pub fn shop(&self) -> &Arc<LegacyShop> {
        &self.shop
    }
}

impl Drop for LegacyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shop: Arc<LegacyShop>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "legacy sim: accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shop = Arc::clone(&shop);
        connections.spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&shop), request));
            // A dropped connection is one of the faults; its error is expected.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// Why a connection is closed without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("connection dropped by the simulated shop")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    shop: Arc<LegacyShop>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::POST, "/orders") => {
            let key = request
                .headers()
                .get("idempotency-key")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => return Err(Dropped),
            };
            match shop.take_order(key.as_deref(), &body) {
                Answer::Respond(respond) => {
                    tokio::time::sleep(respond.after).await;
                    let mut response = json_response(respond.status, respond.body);
                    if let Some(seconds) = respond.retry_after {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, seconds.into());
                    }
                    Ok(response)
                }
                Answer::Hang => {
                    tokio::time::sleep(HANG).await;
                    Err(Dropped)
                }
                Answer::Drop => Err(Dropped),
            }
        }
        (&Method::GET, "/sim/received") => Ok(json_response(
            StatusCode::OK,
            serde_json::to_string(&shop.received()).unwrap_or_default(),
        )),
        (&Method::GET, "/sim/stats") => Ok(json_response(
            StatusCode::OK,
            serde_json::to_string(&shop.stats()).unwrap_or_default(),
        )),
        (&Method::GET, page) if page.starts_with("/shop/") => {
            tokio::time::sleep(shop.config.page_latency).await;
            let html = format!(
                "<!doctype html><html><head><title>Legacy shop</title></head>\
                 <body><h1>{}</h1><p>Served by the simulated legacy shop.</p></body></html>",
                floodgate_http::escape_html(page)
            );
            Ok(with_type(StatusCode::OK, "text/html; charset=utf-8", html))
        }
        _ => Ok(json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "not_found"}).to_string(),
        )),
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "application/json", body)
}

fn with_type(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_second_is_counted_over_a_sliding_window() {
        let at = |millis: &[u64]| -> Vec<Duration> {
            millis.iter().copied().map(Duration::from_millis).collect()
        };
        assert_eq!(most_in_one_second(&[]), 0);
        assert_eq!(most_in_one_second(&at(&[0, 999, 1_000, 1_998])), 3);
        // A fixed per-second counter would see 2 and 2; the sliding window sees all four.
        assert_eq!(most_in_one_second(&at(&[600, 900, 1_100, 1_400])), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn takes_an_order_once_and_answers_a_repeat_with_409() {
        let shop = LegacyShop::new(LegacyConfig::default());
        let body = br#"{"order_id":"ord_1","sku":"rod"}"#;
        let first = shop.take_order(Some("ord_1"), body);
        assert!(matches!(
            first,
            Answer::Respond(Respond {
                status: StatusCode::CREATED,
                ..
            })
        ));
        let again = shop.take_order(Some("ord_1"), body);
        assert!(matches!(
            again,
            Answer::Respond(Respond {
                status: StatusCode::CONFLICT,
                ..
            })
        ));
        let stats = shop.stats();
        assert_eq!((stats.starts, stats.received, stats.duplicates), (2, 1, 1));
        assert_eq!(shop.received()[0].reference, "L-000001");
    }

    #[tokio::test(start_paused = true)]
    async fn degrades_above_capacity() {
        let shop = LegacyShop::new(LegacyConfig {
            capacity_rps: 10,
            ..LegacyConfig::default()
        });
        let statuses: Vec<Option<StatusCode>> = (0..40)
            .map(|serial| {
                let key = format!("k{serial}");
                match shop.take_order(Some(&key), br#"{"order_id":"x"}"#) {
                    Answer::Respond(respond) => Some(respond.status),
                    Answer::Hang | Answer::Drop => None,
                }
            })
            .collect();
        assert!(
            statuses[..15]
                .iter()
                .all(|s| *s == Some(StatusCode::CREATED))
        );
        assert!(
            statuses[15..30]
                .iter()
                .all(|s| *s == Some(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert!(statuses[30..].iter().all(Option::is_none));
    }
}
