//! Keep-alive HTTP/1.1 connections to one upstream, spoken by the task that serves the request.
//!
//! The request's own task writes the request and reads the answer head, and the answer's body
//! reads the rest as it streams, so a proxied request stays on one thread as it does in nginx. A
//! connection goes back to the idle list when its answer has been read to the end; one whose
//! answer is abandoned is closed. Each upstream of each pool keeps its own idle lists (as an
//! nginx `upstream` block does), so taking a connection looks nothing up.
//!
//! The protocol is [`wire`]'s, not hyper's client: the head is written as the proxy holds it
//! and the answer parsed in place, with no dispatcher, request channel or answer callback in
//! between. Measured against hyper's client driven the same way: a proxied request 43.5 k ->
//! 34.9 k instructions (callgrind), and 8-30 % less CPU (`bench/proxy.sh`, six paired runs).
//!
//! One idle list per connection loop, as each nginx worker keeps its own: a socket wakes the
//! loop whose reactor it was opened on, so a connection opened on one loop and taken by a
//! request on another would cost a cross-thread wake-up (a system call) per answer (measured:
//! 0.95 eventfd writes per proxied request with one shared list, 0 with these). So the
//! pre-warm opens its connections on each loop; those opened on any other thread (a pre-warm
//! page fetch, a test) wait in a list of their own.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{Method, Response};
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use floodgate_http::current_loop;
use floodgate_http::wire::{self, BodyDecoder, Decoded, RequestFraming, WireError};

use crate::proxy::X_REQUEST_ID as REQUEST_ID;

/// Idle connections kept per upstream and loop.
const IDLE_PER_UPSTREAM: usize = 1_024;
/// Idle lists per upstream for the loops; more loops than this share lists, which is correct
/// but costs them the cross-thread wake-ups the lists avoid.
const LOOP_LISTS: usize = 64;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct Link {
    socket: Socket,
    /// When the exchange under way must have its answer head. One timer for the connection's
    /// life, moved later for each request: that only updates its deadline, where a timer made
    /// per request was put into the runtime's timer wheel and taken out again, 0.9 k of a
    /// proxied request's 21.8 k instructions. Left armed while the link is idle, it may wake
    /// its last request's task once, for nothing.
    deadline: Pin<Box<Sleep>>,
    idle_since: Instant,
    /// The idle list of the thread it was opened on, where it goes back.
    home: IdleLinks,
}

/// A link's connection and what has been read from it.
struct Socket {
    stream: TcpStream,
    /// Read and not yet taken: the rest of the current answer. A link that holds bytes after its
    /// answer has ended is closed, not reused.
    read: BytesMut,
}

/// Boxed: a link moves through each request's futures and answer body.
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
    Connect(io::Error),
    /// No answer head came before the deadline.
    #[error("no answer in time")]
    TimedOut,
    /// The exchange failed.
    #[error("connection failed: {0}")]
    Exchange(ExchangeError),
}

/// What broke an exchange on a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The upstream's answer head is not HTTP/1.1 as floodgate reads it.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The upstream closed the connection before a whole answer head.
    #[error("closed before answering")]
    Closed,
    /// The request's own body failed while it was being sent.
    #[error("request body: {0}")]
    RequestBody(axum::Error),
    /// No answer head came before the deadline.
    #[error("no answer in time")]
    TimedOut,
    /// The deadline passed while the client's body was awaited: the client's delay.
    #[error("the request body was not sent in time")]
    RequestBodyLate,
}

impl From<ExchangeError> for SendError {
    fn from(error: ExchangeError) -> Self {
        match error {
            ExchangeError::TimedOut => Self::TimedOut,
            error => Self::Exchange(error),
        }
    }
}

impl Link {
    fn new(stream: TcpStream, home: IdleLinks) -> Self {
        let now = Instant::now();
        Self {
            socket: Socket {
                stream,
                read: BytesMut::new(),
            },
            deadline: Box::pin(tokio::time::sleep_until(now)),
            idle_since: now,
            home,
        }
    }

