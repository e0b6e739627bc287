//! The public listener: floodgate's own endpoints (health, drops, orders, the waiting room) on
//! a router, and everything else through the front door.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use floodgate_core::{
    DropId, DropLedger, DropState, Identity, KeyLookup, Order, OrderId, OrderRequest,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::Gateway;
use crate::body::{idempotency_key, parse_json, read_request};
use crate::error::ApiError;
use crate::queue_api;
use crate::request_id;
use crate::traffic::Timing;
use floodgate_http::ClientAddr;
use floodgate_http::server;

/// How long `/readyz` waits for the store to prove it can commit.
const READINESS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds a shopper is told to wait before polling an accepted order.
const ORDER_POLL_AFTER_S: u32 = 2;

/// Where floodgate's own endpoints live: every route of [`router`] starts with one of these.
/// Other paths are the shop's, and go to the front door without the router.
const OWN_PREFIXES: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/api/drops/",
    "/api/orders/",
    "/api/queue/",
];

/// The public listener's service: the router for paths under [`OWN_PREFIXES`], the front door
/// directly for the rest. A shop's page skips the router's layers (axum's path match, its
/// boxed middleware and fallback handler, the client's address carried as an extension).
pub(crate) struct PublicGate {
    gateway: Arc<Gateway>,
    router: axum::Router,
}

impl PublicGate {
    /// The gate of `gateway`'s public listener, with its router built once.
    pub(crate) fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self {
            router: router(Arc::clone(&gateway)),
            gateway,
        })
    }

    /// The handler of one connection's requests, from `client`.
    pub(crate) fn connection(self: &Arc<Self>, client: ClientAddr) -> PublicConnection {
        PublicConnection {
            gate: Arc::clone(self),
            client: client.trusted_if_in(&self.gateway.trusted_proxies),
        }
    }

    /// Answers one request from `client` in its lane: an order, floodgate's own endpoints, or
    /// the shop's.
    async fn answer(&self, mut request: Request, client: &ClientAddr) -> Response {
        let gateway = &self.gateway;
        let path = request.uri().path();
        if let Some(drop) = order_drop(request.method(), path) {
            let drop = drop.to_owned();
            return tagged(gateway, request, |request| async move {
                take_order(gateway, &drop, request).await.into_response()
            })
            .await;
        }
        if is_own_path(path) {
            // The router's fallback (a shop path such as `/api/drops/spring/reviews`) needs the
            // client.
            request.extensions_mut().insert(client.clone());
            let Ok(response) = self.router.clone().oneshot(request).await;
            return response;
        }
        tagged(gateway, request, |request| {
            gateway.front_door.handle(request, client)
        })
        .await
    }
}

/// The public listener's handler for one connection.
pub(crate) struct PublicConnection {
    gate: Arc<PublicGate>,
    client: ClientAddr,
}

impl server::Handler for PublicConnection {
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send {
        self.gate.answer(request, &self.client)
    }

    fn refusal(&self, error: floodgate_http::ProtocolError) -> Response {
        ApiError::from(error).into_response()
    }

    /// Health checks keep their promise when the listener is full (DESIGN invariant 4).
    fn serves_beyond_caps(&self, request: &axum::http::Request<()>) -> bool {
        request.method() == Method::GET && matches!(request.uri().path(), "/healthz" | "/readyz")
    }
}

/// Whether `path` is under one of [`OWN_PREFIXES`], where the router may serve it.
fn is_own_path(path: &str) -> bool {
    OWN_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// The drop of an order, `POST /api/drops/{drop}/orders`, taken straight from the path: the
/// hottest of floodgate's own endpoints skips the router, whose layers cost about a tenth of an
/// order's instructions. A segment with a percent escape is left to the router, which decodes
/// it.
fn order_drop<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let drop = path.strip_prefix("/api/drops/")?.strip_suffix("/orders")?;
    let plain = !drop.is_empty() && !drop.contains(['/', '%']);
    (*method == Method::POST && plain).then_some(drop)
}

