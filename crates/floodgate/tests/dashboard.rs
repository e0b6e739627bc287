//! The live dashboard on the real binary, in headless Chromium at a phone's width: it signs in
//! from the address's `#token=` fragment, renders, and its numbers move while a small drop
//! sells and delivers to a simulated legacy shop. A screenshot is kept as a test artifact
//! (`target/tmp/dashboard-phone.png`). Plain HTTP checks pin down who may read it.

use std::path::Path;
use std::time::Duration;

use floodgate_testkit::browser::Browser;
use floodgate_testkit::legacy::{LegacyConfig, LegacyServer};
use floodgate_testkit::{GatewayProcess, HttpClient, Method, StatusCode, drops};
use tokio::time::Instant;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

/// Polls `read` until `done` holds for its value, or fails after `seconds`.
async fn eventually<F, Fut>(seconds: u64, what: &str, mut read: F, done: impl Fn(&str) -> bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let value = read().await;
        if value.as_deref().is_ok_and(&done) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {value:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_text(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let (status, _, body) = client
        .send_bytes(Method::GET, url, headers, bytes::Bytes::new())
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn number(text: &str) -> Option<u64> {
    text.replace(',', "").trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_and_follows_a_drop_on_a_phone() {
    let shop = LegacyServer::start("127.0.0.1:0".parse().unwrap(), LegacyConfig::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = shop.floodgate_config(10);
    let gateway = GatewayProcess::spawn(binary(), data.path(), &config).unwrap();
    let client = HttpClient::new(Duration::from_secs(10));
    let drop = drops::open_with_room("Muskie rod drop", 40, 5);
    gateway.put_drop(&client, "spring", &drop).await.unwrap();

    let browser = Browser::start(390, 844).await.unwrap();
    let address = format!(
        "{}/admin/dashboard#token={}",
        gateway.admin_url, gateway.admin_token
    );
    browser.goto(&address).await.unwrap();
    eventually(
        15,
        "the event stream",
        || browser.text("#status"),
        |s| s == "live",
    )
    .await;
    let available = r#"section[data-drop="spring"] .available"#;
    eventually(
        10,
        "the drop's card",
        || browser.text(available),
        |available| number(available) == Some(40),
    )
    .await;
    assert_eq!(browser.text("#accepted-total").await.unwrap(), "0");

    // Twelve shoppers through the room, each ordering with the pass they get in turn.
    let join = format!("{}/api/drops/spring/queue", gateway.public_url);
    let order = format!("{}/api/drops/spring/orders", gateway.public_url);
    for shopper in 0..12 {
        let customer = format!("c-{shopper}");
        let joined = drops::join(&client, &join, &customer).await;
        assert_eq!(joined.status, StatusCode::OK, "room for each in turn");
        let pass = joined.body["pass"].as_str().unwrap().to_owned();
        let key = format!("k-{shopper}");
        let placed = drops::order_a_rod(&client, &order, &customer, &key, &pass).await;
        assert_eq!(placed.status, StatusCode::ACCEPTED);
    }
    eventually(
        10,
        "orders accepted",
        || browser.text("#accepted-total"),
        |total| number(total) == Some(12),
    )
    .await;
    eventually(
        10,
        "the stock burn-down",
        || browser.text(available),
        |available| number(available) == Some(28),
    )
    .await;
    eventually(
        20,
        "confirmed by the shop",
        || browser.text("#confirmed-total"),
        |confirmed| number(confirmed) == Some(12),
    )
    .await;
    let orders_row = browser.text(r#"tr[data-lane="orders"]"#).await.unwrap();
    assert!(orders_row.starts_with("orders"), "{orders_row}");
    let charts = browser
        .script("return document.querySelectorAll('svg.chart path').length;")
        .await
        .unwrap();
    assert!(charts.as_u64().unwrap() >= 6, "lines drawn: {charts}");

    let (page_width, viewport) = browser.widths().await.unwrap();
    assert_eq!(viewport, 390, "a phone's viewport");
    assert!(page_width <= viewport, "fits a phone: {page_width} px");
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-phone.png");
    browser.screenshot(&artifact).await.unwrap();
    assert!(std::fs::metadata(&artifact).unwrap().len() > 10_000);
    eprintln!("screenshot: {}", artifact.display());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_token_reads_the_dashboard_and_a_cookie_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::spawn(binary(), data.path(), "").unwrap();
    let client = HttpClient::new(Duration::from_secs(10));
    let page = format!("{}/admin/dashboard", gateway.admin_url);
    let cookie = format!("floodgate_admin={}", gateway.admin_token);
    let auth = gateway.admin_authorization();

    let api = client.get(&page, &[]).await.unwrap();
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.body["error"], "unauthorized");
    let browser = get_text(&client, &page, &[("accept", "text/html")]).await;
    assert_eq!(browser.0, StatusCode::UNAUTHORIZED);
    assert!(browser.1.contains("floodgate admin"), "a sign-in page");

    for headers in [
        vec![("authorization", auth.as_str())],
        vec![("cookie", cookie.as_str())],
    ] {
        let (status, body) = get_text(&client, &page, &headers).await;
        assert_eq!(status, StatusCode::OK, "{headers:?}");
        assert!(body.contains("floodgate · live"));
    }
    let wrong = client
        .get(&page, &[("cookie", "floodgate_admin=guess")])
        .await
        .unwrap();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let pause = format!("{}/admin/drops/any/pause", gateway.admin_url);
    let by_cookie = client
        .send(Method::POST, &pause, &[("cookie", &cookie)], None)
        .await
        .unwrap();
    assert_eq!(
        by_cookie.status,
        StatusCode::UNAUTHORIZED,
        "a cookie never changes anything"
    );
}