    /// Whether an idle link can carry another request: not too old, and nothing (no stray
    /// byte, no close) has arrived on it since its last answer.
    fn usable(&self, now: Instant) -> bool {
        let mut probe = [0; 1];
        now.duration_since(self.idle_since) < IDLE_TIMEOUT
            && matches!(self.socket.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// Forgets that the socket was readable once an answer is read to its end, so the next
    /// answer is awaited on the poller's event, and [`Self::usable`] needs no system call. A
    /// later byte or close is a new event, so none is missed.
    fn expect_silence(&self) {
        let _ = self.socket.stream.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }
}

impl Socket {
    /// Reads what has arrived into the read buffer; `Ok(0)` once the upstream has closed.
    fn poll_fill(&mut self, context: &mut Context<'_>) -> Poll<io::Result<usize>> {
        wire::make_read_room(&mut self.read);
        loop {
            ready!(self.stream.poll_read_ready(context))?;
            match self.stream.try_read_buf(&mut self.read) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                read => return Poll::Ready(read),
            }
        }
    }

    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(bytes) {
                // As `std`'s `write_all` does: a socket that takes nothing will never take it.
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => bytes = &bytes[written..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Sends a request: its head, then its body by `framing`. The whole body goes out before
    /// the answer is read, as nginx sends it; an upstream that answers early without reading it
    /// has the rest of the route's timeout to close the connection.
    ///
    /// `awaiting_client` is set while the next piece of the body is awaited from the client, so
    /// a deadline that passes then is told apart from one the upstream let pass.
    async fn send_request(
        &self,
        head: &[u8],
        mut body: Body,
        framing: RequestFraming,
        awaiting_client: &AtomicBool,
    ) -> Result<(), ExchangeError> {
        self.write_all(head).await?;
        if framing == RequestFraming::Empty {
            return Ok(());
        }
        let mut chunk = Vec::new();
        loop {
            awaiting_client.store(true, Ordering::Relaxed);
            let frame = body.frame().await;
            awaiting_client.store(false, Ordering::Relaxed);
            let Some(frame) = frame else { break };
            let frame = frame.map_err(ExchangeError::RequestBody)?;
            // Trailers are not forwarded (see `wire`).
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if framing == RequestFraming::Chunked {
                chunk.clear();
                wire::encode_chunk_start(data.len(), &mut chunk);
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                self.write_all(&chunk).await?;
            } else {
                self.write_all(&data).await?;
            }
        }
        if framing == RequestFraming::Chunked {
            self.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Reads the answer head to a request with `method`.
    async fn read_head(&mut self, method: &Method) -> Result<wire::ResponseHead, ExchangeError> {
        std::future::poll_fn(|context| {
            loop {
                if let Some(head) = wire::parse_response_head(&mut self.read, method, &REQUEST_ID)?
                {
                    return Poll::Ready(Ok(head));
                }
                if ready!(self.poll_fill(context))? == 0 {
                    return Poll::Ready(Err(ExchangeError::Closed));
                }
            }
        })
        .await
    }
}

/// How a request's body goes to the upstream: by its length when known (a client's
/// `Content-Length`), else in chunks. A request without a body says so with a length of 0 when
/// its method usually has one, as some servers refuse those without it (`411`).
pub(crate) fn request_framing(method: &Method, body: &Body) -> RequestFraming {
    match http_body::Body::size_hint(body).exact() {
        Some(0) if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
            RequestFraming::Empty
        }
        Some(length) => RequestFraming::Length(length),
        None => RequestFraming::Chunked,
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

    /// A usable idle link of the current thread's, `now`.
    fn checkout(&self, now: Instant) -> Option<Box<Link>> {
        let mut links = self.home().lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(link) = links.pop() {
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
        Ok(Box::new(Link::new(stream, Arc::clone(self.home()))))
    }

    /// A new link, connected by `deadline`.
    async fn connect_by(&self, deadline: Instant) -> Result<Box<Link>, SendError> {
        tokio::time::timeout_at(deadline, self.connect())
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }

    /// Opens connections until `count` are idle in the current thread's list (bounded by its
    /// size), for a surge that is about to come; how many it opened.
    pub(crate) async fn open(&self, count: usize) -> usize {
        let now = Instant::now();
        let home = self.home();
        let missing = {
            let mut links = home.lock().unwrap_or_else(PoisonError::into_inner);
            links.retain(|link| link.usable(now));
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

    /// Sends a request on an idle connection or a new one: its `head` (encoded with [`wire`],
    /// `framing` said in it), then `body`; and reads the answer head, all within `timeout`. A
    /// `GET` or `HEAD` without a body that fails on an idle connection (the upstream may have
    /// closed it meanwhile) is sent once more on a new one: its head is all there is to send
    /// again.
    pub(crate) async fn send(
        &self,
        method: &Method,
        head: &[u8],
        framing: RequestFraming,
        body: Body,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let now = Instant::now();
        let deadline = now + timeout;
        let replayable =
            framing == RequestFraming::Empty && matches!(*method, Method::GET | Method::HEAD);
        let exchanged = match self.checkout(now) {
            Some(link) => match exchange(link, head, body, framing, method, deadline).await {
                // Not when out of time: the deadline is the whole request's.
                Err(error) if replayable && !matches!(error, ExchangeError::TimedOut) => {
                    let link = self.connect_by(deadline).await?;
                    exchange(link, head, Body::empty(), framing, method, deadline).await
                }
                exchanged => exchanged,
            },
            None => {
                let link = self.connect_by(deadline).await?;
                exchange(link, head, body, framing, method, deadline).await
            }
        };
        let (link, answer) = exchanged?;
        let mut body = UpstreamBody {
            link: Some(link),
            keep_alive: answer.keep_alive,
            decoder: BodyDecoder::new(answer.framing),
        };
        // An answer without a body (HEAD, 204, 304) may never be polled: free the link now.
        if body.decoder.is_done() {
            body.release();
        }
        let mut response = Response::new(body);
        *response.status_mut() = answer.status;
        // Passed on as they came (see `wire::HeaderLines`).
        response.extensions_mut().insert(answer.lines);
        Ok(response)
    }
}

/// Sends a request (its encoded `head`, then `body` by `framing`) on `link`, and reads the
/// answer head to it, by `deadline`.
async fn exchange(
    mut link: Box<Link>,
    head: &[u8],
    body: Body,
    framing: RequestFraming,
    method: &Method,
    deadline: Instant,
) -> Result<(Box<Link>, wire::ResponseHead), ExchangeError> {
    let answer = {
        let Link {
            socket,
            deadline: timer,
            ..
        } = &mut *link;
        timer.as_mut().reset(deadline);
        let awaiting_client = AtomicBool::new(false);
        let mut answered = pin!(async {
            socket
                .send_request(head, body, framing, &awaiting_client)
                .await?;
            socket.read_head(method).await
        });
        std::future::poll_fn(|context| {
            if let Poll::Ready(answer) = answered.as_mut().poll(context) {
                return Poll::Ready(answer);
            }
            ready!(timer.as_mut().poll(context));
            Poll::Ready(Err(if awaiting_client.load(Ordering::Relaxed) {
                ExchangeError::RequestBodyLate
            } else {
                ExchangeError::TimedOut
            }))
        })
        .await?
    };
    Ok((link, answer))
}

/// An answer body that reads its connection and hands it back to its idle list at its end.
pub(crate) struct UpstreamBody {
    /// `None` once the body has ended or broken.
    link: Option<Box<Link>>,
    decoder: BodyDecoder,
    /// Whether the connection may carry another request after this answer.
    keep_alive: bool,
}

impl UpstreamBody {
    /// The body has ended: its link goes back to the idle list, if it can carry another request.
    fn release(&mut self) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        if !self.keep_alive || !link.socket.read.is_empty() {
            return;
        }
        link.expect_silence();
        link.idle_since = Instant::now();
        let home = Arc::clone(&link.home);
        let mut links = home.lock().unwrap_or_else(PoisonError::into_inner);
        if links.len() < IDLE_PER_UPSTREAM {
            links.push(link);
        }
    }

    /// The body broke: its connection is in an unknown state, so it is closed.
    fn broken(
        &mut self,
        kind: io::ErrorKind,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.link = None;
        Poll::Ready(Some(Err(io::Error::new(kind, error))))
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            let Some(link) = this.link.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut link.socket.read) {
                Ok(Decoded::Data(data)) => {
                    // The server stops polling once a body says it has ended, so the last
                    // piece is the moment to give the connection back.
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => match ready!(link.socket.poll_fill(context)) {
                    Ok(0) => {
                        this.link = None;
                        if let Err(error) = this.decoder.finish_at_close() {
                            return this.broken(io::ErrorKind::UnexpectedEof, error);
                        }
                        return Poll::Ready(None);
                    }
                    Ok(_) => {}
                    Err(error) => return this.broken(error.kind(), error),
                },
                Err(error) => return this.broken(io::ErrorKind::InvalidData, error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder
            .remaining()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What an origin does with the second request on a connection.
    #[derive(Clone, Copy)]
    enum Second {
        /// Closes the connection, as one whose keep-alive timeout struck just as the request
        /// went out.
        Closes,
        /// Never answers, holding the connection open.
        Hangs,
    }

    /// An origin that answers the first request on each connection and treats the second as
    /// `second` says; the requests it has seen, counted.
    async fn origin(second: Second) -> (Connections, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buffer = [0; 4096];
                    for answered in [true, false] {
                        if stream.read(&mut buffer).await.unwrap_or(0) == 0 {
                            return;
                        }
                        seen.fetch_add(1, Ordering::SeqCst);
                        if answered {
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            stream.write_all(answer).await.unwrap();
                        }
                    }
                    if let Second::Hangs = second {
                        // Until the client gives up and closes.
                        while stream.read(&mut buffer).await.unwrap_or(0) > 0 {}
                    }
                });
            }
        });
        (Connections::to(authority), requests)
    }

    /// Sends `method /page` with `body`, to be answered within `timeout`.
    async fn send(
        connections: &Connections,
        method: Method,
        body: &'static str,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let body = Body::from(body);
        let framing = request_framing(&method, &body);
        let mut head = Vec::new();
        wire::encode_request_line(&method, "/page", &mut head);
        wire::encode_head_end(framing, &mut head);
        connections
            .send(&method, &head, framing, body, timeout)
            .await
    }

    /// Sends a request and reads its answer to the end, so its connection goes back idle.
    async fn exchange_whole(connections: &Connections, method: Method) -> Option<StatusCode> {
        let body = if method == Method::POST { "{}" } else { "" };
        let answer = send(connections, method, body, Duration::from_secs(60))
            .await
            .ok()?;
        let status = answer.status();
        answer.into_body().collect().await.ok()?;
        Some(status)
    }

    #[tokio::test]
    async fn a_kept_connection_holds_each_request_to_its_own_deadline() {
        let (connections, requests) = origin(Second::Hangs).await;
        // A minute for the first request, then 50 ms on the same connection: its timer is
        // moved earlier, not only later.
        let first = exchange_whole(&connections, Method::GET).await;
        assert_eq!(first, Some(StatusCode::OK));
        let started = Instant::now();
        let second = send(&connections, Method::GET, "", Duration::from_millis(50)).await;
        assert!(matches!(second, Err(SendError::TimedOut)));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            requests.load(Ordering::SeqCst) <= 2,
            "a request that timed out is not sent again"
        );
    }

    #[tokio::test]
    async fn a_get_that_finds_its_idle_connection_closed_goes_again_on_a_new_one() {
        let (connections, requests) = origin(Second::Closes).await;
        let first = exchange_whole(&connections, Method::GET).await;
        assert_eq!(first, Some(StatusCode::OK));
        let second = exchange_whole(&connections, Method::GET).await;
        assert_eq!(
            second,
            Some(StatusCode::OK),
            "sent again on a new connection"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_post_is_never_sent_twice() {
        let (connections, requests) = origin(Second::Closes).await;
        let first = exchange_whole(&connections, Method::POST).await;
        assert_eq!(first, Some(StatusCode::OK));
        let second = send(&connections, Method::POST, "{}", Duration::from_secs(60)).await;
        assert!(matches!(second, Err(SendError::Exchange(_))));
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }
}
