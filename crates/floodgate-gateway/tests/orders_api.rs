//! The order API's answers, through the router without a socket: every error code of the Orders
//! section of API.md, each with its JSON body, and the store left unchanged by every refusal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use floodgate_core::{DropId, DropSpec, Order, OrderId, OrderState, Timestamp};
use floodgate_gateway::{Clock, DeliveryPace, Gateway, GatewaySettings, IntakeLimits};
use floodgate_store::{
    Delivery, OrderFilter, Snapshot, SqliteOptions, SqliteStore, StateCount, Store, StoreError,
    StoreFuture,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
const ADMIN_TOKEN: &str = "admin-secret";
/// Permits of the commit gate: a test holds them all to stall every commit.
const GATE_PERMITS: u32 = 1_000_000;

/// The SQLite store with two faults a test can switch on: hold every order commit until
/// released, or fail the next commit.
struct FaultyStore {
    inner: SqliteStore,
    commit_gate: tokio::sync::Semaphore,
    next_failure: Mutex<Option<StoreError>>,
}

impl Store for FaultyStore {
    fn load(&self, keys_since: Timestamp) -> StoreFuture<'_, Snapshot> {
        self.inner.load(keys_since)
    }
    fn put_drop(&self, drop_id: DropId, spec: DropSpec, now: Timestamp) -> StoreFuture<'_, ()> {
        self.inner.put_drop(drop_id, spec, now)
    }
    fn accept_order(&self, order: Order) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _held_until_released = self.commit_gate.acquire().await;
            if let Some(error) = self.next_failure.lock().unwrap().take() {
                return Err(error);
            }
            self.inner.accept_order(order).await
        })
    }
    fn order(&self, order_id: OrderId) -> StoreFuture<'_, Option<Order>> {
        self.inner.order(order_id)
    }
    fn orders(&self, filter: OrderFilter) -> StoreFuture<'_, Vec<Order>> {
        self.inner.orders(filter)
    }
    fn order_counts(
        &self,
        drop_id: DropId,
    ) -> StoreFuture<'_, std::collections::BTreeMap<OrderState, StateCount>> {
        self.inner.order_counts(drop_id)
    }
    fn sku_units(
        &self,
        drop_id: DropId,
    ) -> StoreFuture<'_, std::collections::BTreeMap<(String, OrderState), u64>> {
        self.inner.sku_units(drop_id)
    }
    fn record_delivery(
        &self,
        order_id: OrderId,
        change: Delivery,
        now: Timestamp,
    ) -> StoreFuture<'_, ()> {
        self.inner.record_delivery(order_id, change, now)
    }
    fn check_writable(&self) -> StoreFuture<'_, ()> {
        self.inner.check_writable()
    }
    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }
}

