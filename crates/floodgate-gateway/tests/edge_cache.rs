//! The edge cache, driven through the public router in process (so ten thousand concurrent
//! requests need no sockets) against a test origin on loopback.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use floodgate_core::Timestamp;
use floodgate_testkit::origin::{OriginConfig, TestOrigin};
use serde_json::json;
use support::InProcess;

struct Harness(InProcess);

impl Harness {
    async fn new(origin: &TestOrigin, cache: &str) -> Self {
        let config = format!(
            "[origin]\nurl = \"{}\"\n[[routes]]\npath = \"/page/**\"\ncache = {cache}\n",
            origin.url()
        );
        Self(InProcess::start(&config, Timestamp::from_unix_millis(0)).await)
    }

    /// `method path` through the public router: status, `X-Cache`, body.
    async fn call(&self, method: &str, path: &str) -> (StatusCode, String, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let answer = self.0.public(request).await;
        let x_cache = answer
            .headers
            .get("x-cache")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (answer.status, x_cache, answer.text())
    }

    async fn get(&self, path: &str) -> (StatusCode, String, String) {
        self.call("GET", path).await
    }
}

async fn origin() -> TestOrigin {
    TestOrigin::start(OriginConfig::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_misses_make_one_origin_request() {
    let origin = origin().await;
    let harness = Arc::new(Harness::new(&origin, "{}").await);
    let url = "/page/hot?cc=max-age=60&delay_ms=500";
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let harness = Arc::clone(&harness);
        requests.spawn(async move { harness.get(url).await });
    }
    let answers = requests.join_all().await;
    assert_eq!(origin.hits("/page/hot"), 1);
    assert!(
        answers
            .iter()
            .all(|(status, _, _)| *status == StatusCode::OK)
    );
    let misses = answers
        .iter()
        .filter(|(_, cache, _)| cache == "MISS")
        .count();
    assert_eq!(misses, 1);
    let first = &answers[0].2;
    assert!(
        answers.iter().all(|(_, _, body)| body == first),
        "everyone got the same page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_carry_age_and_x_cache_and_head_is_served_too() {
    let origin = origin().await;
    let harness = Harness::new(&origin, "{}").await;
    let url = "/page/rods?cc=public,%20s-maxage=60";
    assert_eq!(harness.get(url).await.1, "MISS");
    let hit = harness
        .0
        .public(Request::get(url).body(Body::empty()).unwrap())
        .await;
    assert_eq!(hit.headers["x-cache"], "HIT");
    assert_eq!(hit.headers["age"], "0");
    let (status, x_cache, body) = harness.call("HEAD", url).await;
    assert_eq!(
        (status, x_cache.as_str(), body.as_str()),
        (StatusCode::OK, "HIT", "")
    );
    assert_eq!(origin.hits("/page/rods"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_origin_forbids_is_fetched_every_time() {
    let origin = origin().await;
    let harness = Harness::new(&origin, "{}").await;
    for (path, directives) in [
        ("/page/a", "no-store"),
        ("/page/b", "private,%20max-age=60"),
        ("/page/c", "no-cache"),
    ] {
        let url = format!("{path}?cc={directives}");
        harness.get(&url).await;
        harness.get(&url).await;
        assert_eq!(origin.hits(path), 2, "{directives}");
    }
    harness.get("/page/d").await;
    harness.get("/page/d").await;
    assert_eq!(origin.hits("/page/d"), 2, "no freshness, no caching");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_page_is_served_when_the_origin_fails() {
    let origin = origin().await;
    let harness = Harness::new(&origin, "{ ttl_s = 0, stale_if_error_s = 600 }").await;
    let (status, x_cache, first) = harness.get("/page/home").await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "MISS"));
    // Stale at once (ttl 0): a working origin is asked again.
    assert_eq!(harness.get("/page/home").await.1, "MISS");
    assert_eq!(origin.hits("/page/home"), 2);
    drop(origin);
    let (status, x_cache, body) = harness.get("/page/home").await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "STALE"));
    assert_ne!(body, first, "the last good page, not the first");
    let (status, _, _) = harness.get("/page/never-seen").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let origin = origin().await;
    let harness = Harness::new(&origin, "{ ttl_s = 0, stale_while_revalidate_s = 600 }").await;
    harness.get("/page/list").await;
    let (status, x_cache, _) = harness.get("/page/list").await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "STALE"));
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while origin.hits("/page/list") < 2 {
        assert!(tokio::time::Instant::now() < give_up, "never refreshed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_drops_a_prefix_from_the_cache() {
    let origin = origin().await;
    let harness = Harness::new(&origin, "{ ttl_s = 600 }").await;
    harness.get("/page/shop/a").await;
    harness.get("/page/blog/b").await;
    let purge = |prefix: &str| {
        harness.0.admin(
            "POST",
            "/admin/cache/purge",
            Some(json!({ "prefix": prefix })),
        )
    };
    let purged = purge("/page/shop/").await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.json()["purged"], 1);
    assert_eq!(harness.get("/page/shop/a").await.1, "MISS");
    assert_eq!(harness.get("/page/blog/b").await.1, "HIT");
    assert_eq!(purge("shop").await.status, StatusCode::BAD_REQUEST);
}
