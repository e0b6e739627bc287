//! The pre-warm sequence on a stopped clock (the gateway's time moves only when the test moves
//! it): nothing before `prewarm_s`; then the rehearsal sizes the tables, fills the edge cache,
//! opens origin connections, probes the downstream and raises `floodgate_expected_load`; ten
//! seconds before the start the final warm-up runs once more; after the end the gauge falls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use floodgate_config::Config;
use floodgate_core::{Clock, Timestamp};
use floodgate_gateway::{Gateway, admin_router, public_router};
use floodgate_store::{SqliteOptions, SqliteStore, Store};
use floodgate_testkit::origin::{OriginConfig, TestOrigin};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "prewarm-admin";
const START: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
const PAGE: &str = "/page/drop?cc=max-age=600";

async fn admin(
    gateway: &Arc<Gateway>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
        .unwrap();
    let response = admin_router(Arc::clone(gateway))
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The drop's pre-warm passes once the one of `stage` has finished.
async fn passes_once_finished(gateway: &Arc<Gateway>, stage: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = admin(gateway, "GET", "/admin/drops/spring", None).await;
        let detail: Value = serde_json::from_str(&body).unwrap();
        let passes = detail["prewarm"]["passes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let finished = passes
            .iter()
            .any(|pass| pass["stage"] == stage && !pass["finished_at"].is_null());
        if finished {
            return passes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {stage} pass: {passes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn expected_load(gateway: &Arc<Gateway>) -> String {
    let (_, page) = admin(gateway, "GET", "/metrics", None).await;
    page.lines()
        .find(|line| line.starts_with("floodgate_expected_load{"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_is_warmed_before_its_surge() {
    let origin = TestOrigin::start(OriginConfig::default()).await.unwrap();
    let config = Config::from_toml(&format!(
        "[origin]\nurl = \"{}\"\nmax_concurrency = 64\n[[routes]]\npath = \"/page/**\"\ncache = {{}}\n",
        origin.url()
    ))
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(data.path(), SqliteOptions::default()).unwrap();
    let (clock, millis) = Clock::manual(START.add_millis(-400_000));
    let set_clock = |at: Timestamp| millis.store(at.unix_millis(), Ordering::SeqCst);
    let gateway = Gateway::start(
        Arc::new(store) as Arc<dyn Store>,
        config.gateway_settings(TOKEN.into(), "secret".into()),
        clock,
    )
    .await
    .unwrap();
    let probes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&probes);
    gateway.probe_downstream_with(Box::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }));
    let drop = json!({
        "name": "Drop", "starts_at": START, "ends_at": START.add_millis(3_600_000),
        "limit_per_customer": 1,
        "skus": [{"sku": "rod", "name": "Rod", "price_cents": 100, "stock": 100}],
        "waiting_room": {"enabled": true, "max_active": 10, "prequeue_s": 0, "pass_ttl_s": 60},
        "prewarm_s": 300, "expected_shoppers": 50_000, "prewarm_paths": [PAGE, "/page/missing?status=404"],
    });
    assert_eq!(
        admin(&gateway, "PUT", "/admin/drops/spring", Some(drop))
            .await
            .0,
        StatusCode::OK
    );

    // Six minutes and forty seconds before the start: too early.
    gateway.observe().await.unwrap();
    assert_eq!(
        expected_load(&gateway).await,
        r#"floodgate_expected_load{drop="spring"} 0"#
    );
    assert_eq!((origin.total_hits(), origin.connections()), (0, 0));
    assert_eq!(probes.load(Ordering::SeqCst), 0);

    // Five minutes before: the rehearsal.
    set_clock(START.add_millis(-300_000));
    gateway.observe().await.unwrap();
    let passes = passes_once_finished(&gateway, "rehearsal").await;
    let rehearsal = &passes[0];
    assert_eq!(rehearsal["sized_for"], 50_000);
    assert_eq!(
        rehearsal["pages"],
        json!([
            {"path": PAGE, "status": 200, "cached": true},
            {"path": "/page/missing?status=404", "status": 404, "cached": false},
        ])
    );
    // The pool starts at a quarter of its 64: sixteen idle connections, one left by the page.
    assert_eq!(rehearsal["connections_opened"], 15);
    assert_eq!(rehearsal["downstream"], "reachable");
    assert_eq!(origin.hits("/page/drop"), 1);
    assert_eq!(origin.connections(), 16);
    assert_eq!(
        expected_load(&gateway).await,
        r#"floodgate_expected_load{drop="spring"} 50000"#
    );
    // The first shopper's page comes from the cache.
    let request = Request::get(PAGE).body(Body::empty()).unwrap();
    let response = public_router(Arc::clone(&gateway))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(origin.hits("/page/drop"), 1);
    // Another second of the rehearsal window starts nothing new.
    set_clock(START.add_millis(-299_000));
    gateway.observe().await.unwrap();
    assert_eq!(probes.load(Ordering::SeqCst), 1);

    // Ten seconds before the start: the final warm-up, once.
    set_clock(START.add_millis(-10_000));
    gateway.observe().await.unwrap();
    let passes = passes_once_finished(&gateway, "final").await;
    assert_eq!(passes.len(), 2);
    assert!(passes[1]["sized_for"].is_null(), "tables are sized once");
    set_clock(START.add_millis(-9_000));
    gateway.observe().await.unwrap();
    assert_eq!(probes.load(Ordering::SeqCst), 2);

    // After the end nobody is expected.
    set_clock(START.add_millis(3_600_000));
    gateway.observe().await.unwrap();
    assert_eq!(
        expected_load(&gateway).await,
        r#"floodgate_expected_load{drop="spring"} 0"#
    );
    assert_eq!(probes.load(Ordering::SeqCst), 2);
}
