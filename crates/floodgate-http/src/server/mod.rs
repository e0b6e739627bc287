//! Serving a listener: HTTP/1.1 with keep-alive, every limit a client meets
//! ([`ConnectionLimits`]), and a graceful shutdown that lets admitted requests finish.
//! Connections are accepted here and served on the [`ConnectionLoops`], each by `connection`.
//!
//! floodgate speaks HTTP/1.1 to its clients itself, as it does to upstreams: hyper's server
//! side (its dispatcher, the body channel of every request, its header map writer) was a third
//! of a proxied request's instructions, more than nginx spends on the whole request.

mod connection;
mod date;
mod request_head;
mod request_target;
mod seats;
mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum_core::body::Body;
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::tls::ServerTls;
use crate::{ClientAddr, ConnectionLoops, ProtocolError};
use connection::Connection;
use seats::Seats;

pub use request_head::{MAX_HEAD_BYTES, RequestHead, parse_request_head};
pub use seats::{ConnectionFigures, ConnectionStats, TimedOut};

/// How a listener treats its connections: every limit a client meets before its request is
/// answered, each bounding what one hostile client can hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must arrive whole within this time of its first byte (for a connection's
    /// first request, of the connection's start): a slowloris head holds a connection no longer.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed: idle connections are
    /// descriptors and memory the next shopper may need.
    pub idle_timeout: Duration,
    /// A request body must arrive at this many bytes a second at least, counted over the time
    /// spent waiting for the client once `body_grace` is spent: a trickled body cannot hold a
    /// handler, nor the origin slot it may have taken.
    pub body_min_rate_bytes_per_s: u64,
    /// The time a body may take before its rate is held to the minimum.
    pub body_grace: Duration,
    /// A write of an answer that makes no progress for this long closes the connection (as
    /// nginx's `send_timeout`): a client that stops reading holds its answer no longer.
    pub send_timeout: Duration,
    /// Requests one connection may carry before it is closed after an answer (nginx's
    /// `keepalive_requests`): a connection's memory is given back now and then.
    pub max_requests_per_connection: u64,
    /// Connections open at once on the listener; beyond, a new connection is only answered
    /// for a health check, then closed: the descriptors are bounded below the process's limit.
    pub max_connections: usize,
    /// Connections open at once from one client address, with the same treatment beyond: one
    /// client cannot take every connection (a shop behind a NAT may need it high).
    pub max_connections_per_ip: usize,
    /// How long shutdown waits for admitted requests before closing their connections.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    /// What a listener on the public internet needs, as the config's defaults say (see
    /// `docs/limits.md` for why each is what it is).
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_min_rate_bytes_per_s: 240,
            body_grace: Duration::from_secs(5),
            send_timeout: Duration::from_secs(10),
            max_requests_per_connection: 1_000,
            max_connections: 10_000,
            max_connections_per_ip: 1_024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The wall clock answers are dated by, in Unix milliseconds: the application's own, so a test
/// on a manual clock sees its own time in `Date`.
pub type WallClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What answers the requests of one connection, one at a time.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `request`.
    fn handle(&self, request: Request<Body>) -> impl Future<Output = Response<Body>> + Send;

    /// The answer to a request the protocol refused (with [`ProtocolError::status`], in the
    /// application's own form); the connection closes after it.
    fn refusal(&self, error: ProtocolError) -> Response<Body>;

    /// Whether `request` is answered on a connection beyond the listener's caps (a health
    /// check, which must be answered whatever else holds the listener); others are refused
    /// with [`ProtocolError::BeyondCaps`].
    fn serves_beyond_caps(&self, _request: &Request<()>) -> bool {
        false
    }
}

/// Where a server accepts connections, and whether it speaks TLS on them.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<ServerTls>>,
}

impl Listener {
    /// Plain HTTP on `tcp`.
    pub fn plain(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }

    /// TLS on `tcp`, as `tls` says when each connection arrives.
    pub fn tls(tcp: TcpListener, tls: Arc<ServerTls>) -> Self {
        Self {
            tcp,
            tls: Some(tls),
        }
    }
}

/// Serves each accepted connection on `loops` with the handler `serve_client` makes for its
/// client (answers dated by `clock`, figures kept in `stats`), until `shutdown` turns true;
/// then stops accepting, closes idle connections, and waits (at most the grace period) for
/// every in-flight request to be answered.
pub async fn serve<H: Handler>(
    listener: Listener,
    serve_client: impl Fn(ClientAddr) -> H,
    limits: ConnectionLimits,
    loops: Arc<ConnectionLoops>,
    mut shutdown: watch::Receiver<bool>,
    clock: WallClock,
    stats: Arc<ConnectionStats>,
) {
    // Every connection holds a sender; once all are dropped, every connection has ended.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let seats = Seats::new(
        limits.max_connections,
        limits.max_connections_per_ip,
        Arc::clone(&stats),
    );
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
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
        let Some(seat) = seats.take(peer.ip()) else {
            // Beyond the caps and the overflow seats: closed unread.
            continue;
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
        let handler = serve_client(ClientAddr::new(peer.ip()).with_tls(listener.tls.is_some()));
        let (open, shutdown, clock, stats, tls) = (
            open.clone(),
            shutdown.clone(),
            clock.clone(),
            Arc::clone(&stats),
            listener
                .tls
                .as_ref()
                .map(|tls| TlsAcceptor::from(tls.current())),
        );
        loops.spawn(async move {
            // Registered from the loop's own task, so with the loop's reactor.
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot register a connection");
                    return;
                }
            };
            match tls {
                None => {
                    Connection::new(stream, limits, seat.beyond, shutdown, clock, stats)
                        .serve(handler)
                        .await;
                }
                // Boxed: a TLS session's state is large, and must not size the futures of
                // plain connections. The handshake is part of the first head: a client that
                // never finishes it is a slow client, with the same deadline.
                Some(tls) => {
                    Box::pin(async move {
                        match timeout(limits.header_read_timeout, tls.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                Connection::new(
                                    stream,
                                    limits,
                                    seat.beyond,
                                    shutdown,
                                    clock,
                                    stats,
                                )
                                .serve(handler)
                                .await;
                            }
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => stats.timed_out(TimedOut::Head),
                        }
                    })
                    .await;
                }
            }
            drop((seat, open));
        });
    }
    drop(listener);
    drop(open);
    if timeout(limits.shutdown_grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the grace period");
    }
}

/// Completes once shutdown is requested (or whoever could request it is gone).
pub async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests;
