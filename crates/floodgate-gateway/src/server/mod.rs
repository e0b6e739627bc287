//! Serving a listener: HTTP/1.1 with keep-alive, a header read timeout against slow clients, and
//! a graceful shutdown that lets admitted requests finish. Connections are accepted here and
//! served on the [`ConnectionLoops`], each by [`connection`].
//!
//! floodgate speaks HTTP/1.1 to its clients itself, as it does to upstreams: hyper's server
//! side (its dispatcher, the body channel of every request, its header map writer) was a third
//! of a proxied request's instructions, more than nginx spends on the whole request.

mod connection;
mod date;
mod request_head;
mod request_target;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use floodgate_core::Clock;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::connection_loops::ConnectionLoops;
use crate::front_door::ClientAddr;
use connection::Connection;

pub use request_head::{MAX_HEAD_BYTES, RequestHead, parse_request_head};

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send each request head within this time (counted from the end of the
    /// previous answer, so an idle kept-alive connection closes after it too), and each piece
    /// of a body within this time of the last; or the connection is closed.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for admitted requests before closing their connections.
    pub shutdown_grace: Duration,
}

/// What answers the requests of one connection, one at a time.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The answer to `request`.
    fn handle(&self, request: Request<Body>) -> impl Future<Output = Response<Body>> + Send;
}

/// A router answers each request with a clone of itself, as axum serves one.
impl Handler for axum::Router {
    fn handle(&self, request: Request<Body>) -> impl Future<Output = Response<Body>> + Send {
        let router = self.clone();
        async move {
            let Ok(response) = router.oneshot(request).await;
            response
        }
    }
}

/// Serves each accepted connection on `loops` with the handler `serve_client` makes for its
/// client (answers dated by `clock`), until `shutdown` turns true; then stops accepting, closes idle connections, and
/// waits (at most the grace period) for every in-flight request to be answered.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    serve_client: impl Fn(ClientAddr) -> H,
    limits: ConnectionLimits,
    loops: Arc<ConnectionLoops>,
    mut shutdown: watch::Receiver<bool>,
    clock: Clock,
) {
    // Every connection holds a sender; once all are dropped, every connection has ended.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
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
        let handler = serve_client(ClientAddr::new(peer.ip()));
        let (open, shutdown, clock) = (open.clone(), shutdown.clone(), clock.clone());
        loops.spawn(async move {
            // Registered from the loop's own task, so with the loop's reactor.
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot register a connection");
                    return;
                }
            };
            Connection::new(stream, limits.header_read_timeout, shutdown, clock)
                .serve(handler)
                .await;
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    if tokio::time::timeout(limits.shutdown_grace, all_closed.recv())
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

#[cfg(test)]
mod tests;
