//! The admin listener: drop definitions, pause and resume, the order listing and the
//! dead-letter redrive, the live dashboard and the drop reports. Every request needs the admin
//! token, compared in constant time: as `Authorization: Bearer <token>`, or, on reads from a
//! browser, in the dashboard's cookie.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use floodgate_core::{DropId, DropSpec, Order, OrderId, OrderState};
use floodgate_store::{Delivery, OrderFilter, StateCount};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::Gateway;
use crate::body::{parse_json, read_limited};
use crate::error::ApiError;
use crate::public_api::{order_json, shopper_drop_json};
use floodgate_http::ClientAddr;
use floodgate_http::{retry_after_s, wants_html};

/// Most orders one listing page returns: keeps a page's memory and latency bounded.
const MAX_ORDERS_PER_PAGE: u32 = 1_000;
/// Failed authentications one client address may make in a burst, and then one a second: an
/// operator who mistypes is not locked out, a guesser gets a second per guess. A locked-out
/// address is answered `429` without its token being compared at all.
pub(crate) const AUTH_FAILURE_BURST: u32 = 10;
pub(crate) const AUTH_FAILURES_PER_S: u32 = 1;

/// The admin listener's handler for one connection: the router, told the client's address.
pub(crate) struct AdminConnection {
    pub(crate) router: axum::Router,
    pub(crate) client: ClientAddr,
}

impl floodgate_http::server::Handler for AdminConnection {
    fn handle(&self, mut request: Request) -> impl std::future::Future<Output = Response> + Send {
        request.extensions_mut().insert(self.client.clone());
        let router = self.router.clone();
        async move {
            let Ok(response) = tower::ServiceExt::oneshot(router, request).await;
            response
        }
    }

    fn refusal(&self, error: floodgate_http::ProtocolError) -> Response {
        ApiError::from(error).into_response()
    }
}

/// The admin API's routes, behind the bearer-token check.
pub(crate) fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/admin/drops", get(list_drops))
        .route("/admin/drops/{drop}", get(drop_detail).put(put_drop))
        .route("/admin/drops/{drop}/pause", post(pause))
        .route(
            "/admin/drops/{drop}/report",
            get(crate::report::drop_report),
        )
        .route("/admin/drops/{drop}/resume", post(resume))
        .route("/admin/orders", get(list_orders))
        .route("/admin/orders/{order}/redrive", post(redrive))
        .route("/admin/cache/purge", post(purge_cache))
        .route("/admin/drops/{drop}/passes/revoke", post(revoke_pass))
        .route("/metrics", get(metrics))
        .route("/admin/dashboard", get(crate::dashboard::page))
        .route("/admin/dashboard/events", get(crate::dashboard::events))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&gateway),
            require_admin_token,
        ))
        .with_state(gateway)
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    let page = crate::metrics::render(&gateway).await?;
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], page).into_response())
}

