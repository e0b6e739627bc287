//! The waiting-room page in headless Chromium, against the real binary: it shows the place in
//! line, fits a phone's width, and turns to "It's your turn" by itself when the shopper ahead
//! buys.

use std::path::Path;
use std::time::Duration;

use floodgate_testkit::browser::Browser;
use floodgate_testkit::{GatewayProcess, HttpClient, Method, drops};
use serde_json::{Value, json};
use tokio::time::Instant;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

async fn post(client: &HttpClient, url: &str, headers: &[(&str, &str)], body: Value) -> Value {
    let answer = client
        .send(Method::POST, url, headers, Some(&body))
        .await
        .unwrap();
    assert!(answer.status.is_success(), "{url}: {:?}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_place_and_updates_itself_on_admission() {
    let data = tempfile::tempdir().unwrap();
    let config = "[waiting_room]\nsecret = \"page test\"\ncolour = \"#0a7\"\n";
    let gateway = GatewayProcess::spawn(binary(), data.path(), config).unwrap();
    let client = HttpClient::new(Duration::from_secs(10));
    let drop = drops::open_with_room("Drop", 10, 1);
    gateway.put_drop(&client, "spring", &drop).await.unwrap();
    let join = format!("{}/api/drops/spring/queue", gateway.public_url);
    let alice = post(&client, &join, &[], json!({ "customer": "alice" })).await;
    let bob = post(&client, &join, &[], json!({ "customer": "bob" })).await;
    let ticket = bob["ticket"].as_str().unwrap();

    let browser = Browser::start(390, 844).await.unwrap();
    let page = format!("{}/api/queue/{ticket}", gateway.public_url);
    browser.goto(&page).await.unwrap();
    assert_eq!(
        browser.text("#headline").await.unwrap(),
        "You are number 1 in line"
    );
    let detail = browser.text("#detail").await.unwrap();
    assert!(detail.contains("wait"), "{detail}");
    let (page_width, viewport) = browser.widths().await.unwrap();
    assert_eq!(viewport, 390, "a phone's viewport");
    assert!(
        page_width <= viewport,
        "the page fits a phone: {page_width} px"
    );

    let order = format!("{}/api/drops/spring/orders", gateway.public_url);
    let pass = alice["pass"].as_str().unwrap();
    post(
        &client,
        &order,
        &[("idempotency-key", "k1"), ("floodgate-pass", pass)],
        json!({ "customer": "alice", "sku": "rod", "quantity": 1 }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let headline = browser.text("#headline").await.unwrap();
        if headline == "It's your turn" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never updated: {headline}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.close().await;
}