struct Harness {
    gateway: Arc<Gateway>,
    store: Arc<FaultyStore>,
    _data: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultyStore {
            inner: SqliteStore::open(data.path(), SqliteOptions::default()).unwrap(),
            commit_gate: tokio::sync::Semaphore::new(GATE_PERMITS as usize),
            next_failure: Mutex::new(None),
        });
        let settings = GatewaySettings {
            admin_token: ADMIN_TOKEN.into(),
            metrics_public: false,
            trusted_proxies: Vec::new(),
            max_body_bytes: 4_096,
            front_door: Default::default(),
            token_keys: floodgate_core::TokenKeys::new((1, b"test secret".to_vec()), Vec::new()),
            abandon_after: Duration::from_secs(60),
            room_colour: "#000".into(),
            identity: floodgate_gateway::IdentitySource::Body,
            delivery: Some(DeliveryPace {
                rate_per_second: 1,
                max_backlog: Duration::from_secs(2),
            }),
            intake: IntakeLimits {
                max_quantity_per_order: 100,
                idempotency_retention: Duration::from_secs(86_400),
                lease_ttl: Duration::from_secs(15),
            },
        };
        let gateway = Gateway::start(
            Arc::clone(&store) as Arc<dyn Store>,
            settings,
            Clock::manual(NOW).0,
        )
        .await
        .unwrap();
        let harness = Self {
            gateway,
            store,
            _data: data,
        };
        harness
            .put_drop("spring", drop_json(5, NOW.add_millis(-1_000)))
            .await;
        harness
            .put_drop("later", drop_json(5, NOW.add_millis(60_000)))
            .await;
        harness
    }

    async fn put_drop(&self, drop: &str, body: Value) {
        let (status, body) = self
            .admin(
                "PUT",
                &format!("/admin/drops/{drop}"),
                Some(ADMIN_TOKEN),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map_or_else(Body::empty, |json| Body::from(json.to_string()));
        call(
            floodgate_gateway::admin_router(Arc::clone(&self.gateway)),
            request.body(body).unwrap(),
        )
        .await
    }

    async fn order(
        &self,
        drop: &str,
        key: Option<&[u8]>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method("POST")
            .uri(format!("/api/drops/{drop}/orders"));
        if let Some(key) = key {
            request = request.header("idempotency-key", HeaderValue::from_bytes(key).unwrap());
        }
        call(
            floodgate_gateway::public_router(Arc::clone(&self.gateway)),
            request.body(body.into()).unwrap(),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        call(
            floodgate_gateway::public_router(Arc::clone(&self.gateway)),
            request,
        )
        .await
    }

    /// Puts drop `roomy`, behind a waiting room of two passes.
    async fn put_roomy_drop(&self) {
        let mut roomy = drop_json(10, NOW.add_millis(-1_000));
        roomy["waiting_room"] =
            json!({ "enabled": true, "max_active": 2, "prequeue_s": 0, "pass_ttl_s": 600 });
        self.put_drop("roomy", roomy).await;
    }

    /// `customer` joins the room of drop `roomy`.
    async fn join_roomy(&self, customer: &str) -> (StatusCode, Value) {
        let join = Request::post("/api/drops/roomy/queue")
            .body(Body::from(json!({ "customer": customer }).to_string()))
            .unwrap();
        call(
            floodgate_gateway::public_router(Arc::clone(&self.gateway)),
            join,
        )
        .await
    }

    /// Two passes of `roomy` would be free, but only half of them is issued: `first` gets one,
    /// `second` waits.
    async fn admits_only_half(&self, first: &str, second: &str) {
        assert_eq!(self.join_roomy(first).await.0, StatusCode::OK);
        let (status, waiting) = self.join_roomy(second).await;
        assert_eq!(
            (status, waiting["state"].as_str()),
            (StatusCode::ACCEPTED, Some("waiting"))
        );
    }

    /// Units available and orders stored, to show a refusal changed nothing.
    async fn footprint(&self) -> (Value, usize) {
        let (_, drop) = self.get("/api/drops/spring").await;
        let orders = self
            .store
            .orders(OrderFilter {
                limit: 1_000,
                ..OrderFilter::default()
            })
            .await
            .unwrap();
        (drop["skus"][0]["available"].clone(), orders.len())
    }
}

/// name, drop, idempotency key, body, expected status, expected error code
type BadRequestCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a [u8]>,
    String,
    StatusCode,
    &'a str,
);