async fn require_admin_token(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if gateway.metrics_public && request.uri().path() == "/metrics" {
        return Ok(next.run(request).await);
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::to_vec);
    // A browser's pages and event streams carry the token in a cookie; only reads may, so a
    // cookie can never change anything (it is `SameSite=Strict` besides).
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let presented = bearer.or_else(|| {
        reads
            .then(|| crate::dashboard::cookie_token(request.headers()))
            .flatten()
    });
    let address = (request.extensions().get::<ClientAddr>())
        .and_then(|client| client.ip().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Err(wait) = gateway.admin_failures.peek(&address) {
        return Err(ApiError::TooManyFailures(retry_after_s(wait)));
    }
    let expected = gateway.admin_token.as_bytes();
    // `ct_eq` on slices of different lengths returns false without comparing contents; the
    // length of the token is not a secret worth hiding.
    let presented_any = presented.is_some();
    let valid = presented.is_some_and(|presented| bool::from(presented.ct_eq(expected)));
    if valid && !expected.is_empty() {
        return Ok(next.run(request).await);
    }
    if presented_any {
        // Counted only when a token was tried: a browser's first visit presents none.
        let _ = gateway.admin_failures.check(&address);
    }
    if reads && wants_html(request.headers()) {
        Ok(crate::dashboard::sign_in_page())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn put_drop(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let drop_id = DropId::parse(&drop)
        .map_err(|invalid| ApiError::InvalidBody(format!("drop id {drop:?}: {invalid}")))?;
    let body = read_limited(body, gateway.max_body_bytes).await?;
    let mut fields: Value = parse_json(&body)?;
    // `paused` is switched by pause/resume; a definition that leaves it out keeps the switch.
    if let Some(object) = fields
        .as_object_mut()
        .filter(|object| !object.contains_key("paused"))
    {
        let paused = gateway
            .intake
            .with_drop(&drop_id, |ledger| ledger.spec().paused)
            .unwrap_or(false);
        object.insert("paused".into(), Value::Bool(paused));
    }
    let spec: DropSpec = serde_json::from_value(fields)
        .map_err(|error| ApiError::InvalidBody(format!("invalid drop definition: {error}")))?;
    let now = gateway.clock.now();
    let starts_at = spec.starts_at;
    let rescheduled = gateway
        .intake
        .with_drop(&drop_id, |ledger| ledger.spec().starts_at != starts_at)
        .unwrap_or(false);
    gateway.intake.put_drop(drop_id.clone(), spec, now).await?;
    if rescheduled {
        // A drop moved to another date is another drop as far as its report goes.
        gateway.timeline.forget(&drop_id);
    }
    drop_detail(State(gateway), Path(drop_id.to_string())).await
}

async fn list_drops(State(gateway): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let mut drops = Vec::new();
    for drop_id in gateway.intake.drop_ids() {
        drops.push(admin_drop_json(&gateway, &drop_id).await?);
    }
    Ok(Json(json!({ "drops": drops })))
}

async fn drop_detail(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let drop_id = DropId::parse(&drop).map_err(|_| ApiError::UnknownDrop)?;
    admin_drop_json(&gateway, &drop_id).await.map(Json)
}

async fn pause(state: State<Arc<Gateway>>, drop: Path<String>) -> Result<Json<Value>, ApiError> {
    set_paused(state, drop, true).await
}

async fn resume(state: State<Arc<Gateway>>, drop: Path<String>) -> Result<Json<Value>, ApiError> {
    set_paused(state, drop, false).await
}

async fn set_paused(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let drop_id = DropId::parse(&drop).map_err(|_| ApiError::UnknownDrop)?;
    gateway
        .intake
        .set_paused(&drop_id, paused, gateway.clock.now())
        .await?;
    admin_drop_json(&gateway, &drop_id).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderQuery {
    drop: Option<String>,
    state: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_orders(
    State(gateway): State<Arc<Gateway>>,
    query: Result<Query<OrderQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::InvalidBody(rejection.body_text()))?;
    let invalid = |what: &str| ApiError::InvalidBody(format!("invalid {what} in the query"));
    let filter = OrderFilter {
        drop_id: query
            .drop
            .as_deref()
            .map(DropId::parse)
            .transpose()
            .map_err(|_| invalid("drop"))?,
        state: query
            .state
            .as_deref()
            .map(|state| OrderState::parse(state).ok_or(()))
            .transpose()
            .map_err(|()| invalid("state"))?,
        after: query
            .after
            .as_deref()
            .map(|after| OrderId::parse(after).ok_or(()))
            .transpose()
            .map_err(|()| invalid("after"))?,
        limit: query.limit.unwrap_or(100).clamp(1, MAX_ORDERS_PER_PAGE),
    };
    let orders = gateway.intake.store().orders(filter.clone()).await?;
    let next_after = (orders.len() == filter.limit as usize)
        .then(|| orders.last().map(|order| order.order_id.clone()))
        .flatten();
    let orders: Vec<Value> = orders.iter().map(admin_order_json).collect();
    Ok(Json(json!({ "orders": orders, "next_after": next_after })))
}

/// An order as operators see it: the shopper's view plus its key and its last delivery error.
fn admin_order_json(order: &Order) -> Value {
    let mut view = order_json(order);
    view["idempotency_key"] = json!(order.idempotency_key.as_str());
    view["last_error"] = json!(order.last_error);
    view
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    pass: String,
}

/// Revokes a waiting-room pass: it can no longer buy, and its slot goes to the next waiter.
async fn revoke_pass(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let drop_id = DropId::parse(&drop).map_err(|_| ApiError::UnknownDrop)?;
    let body = read_limited(body, gateway.max_body_bytes).await?;
    let Revoke { pass } = parse_json(&body)?;
    gateway
        .rooms
        .revoke(&drop_id, &pass, gateway.clock.now())
        .await?;
    tracing::info!(drop = %drop_id, "pass revoked by an operator");
    Ok(Json(json!({ "revoked": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    prefix: String,
}

/// Drops cached responses whose path starts with `prefix` (`"/"` drops everything).
async fn purge_cache(
    State(gateway): State<Arc<Gateway>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = read_limited(body, gateway.max_body_bytes).await?;
    let Purge { prefix } = parse_json(&body)?;
    if !prefix.starts_with('/') {
        return Err(ApiError::InvalidBody("prefix must start with '/'".into()));
    }
    let purged = gateway.front_door.purge(&prefix);
    tracing::info!(%prefix, purged, "cache purged by an operator");
    Ok(Json(json!({ "prefix": prefix, "purged": purged })))
}

/// Puts a dead-lettered order back in line; the dispatcher sends it again from attempt one.
async fn redrive(
    State(gateway): State<Arc<Gateway>>,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let order_id = OrderId::parse(&order_id).ok_or(ApiError::UnknownOrder)?;
    let store = gateway.intake.store();
    store
        .record_delivery(order_id.clone(), Delivery::Redrive, gateway.clock.now())
        .await?;
    let order = store.order(order_id).await?.ok_or(ApiError::UnknownOrder)?;
    tracing::info!(order = %order.order_id, "redriven by an operator");
    Ok(Json(admin_order_json(&order)))
}

/// A drop with everything an operator needs: the definition, live stock and order counts.
async fn admin_drop_json(gateway: &Gateway, drop_id: &DropId) -> Result<Value, ApiError> {
    let now = gateway.clock.now();
    let (mut view, spec, held) = gateway
        .intake
        .with_drop(drop_id, |ledger| {
            let held: Vec<u64> = ledger
                .spec()
                .skus
                .iter()
                .map(|sku| ledger.held(&sku.sku).unwrap_or(0))
                .collect();
            (
                shopper_drop_json(drop_id, ledger, now),
                ledger.spec().clone(),
                held,
            )
        })
        .ok_or(ApiError::UnknownDrop)?;
    let counts = gateway.intake.store().order_counts(drop_id.clone()).await?;
    let units = |states: &[OrderState]| -> u64 {
        states
            .iter()
            .filter_map(|state| counts.get(state))
            .map(|count| count.units)
            .sum()
    };
    for ((sku_view, sku), held) in view["skus"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(&spec.skus)
        .zip(held)
    {
        sku_view["stock"] = json!(sku.stock);
        sku_view["held"] = json!(held);
    }
    view["paused"] = json!(spec.paused);
    view["prewarm"] = json!({
        "starts_at": spec.prewarm_starts_at(),
        "expected_shoppers": spec.expected_shoppers,
        "paths": spec.prewarm_paths,
        "passes": gateway.prewarm.passes(drop_id),
    });
    view["waiting_room"] = json!(spec.waiting_room);
    view["counts"] = json!({
        "reserved": units(&[OrderState::Accepted, OrderState::Submitting]),
        "confirmed": units(&[OrderState::Confirmed]),
        "failed": units(&[OrderState::Failed]),
        "waiting": gateway.rooms.occupancy(drop_id, now).map_or(0, |room| room.waiting),
        "orders_by_state": OrderState::ALL
            .iter()
            .map(|state| (state.as_str().to_owned(), json!(counts.get(state).copied().unwrap_or(StateCount::default()).orders)))
            .collect::<serde_json::Map<_, _>>(),
    });
    Ok(view)
}
