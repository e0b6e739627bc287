//! Crash safety of order intake, against the real binary: SIGKILL in the middle of a drop loses
//! no accepted order, oversells nothing, leaves no half-written order, and every key still
//! replays its first answer after the restart — on the embedded store, and on PostgreSQL (a
//! throwaway cluster). A SIGTERM drains instead: admitted orders finish.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_testkit::postgres::PostgresCluster;
use floodgate_testkit::{GatewayProcess, HttpClient, Method, StatusCode};
use serde_json::{Value, json};

const STOCK: u64 = 1_000;
const ORDERS: usize = 20_000;
const CUSTOMERS: usize = 5_000;
/// Requests in flight at once: enough to keep the group commit busy.
const CONCURRENCY: usize = 256;

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Accepted(String),
    Refused(StatusCode),
    NoAnswer,
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

/// The real binary on `data`, on the embedded store or on the PostgreSQL database at `store_url`.
fn spawn(data: &Path, store_url: Option<&str>) -> GatewayProcess {
    let env: Vec<(&str, &str)> = store_url
        .map(|url| ("FLOODGATE_STORE_URL", url))
        .into_iter()
        .collect();
    // A short lease, so a killed node's unsold stock is back soon.
    GatewayProcess::spawn_with_env(binary(), data, "lease_ttl_ms = 1000", &env).unwrap()
}

fn request_body(serial: usize) -> Value {
    json!({ "customer": format!("customer-{}", serial % CUSTOMERS), "sku": "rod", "quantity": 1 })
}

fn key(serial: usize) -> String {
    format!("order-{serial}")
}

async fn create_drop(client: &HttpClient, gateway: &GatewayProcess) {
    let drop = json!({
        "name": "Crash drop",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "limit_per_customer": 2,
        "skus": [{ "sku": "rod", "name": "Rod", "price_cents": 19900, "stock": STOCK }],
    });
    gateway.put_drop(client, "crash", &drop).await.unwrap();
}

