//! Keep-alive HTTP/1.1 connections to one upstream, driven by the task that serves the request.
//!
//! A pooled client that runs each connection in its own task (hyper-util's) costs two
//! cross-thread wake-ups per request: the request goes to the connection's task and the answer
//! comes back. Here the request's own task polls the connection while it waits for the answer
//! head, and the answer's body polls it while it streams, so a proxied request stays on one
//! thread as it does in nginx. A connection goes back to the idle list when its answer has been
//! read to the end; one whose answer is abandoned is closed. Each upstream of each pool keeps its
//! own idle lists (as an nginx `upstream` block does), so taking a connection looks nothing up.
//!
//! One idle list per connection loop, as each nginx worker keeps its own: a socket wakes the
//! loop whose reactor it was opened on, so a connection opened on one loop and taken by a
//! request on another would cost a cross-thread wake-up (a system call) per answer (measured:
//! 0.95 eventfd writes per proxied request with one shared list, 0 with these). So the
//! pre-warm opens its connections on each loop; those opened on any other thread (a pre-warm
//! page fetch, a test) wait in a list of their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{Request, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connection_loops::current_loop;

/// Idle connections kept per upstream and loop.
const IDLE_PER_UPSTREAM: usize = 1_024;
/// Idle lists per upstream for the loops; more loops than this share lists, which is correct
/// but costs them the cross-thread wake-ups the lists avoid.
const LOOP_LISTS: usize = 64;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct Link {
    sender: SendRequest<Body>,
    connection: Connection<TokioIo<TcpStream>, Body>,
    /// The connection future finished: the link is dead.
    closed: bool,
    idle_since: Instant,
    /// The idle list of the thread it was opened on, where it goes back.
    home: IdleLinks,
}

/// Boxed: a link is 720 bytes, and it moves through each request's futures and answer body.
type IdleLinks = Arc<Mutex<Vec<Box<Link>>>>;

/// The connections to one upstream.
pub(crate) struct Connections {
    authority: Authority,
    /// The first for threads that are not loops, then one per loop.
    idle: Box<[IdleLinks]>,
}

/// How a request failed before its answer head arrived.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed; `reused` says whether it came from the idle list (where the
    /// upstream may have closed it meanwhile).
    #[error("connection failed: {error}")]
    Exchange { error: hyper::Error, reused: bool },
}

impl Link {
    /// Polls the connection so its I/O progresses; notes when it has ended.
    fn drive(&mut self, context: &mut Context<'_>) {
        if !self.closed && Pin::new(&mut self.connection).poll(context).is_ready() {
            self.closed = true;
        }
    }

    /// Whether an idle link can carry another request; polls it once without waiting, which
    /// reads the upstream's close if it closed while idle.
    fn usable(&mut self, now: Instant) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()));
        !self.closed && self.sender.is_ready() && now.duration_since(self.idle_since) < IDLE_TIMEOUT
    }
}

impl Connections {
    /// No connections yet to the upstream at `authority`.
    pub(crate) fn to(authority: Authority) -> Self {
        Self {
            authority,
            idle: (0..=LOOP_LISTS).map(|_| IdleLinks::default()).collect(),
        }
    }

    /// The idle list of the current thread.
    fn home(&self) -> &IdleLinks {
        &self.idle[current_loop().map_or(0, |index| 1 + index % LOOP_LISTS)]
    }

    /// A usable idle link of the current thread's.
    fn checkout(&self) -> Option<Box<Link>> {
        let now = Instant::now();
        let mut links = self.home().lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut link) = links.pop() {
            if link.usable(now) {
                return Some(link);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Box<Link>, SendError> {
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = TcpStream::connect((self.authority.host(), port))
            .await
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|error| SendError::Exchange {
                    error,
                    reused: false,
                })?;
        Ok(Box::new(Link {
            sender,
            connection,
            closed: false,
            idle_since: Instant::now(),
            home: Arc::clone(self.home()),
        }))
    }

    /// Opens connections until `count` are idle in the current thread's list (bounded by its
    /// size), for a surge that is about to come; how many it opened.
    pub(crate) async fn open(&self, count: usize) -> usize {
        let now = Instant::now();
        let home = self.home();
        let missing = {
            let mut links = home.lock().unwrap_or_else(PoisonError::into_inner);
            links.retain_mut(|link| link.usable(now));
            count.min(IDLE_PER_UPSTREAM).saturating_sub(links.len())
        };
        let opened = futures_util::future::join_all((0..missing).map(|_| self.connect()))
            .await
            .into_iter()
            .filter_map(Result::ok);
        let mut links = home.lock().unwrap_or_else(PoisonError::into_inner);
        let before = links.len();
        links.extend(opened);
        links.truncate(IDLE_PER_UPSTREAM);
        links.len().saturating_sub(before)
    }

    /// The upstream's `host:port`, for the `Host` header of a request that has none.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends `request` on an idle connection or a new one, and waits for the answer head while
    /// driving the connection.
    pub(crate) async fn send(
        &self,
        request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (mut link, reused) = match self.checkout() {
            Some(link) => (link, true),
            None => (self.connect().await?, false),
        };
        let mut answer = std::pin::pin!(link.sender.send_request(request));
        let head = std::future::poll_fn(|context| {
            link.drive(context);
            answer.as_mut().poll(context)
        })
        .await;
        match head {
            Ok(response) => Ok(response.map(|incoming| {
                let mut body = UpstreamBody {
                    incoming,
                    link: Some(link),
                };
                // An answer without a body (HEAD, 204, 304) may never be polled: free the link now.
                if hyper::body::Body::is_end_stream(&body.incoming) {
                    body.release();
                }
                body
            })),
            Err(error) => Err(SendError::Exchange { error, reused }),
        }
    }
}

/// An answer body that drives its connection and hands it back to its idle list at its end.
pub(crate) struct UpstreamBody {
    incoming: Incoming,
    link: Option<Box<Link>>,
}

impl UpstreamBody {
    fn release(&mut self) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        if link.closed {
            return;
        }
        link.idle_since = Instant::now();
        let home = Arc::clone(&link.home);
        let mut links = home.lock().unwrap_or_else(PoisonError::into_inner);
        if links.len() < IDLE_PER_UPSTREAM {
            links.push(link);
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(link) = self.link.as_mut() {
            link.drive(context);
        }
        let polled = Pin::new(&mut self.incoming).poll_frame(context);
        match &polled {
            Poll::Ready(None) => self.release(),
            // The server stops polling once a body says it has ended, so the last frame is the
            // moment to give the connection back.
            Poll::Ready(Some(Ok(_))) if hyper::body::Body::is_end_stream(&self.incoming) => {
                self.release()
            }
            // A broken answer leaves the connection in an unknown state: close it.
            Poll::Ready(Some(Err(_))) => self.link = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
