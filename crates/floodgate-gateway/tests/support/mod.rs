//! A gateway in process on a throwaway SQLite store and a clock the test moves, and the calls
//! tests make of its two routers.
#![allow(dead_code)] // each test binary uses its own part of the support module

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use floodgate_config::Config;
use floodgate_core::{Clock, Timestamp};
use floodgate_gateway::{Gateway, admin_router, public_router};
use floodgate_store::{SqliteOptions, SqliteStore, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The admin token of every test gateway.
pub(crate) const TOKEN: &str = "test-admin";

/// A gateway and what it stands on.
pub(crate) struct InProcess {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) store: Arc<dyn Store>,
    /// The gateway's clock, in unix milliseconds.
    clock: Arc<AtomicI64>,
    _data: tempfile::TempDir,
}

/// One answer of a router.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl InProcess {
    /// A gateway configured by `config` (TOML), its clock stopped at `now`.
    pub(crate) async fn start(config: &str, now: Timestamp) -> Self {
        let config = Config::from_toml(config).unwrap();
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(data.path(), SqliteOptions::default()).unwrap());
        let (clock, millis) = Clock::manual(now);
        let gateway = Gateway::start(
            Arc::clone(&store),
            config.gateway_settings(TOKEN.into(), "test secret".into()),
            clock,
        )
        .await
        .unwrap();
        Self {
            gateway,
            store,
            clock: millis,
            _data: data,
        }
    }

    /// Moves the clock on by `seconds`.
    pub(crate) fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds * 1_000, Ordering::SeqCst);
    }

    /// The gateway's time.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.clock.load(Ordering::SeqCst))
    }

    /// Sets the clock to `at`.
    pub(crate) fn set_clock(&self, at: Timestamp) {
        self.clock.store(at.unix_millis(), Ordering::SeqCst);
    }

    /// `request` through the public router.
    pub(crate) async fn public(&self, request: Request<Body>) -> Answer {
        answer(public_router(Arc::clone(&self.gateway)), request).await
    }

    /// `method path` through the admin router with the admin token, `body` as JSON.
    pub(crate) async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .unwrap();
        answer(admin_router(Arc::clone(&self.gateway)), request).await
    }
}

impl InProcess {
    /// Puts drop `spring` as `spec`, asserting it is taken.
    pub(crate) async fn put_spring_drop(&self, spec: Value) {
        let put = self.admin("PUT", "/admin/drops/spring", Some(spec)).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    }
}

async fn answer(router: axum::Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.unwrap();
    let (head, body) = response.into_parts();
    Answer {
        status: head.status,
        headers: head.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}
