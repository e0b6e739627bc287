//! A test origin: the shop's own site as the front door sees it, with knobs for latency,
//! failures, capacity and caching, and a count of every request it served.
//!
//! - `GET /page/...` — a small HTML page; `?cc=<Cache-Control>` sets that header,
//!   `?delay_ms=N` delays the answer, `?status=N` answers with that status.
//! - `GET /headers` — the request's headers as JSON.
//! - `GET /bytes/N` — N bytes, streamed in 64 KiB chunks.
//! - `POST /upload` — reads the body as it streams and answers `{"bytes": N}`.
//!
//! With a capacity, at most that many requests are served at once and each takes the configured
//! service time: the shape of an origin that saturates.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Size of each streamed chunk.
const CHUNK: usize = 64 * 1024;

/// How the origin behaves.
#[derive(Debug, Clone, Default)]
pub struct OriginConfig {
    /// Requests served at once at most (`None`: no limit); the rest wait their turn.
    pub capacity: Option<usize>,
    /// Time each request takes to serve.
    pub service_time: Duration,
}

/// What the origin has served.
#[derive(Debug, Default)]
struct Counts {
    by_path: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
    connections: AtomicU64,
}

/// A running test origin; stops when dropped.
pub struct TestOrigin {
    address: SocketAddr,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl TestOrigin {
    /// Serves on a fresh loopback port.
    pub async fn start(config: OriginConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let capacity = config
            .capacity
            .map(|permits| Arc::new(Semaphore::new(permits)));
        let served = Arc::clone(&counts);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                served.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let (counts, capacity) = (Arc::clone(&served), capacity.clone());
                let service_time = config.service_time;
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        serve(request, Arc::clone(&counts), capacity.clone(), service_time)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            address,
            counts,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Requests served for `path`.
    pub fn hits(&self, path: &str) -> u64 {
        self.counts
            .by_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Connections accepted in all.
    pub fn connections(&self) -> u64 {
        self.counts.connections.load(Ordering::Relaxed)
    }

    /// Requests served in all.
    pub fn total_hits(&self) -> u64 {
        self.counts.total.load(Ordering::Relaxed)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

async fn serve(
    request: Request<Incoming>,
    counts: Arc<Counts>,
    capacity: Option<Arc<Semaphore>>,
    service_time: Duration,
) -> Result<Answer, Infallible> {
    let _slot = match &capacity {
        Some(slots) => Some(Arc::clone(slots).acquire_owned().await),
        None => None,
    };
    let path = request.uri().path().to_owned();
    *counts
        .by_path
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(path.clone())
        .or_default() += 1;
    counts.total.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(service_time).await;
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.replace("%20", " ")))
        .collect();
    if let Some(delay) = query.get("delay_ms").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if path == "/headers" {
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    json!(value.to_str().unwrap_or("")),
                )
            })
            .collect();
        return Ok(full(
            StatusCode::OK,
            "application/json",
            json!(headers).to_string(),
        ));
    }
    if path == "/upload" {
        let mut bytes = 0u64;
        let mut body = request.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => bytes += frame.data_ref().map_or(0, |data| data.len() as u64),
                Err(_) => break,
            }
        }
        return Ok(full(
            StatusCode::OK,
            "application/json",
            json!({ "bytes": bytes }).to_string(),
        ));
    }
    if let Some(size) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut response = Response::new(BodyExt::boxed(Chunks { remaining: size }));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(response);
    }
    let status = query
        .get("status")
        .and_then(|status| status.parse().ok())
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::OK);
    let served = counts.total.load(Ordering::Relaxed);
    // As many shops' frameworks do, the id a proxy put on the request comes back on the answer.
    let request_id = request.headers().get("x-request-id").cloned();
    let mut response = full(
        status,
        "text/html; charset=utf-8",
        format!("<!doctype html><p>{path} (response {served})</p>"),
    );
    if let Some(cache_control) = query.get("cc")
        && let Ok(value) = cache_control.parse()
    {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    if let Some(id) = request_id {
        response.headers_mut().insert("x-request-id", id);
    }
    Ok(response)
}

fn full(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// `remaining` bytes of `x`, produced a chunk at a time as the connection takes them.
struct Chunks {
    remaining: usize,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let length = CHUNK.min(self.remaining);
        self.remaining -= length;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; length])))))
    }
}
