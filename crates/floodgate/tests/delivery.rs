//! Delivery through the real binary to the simulated legacy shop: a SIGKILL while sending loses
//! and doubles nothing, a permanent refusal puts the units back on sale, and a dead-lettered
//! order is delivered after an operator's redrive.

use std::path::Path;
use std::time::Duration;

use floodgate_testkit::legacy::{LegacyConfig, LegacyServer};
use floodgate_testkit::{GatewayProcess, HttpClient, Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

async fn legacy(config: LegacyConfig) -> LegacyServer {
    LegacyServer::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn downstream_config(shop: &LegacyServer, extra: &str) -> String {
    format!("[downstream]\nurl = \"{}\"\n{extra}", shop.orders_url())
}

async fn create_drop(client: &HttpClient, gateway: &GatewayProcess, sku: &str, stock: u64) {
    let drop = json!({
        "name": "Delivery drop",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "limit_per_customer": 5,
        "skus": [{ "sku": sku, "name": "Thing", "price_cents": 100, "stock": stock }],
    });
    gateway.put_drop(client, "spring", &drop).await.unwrap();
}

async fn place(client: &HttpClient, gateway: &GatewayProcess, key: &str, sku: &str) -> Value {
    let url = format!("{}/api/drops/spring/orders", gateway.public_url);
    let body = json!({ "customer": format!("c-{key}"), "sku": sku, "quantity": 1 });
    let placed = client
        .send(Method::POST, &url, &[("idempotency-key", key)], Some(&body))
        .await
        .unwrap();
    json!({ "status": placed.status.as_u16(), "body": placed.body })
}

async fn order(client: &HttpClient, gateway: &GatewayProcess, order_id: &str) -> Value {
    let url = format!("{}/api/orders/{order_id}", gateway.public_url);
    client.get(&url, &[]).await.unwrap().body
}

/// Polls until `done` holds of the order, or fails after `deadline`.
async fn until_order(
    client: &HttpClient,
    gateway: &GatewayProcess,
    order_id: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let give_up = Instant::now() + deadline;
    loop {
        let current = order(client, gateway, order_id).await;
        if done(&current) {
            return current;
        }
        assert!(Instant::now() < give_up, "order stuck: {current}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn orders_in(client: &HttpClient, gateway: &GatewayProcess, state: &str) -> Vec<Value> {
    let url = format!(
        "{}/admin/orders?state={state}&limit=1000",
        gateway.admin_url
    );
    let auth = gateway.admin_authorization();
    let listed = client.get(&url, &[("authorization", &auth)]).await.unwrap();
    listed.body["orders"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_sending_loses_nothing_and_doubles_nothing() {
    const ORDERS: usize = 300;
    let shop = legacy(LegacyConfig {
        capacity_rps: 100,
        latency: Duration::from_millis(5),
        ..LegacyConfig::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let config = downstream_config(&shop, "rate_per_second = 100\nmax_in_flight = 8\n");
    let client = HttpClient::new(Duration::from_secs(20));
    let gateway = GatewayProcess::spawn(binary(), data.path(), &config).unwrap();
    create_drop(&client, &gateway, "rod", ORDERS as u64).await;
    let mut order_ids = Vec::new();
    for serial in 0..ORDERS {
        let placed = place(&client, &gateway, &format!("k{serial}"), "rod").await;
        assert_eq!(placed["status"], 202, "{placed}");
        order_ids.push(placed["body"]["order_id"].as_str().unwrap().to_owned());
    }
    // Kill mid-delivery: some orders at the shop, most not yet.
    let give_up = Instant::now() + Duration::from_secs(20);
    while shop.shop().stats().received < 60 {
        assert!(Instant::now() < give_up, "delivery never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill();
    let at_kill = shop.shop().stats().received;
    assert!(at_kill < ORDERS as u64, "the kill must land mid-delivery");

    let gateway = GatewayProcess::spawn(binary(), data.path(), &config).unwrap();
    for order_id in &order_ids {
        let confirmed = until_order(&client, &gateway, order_id, Duration::from_secs(30), |o| {
            o["state"] == "confirmed"
        })
        .await;
        assert!(confirmed["downstream_ref"].is_string());
    }
    order_ids.sort_unstable();
    assert_eq!(
        shop.shop().order_ids(),
        order_ids,
        "every order at the shop exactly once"
    );
    assert!(shop.shop().stats().max_starts_in_any_second <= 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_puts_the_units_back_on_sale() {
    let shop = legacy(LegacyConfig {
        reject_sku: Some("discontinued".into()),
        ..LegacyConfig::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let client = HttpClient::new(Duration::from_secs(10));
    let gateway =
        GatewayProcess::spawn(binary(), data.path(), &downstream_config(&shop, "")).unwrap();
    create_drop(&client, &gateway, "discontinued", 2).await;
    let mut refused = Vec::new();
    for key in ["a", "b"] {
        let placed = place(&client, &gateway, key, "discontinued").await;
        assert_eq!(placed["status"], 202, "{placed}");
        refused.push(placed["body"]["order_id"].as_str().unwrap().to_owned());
    }
    let sold_out = place(&client, &gateway, "c", "discontinued").await;
    assert_eq!(sold_out["status"], 410, "{sold_out}");

    for order_id in &refused {
        let rejected = until_order(&client, &gateway, order_id, Duration::from_secs(10), |o| {
            o["state"] != "accepted" && o["state"] != "submitting"
        })
        .await;
        assert_eq!(rejected["state"], "rejected", "{rejected}");
    }
    let rejected = orders_in(&client, &gateway, "rejected").await;
    assert!(rejected[0]["last_error"].as_str().unwrap().contains("422"));
    // The next shopper gets the units.
    let again = place(&client, &gateway, "c", "discontinued").await;
    assert_eq!(again["status"], 202, "{again}");
    assert_eq!(shop.shop().stats().received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_delivered_after_a_redrive() {
    // Down for the first two seconds: the order fails both attempts and is dead-lettered.
    let shop = legacy(LegacyConfig {
        outage: Some((Duration::ZERO, Duration::from_secs(2))),
        ..LegacyConfig::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let client = HttpClient::new(Duration::from_secs(10));
    let config = downstream_config(
        &shop,
        "max_attempts = 2\nbackoff_base_ms = 20\nbackoff_max_ms = 50\ntimeout_ms = 500\n",
    );
    let gateway = GatewayProcess::spawn(binary(), data.path(), &config).unwrap();
    create_drop(&client, &gateway, "rod", 5).await;
    let placed = place(&client, &gateway, "dead", "rod").await;
    let order_id = placed["body"]["order_id"].as_str().unwrap().to_owned();
    let failed = until_order(&client, &gateway, &order_id, Duration::from_secs(10), |o| {
        o["state"] == "failed"
    })
    .await;
    assert_eq!(failed["attempts"], 2);
    let dead_letters = orders_in(&client, &gateway, "failed").await;
    assert_eq!(dead_letters.len(), 1);
    assert!(
        dead_letters[0]["last_error"].is_string(),
        "{dead_letters:?}"
    );

    let auth = gateway.admin_authorization();
    let redrive = format!("{}/admin/orders/{order_id}/redrive", gateway.admin_url);
    // Redrive until the shop is back: a redrive during the outage fails again, as it should.
    let give_up = Instant::now() + Duration::from_secs(20);
    let confirmed = loop {
        let current = order(&client, &gateway, &order_id).await;
        match current["state"].as_str() {
            Some("confirmed") => break current,
            Some("failed") => {
                let redriven = client
                    .send(Method::POST, &redrive, &[("authorization", &auth)], None)
                    .await
                    .unwrap();
                assert_eq!(redriven.status, StatusCode::OK, "{:?}", redriven.body);
            }
            _ => {}
        }
        assert!(Instant::now() < give_up, "never delivered: {current}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(confirmed["downstream_ref"], "L-000001");
    assert_eq!(shop.shop().stats().received, 1);

    // Only dead letters can be redriven.
    let again = client
        .send(Method::POST, &redrive, &[("authorization", &auth)], None)
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["error"], "not_redrivable");
    assert_eq!(again.body["state"], "confirmed");
    let unknown = format!("{}/admin/orders/ord_nothing/redrive", gateway.admin_url);
    let missing = client
        .send(Method::POST, &unknown, &[("authorization", &auth)], None)
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
