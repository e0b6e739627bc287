//! A drop's report, in process with a settable clock: a small drop with a waiting room sells
//! out, its orders are delivered (confirmed, rejected, dead-lettered), and every figure of the
//! report is checked against the store and against what the test did.

mod support;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use floodgate_core::{DropId, OrderId, OrderState, Timestamp};
use floodgate_store::Delivery;
use serde_json::json;
use support::InProcess;

const START: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

#[tokio::test]
async fn the_report_matches_the_store() {
    let harness = InProcess::start(
        "[waiting_room]\nabandon_after_s = 600\n",
        START.add_millis(-10_000),
    )
    .await;
    let (gateway, store) = (&harness.gateway, &harness.store);
    let advance = |seconds: i64| harness.advance(seconds);
    let public = |request: Request<Body>| async { harness.public(request).await.json() };
    let drop = json!({
        "name": "Rods <&> reels", "starts_at": START, "ends_at": START.add_millis(3_600_000),
        "limit_per_customer": 1,
        "skus": [{"sku": "rod", "name": "Rod", "price_cents": 100, "stock": 6}],
        "waiting_room": {"enabled": true, "max_active": 2, "prequeue_s": 0, "pass_ttl_s": 60},
    });
    harness.put_spring_drop(drop).await;
    gateway.observe().await.unwrap();

    // Eight shoppers arrive at the start; two passes at a time, six units.
    advance(10);
    let mut tickets = BTreeMap::new();
    let mut passes = BTreeMap::new();
    for shopper in 0..8 {
        let customer = format!("c-{shopper}");
        let join = Request::post("/api/drops/spring/queue")
            .body(Body::from(json!({ "customer": customer }).to_string()))
            .unwrap();
        let answer = public(join).await;
        match answer["state"].as_str() {
            Some("admitted") => passes.insert(customer, answer["pass"].to_string()),
            _ => tickets.insert(customer, answer["ticket"].as_str().unwrap().to_owned()),
        };
    }
    assert_eq!((passes.len(), tickets.len()), (2, 6));
    gateway.observe().await.unwrap();
    let mut order_ids = Vec::new();
    let mut sold_out_at = None;
    for _second in 0..6 {
        advance(1);
        for (customer, pass) in std::mem::take(&mut passes) {
            let order = Request::post("/api/drops/spring/orders")
                .header("idempotency-key", format!("k-{customer}"))
                .header("floodgate-pass", pass.trim_matches('"'))
                .body(Body::from(
                    json!({ "customer": customer, "sku": "rod", "quantity": 1 }).to_string(),
                ))
                .unwrap();
            let placed = harness.public(order).await;
            assert_eq!(placed.status, StatusCode::ACCEPTED, "{}", placed.text());
            let placed = placed.json();
            order_ids.push(OrderId::parse(placed["order_id"].as_str().unwrap()).unwrap());
            if order_ids.len() == 6 {
                sold_out_at = Some(harness.now());
            }
        }
        for (customer, ticket) in tickets.clone() {
            let poll = Request::get(format!("/api/queue/{ticket}"))
                .body(Body::empty())
                .unwrap();
            let answer = public(poll).await;
            if answer["state"] == "admitted" {
                tickets.remove(&customer);
                passes.insert(customer, answer["pass"].to_string());
            }
        }
        gateway.observe().await.unwrap();
    }
    assert_eq!(order_ids.len(), 6, "sold out");

    // The shop takes four, refuses one, and one fails every attempt.
    advance(5);
    let now = harness.now();
    for (index, order_id) in order_ids.iter().enumerate() {
        store
            .record_delivery(order_id.clone(), Delivery::Attempt, now)
            .await
            .unwrap();
        let outcome = match index {
            0..=3 => Delivery::Confirmed { reference: None },
            4 => Delivery::Rejected {
                reason: "no such customer".into(),
            },
            _ => Delivery::Failed {
                reason: "timed out <5 s>".into(),
            },
        };
        let rejected = matches!(outcome, Delivery::Rejected { .. });
        store
            .record_delivery(order_id.clone(), outcome, now)
            .await
            .unwrap();
        if rejected {
            // What the dispatcher's callback does once a refusal is on disk.
            let order = store.order(order_id.clone()).await.unwrap().unwrap();
            gateway.intake().return_units(&order);
        }
    }
    gateway.observe().await.unwrap();

    let report = harness
        .admin("GET", "/admin/drops/spring/report", None)
        .await;
    let (status, report) = (report.status, report.json());
    assert_eq!(status, StatusCode::OK, "{report}");
    let counts = store
        .order_counts(DropId::parse("spring").unwrap())
        .await
        .unwrap();
    for state in OrderState::ALL {
        let stored = counts.get(&state).copied().unwrap_or_default();
        assert_eq!(
            report["orders_by_state"][state.as_str()],
            json!({ "orders": stored.orders, "units": stored.units }),
            "{}",
            state.as_str()
        );
    }
    let buckets = report["timeline"]["buckets"].as_array().unwrap();
    let total = |field: &str| -> u64 { buckets.iter().map(|b| b[field].as_u64().unwrap()).sum() };
    assert_eq!(
        [
            total("accepted"),
            total("confirmed"),
            total("rejected"),
            total("failed")
        ],
        [6, 4, 1, 1]
    );
    // The fifth order freed a slot while a unit was left, so a seventh shopper got a pass; the
    // sixth took the last unit and its slot went to nobody.
    assert_eq!([total("arrivals"), total("admitted")], [8, 7]);
    let funnel: Vec<(String, u64)> = report["funnel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["step"].as_str().unwrap().to_owned(),
                step["shoppers"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("arrived", 8),
        ("admitted", 7),
        ("ordered", 6),
        ("confirmed", 4),
    ];
    assert_eq!(
        funnel,
        expected.map(|(step, n)| (step.to_owned(), n)).to_vec()
    );
    let sold_out_after = (sold_out_at.unwrap().unix_millis() - START.unix_millis()) as f64 / 1e3;
    assert_eq!(report["selling"]["sold_out_after_s"], json!(sold_out_after));
    assert_eq!(report["selling"]["first_order_after_s"], json!(1.0));
    assert_eq!(
        report["stock"],
        json!({ "units": 6, "available": 1 }),
        "the refused unit is back"
    );
    assert_eq!(report["queue"]["arrivals"], 8);
    assert_eq!(report["queue"]["longest_line"], 6);
    assert_eq!(
        report["queue"]["turns"], 5,
        "five of the six waiters had their turn"
    );
    assert_eq!(report["dead_letters_total"], 1);
    assert_eq!(
        report["dead_letters"][0]["order_id"],
        order_ids[5].to_string()
    );
    assert_eq!(report["dead_letters"][0]["last_error"], "timed out <5 s>");
    assert_eq!(report["complete"], false, "a unit is back on sale");

    let page = harness
        .admin("GET", "/admin/drops/spring/report?format=html", None)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("Rods &lt;&amp;&gt; reels"),
        "the name is escaped"
    );
    assert!(html.contains("timed out &lt;5 s&gt;"));
    assert!(html.contains("Dead letters (1)"));
    assert_eq!(html.matches("<svg").count(), 5, "five charts");

    assert_eq!(
        harness
            .admin("GET", "/admin/drops/nope/report", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