async fn call(router: axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn drop_json(stock: u64, starts_at: Timestamp) -> Value {
    json!({
        "name": "Spring drop",
        "starts_at": starts_at,
        "ends_at": NOW.add_millis(3_600_000),
        "limit_per_customer": 2,
        "skus": [{ "sku": "rod", "name": "Rod", "price_cents": 19900, "stock": stock }],
    })
}

fn order_body(customer: &str, quantity: Value) -> String {
    json!({ "customer": customer, "sku": "rod", "quantity": quantity }).to_string()
}

#[tokio::test]
async fn bad_requests_get_their_documented_error_and_change_nothing() {
    let harness = Harness::new().await;
    let before = harness.footprint().await;
    let long_key = vec![b'k'; 10 * 1024];
    let too_large = format!(
        "{{\"customer\":\"{}\",\"sku\":\"rod\",\"quantity\":1}}",
        "c".repeat(8_000)
    );
    let cases: Vec<BadRequestCase> = vec![
        (
            "missing key",
            "spring",
            None,
            order_body("c", json!(1)),
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
        ),
        (
            "non-ASCII key",
            "spring",
            Some("clé".as_bytes()),
            order_body("c", json!(1)),
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        ),
        (
            "10 KB key",
            "spring",
            Some(&long_key),
            order_body("c", json!(1)),
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        ),
        (
            "malformed JSON",
            "spring",
            Some(b"k"),
            "{\"customer\":".into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "wrong type",
            "spring",
            Some(b"k"),
            order_body("c", json!("two")),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "negative quantity",
            "spring",
            Some(b"k"),
            order_body("c", json!(-1)),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "zero quantity",
            "spring",
            Some(b"k"),
            order_body("c", json!(0)),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "huge quantity",
            "spring",
            Some(b"k"),
            order_body("c", json!(1_000_000_000_000u64)),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "quantity over the cap",
            "spring",
            Some(b"k"),
            order_body("c", json!(101)),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "empty customer",
            "spring",
            Some(b"k"),
            order_body("", json!(1)),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "unknown field",
            "spring",
            Some(b"k"),
            "{\"customer\":\"c\",\"sku\":\"rod\",\"quantity\":1,\"price\":0}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "body too large",
            "spring",
            Some(b"k"),
            too_large,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "unknown drop",
            "autumn",
            Some(b"k"),
            order_body("c", json!(1)),
            StatusCode::NOT_FOUND,
            "unknown_drop",
        ),
        (
            "malformed drop id",
            "a%20b",
            Some(b"k"),
            order_body("c", json!(1)),
            StatusCode::NOT_FOUND,
            "unknown_drop",
        ),
        (
            "unknown sku",
            "spring",
            Some(b"k"),
            json!({"customer": "c", "sku": "net", "quantity": 1}).to_string(),
            StatusCode::NOT_FOUND,
            "unknown_sku",
        ),
        (
            "before the start",
            "later",
            Some(b"k"),
            order_body("c", json!(1)),
            StatusCode::CONFLICT,
            "not_live",
        ),
        (
            "more than the limit",
            "spring",
            Some(b"k"),
            order_body("c", json!(3)),
            StatusCode::CONFLICT,
            "limit_reached",
        ),
        (
            "more than the stock",
            "spring",
            Some(b"k"),
            order_body("c", json!(6)),
            StatusCode::CONFLICT,
            "insufficient_stock",
        ),
    ];
    for (name, drop, key, body, status, code) in cases {
        let (got_status, got_body) = harness.order(drop, key, body).await;
        assert_eq!(
            (got_status, got_body["error"].as_str()),
            (status, Some(code)),
            "{name}: {got_body}"
        );
        assert!(
            got_body["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{name}"
        );
        assert_eq!(
            harness.footprint().await,
            before,
            "{name} changed the store"
        );
    }
}

#[tokio::test]
async fn an_accepted_order_is_stored_and_replays() {
    let harness = Harness::new().await;
    let (status, accepted) = harness
        .order("spring", Some(b"k-1"), order_body("alice", json!(2)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let order_id = accepted["order_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["state"], "accepted");
    assert_eq!(accepted["status_url"], format!("/api/orders/{order_id}"));

    let (status, replay) = harness
        .order("spring", Some(b"k-1"), order_body("alice", json!(2)))
        .await;
    assert_eq!((status, &replay), (StatusCode::ACCEPTED, &accepted));
    let (status, reused) = harness
        .order("spring", Some(b"k-1"), order_body("alice", json!(1)))
        .await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );

    let (status, order) = harness.get(&format!("/api/orders/{order_id}")).await;
    assert_eq!(status, StatusCode::OK);
    for (field, expected) in [
        ("drop", json!("spring")),
        ("sku", json!("rod")),
        ("quantity", json!(2)),
        ("customer", json!("alice")),
        ("state", json!("accepted")),
        ("attempts", json!(0)),
        ("downstream_ref", Value::Null),
    ] {
        assert_eq!(order[field], expected, "{field}");
    }
    let (status, drop) = harness.get("/api/drops/spring").await;
    assert_eq!(
        (status, drop["skus"][0]["available"].as_u64()),
        (StatusCode::OK, Some(3))
    );

    let (status, limit) = harness
        .order("spring", Some(b"k-2"), order_body("alice", json!(1)))
        .await;
    assert_eq!(
        (status, limit["error"].as_str()),
        (StatusCode::CONFLICT, Some("limit_reached"))
    );
    for (key, customer) in [(b"k-3", "bob"), (b"k-4", "carol"), (b"k-6", "dave")] {
        let (status, body) = harness
            .order("spring", Some(key), order_body(customer, json!(1)))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, sold_out) = harness
        .order("spring", Some(b"k-5"), order_body("erin", json!(1)))
        .await;
    assert_eq!(
        (status, sold_out["error"].as_str()),
        (StatusCode::GONE, Some("sold_out"))
    );
    let (_, drop) = harness.get("/api/drops/spring").await;
    assert_eq!(drop["state"], "sold_out");
    // A sold-out drop still replays the keys it answered.
    let (status, replay) = harness
        .order("spring", Some(b"k-1"), order_body("alice", json!(2)))
        .await;
    assert_eq!(
        (status, replay["order_id"].as_str()),
        (StatusCode::ACCEPTED, Some(order_id.as_str()))
    );
}

#[tokio::test]
async fn unknown_orders_are_404() {
    let harness = Harness::new().await;
    for path in [
        "/api/orders/ord_00000000000000000000000000000000",
        "/api/orders/nonsense",
        "/api/drops/nope",
    ] {
        let (status, body) = harness.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            body["error"].as_str().unwrap().starts_with("unknown_"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_second_request_while_the_first_commits_is_told_to_retry() {
    let harness = Harness::new().await;
    let held = harness
        .store
        .commit_gate
        .acquire_many(GATE_PERMITS)
        .await
        .unwrap();
    let first = {
        let gateway = Arc::clone(&harness.gateway);
        tokio::spawn(async move {
            let request = Request::post("/api/drops/spring/orders")
                .header("idempotency-key", "slow")
                .body(Body::from(order_body("erin", json!(1))))
                .unwrap();
            call(floodgate_gateway::public_router(gateway), request).await
        })
    };
    // The first request has claimed its key once its unit is taken.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while harness.get("/api/drops/spring").await.1["skus"][0]["available"] != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first order never reserved"
        );
        tokio::task::yield_now().await;
    }
    let second = harness
        .order("spring", Some(b"slow"), order_body("erin", json!(1)))
        .await;
    assert_eq!(
        (second.0, second.1["error"].as_str()),
        (StatusCode::CONFLICT, Some("request_in_progress"))
    );
    drop(held);
    let (status, first) = first.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
}

#[tokio::test]
async fn a_failed_commit_returns_the_units_and_says_overloaded() {
    let harness = Harness::new().await;
    *harness.store.next_failure.lock().unwrap() = Some(StoreError::Overloaded);
    let (status, body) = harness
        .order("spring", Some(b"k"), order_body("frank", json!(2)))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded"))
    );
    let (_, drop) = harness.get("/api/drops/spring").await;
    assert_eq!(drop["skus"][0]["available"], 5);
    // The key was not spent: the retry goes through.
    let (status, _) = harness
        .order("spring", Some(b"k"), order_body("frank", json!(2)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_admin_api_needs_the_token() {
    let harness = Harness::new().await;
    for token in [
        None,
        Some("wrong"),
        Some("admin-secre"),
        Some("admin-secrets"),
    ] {
        let (status, body) = harness.admin("GET", "/admin/drops", token, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{token:?}"
        );
    }
    let (status, body) = harness
        .admin("GET", "/admin/drops", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["drops"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn pause_and_resume_switch_orders_off_and_on() {
    let harness = Harness::new().await;
    let (status, paused) = harness
        .admin("POST", "/admin/drops/spring/pause", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(
        (status, paused["state"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    let (status, body) = harness
        .order("spring", Some(b"k"), order_body("gina", json!(1)))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("not_live"))
    );
    // Redefining the drop keeps the pause.
    harness
        .put_drop("spring", drop_json(7, NOW.add_millis(-1_000)))
        .await;
    let (_, drop) = harness.get("/api/drops/spring").await;
    assert_eq!(drop["state"], "paused");
    harness
        .admin(
            "POST",
            "/admin/drops/spring/resume",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let (status, _) = harness
        .order("spring", Some(b"k"), order_body("gina", json!(1)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn drop_definitions_are_validated_whole() {
    let harness = Harness::new().await;
    let mut bad = drop_json(5, NOW);
    bad["ends_at"] = json!(NOW.add_millis(-1));
    bad["limit_per_customer"] = json!(0);
    let (status, body) = harness
        .admin("PUT", "/admin/drops/bad", Some(ADMIN_TOKEN), Some(bad))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["ends_at", "limit_per_customer"]);

    harness
        .order("spring", Some(b"k"), order_body("hal", json!(2)))
        .await;
    let (status, body) = harness
        .admin(
            "PUT",
            "/admin/drops/spring",
            Some(ADMIN_TOKEN),
            Some(drop_json(1, NOW)),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("stock_in_use")),
        "{body}"
    );
    let (status, body) = harness
        .admin(
            "PUT",
            "/admin/drops/bad%20id",
            Some(ADMIN_TOKEN),
            Some(drop_json(1, NOW)),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
}

#[tokio::test]
async fn health_answers_and_readiness_probes_the_store() {
    let harness = Harness::new().await;
    assert_eq!(
        harness.get("/healthz").await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    assert_eq!(
        harness.get("/readyz").await,
        (StatusCode::OK, json!({ "status": "ready" }))
    );
    harness.store.close().await.unwrap();
    let (status, _) = harness.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(harness.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_delivery_backlog_makes_the_waiting_room_admit_fewer() {
    let harness = Harness::new().await;
    harness.put_roomy_drop().await;
    assert_eq!(
        harness.gateway.observe().await.unwrap().delivery_backlog,
        Duration::ZERO
    );
    // Three orders wait for a downstream that takes one a second: 3 s behind, 2 s allowed.
    let public = || floodgate_gateway::public_router(Arc::clone(&harness.gateway));
    for customer in ["dee", "eli", "fay"] {
        let order = Request::post("/api/drops/spring/orders")
            .header("idempotency-key", format!("key-{customer}"))
            .body(Body::from(order_body(customer, json!(1))))
            .unwrap();
        assert_eq!(call(public(), order).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(
        harness.gateway.observe().await.unwrap().delivery_backlog,
        Duration::from_secs(3)
    );
    // While delivery is behind, only half of max_active is issued.
    harness.admits_only_half("ann", "bea").await;
}

#[tokio::test]
async fn a_saturated_intake_makes_the_waiting_room_admit_fewer() {
    let harness = Harness::new().await;
    harness.put_roomy_drop().await;
    let public = || floodgate_gateway::public_router(Arc::clone(&harness.gateway));
    let (status, first) = harness.join_roomy("ann").await;
    assert_eq!(status, StatusCode::OK);
    // The store cannot keep up: the order is refused, and the intake counts as saturated.
    *harness.store.next_failure.lock().unwrap() = Some(StoreError::Overloaded);
    let order = || {
        Request::post("/api/drops/roomy/orders")
            .header("idempotency-key", "k1")
            .header("floodgate-pass", first["pass"].as_str().unwrap())
            .body(Body::from(order_body("ann", json!(1))))
            .unwrap()
    };
    assert_eq!(
        call(public(), order()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The shop failed, not the shopper: the pass still buys.
    assert_eq!(call(public(), order()).await.0, StatusCode::ACCEPTED);
    // While saturated, only half of max_active is issued.
    harness.admits_only_half("bea", "cal").await;
}

#[tokio::test]
async fn a_key_memory_has_forgotten_still_answers_from_the_store() {
    let harness = Harness::new().await;
    let public = || floodgate_gateway::public_router(Arc::clone(&harness.gateway));
    let place = |customer: &str, quantity: u32| {
        Request::post("/api/drops/spring/orders")
            .header("idempotency-key", "kept-by-the-store")
            .body(Body::from(order_body(customer, json!(quantity))))
            .unwrap()
    };
    let (status, first) = call(public(), place("gil", 1)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Past the retention, memory forgets the key (as a node that never saw it would not know it).
    let later = NOW.add_millis(100 * 24 * 3_600 * 1_000);
    harness.gateway.intake().prune_keys(later);
    let (status, replayed) = call(public(), place("gil", 1)).await;
    assert_eq!(
        (status, &replayed["order_id"]),
        (StatusCode::ACCEPTED, &first["order_id"]),
        "the same order again, not a second one"
    );
    let (status, reused) = call(public(), place("gil", 2)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    let orders = harness
        .store
        .orders(OrderFilter {
            limit: 10,
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    let (_, drop) = harness
        .admin("GET", "/admin/drops/spring", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(drop["skus"][0]["held"], 1, "the replay holds nothing more");
}