/// The public API's routes (no socket needed: tests call it directly).
pub(crate) fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/drops/{drop}", get(drop_view))
        .route("/api/drops/{drop}/orders", post(place_order))
        .route("/api/orders/{order_id}", get(order_view))
        .merge(queue_api::routes())
        .fallback(through_front_door)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway),
            tag_and_time,
        ))
        .with_state(gateway)
}

/// Every public request gets an id and a label, and is timed into its lane. One middleware, not
/// two: each layer clones the inner service and boxes the request's future, per request.
async fn tag_and_time(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    tagged(&gateway, request, |request| next.run(request)).await
}

/// Gives `request` its id and label, answers it with `handler`, and times it into its lane.
async fn tagged<F>(
    gateway: &Gateway,
    mut request: Request,
    handler: impl FnOnce(Request) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    let (id, label) = request_id::tag(&mut request);
    let timing = Timing::start(request.uri().path());
    let mut response = request_id::labelled(label, handler(request)).await;
    gateway.traffic.record(timing, &response);
    request_id::stamp(&mut response, id);
    response
}

async fn through_front_door(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
    let client = request
        .extensions_mut()
        .remove::<ClientAddr>()
        .unwrap_or_else(|| ClientAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into()));
    gateway.front_door.handle(request, &client).await
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while the store proves it can commit: its probe (a real commit, and room on its disk)
/// succeeds and no order commit has failed since the last one that did. A failed order commit
/// makes it `503` at once; the probe then clears it for the next check once it succeeds.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let failing = gateway.intake.commits_failing();
    let probe = tokio::time::timeout(
        READINESS_PROBE_TIMEOUT,
        gateway.intake.store().check_writable(),
    );
    let writable = matches!(probe.await, Ok(Ok(())));
    if writable {
        gateway.intake.commits_recovered();
    }
    if writable && !failing {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "store_unavailable" })),
        )
            .into_response()
    }
}

async fn drop_view(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let drop_id = DropId::parse(&drop).map_err(|_| ApiError::UnknownDrop)?;
    let now = gateway.clock.now();
    gateway
        .intake
        .with_drop(&drop_id, |ledger| {
            Json(shopper_drop_json(&drop_id, ledger, now))
        })
        .ok_or(ApiError::UnknownDrop)
}

async fn place_order(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    take_order(&gateway, &drop, request).await
}

async fn take_order(gateway: &Gateway, drop: &str, request: Request) -> Result<Response, ApiError> {
    let (headers, body) = read_request(request, gateway.max_body_bytes).await?;
    let key = idempotency_key(&headers)?;
    let mut request: OrderRequest = parse_json(&body)?;
    request.customer = gateway
        .resolve_customer(&headers, request.customer, false)?
        .name;
    let drop_id = DropId::parse(drop).map_err(|_| ApiError::UnknownDrop)?;
    let now = gateway.clock.now();
    let needs_pass = gateway
        .intake
        .with_drop(&drop_id, |ledger| ledger.spec().waiting_room.enabled)
        .ok_or(ApiError::UnknownDrop)?;
    // A replay of an accepted order needs no pass (its pass was spent the first time); drops
    // without a room skip the lookup.
    let replay = || {
        matches!(
            gateway.intake.lookup_key(&drop_id, &key, &request),
            Some(KeyLookup::Replay(_))
        )
    };
    let held = if needs_pass && !replay() {
        let pass = headers
            .get("floodgate-pass")
            .and_then(|value| value.to_str().ok())
            .ok_or(ApiError::InvalidPass)?;
        let identity = Identity::of(&request.customer);
        Some(gateway.rooms.hold(&drop_id, &identity, pass, now).await?)
    } else {
        None
    };
    let placed = gateway
        .intake
        .place_order(&drop_id, key, request, now)
        .await;
    gateway.counters.order(&placed);
    if let Some(held) = held {
        // The pass is spent by an order or a business refusal; when the shop failed (or the
        // request was malformed) the shopper keeps it and can try again.
        let spent = matches!(placed, Ok(_) | Err(ApiError::Refused(_)));
        let now = gateway.clock.now();
        let sold_out = gateway
            .intake
            .with_drop(&drop_id, |ledger| {
                ledger.state_at(now) == DropState::SoldOut
            })
            .unwrap_or(false);
        held.settle(spent, sold_out, now).await;
    }
    let placed = placed?;
    let order_id = placed.order_id();
    let status_url = ["/api/orders/", order_id.as_str()].concat();
    let body = Accepted {
        order_id,
        state: "accepted",
        status_url: &status_url,
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&status_url) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from(ORDER_POLL_AFTER_S));
    Ok(response)
}

