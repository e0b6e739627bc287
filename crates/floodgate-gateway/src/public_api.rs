//! The public listener's own endpoints: health, drops, orders. Everything else goes through
//! the front door.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use floodgate_core::{
    DropId, DropLedger, DropState, Identity, KeyLookup, Order, OrderId, OrderRequest,
};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::Gateway;
use crate::body::{idempotency_key, parse_json, read_request};
use crate::error::ApiError;
use crate::front_door::ClientAddr;
use crate::queue_api;
use crate::request_id;
use crate::traffic::Timing;

/// How long `/readyz` waits for the store to prove it can commit.
const READINESS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds a shopper is told to wait before polling an accepted order.
const ORDER_POLL_AFTER_S: u32 = 2;

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

/// Every public request gets an id and a span, and is timed into its lane. One middleware, not
/// two: each layer clones the inner service and boxes the request's future, per request.
async fn tag_and_time(
    State(gateway): State<Arc<Gateway>>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let (id, span) = request_id::tag(&mut request);
    let timing = Timing::start(request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    gateway.traffic.record(timing, &response);
    request_id::stamp(&mut response, id);
    response
}

async fn through_front_door(
    State(gateway): State<Arc<Gateway>>,
    mut request: axum::extract::Request,
) -> Response {
    let client = request
        .extensions_mut()
        .remove::<ClientAddr>()
        .unwrap_or_else(|| ClientAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into()));
    gateway.front_door.handle(request, &client).await
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let probe = tokio::time::timeout(
        READINESS_PROBE_TIMEOUT,
        gateway.intake.store().check_writable(),
    );
    match probe.await {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "store_unavailable" })),
        )
            .into_response(),
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
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (headers, body) = read_request(request, gateway.max_body_bytes).await?;
    let key = idempotency_key(&headers)?;
    let mut request: OrderRequest = parse_json(&body)?;
    request.customer = gateway
        .resolve_customer(&headers, request.customer, false)?
        .name;
    let drop_id = DropId::parse(&drop).map_err(|_| ApiError::UnknownDrop)?;
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