/// Fires every order; kills the gateway once `kill_after` answers have arrived (if given).
async fn fire_orders(
    client: &HttpClient,
    gateway: GatewayProcess,
    kill_after: Option<usize>,
) -> Vec<Outcome> {
    let url = format!("{}/api/drops/crash/orders", gateway.public_url);
    let outcomes = Arc::new(Mutex::new(vec![Outcome::NoAnswer; ORDERS]));
    let answered = Arc::new(AtomicUsize::new(0));
    let gateway = Arc::new(Mutex::new(Some(gateway)));
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(ORDERS);
    for serial in 0..ORDERS {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let (client, url, outcomes, answered, gateway) = (
            client.clone(),
            url.clone(),
            Arc::clone(&outcomes),
            Arc::clone(&answered),
            Arc::clone(&gateway),
        );
        tasks.push(tokio::spawn(async move {
            let key = key(serial);
            let sent = client
                .send(
                    Method::POST,
                    &url,
                    &[("idempotency-key", &key)],
                    Some(&request_body(serial)),
                )
                .await;
            drop(permit);
            let outcome = match sent {
                Ok(response) if response.status == StatusCode::ACCEPTED => {
                    Outcome::Accepted(response.body["order_id"].as_str().unwrap().to_owned())
                }
                Ok(response) => Outcome::Refused(response.status),
                Err(_) => Outcome::NoAnswer,
            };
            if outcome != Outcome::NoAnswer {
                let count = answered.fetch_add(1, Ordering::SeqCst) + 1;
                if Some(count) == kill_after
                    && let Some(process) = gateway.lock().unwrap().take()
                {
                    process.kill();
                }
            }
            outcomes.lock().unwrap()[serial] = outcome;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    if let Some(process) = gateway.lock().unwrap().take() {
        process.kill();
    }
    Arc::try_unwrap(outcomes).unwrap().into_inner().unwrap()
}

async fn all_orders(client: &HttpClient, gateway: &GatewayProcess) -> Vec<Value> {
    let auth = gateway.admin_authorization();
    let mut orders = Vec::new();
    let mut after = String::new();
    loop {
        let url = format!(
            "{}/admin/orders?drop=crash&limit=1000{after}",
            gateway.admin_url
        );
        let page = client.get(&url, &[("authorization", &auth)]).await.unwrap();
        assert_eq!(page.status, StatusCode::OK);
        orders.extend(page.body["orders"].as_array().unwrap().iter().cloned());
        match page.body["next_after"].as_str() {
            Some(last) => after = format!("&after={last}"),
            None => return orders,
        }
    }
}

async fn crash_and_recover(kill_after: usize, store_url: Option<&str>) {
    let data = tempfile::tempdir().unwrap();
    let client = HttpClient::new(Duration::from_secs(20));
    let gateway = spawn(data.path(), store_url);
    create_drop(&client, &gateway).await;
    let outcomes = fire_orders(&client, gateway, Some(kill_after)).await;
    let accepted: HashMap<usize, &String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(serial, outcome)| match outcome {
            Outcome::Accepted(order_id) => Some((serial, order_id)),
            _ => None,
        })
        .collect();
    let unanswered = outcomes
        .iter()
        .filter(|outcome| **outcome == Outcome::NoAnswer)
        .count();
    assert!(
        !accepted.is_empty() && unanswered > 0,
        "the kill must land mid-drop ({} accepted)",
        accepted.len()
    );

    let gateway = spawn(data.path(), store_url);
    let stored = all_orders(&client, &gateway).await;
    let by_key: HashMap<&str, &Value> = stored
        .iter()
        .map(|order| (order["idempotency_key"].as_str().unwrap(), order))
        .collect();
    assert_eq!(by_key.len(), stored.len(), "one order per key");

    // Every order that exists is whole and was asked for; units never exceed the stock.
    let units: u64 = stored
        .iter()
        .map(|order| order["quantity"].as_u64().unwrap())
        .sum();
    assert!(units <= STOCK, "oversold: {units} units held of {STOCK}");
    for order in &stored {
        let serial: usize = order["idempotency_key"].as_str().unwrap()["order-".len()..]
            .parse()
            .unwrap();
        let asked = request_body(serial);
        assert_eq!(order["customer"], asked["customer"]);
        assert_eq!(order["sku"], asked["sku"]);
        assert_eq!(order["quantity"], asked["quantity"]);
        assert_eq!(order["state"], "accepted");
    }
    // Every 202 survived, unchanged.
    for (serial, order_id) in &accepted {
        let order = by_key
            .get(key(*serial).as_str())
            .unwrap_or_else(|| panic!("202'd order {order_id} lost"));
        assert_eq!(order["order_id"].as_str(), Some(order_id.as_str()));
    }
    // The drop's counters agree with the orders (on PostgreSQL, once the killed node's lease
    // of stock has lapsed and its unsold units are back in the pool).
    let auth = gateway.admin_authorization();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let detail = client
            .get(
                &format!("{}/admin/drops/crash", gateway.admin_url),
                &[("authorization", &auth)],
            )
            .await
            .unwrap();
        assert_eq!(detail.body["skus"][0]["held"].as_u64(), Some(units));
        let available = detail.body["skus"][0]["available"].as_u64();
        if available == Some(STOCK - units) {
            break;
        }
        assert!(
            store_url.is_some() && tokio::time::Instant::now() < deadline,
            "{available:?} available, {units} of {STOCK} held"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every stored key replays its order.
    let url = format!("{}/api/drops/crash/orders", gateway.public_url);
    for (key, order) in &by_key {
        let serial: usize = key["order-".len()..].parse().unwrap();
        let replay = client
            .send(
                Method::POST,
                &url,
                &[("idempotency-key", key)],
                Some(&request_body(serial)),
            )
            .await
            .unwrap();
        assert_eq!(
            replay.status,
            StatusCode::ACCEPTED,
            "{key}: {:?}",
            replay.body
        );
        assert_eq!(replay.body["order_id"], order["order_id"]);
    }
    eprintln!(
        "killed after {kill_after} answers: {} accepted, {unanswered} unanswered, {} stored, {units} units held",
        accepted.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_early_in_the_drop_loses_nothing() {
    crash_and_recover(300, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_selling_out_loses_nothing() {
    crash_and_recover(700, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_the_sell_out_loses_nothing() {
    crash_and_recover(9_000, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_selling_out_on_postgres_loses_nothing() {
    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    crash_and_recover(700, Some(&cluster.url("postgres"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_admitted_orders_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let client = HttpClient::new(Duration::from_secs(20));
    let gateway = GatewayProcess::spawn(binary(), data.path(), "").unwrap();
    create_drop(&client, &gateway).await;
    let url = format!("{}/api/drops/crash/orders", gateway.public_url);
    let orders: Vec<_> = (0..200)
        .map(|serial| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                client
                    .send(
                        Method::POST,
                        &url,
                        &[("idempotency-key", &key(serial))],
                        Some(&request_body(serial)),
                    )
                    .await
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for order in orders {
        let response = order.await.unwrap().unwrap();
        assert_eq!(response.status, StatusCode::ACCEPTED);
        accepted.push(response.body["order_id"].as_str().unwrap().to_owned());
    }
    assert!(
        gateway.terminate().unwrap(),
        "floodgate must exit 0 after SIGTERM"
    );
    let gateway = GatewayProcess::spawn(binary(), data.path(), "").unwrap();
    let stored: Vec<String> = all_orders(&client, &gateway)
        .await
        .iter()
        .map(|order| order["order_id"].as_str().unwrap().to_owned())
        .collect();
    for order_id in accepted {
        assert!(stored.contains(&order_id), "{order_id} lost");
    }
}
