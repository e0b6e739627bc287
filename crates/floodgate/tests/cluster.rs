//! Three nodes of the real binary on one PostgreSQL (a throwaway cluster), 2,000 units and
//! 30,000 orders spread across them by the test, one node SIGKILLed mid-drop and the delivery
//! leader SIGKILLed later: nothing oversold, every `202` stored, the dead nodes' leases back in
//! the pool once they lapse, and the legacy shop sees each order once and never more than its
//! limit in any one-second window.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_testkit::legacy::{LegacyConfig, LegacyServer};
use floodgate_testkit::postgres::PostgresCluster;
use floodgate_testkit::{GatewayProcess, HttpClient, Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;

const STOCK: i64 = 2_000;
const ORDERS: usize = 30_000;
/// Two orders per customer, on different nodes (the limit is 1: the database holds it).
const CUSTOMERS: usize = ORDERS / 2;
const CONCURRENCY: usize = 192;
/// The legacy shop's limit, and floodgate's `rate_per_second`.
const RATE: u64 = 250;
/// Short leases and terms, so the test sees them lapse.
const LEASE_TTL_MS: u64 = 3_000;
const LEADER_TTL_MS: u64 = 2_000;

fn spawn(data: &Path, url: &str, shop: &LegacyServer) -> GatewayProcess {
    let config = format!(
        "lease_ttl_ms = {LEASE_TTL_MS}\nleader_ttl_ms = {LEADER_TTL_MS}\n\
         [downstream]\nurl = \"{}\"\nrate_per_second = {RATE}\nmax_in_flight = 32\n",
        shop.orders_url()
    );
    GatewayProcess::spawn_with_env(
        Path::new(env!("CARGO_BIN_EXE_floodgate")),
        data,
        &config,
        &[("FLOODGATE_STORE_URL", url)],
    )
    .unwrap()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// The node leading delivery now, by process id (node names start `node-<pid>-`).
async fn leader_pid(db: &tokio_postgres::Client) -> Option<u32> {
    let row = db
        .query_opt(
            "SELECT node FROM leadership WHERE role = 'delivery' AND expires_at > now()",
            &[],
        )
        .await
        .unwrap()?;
    let node: String = row.get(0);
    node.split('-').nth(1)?.parse().ok()
}

/// Polls every 100 ms until `done`, failing the test after `patience`.
macro_rules! wait_until {
    ($what:expr, $patience:expr, $done:expr) => {{
        let deadline = Instant::now() + $patience;
        while !$done {
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_sigkilled_one_by_one_oversell_lose_and_double_nothing() {
    let cluster = PostgresCluster::start().expect("a throwaway PostgreSQL cluster");
    let url = cluster.url("postgres");
    let shop = LegacyServer::start(
        "127.0.0.1:0".parse().unwrap(),
        LegacyConfig {
            capacity_rps: RATE as u32,
            latency: Duration::from_millis(5),
            ..LegacyConfig::default()
        },
    )
    .await
    .unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<GatewayProcess> = dirs
        .iter()
        .map(|dir| spawn(dir.path(), &url, &shop))
        .collect();
    let client = HttpClient::new(Duration::from_secs(20));
    let surge = json!({
        "name": "Cluster drop",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "limit_per_customer": 1,
        "skus": [{ "sku": "rod", "name": "Rod", "price_cents": 100, "stock": STOCK }],
    });
    nodes[0].put_drop(&client, "surge", &surge).await.unwrap();
    for node in &nodes {
        let page = format!("{}/api/drops/surge", node.public_url);
        wait_until!(
            "every node to know the drop",
            Duration::from_secs(10),
            client
                .get(&page, &[])
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
        );
    }
    let db = connect(&url).await;

    // 30,000 orders round-robin over the nodes; node 1 is SIGKILLed after 1,200 answers.
    let public: Vec<String> = nodes.iter().map(|node| node.public_url.clone()).collect();
    let nodes: Vec<Arc<Mutex<Option<GatewayProcess>>>> = nodes
        .into_iter()
        .map(|node| Arc::new(Mutex::new(Some(node))))
        .collect();
    let accepted = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(ORDERS);
    for serial in 0..ORDERS {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let target = format!("{}/api/drops/surge/orders", public[serial % 3]);
        let (client, accepted, answered, victim) = (
            client.clone(),
            Arc::clone(&accepted),
            Arc::clone(&answered),
            Arc::clone(&nodes[1]),
        );
        tasks.push(tokio::spawn(async move {
            let body = json!({ "customer": format!("c-{}", serial % CUSTOMERS), "sku": "rod", "quantity": 1 });
            let key = format!("order-{serial}");
            let sent = client
                .send(Method::POST, &target, &[("idempotency-key", &key)], Some(&body))
                .await;
            drop(permit);
            let Ok(response) = sent else { return };
            if response.status == StatusCode::ACCEPTED {
                let order_id = response.body["order_id"].as_str().unwrap().to_owned();
                accepted.lock().unwrap().push((serial, order_id));
            }
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == 1_200
                && let Some(node) = victim.lock().unwrap().take()
            {
                node.kill();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let accepted = Arc::try_unwrap(accepted).unwrap().into_inner().unwrap();
    assert!(
        nodes[1].lock().unwrap().is_none(),
        "node 1 was killed mid-drop"
    );

    // Kill the delivery leader part-way through delivery.
    let a_third = accepted.len() as u64 / 3;
    wait_until!(
        "a third of the orders delivered",
        Duration::from_secs(60),
        shop.shop().stats().received >= a_third
    );
    let leader = leader_pid(&db).await.expect("a delivery leader");
    let killed_leader = nodes
        .iter()
        .find_map(|slot| {
            let mut slot = slot.lock().unwrap();
            (slot.as_ref().map(GatewayProcess::pid) == Some(leader)).then(|| slot.take())?
        })
        .expect("the leader is a live node");
    killed_leader.kill();

    // The survivor takes over and delivers everything.
    let stored = count(&db, "SELECT COUNT(*) FROM orders").await;
    wait_until!(
        "every order delivered",
        Duration::from_secs(90),
        shop.shop().stats().received >= stored as u64
    );
    // The survivor's lease is all that may still be out.
    wait_until!(
        "the dead nodes' leases to lapse and return",
        Duration::from_secs(30),
        count(&db, "SELECT COUNT(DISTINCT node) FROM stock_leases").await <= 1
    );

    // No oversell; units held by orders plus unsold leases make up what the stock row counts.
    let units = count(&db, "SELECT COALESCE(SUM(quantity), 0)::int8 FROM orders").await;
    assert!(units <= STOCK, "oversold: {units} of {STOCK}");
    let allocated = count(&db, "SELECT allocated FROM stock").await;
    let leased = count(
        &db,
        "SELECT COALESCE(SUM(remaining), 0)::int8 FROM stock_leases",
    )
    .await;
    assert_eq!(allocated, units + leased, "every unit accounted for");
    // One order per customer: the limit held across nodes.
    let customers = count(&db, "SELECT COUNT(DISTINCT customer) FROM orders").await;
    assert_eq!(
        customers, stored,
        "a customer bought twice through two nodes"
    );
    // Every 202 is stored, under its key.
    let rows = db
        .query("SELECT order_id, idempotency_key FROM orders", &[])
        .await
        .unwrap();
    let by_key: HashMap<String, String> = rows.iter().map(|row| (row.get(1), row.get(0))).collect();
    for (serial, order_id) in &accepted {
        assert_eq!(
            by_key.get(&format!("order-{serial}")),
            Some(order_id),
            "a 202'd order was lost"
        );
    }
    // The shop took each order once, within its limit in every second.
    let received = shop.shop().received();
    let distinct: HashSet<&str> = received.iter().map(|r| r.order_id.as_str()).collect();
    assert_eq!(distinct.len(), received.len(), "an order was taken twice");
    assert_eq!(
        received.len() as i64,
        stored,
        "every stored order delivered"
    );
    let stats = shop.shop().stats();
    assert!(
        stats.max_starts_in_any_second <= RATE,
        "{} starts in one second; the limit is {RATE}",
        stats.max_starts_in_any_second
    );
    let confirmed = count(&db, "SELECT COUNT(*) FROM orders WHERE state = 'confirmed'").await;
    eprintln!(
        "{} accepted over HTTP, {stored} stored ({units} units), {confirmed} confirmed; \
         shop: {} starts, {} duplicates, at most {} in one second",
        accepted.len(),
        stats.starts,
        stats.duplicates,
        stats.max_starts_in_any_second
    );
}
