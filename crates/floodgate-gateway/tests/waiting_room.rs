//! The waiting room over the public API, in process with a settable clock: invisible while there
//! is room, a queue once there is not, a pass that buys once, the next waiter admitted when a
//! pass is spent, sold out reaching waiters, and tampered tokens refused.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use floodgate_core::Timestamp;
use floodgate_gateway::public_router;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Digest;
use support::InProcess;
use tower::ServiceExt;

const START: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

struct Harness(InProcess);

impl Harness {
    async fn new(stock: u64, max_active: u32) -> Self {
        Self::starting(stock, max_active, "2020-01-01T00:00:00Z", 0).await
    }

    /// A drop starting at `starts_at`, its pre-queue opening `prequeue_s` before.
    async fn starting(stock: u64, max_active: u32, starts_at: &str, prequeue_s: u32) -> Self {
        Self::configured("", stock, max_active, starts_at, prequeue_s).await
    }

    async fn configured(
        extra_config: &str,
        stock: u64,
        max_active: u32,
        starts_at: &str,
        prequeue_s: u32,
    ) -> Self {
        let config = format!("[waiting_room]\nabandon_after_s = 30\n{extra_config}");
        let harness = Self(InProcess::start(&config, START).await);
        let drop = json!({
            "name": "Drop", "starts_at": starts_at, "ends_at": "2099-01-01T00:00:00Z",
            "limit_per_customer": 5,
            "skus": [{"sku": "rod", "name": "Rod", "price_cents": 100, "stock": stock}],
            "waiting_room": {"enabled": true, "max_active": max_active, "prequeue_s": prequeue_s, "pass_ttl_s": 60},
        });
        harness.0.put_spring_drop(drop).await;
        harness
    }

    fn advance(&self, seconds: i64) {
        self.0.advance(seconds);
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let answer = self.0.public(request).await;
        (answer.status, answer.json())
    }

