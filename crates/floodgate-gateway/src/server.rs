//! Serving a listener: HTTP/1.1 with keep-alive, a header read timeout against slow clients, and
//! a graceful shutdown that lets admitted requests finish. Connections are accepted here and
//! served on the [`ConnectionLoops`].

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connection_loops::ConnectionLoops;
use crate::front_door::ClientAddr;

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send its request head within this time, or the connection is closed.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for admitted requests before closing their connections.
    pub shutdown_grace: Duration,
}

/// Serves each accepted connection on `loops` with the service `serve_client` makes for its
/// client, until `shutdown` turns true; then stops accepting and waits (at most the grace
/// period) for every open connection's in-flight request to finish.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    serve_client: impl Fn(ClientAddr) -> S,
    limits: ConnectionLimits,
    loops: Arc<ConnectionLoops>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // An answer's head and body in one buffer and one `write`: for the small answers of a
        // surge, copying the body costs less than queueing it for `writev` (`/healthz` 18.9 k ->
        // 18.3 k instructions, a proxied page 28.5 k -> 27.8 k).
        .writev(false);
    let http = Arc::new(http);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    // Typically EMFILE under a connection storm: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop_requested(&mut shutdown) => break,
        };
        // Small JSON answers must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        // Leaves this runtime's reactor, to join the loop's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "cannot hand a connection to a loop");
                continue;
            }
        };
        let service = serve_client(ClientAddr::new(peer.ip()));
        let (http, watcher) = (Arc::clone(&http), graceful.watcher());
        loops.spawn(async move {
            // Registered from the loop's own task, so with the loop's reactor.
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot register a connection");
                    return;
                }
            };
            let connection = http.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the grace period");
    }
}

/// Completes once shutdown is requested (or whoever could request it is gone).
pub(crate) async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