/// The `202` body: serialized straight from here, not built as a `Value` first (callgrind:
/// about 2,000 fewer instructions per order).
#[derive(serde::Serialize)]
struct Accepted<'a> {
    order_id: &'a OrderId,
    state: &'static str,
    status_url: &'a str,
}

async fn order_view(
    State(gateway): State<Arc<Gateway>>,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let order_id = OrderId::parse(&order_id).ok_or(ApiError::UnknownOrder)?;
    let order = gateway
        .intake
        .store()
        .order(order_id)
        .await?
        .ok_or(ApiError::UnknownOrder)?;
    Ok(Json(order_json(&order)))
}

/// A drop as shoppers see it.
pub(crate) fn shopper_drop_json(
    drop_id: &DropId,
    ledger: &DropLedger,
    now: floodgate_core::Timestamp,
) -> Value {
    let spec = ledger.spec();
    let skus: Vec<Value> = spec
        .skus
        .iter()
        .map(|sku| {
            json!({
                "sku": sku.sku,
                "name": sku.name,
                "price_cents": sku.price_cents,
                "available": ledger.available(&sku.sku).unwrap_or(0),
            })
        })
        .collect();
    json!({
        "id": drop_id,
        "name": spec.name,
        "starts_at": spec.starts_at,
        "ends_at": spec.ends_at,
        "state": ledger.state_at(now).as_str(),
        "limit_per_customer": spec.limit_per_customer,
        "skus": skus,
    })
}

/// An order as its status endpoint shows it.
pub(crate) fn order_json(order: &Order) -> Value {
    json!({
        "order_id": order.order_id,
        "drop": order.drop_id,
        "sku": order.sku,
        "quantity": order.quantity,
        "customer": order.customer,
        "state": order.state.as_str(),
        "attempts": order.attempts,
        "accepted_at": order.accepted_at,
        "updated_at": order.updated_at,
        "downstream_ref": order.downstream_ref,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_router_is_under_an_own_prefix() {
        // One path per route of `router` and `queue_api::routes`: a route added outside the
        // prefixes would never be reached, its requests going to the front door.
        for path in [
            "/healthz",
            "/readyz",
            "/api/drops/spring",
            "/api/drops/spring/orders",
            "/api/orders/0123",
            "/api/drops/spring/queue",
            "/api/drops/spring/fairness",
            "/api/queue/ticket",
            "/api/queue/ticket/events",
        ] {
            assert!(is_own_path(path), "{path}");
        }
        assert!(!is_own_path("/shop/rods/muskie"));
        assert!(!is_own_path("/api/cart"));
    }

    #[test]
    fn only_a_plain_order_post_takes_the_order_lane() {
        let post = Method::POST;
        assert_eq!(
            order_drop(&post, "/api/drops/spring/orders"),
            Some("spring")
        );
        assert_eq!(order_drop(&Method::GET, "/api/drops/spring/orders"), None);
        assert_eq!(order_drop(&post, "/api/drops//orders"), None);
        assert_eq!(order_drop(&post, "/api/drops/a/b/orders"), None);
        assert_eq!(order_drop(&post, "/api/drops/sp%72ing/orders"), None);
        assert_eq!(order_drop(&post, "/api/drops/spring/orders/"), None);
        assert_eq!(order_drop(&post, "/api/drops/spring"), None);
    }
}
