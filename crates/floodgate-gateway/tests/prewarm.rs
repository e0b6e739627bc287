//! The pre-warm sequence on a stopped clock (the gateway's time moves only when the test moves
//! it): nothing before `prewarm_s`; then the rehearsal sizes the tables, fills the edge cache,
//! opens origin connections, probes the downstream and raises `floodgate_expected_load`; ten
//! seconds before the start the final warm-up runs once more; after the end the gauge falls.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use floodgate_core::Timestamp;
use floodgate_testkit::origin::{OriginConfig, TestOrigin};
use serde_json::{Value, json};
use support::InProcess;

const START: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
const PAGE: &str = "/page/drop?cc=max-age=600";

/// The drop's pre-warm passes once the one of `stage` has finished.
async fn passes_once_finished(gateway: &InProcess, stage: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let detail = gateway
            .admin("GET", "/admin/drops/spring", None)
            .await
            .json();
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

async fn expected_load(gateway: &InProcess) -> String {
    let page = gateway.admin("GET", "/metrics", None).await.text();
    page.lines()
        .find(|line| line.starts_with("floodgate_expected_load{"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_is_warmed_before_its_surge() {
    let origin = TestOrigin::start(OriginConfig::default()).await.unwrap();
    let config = format!(
        "[origin]\nurl = \"{}\"\nmax_concurrency = 64\n[[routes]]\npath = \"/page/**\"\ncache = {{}}\n",
        origin.url()
    );
    let harness = InProcess::start(&config, START.add_millis(-400_000)).await;
    let gateway = &harness.gateway;
    let set_clock = |at: Timestamp| harness.set_clock(at);
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
    harness.put_spring_drop(drop).await;

    // Six minutes and forty seconds before the start: too early.
    gateway.observe().await.unwrap();
    assert_eq!(
        expected_load(&harness).await,
        r#"floodgate_expected_load{drop="spring"} 0"#
    );
    assert_eq!((origin.total_hits(), origin.connections()), (0, 0));
    assert_eq!(probes.load(Ordering::SeqCst), 0);

    // Five minutes before: the rehearsal.
    set_clock(START.add_millis(-300_000));
    gateway.observe().await.unwrap();
    let passes = passes_once_finished(&harness, "rehearsal").await;
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
        expected_load(&harness).await,
        r#"floodgate_expected_load{drop="spring"} 50000"#
    );
    // The first shopper's page comes from the cache.
    let first = harness
        .public(Request::get(PAGE).body(Body::empty()).unwrap())
        .await;
    assert_eq!(first.headers["x-cache"], "HIT");
    assert_eq!(origin.hits("/page/drop"), 1);
    // Another second of the rehearsal window starts nothing new.
    set_clock(START.add_millis(-299_000));
    gateway.observe().await.unwrap();
    assert_eq!(probes.load(Ordering::SeqCst), 1);

    // Ten seconds before the start: the final warm-up, once.
    set_clock(START.add_millis(-10_000));
    gateway.observe().await.unwrap();
    let passes = passes_once_finished(&harness, "final").await;
    assert_eq!(passes.len(), 2);
    assert!(passes[1]["sized_for"].is_null(), "tables are sized once");
    set_clock(START.add_millis(-9_000));
    gateway.observe().await.unwrap();
    assert_eq!(probes.load(Ordering::SeqCst), 2);

    // After the end nobody is expected.
    set_clock(START.add_millis(3_600_000));
    gateway.observe().await.unwrap();
    assert_eq!(
        expected_load(&harness).await,
        r#"floodgate_expected_load{drop="spring"} 0"#
    );
    assert_eq!(probes.load(Ordering::SeqCst), 2);
}
