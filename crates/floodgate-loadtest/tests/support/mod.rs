//! A fake shop for the load tester's tests: the public API's shapes, with knobs to pause,
//! slow down and fail, and a log of what it received. Loopback, port 0.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The fake shop's one drop.
const DROP: &str = "d1";

#[derive(Default)]
struct State {
    paused_until: Mutex<Option<Instant>>,
    /// `(n, pause)`: the n-th request pauses the shop for `pause`.
    pause_at: Mutex<Option<(usize, Duration)>>,
    delay_ms: AtomicU64,
    fail_first_attempt: AtomicBool,
    arrivals: Mutex<Vec<Instant>>,
    attempts: Mutex<HashMap<String, u32>>,
    /// Idempotency key → (order id, sku).
    orders: Mutex<HashMap<String, (String, String)>>,
    stock: AtomicU64,
    /// What `GET /api/drops/d1` claims is available, when set: a shop that oversells.
    claimed_stock: Mutex<Option<u64>>,
    /// Answer 404 for every order: a shop that loses accepted orders.
    forget_orders: AtomicBool,
}

/// A running fake shop; stops when dropped.
pub(crate) struct FakeShop {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeShop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeShop {
    /// Serves on a fresh loopback port with `stock` units of SKU `s1`.
    pub(crate) async fn start(stock: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            stock: AtomicU64::new(stock),
            ..State::default()
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| serve(request, Arc::clone(&state)));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// When the `request`-th request arrives, holds every answer for `duration` from then.
    pub(crate) fn pause_at_request(&self, request: usize, duration: Duration) {
        *self.state.pause_at.lock().unwrap() = Some((request, duration));
    }

    /// Delays every answer by `delay`.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Answers the first attempt of each idempotency key with 503.
    pub(crate) fn fail_first_attempts(&self) {
        self.state.fail_first_attempt.store(true, Ordering::Relaxed);
    }

    /// Claims only `units` are available while selling its real stock.
    pub(crate) fn claim_stock(&self, units: u64) {
        *self.state.claimed_stock.lock().unwrap() = Some(units);
    }

    /// Loses every accepted order: lookups answer 404.
    pub(crate) fn forget_orders(&self) {
        self.state.forget_orders.store(true, Ordering::Relaxed);
    }

    /// When each request arrived.
    pub(crate) fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Order attempts per idempotency key.
    pub(crate) fn attempts(&self) -> HashMap<String, u32> {
        self.state.attempts.lock().unwrap().clone()
    }
}

fn json(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn serve(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = {
        let mut arrivals = state.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        arrivals.len()
    };
    if let Some((request, pause)) = *state.pause_at.lock().unwrap()
        && request == arrived
    {
        *state.paused_until.lock().unwrap() = Some(Instant::now() + pause);
    }
    let paused_until = *state.paused_until.lock().unwrap();
    if let Some(until) = paused_until {
        tokio::time::sleep_until(until).await;
    }
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = match (method.as_str(), segments.as_slice()) {
        ("GET", ["api", "drops", DROP]) => {
            let claimed = *state.claimed_stock.lock().unwrap();
            let available = claimed.unwrap_or_else(|| state.stock.load(Ordering::Relaxed));
            json(
                200,
                json!({ "skus": [{ "sku": "s1", "available": available }] }),
            )
        }
        ("POST", ["api", "drops", DROP, "queue"]) => json(
            202,
            json!({ "state": "waiting", "ticket": "t-1", "position": 1, "poll_after_ms": 50 }),
        ),
        ("GET", ["api", "queue", ticket]) => json(
            200,
            json!({ "state": "admitted", "pass": format!("pass-{ticket}") }),
        ),
        ("POST", ["api", "drops", DROP, "orders"]) => order(&state, key, &body),
        ("GET", ["api", "orders", id]) => {
            let known = !state.forget_orders.load(Ordering::Relaxed)
                && state
                    .orders
                    .lock()
                    .unwrap()
                    .values()
                    .any(|(order_id, _)| order_id == id);
            if known {
                json(200, json!({ "state": "confirmed" }))
            } else {
                json(404, json!({ "error": "unknown_order" }))
            }
        }
        _ => Response::new(Full::new(Bytes::from_static(b"ok"))),
    };
    Ok(answer)
}

fn order(state: &State, key: Option<String>, body: &[u8]) -> Response<Full<Bytes>> {
    let Some(key) = key else {
        return json(400, json!({ "error": "missing_idempotency_key" }));
    };
    let attempt = {
        let mut attempts = state.attempts.lock().unwrap();
        let n = attempts.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    if attempt == 1 && state.fail_first_attempt.load(Ordering::Relaxed) {
        return json(503, json!({ "error": "overloaded" }));
    }
    let mut orders = state.orders.lock().unwrap();
    if let Some((order_id, _)) = orders.get(&key) {
        return json(202, json!({ "order_id": order_id, "state": "accepted" }));
    }
    let taken = state
        .stock
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1))
        .is_ok();
    if !taken {
        return json(410, json!({ "error": "sold_out" }));
    }
    let sku = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["sku"].as_str().map(str::to_owned));
    let order_id = format!("o-{}", orders.len() + 1);
    orders.insert(key, (order_id.clone(), sku.unwrap_or_default()));
    json(202, json!({ "order_id": order_id, "state": "accepted" }))
}