    async fn join(&self, customer: &str) -> (StatusCode, Value) {
        let body = json!({ "customer": customer }).to_string();
        self.call(
            Request::post("/api/drops/spring/queue")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    async fn poll(&self, ticket: &str) -> (StatusCode, Value) {
        self.call(
            Request::get(format!("/api/queue/{ticket}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn order(&self, customer: &str, key: &str, pass: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::post("/api/drops/spring/orders").header("idempotency-key", key);
        if let Some(pass) = pass {
            request = request.header("floodgate-pass", pass);
        }
        let body = json!({ "customer": customer, "sku": "rod", "quantity": 1 }).to_string();
        self.call(request.body(Body::from(body)).unwrap()).await
    }
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn join_wait_admitted_order_and_the_next_waiter_is_admitted() {
    let harness = Harness::new(100, 1).await;
    let (status, first) = harness.join("alice").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "invisible while there is room: {first}"
    );
    assert_eq!(first["state"], "admitted");
    let (status, waiting) = harness.join("bob").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (waiting["position"].as_u64(), waiting["ahead"].as_u64()),
        (Some(1), Some(0))
    );
    let poll_after = waiting["poll_after_ms"].as_u64().unwrap();
    assert!((2_000..4_000).contains(&poll_after));
    assert_eq!(
        harness.join("bob").await.1["ticket"],
        waiting["ticket"],
        "same place"
    );

    // Without a pass, or with someone else's, no order.
    assert_eq!(
        harness.order("alice", "k1", None).await.0,
        StatusCode::FORBIDDEN
    );
    let alices_pass = text(&first, "pass");
    let (status, refused) = harness.order("bob", "k2", Some(&alices_pass)).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_pass"))
    );

    let (status, _) = harness.order("alice", "k3", Some(&alices_pass)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The same key replays without a pass check; a new order with the spent pass is refused.
    assert_eq!(
        harness.order("alice", "k3", Some(&alices_pass)).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        harness.order("alice", "k4", Some(&alices_pass)).await.0,
        StatusCode::FORBIDDEN
    );

    let (status, admitted) = harness.poll(&text(&waiting, "ticket")).await;
    assert_eq!(
        (status, admitted["state"].as_str()),
        (StatusCode::OK, Some("admitted"))
    );
    let (status, _) = harness
        .order("bob", "k5", Some(&text(&admitted, "pass")))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn sold_out_reaches_the_waiters_and_tampered_tickets_are_refused() {
    let harness = Harness::new(1, 1).await;
    let (_, first) = harness.join("alice").await;
    let (_, waiting) = harness.join("bob").await;
    let ticket = text(&waiting, "ticket");
    let mut forged = ticket.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, refused) = harness.poll(&forged).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_ticket"))
    );
    assert_eq!(harness.poll("not-a-ticket").await.0, StatusCode::FORBIDDEN);

    let (status, _) = harness
        .order("alice", "k1", Some(&text(&first, "pass")))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, sold_out) = harness.poll(&ticket).await;
    assert_eq!(
        (status, sold_out["error"].as_str()),
        (StatusCode::GONE, Some("sold_out"))
    );
    assert_eq!(harness.join("carol").await.0, StatusCode::GONE);
}

#[tokio::test]
async fn a_waiter_who_stops_polling_loses_the_place() {
    let harness = Harness::new(100, 1).await;
    let (_, first) = harness.join("alice").await;
    let (_, silent) = harness.join("bob").await;
    let (_, patient) = harness.join("carol").await;
    harness.advance(20);
    harness.poll(&text(&patient, "ticket")).await;
    harness.advance(20);
    harness.poll(&text(&patient, "ticket")).await;
    let (status, _) = harness
        .order("alice", "k1", Some(&text(&first, "pass")))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, admitted) = harness.poll(&text(&patient, "ticket")).await;
    assert_eq!(
        (status, admitted["state"].as_str()),
        (StatusCode::OK, Some("admitted"))
    );
    let (status, lapsed) = harness.poll(&text(&silent, "ticket")).await;
    assert_eq!(
        (status, lapsed["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_ticket"))
    );
}

#[tokio::test]
async fn the_pre_queue_is_drawn_at_the_start_by_the_published_seed() {
    // START is 2027-01-15T08:00:00Z; the drop starts a minute later, the pre-queue opened before.
    let harness = Harness::starting(100, 2, "2027-01-15T08:01:00Z", 600).await;
    let fairness = || async {
        harness
            .call(
                Request::get("/api/drops/spring/fairness")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .1
    };
    let before = fairness().await;
    assert_eq!(
        (before["state"].as_str(), before["seed"].is_null()),
        (Some("committed"), true)
    );
    let customers: Vec<String> = (0..8).map(|n| format!("c-{n}")).collect();
    let mut tickets = Vec::new();
    for customer in &customers {
        let (status, joined) = harness.join(customer).await;
        assert_eq!(
            (status, joined["state"].as_str()),
            (StatusCode::ACCEPTED, Some("prequeue"))
        );
        tickets.push(text(&joined, "ticket"));
    }
    harness.advance(61);
    let after = fairness().await;
    assert_eq!(after["state"], "drawn");
    assert_eq!(after["entrants"], 8);
    assert_eq!(after["commitment_sha256"], before["commitment_sha256"]);
    let seed_hex = text(&after, "seed");
    let seed: Vec<u8> = (0..64)
        .step_by(2)
        .map(|at| u8::from_str_radix(&seed_hex[at..at + 2], 16).unwrap())
        .collect();
    let seed: [u8; 32] = seed.try_into().unwrap();
    let commitment: String = sha2::Sha256::digest(seed)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(after["commitment_sha256"], commitment.as_str());
    // Anyone can recompute the order from the seed: the first two hold passes, the rest wait.
    let mut expected: Vec<usize> = (0..customers.len()).collect();
    expected.sort_by_key(|&index| {
        let key = floodgate_core::Identity::of(&customers[index]).key();
        (floodgate_core::draw_key(&seed, key), key)
    });
    for (rank, &index) in expected.iter().enumerate() {
        let (status, standing) = harness.poll(&tickets[index]).await;
        if rank < 2 {
            assert_eq!(
                (status, standing["state"].as_str()),
                (StatusCode::OK, Some("admitted"))
            );
        } else {
            let place = (standing["position"].as_u64(), standing["ahead"].as_u64());
            assert_eq!(
                place,
                (Some(rank as u64 + 1), Some(rank as u64 - 2)),
                "{standing}"
            );
        }
    }
}

#[tokio::test]
async fn browsers_get_a_page_and_the_event_stream_pushes_the_admission() {
    let harness = Harness::new(100, 1).await;
    let (_, first) = harness.join("alice").await;
    let (_, waiting) = harness.join("bob").await;
    let ticket = text(&waiting, "ticket");

    let page = public_router(Arc::clone(&harness.0.gateway))
        .oneshot(
            Request::get(format!("/api/queue/{ticket}"))
                .header("accept", "text/html,application/xhtml+xml")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("You are number 1 in line"), "{html}");
    assert!(
        html.contains(r#"http-equiv="refresh""#),
        "works without JavaScript"
    );
    assert!(html.contains(&format!("/api/queue/{ticket}/events")));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    let events = public_router(Arc::clone(&harness.0.gateway))
        .oneshot(
            Request::get(format!("/api/queue/{ticket}/events"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut stream = events.into_body();
    assert_eq!(next_event(&mut stream).await["state"], "waiting");
    let (status, _) = harness
        .order("alice", "k1", Some(&text(&first, "pass")))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(5), next_event(&mut stream))
        .await
        .expect("the admission is pushed");
    assert_eq!(pushed["state"], "admitted");
    assert!(pushed["pass"].is_string());
}

/// The next `data:` event of a server-sent event stream, as JSON.
async fn next_event(stream: &mut Body) -> Value {
    loop {
        let frame = stream.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some(json) = text.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(json.trim()).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn an_operator_can_revoke_a_pass_and_its_slot_goes_to_the_next_waiter() {
    let harness = Harness::new(100, 1).await;
    let (_, first) = harness.join("alice").await;
    let (_, waiting) = harness.join("bob").await;
    let pass = text(&first, "pass");
    let revoke = harness
        .0
        .admin(
            "POST",
            "/admin/drops/spring/passes/revoke",
            Some(json!({ "pass": pass })),
        )
        .await;
    assert_eq!(revoke.status, StatusCode::OK);
    assert_eq!(
        harness.order("alice", "k1", Some(&pass)).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, admitted) = harness.poll(&text(&waiting, "ticket")).await;
    assert_eq!(
        (status, admitted["state"].as_str()),
        (StatusCode::OK, Some("admitted"))
    );
}

#[tokio::test]
async fn with_a_trusted_identity_header_nobody_joins_or_orders_as_someone_else() {
    let harness = Harness::configured(
        "[drops]\nidentity = \"header:X-Customer\"\n",
        100,
        1,
        "2020-01-01T00:00:00Z",
        0,
    )
    .await;
    let join = |customer: &str, header: Option<&str>| {
        let mut request = Request::post("/api/drops/spring/queue");
        if let Some(header) = header {
            request = request.header("x-customer", header);
        }
        request
            .body(Body::from(json!({ "customer": customer }).to_string()))
            .unwrap()
    };
    let (status, missing) = harness.call(join("alice", None)).await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_identity"))
    );
    let (status, other) = harness.call(join("bob", Some("alice"))).await;
    assert_eq!(
        (status, other["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("identity_mismatch"))
    );
    let (status, admitted) = harness.call(join("alice", Some("alice"))).await;
    assert_eq!(status, StatusCode::OK);
    let pass = text(&admitted, "pass");
    let order = |customer: &str, header: &str| {
        Request::post("/api/drops/spring/orders")
            .header("idempotency-key", "k1")
            .header("floodgate-pass", pass.as_str())
            .header("x-customer", header)
            .body(Body::from(
                json!({ "customer": customer, "sku": "rod", "quantity": 1 }).to_string(),
            ))
            .unwrap()
    };
    assert_eq!(
        harness.call(order("alice", "mallory")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        harness.call(order("alice", "alice")).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn with_visitor_cookies_floodgate_names_the_customer_and_nobody_orders_without_one() {
    let harness = Harness::configured(
        "[drops]\nidentity = \"cookie\"\n",
        10,
        1,
        "2020-01-01T00:00:00Z",
        0,
    )
    .await;
    let join = |cookie: Option<&str>| {
        let mut request = Request::post("/api/drops/spring/queue");
        if let Some(cookie) = cookie {
            request = request.header("cookie", format!("theme=dark; {cookie}"));
        }
        request.body(Body::from("{}")).unwrap()
    };
    let issued = |response: &axum::response::Response| {
        response.headers().get("set-cookie").map(|value| {
            let value = value.to_str().unwrap();
            assert!(value.contains("HttpOnly") && value.contains("SameSite=Lax"));
            value.split(';').next().unwrap().to_owned()
        })
    };
    let public = || public_router(Arc::clone(&harness.0.gateway));
    // A first join without a cookie gets a visitor and a pass; with the cookie, the same pass.
    let first = public().oneshot(join(None)).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let cookie = issued(&first).expect("a visitor cookie is issued");
    let first_body: Value =
        serde_json::from_slice(&first.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let again = public().oneshot(join(Some(&cookie))).await.unwrap();
    assert_eq!(issued(&again), None, "a known visitor keeps the cookie");
    let again_body: Value =
        serde_json::from_slice(&again.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(again_body["pass"], first_body["pass"]);
    // A forged cookie is a new visitor, who waits behind the first.
    let forged = cookie.replace("floodgate_visitor=v-", "floodgate_visitor=v-0");
    let stranger = public().oneshot(join(Some(&forged))).await.unwrap();
    assert_eq!(stranger.status(), StatusCode::ACCEPTED);
    let stranger_cookie = issued(&stranger).expect("a new visitor");
    let waiting: Value =
        serde_json::from_slice(&stranger.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // The stranger's ticket is the stranger's: the first visitor cannot poll it.
    let poll = |cookie: &str| {
        Request::get(format!("/api/queue/{}", text(&waiting, "ticket")))
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(harness.call(poll(&cookie)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        harness.call(poll(&stranger_cookie)).await.0,
        StatusCode::ACCEPTED
    );

    let order = |cookie: Option<&str>| {
        let mut request = Request::post("/api/drops/spring/orders")
            .header("idempotency-key", "cookie-order")
            .header("floodgate-pass", text(&first_body, "pass"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request
            .body(Body::from(r#"{"sku": "rod", "quantity": 1}"#))
            .unwrap()
    };
    let (status, refused) = harness.call(order(None)).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_identity"))
    );
    let (status, placed) = harness.call(order(Some(&cookie))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{placed}");
    let (_, order) = harness
        .call(
            Request::get(text(&placed, "status_url"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let visitor = cookie.trim_start_matches("floodgate_visitor=");
    assert!(
        visitor.starts_with(order["customer"].as_str().unwrap()),
        "{order}"
    );
}

#[tokio::test]
async fn a_ticket_is_only_polled_by_the_identity_it_was_issued_to() {
    let harness = Harness::configured(
        "[drops]\nidentity = \"header:X-Customer\"\n",
        100,
        1,
        "2020-01-01T00:00:00Z",
        0,
    )
    .await;
    let join = |customer: &str| {
        Request::post("/api/drops/spring/queue")
            .header("x-customer", customer)
            .body(Body::from(json!({ "customer": customer }).to_string()))
            .unwrap()
    };
    assert_eq!(harness.call(join("alice")).await.0, StatusCode::OK);
    let (status, waiting) = harness.call(join("bob")).await;
    assert_eq!(
        (status, waiting["state"].as_str()),
        (StatusCode::ACCEPTED, Some("waiting"))
    );
    let ticket = text(&waiting, "ticket");
    for path in [
        format!("/api/queue/{ticket}"),
        format!("/api/queue/{ticket}/events"),
    ] {
        let poll = |customer: Option<&str>| {
            let mut request = Request::get(&path);
            if let Some(customer) = customer {
                request = request.header("x-customer", customer);
            }
            request.body(Body::empty()).unwrap()
        };
        let (status, refused) = harness.call(poll(Some("mallory"))).await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("invalid_ticket")),
            "{path}"
        );
        let (status, missing) = harness.call(poll(None)).await;
        assert_eq!(
            (status, missing["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("missing_identity")),
            "{path}"
        );
        if !path.ends_with("/events") {
            let (status, own) = harness.call(poll(Some("bob"))).await;
            assert_eq!(
                (status, own["state"].as_str()),
                (StatusCode::ACCEPTED, Some("waiting"))
            );
        }
    }
}
