//! `/metrics` on the real binary: the exposition passes `promtool check metrics` (Debian's
//! `prometheus` package, installed by `.ci/run`) and its numbers follow a small drop and its
//! delivery to a simulated legacy shop.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use floodgate_testkit::legacy::{LegacyConfig, LegacyServer};
use floodgate_testkit::{GatewayProcess, HttpClient, Method, StatusCode, drops};
use tokio::time::Instant;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

/// `promtool check metrics` on `page`: its complaints, empty when the page is well-formed.
fn promtool_complaints(page: &[u8]) -> String {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian's prometheus package; .ci/run installs it)");
    promtool.stdin.take().unwrap().write_all(page).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool refused the page: {complaints}"
    );
    complaints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_follow_a_drop() {
    let shop = LegacyServer::start("127.0.0.1:0".parse().unwrap(), LegacyConfig::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let downstream = shop.floodgate_config(10);
    let gateway = GatewayProcess::spawn(binary(), data.path(), &downstream).unwrap();
    let client = HttpClient::new(Duration::from_secs(10));
    let auth = gateway.admin_authorization();
    let drop = drops::open_with_room("Metrics", 5, 1);
    gateway.put_drop(&client, "spring", &drop).await.unwrap();
    let join = format!("{}/api/drops/spring/queue", gateway.public_url);
    let ann = drops::join(&client, &join, "ann").await;
    drops::join(&client, &join, "bob").await;
    let pass = ann.body["pass"].as_str().unwrap().to_owned();
    let order = format!("{}/api/drops/spring/orders", gateway.public_url);
    let placed = drops::order_a_rod(&client, &order, "ann", "m-1", &pass).await;
    assert_eq!(placed.status, StatusCode::ACCEPTED);

    let page = format!("{}/shop/rod", gateway.public_url);
    let (status, _, _) = client
        .send_bytes(Method::GET, &page, &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "the shop's page through the front door"
    );
    let metrics = format!("{}/metrics", gateway.admin_url);
    let (status, _, _) = client
        .send_bytes(Method::GET, &metrics, &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the admin token guards /metrics by default"
    );
    // The order reaches the legacy shop within a few pacing slots.
    let deadline = Instant::now() + Duration::from_secs(10);
    let authorized = [("authorization", auth.as_str())];
    let scrape = || client.send_bytes(Method::GET, &metrics, &authorized, Bytes::new());
    let confirmed = "floodgate_delivery_orders_total{outcome=\"confirmed\"} 1";
    // The backlog is counted once a second: wait for the count after the delivery too.
    let settled = "floodgate_delivery_backlog_seconds 0";
    let (status, headers, page) = loop {
        let (status, headers, page) = scrape().await.unwrap();
        let text = String::from_utf8_lossy(&page);
        let delivered = [confirmed, settled]
            .iter()
            .all(|wanted| text.lines().any(|line| line == *wanted));
        if delivered || Instant::now() >= deadline {
            break (status, headers, page);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    promtool_complaints(&page);
    let text = String::from_utf8(page.to_vec()).unwrap();
    for line in [
        "floodgate_ready 1",
        "floodgate_orders_total{outcome=\"accepted\"} 1",
        "floodgate_stock_units{drop=\"spring\",sku=\"rod\",state=\"held\"} 1",
        "floodgate_stock_units{drop=\"spring\",sku=\"rod\",state=\"available\"} 4",
        "floodgate_stock_units{drop=\"spring\",sku=\"rod\",state=\"reserved\"} 0",
        "floodgate_stock_units{drop=\"spring\",sku=\"rod\",state=\"confirmed\"} 1",
        "floodgate_expected_load{drop=\"spring\"} 0",
        "floodgate_drop_orders{drop=\"spring\",state=\"confirmed\"} 1",
        confirmed,
        "floodgate_delivery_rate_limit_per_second 10",
        "floodgate_delivery_breaker_open 0",
        "floodgate_delivery_backlog_seconds 0",
        // Ann's pass was spent on her order, so Bob was admitted: nobody waits.
        "floodgate_waiting_room_waiting{drop=\"spring\"} 0",
        "floodgate_waiting_room_passes_in_force{drop=\"spring\"} 1",
        "floodgate_waiting_room_admitted_last_minute{drop=\"spring\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}
