//! One client connection, served as HTTP/1.1 (RFC 9112): request heads read off the socket with
//! a deadline, bodies streamed to the handler as it reads them, answers written with their
//! framing, and the connection kept for the next request when both sides allow it.
//!
//! One request at a time: the next head is read only after the answer to the last is written,
//! so pipelined requests wait in the read buffer in order.
//!
//! Every wait on the client has a limit ([`ConnectionLimits`]): the head's deadline, the idle
//! time between requests, the body's minimum rate (counted only while the client is waited
//! for, not the handler), and the progress of each write. An idle connection holds no buffer:
//! room is made to read only once the socket is readable, and given back once it has waited a
//! moment for its next request.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_core::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, Sleep};

use super::request_head::{MAX_HEAD_BYTES, RequestHead, parse_request_head};
use super::seats::{Beyond, ConnectionStats, TimedOut};
use super::transport::Transport;
use super::{ConnectionLimits, Handler, WallClock, date, stop_requested};
use crate::ProtocolError;
use crate::wire::{self, BodyDecoder, Decoded, HeaderLines, RequestFraming};

/// How long, and for how many bytes, a closing connection drops what still arrives.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// An answer's bytes gathered before they are written, when its body is not all there yet.
const WRITE_BATCH: usize = 64 * 1024;
/// Room made for an answer's head when the connection holds no write buffer (most answers'
/// heads and small bodies fit; a larger answer grows it).
const WRITE_START: usize = 1024;
/// A connection that has waited this long for its next request gives its buffers back: a busy
/// client's next request comes sooner (and keeping them saves it an allocation each), a
/// shopper who polls every few seconds or idles does not. Short, so that a burst of requests
/// followed by quiet leaves little memory held.
const BUFFER_RELEASE: Duration = Duration::from_millis(250);
/// The time a connection beyond the listener's caps has to send its one head: a health
/// check's is sent at once.
const OVERFLOW_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection and what it has read but not yet used.
pub(super) struct Connection<S> {
    stream: S,
    read: BytesMut,
    write: Vec<u8>,
    limits: ConnectionLimits,
    /// The cap this connection is beyond, if it is: it then carries one health check at most.
    beyond: Option<Beyond>,
    /// Requests read so far.
    requests: u64,
    /// Fires no later than the head being read is due (see [`Self::read_head`]).
    deadline: Pin<Box<Sleep>>,
    shutdown: watch::Receiver<bool>,
    /// Completes once shutdown has been asked for: made once, as a wait made afresh for each
    /// head (registering with the channel, then leaving it) cost a request 470 instructions.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// For the answers' `Date`.
    clock: WallClock,
    stats: Arc<ConnectionStats>,
}

impl<S: Transport> Connection<S> {
    pub(super) fn new(
        stream: S,
        mut limits: ConnectionLimits,
        beyond: Option<Beyond>,
        shutdown: watch::Receiver<bool>,
        clock: WallClock,
        stats: Arc<ConnectionStats>,
    ) -> Self {
        if beyond.is_some() {
            limits.header_read_timeout = limits.header_read_timeout.min(OVERFLOW_HEAD_TIMEOUT);
        }
        Self {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            limits,
            beyond,
            requests: 0,
            deadline: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
            stopping: {
                let mut shutdown = shutdown.clone();
                Box::pin(async move { stop_requested(&mut shutdown).await })
            },
            shutdown,
            clock,
            stats,
        }
    }

    /// Answers requests with `handler` until the client or the handler closes the connection,
    /// a head is late or refused, or shutdown has been asked for.
    pub(super) async fn serve(mut self, handler: impl Handler) {
        loop {
            let head = match self.read_head().await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(error) => {
                    self.refuse(error, &handler).await;
                    return self.linger().await;
                }
            };
            let RequestHead {
                request,
                framing,
                keep_alive,
                expects_continue,
            } = head;
            self.requests += 1;
            if self.beyond.is_some() && !handler.serves_beyond_caps(&request) {
                self.refuse(ProtocolError::BeyondCaps, &handler).await;
                return self.linger().await;
            }
            let http_1_0 = request.version() == Version::HTTP_10;
            let head_only = request.method() == Method::HEAD;
            let answered = self
                .answer(request, framing, expects_continue, &handler)
                .await;
            let Some((response, body_read)) = answered else {
                return;
            };
            // A body left unread lies between here and the next head.
            let keep_alive = keep_alive
                && body_read
                && !*self.shutdown.borrow()
                && self.beyond.is_none()
                && self.requests < self.limits.max_requests_per_connection;
            let written = self
                .write_response(response, head_only, http_1_0, keep_alive)
                .await;
            match written {
                Ok(true) => {}
                Ok(false) => return self.linger().await,
                Err(_) => return,
            }
        }
    }

    /// Closes the connection after an answer that the client may still be sending to (a body
    /// left unread, a refused head): the write side first, then what still arrives is read and
    /// dropped for a moment. Closed with bytes unread, the socket would answer them with a
    /// reset, which can destroy the answer before the client has read it (nginx lingers too).
    async fn linger(mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let drained = async {
            let mut dropped = 0;
            while dropped < LINGER_BYTES {
                self.read.clear();
                wire::make_read_room(&mut self.read);
                match self.stream.read_buf(&mut self.read).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => dropped += read,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drained).await;
    }

    /// Reads the next request head; `None` once the client has closed, has sent no request
    /// for the idle timeout or no whole head within the head's, or shutdown finds the
    /// connection between requests.
    ///
    /// The timer is not set again for each head: when it fires, the head is given the rest of
    /// its time then, and it is moved earlier only when the time left is shorter than it says.
    /// Resetting it per request, with the timer wheel's lock, cost a request hundreds of
    /// instructions, where heads nearly always arrive in time.
    async fn read_head(&mut self) -> Result<Option<RequestHead>, ProtocolError> {
        let started = Instant::now();
        // When the head began: at once for a connection's first request (a connection that
        // never speaks is a slow head) and for a pipelined one; else at its first byte.
        let mut head_since = (self.requests == 0 || !self.read.is_empty()).then_some(started);
        let release_at = started + BUFFER_RELEASE;
        let between_requests = self.read.is_empty();
        self.deadline_by(self.wake_at(started, head_since, release_at, between_requests));
        loop {
            if let Some(head) = parse_request_head(&mut self.read)? {
                return Ok(Some(head));
            }
            let between_requests = self.read.is_empty();
            // Checked here, not by polling `stopping` ahead of the read: a read that is ready
            // then returns without polling the other branches (250 instructions a request).
            if between_requests && *self.shutdown.borrow() {
                return Ok(None);
            }
            if head_since.is_none() && !between_requests {
                head_since = Some(Instant::now());
                self.deadline_by(self.due(started, head_since).0);
            }
            tokio::select! {
                // In this order: no draw of which to poll first, per head.
                biased;
                read = self.stream.read_some(&mut self.read) => match read {
                    Ok(0) | Err(_) => return Ok(None),
                    Ok(_) => {}
                },
                () = &mut self.deadline => {
                    let now = Instant::now();
                    let (due, limit) = self.due(started, head_since);
                    if now >= due {
                        self.stats.timed_out(limit);
                        return Ok(None);
                    }
                    if between_requests && now >= release_at {
                        // Made again when a request comes.
                        self.read = BytesMut::new();
                        self.write = Vec::new();
                    }
                    let next = self.wake_at(started, head_since, release_at, between_requests);
                    self.deadline.as_mut().reset(next);
                }
                () = &mut self.stopping, if between_requests => return Ok(None),
            }
        }
    }

    /// When the head being read is due, and the limit that says so: `header_read_timeout` from
    /// `head_since` once it began, else `idle_timeout` from `started`.
    fn due(&self, started: Instant, head_since: Option<Instant>) -> (Instant, TimedOut) {
        match head_since {
            Some(since) => (since + self.limits.header_read_timeout, TimedOut::Head),
            None => (started + self.limits.idle_timeout, TimedOut::Idle),
        }
    }

    /// When the timer must fire next: when the head is due, or before, at `release_at`, if the
    /// connection waits `between_requests` holding buffers to give back.
    fn wake_at(
        &self,
        started: Instant,
        head_since: Option<Instant>,
        release_at: Instant,
        between_requests: bool,
    ) -> Instant {
        let due = self.due(started, head_since).0;
        let holds_buffers = self.read.capacity() > 0 || self.write.capacity() > 0;
        if between_requests && holds_buffers {
            due.min(release_at)
        } else {
            due
        }
    }

    /// Makes the timer fire by `due` at the latest.
    fn deadline_by(&mut self, due: Instant) {
        if self.deadline.deadline() > due {
            self.deadline.as_mut().reset(due);
        }
    }

    /// Answers a refused request as `handler` renders it; the connection then closes.
    async fn refuse(&mut self, error: ProtocolError, handler: &impl Handler) {
        let _ = self
            .write_response(handler.refusal(error), false, false, false)
            .await;
    }

    /// Hands `request` with its body to `handler`, tending the client meanwhile: feeding it the
    /// body as it reads, then watching for a hang-up. The answer, and whether the body was read
    /// to its end; `None` if the client hung up first, whose handler is then dropped (as hyper's
    /// server does): a shopper who gave up holds no slot at the origin.
    async fn answer(
        &mut self,
        request: Request<()>,
        framing: RequestFraming,
        expects_continue: bool,
        handler: &impl Handler,
    ) -> Option<(Response<Body>, bool)> {
        let buffered = match framing {
            RequestFraming::Empty => Some(Body::empty()),
            RequestFraming::Length(length) if length <= self.read.len() as u64 => {
                Some(Body::from(self.read.split_to(length as usize).freeze()))
            }
            _ => None,
        };
        // Shared with the tending future (atomic only to be `Send`: both run on this task).
        let body_read = AtomicBool::new(buffered.is_some());
        let (body, feed) = match buffered {
            Some(body) => (body, None),
            None => {
                // A client that waits for `100 Continue` is sent it once the handler reads the
                // body, not before: one refused without it need not send it at all.
                let wanted = expects_continue.then(|| Arc::new(Notify::new()));
                let (body, feed) = StreamedBody::new(framing, wanted.clone());
                let decoder = BodyDecoder::for_request(framing);
                (Body::new(body), Some((decoder, feed, wanted)))
            }
        };
        // On the heap while it runs: a connection between requests holds none of it (an
        // idle connection's task is then a few hundred bytes, not a request's whole future).
        let mut answer = Box::pin(handler.handle(request.map(|()| body)));
        let mut tending = pin!(self.tend_client(feed, &body_read));
        let response = std::future::poll_fn(|context| {
            if let Poll::Ready(response) = answer.as_mut().poll(context) {
                return Poll::Ready(Some(response));
            }
            tending.as_mut().poll(context).map(|()| None)
        })
        .await?;
        // A handler that read the body to its last byte and answered in the same turn has not
        // let the feed see the body's end yet.
        if !body_read.load(Ordering::Relaxed) {
            let _ = tending.now_or_never();
        }
        Some((response, body_read.load(Ordering::Relaxed)))
    }

    /// Feeds the request's body to the handler, if it is still to be read (noting in
    /// `body_read` when it has been, whole), then watches for the client hanging up; completes
    /// when it has.
    async fn tend_client(&mut self, feed: Option<BodyFeed>, body_read: &AtomicBool) {
        if let Some((decoder, feed, wanted)) = feed {
            let read = self.feed_body(decoder, feed, wanted).await;
            body_read.store(read, Ordering::Relaxed);
        }
        // What arrives meanwhile is the next request (pipelined): kept, up to a head's worth.
        while self.read.len() < MAX_HEAD_BYTES {
            wire::make_read_room(&mut self.read);
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        std::future::pending().await
    }

    /// Reads a request body off the connection as the handler asks for it, one piece at a time
    /// into `feed`; whether it was read to its end.
    ///
    /// The client has `body_grace` and then as long as its bytes so far buy at the minimum
    /// rate, counted only while it is waited for: a handler that reads slowly costs it nothing.
    async fn feed_body(
        &mut self,
        mut decoder: BodyDecoder,
        feed: mpsc::Sender<io::Result<Bytes>>,
        mut continue_when_wanted: Option<Arc<Notify>>,
    ) -> bool {
        let (mut received, mut waited) = (0_u64, Duration::ZERO);
        let rate = self.limits.body_min_rate_bytes_per_s.max(1);
        loop {
            // One piece read ahead of the handler at most: it holds the client back as it reads.
            let Ok(slot) = feed.reserve().await else {
                return false;
            };
            let piece = loop {
                match decoder.decode(&mut self.read) {
                    Ok(Decoded::Data(data)) => break Ok(data),
                    Ok(Decoded::Done) => return true,
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => break Err(io::Error::new(io::ErrorKind::InvalidData, error)),
                }
                if let Some(wanted) = continue_when_wanted.take() {
                    wanted.notified().await;
                    let interim = self.send(b"HTTP/1.1 100 Continue\r\n\r\n");
                    if let Err(error) = interim.await {
                        break Err(error);
                    }
                }
                wire::make_read_room(&mut self.read);
                let earned =
                    self.limits.body_grace + Duration::from_secs_f64(received as f64 / rate as f64);
                let Some(budget) = earned.checked_sub(waited) else {
                    self.stats.timed_out(TimedOut::Body);
                    break Err(io::ErrorKind::TimedOut.into());
                };
                let before = self.read.len();
                let began = Instant::now();
                let read = tokio::time::timeout(budget, self.stream.read_buf(&mut self.read)).await;
                waited += began.elapsed();
                match read {
                    Ok(Ok(0)) => break Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(Ok(_)) => received += (self.read.len() - before) as u64,
                    Ok(Err(error)) => break Err(error),
                    Err(_) => {
                        self.stats.timed_out(TimedOut::Body);
                        break Err(io::ErrorKind::TimedOut.into());
                    }
                }
            };
            let broken = piece.is_err();
            slot.send(piece);
            if broken {
                return false;
            }
        }
    }

    /// Writes `response` with its framing; whether the connection can carry another request.
    /// `head_only` for an answer to `HEAD`, whose body is left out; `http_1_0` for a client that
    /// cannot read chunks.
    async fn write_response(
        &mut self,
        response: Response<Body>,
        head_only: bool,
        http_1_0: bool,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            Framing::None
        } else if let Some(length) = body.size_hint().exact() {
            Framing::Length(length)
        } else if http_1_0 {
            keep_alive = false;
            Framing::UntilClose
        } else {
            Framing::Chunked
        };
        keep_alive &= !closes(&parts.headers);
        let out = &mut self.write;
        out.clear();
        out.reserve(WRITE_START);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let (mut dated, mut has_length) = (false, false);
        for (name, value) in &parts.headers {
            // The framing and the connection are the server's to say; a bodiless answer keeps
            // the length its handler gave (that of the body a `GET` would have had).
            let framing_header =
                *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING;
            if (framing_header && !bodiless) || *name == header::CONNECTION {
                continue;
            }
            dated |= *name == header::DATE;
            has_length |= *name == header::CONTENT_LENGTH;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // An upstream's answer headers, passed on as they came.
        if let Some(lines) = parts.extensions.get::<HeaderLines>() {
            out.extend_from_slice(lines.as_bytes());
            dated |= lines.has_date();
            has_length |= bodiless && lines.has_length();
        }
        if !dated {
            out.extend_from_slice(b"date: ");
            date::append((self.clock)(), out);
            out.extend_from_slice(b"\r\n");
        }
        // A `HEAD` answer tells the length a `GET` would get, when its handler knows it. A body
        // of 0 tells nothing there: an upstream's answer to `HEAD` has none, whatever the length.
        let length = match framing {
            Framing::Length(length) => Some(length),
            Framing::None if head_only && !has_length => {
                body.size_hint().exact().filter(|&length| length > 0)
            }
            _ => None,
        };
        if let Some(length) = length {
            out.extend_from_slice(b"content-length: ");
            push_decimal(length, out);
            out.extend_from_slice(b"\r\n");
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if http_1_0 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if framing == Framing::None {
            self.flush().await?;
            return Ok(keep_alive);
        }
        let mut sent: u64 = 0;
        loop {
            // What the body has ready goes out with the head in one write; the batch is written
            // only when the body must be waited for, or has grown large.
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    self.flush().await?;
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not sent (see `wire`).
                    Err(_) => continue,
                },
                // The answer broke off: the client must see it end short, not complete.
                Some(Err(_)) => return Ok(false),
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            let out = &mut self.write;
            match framing {
                Framing::Length(length) if sent > length => return Ok(false),
                Framing::Chunked => {
                    wire::encode_chunk_start(data.len(), out);
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                }
                _ => out.extend_from_slice(&data),
            }
            if self.write.len() >= WRITE_BATCH {
                self.flush().await?;
            }
        }
        match framing {
            Framing::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(length) if sent < length => {
                self.flush().await?;
                return Ok(false);
            }
            _ => {}
        }
        self.flush().await?;
        Ok(keep_alive)
    }

    /// Writes what is gathered.
    async fn flush(&mut self) -> io::Result<()> {
        let sent = self
            .stream
            .send_all(&self.write, self.limits.send_timeout)
            .await;
        self.write.clear();
        self.counted(sent)
    }

    /// Writes `bytes` whole, each write making progress within the send timeout.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let sent = self.stream.send_all(bytes, self.limits.send_timeout).await;
        self.counted(sent)
    }

    /// `sent`, a write's outcome, counted if the client let it time out.
    fn counted(&self, sent: io::Result<()>) -> io::Result<()> {
        if sent
            .as_ref()
            .is_err_and(|error| error.kind() == io::ErrorKind::TimedOut)
        {
            self.stats.timed_out(TimedOut::Send);
        }
        sent
    }
}

/// What reads a request body to its handler: its decoder, where its pieces go, and who to tell
/// when the handler first wants it (a client waiting for `100 Continue`).
type BodyFeed = (
    BodyDecoder,
    mpsc::Sender<io::Result<Bytes>>,
    Option<Arc<Notify>>,
);

/// How an answer's body follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Appends `value` in decimal digits (a formatted `String` would be allocated per answer).
fn push_decimal(value: u64, out: &mut Vec<u8>) {
    let mut digits = [0; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Whether an answer's handler asked for the connection to close.
fn closes(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// A request body the connection reads as the handler polls it.
struct StreamedBody {
    pieces: mpsc::Receiver<io::Result<Bytes>>,
    /// The bytes still to come, when the client said how many.
    remaining: Option<u64>,
    /// Told when the body is first read, if the client waits to be asked for it.
    wanted: Option<Arc<Notify>>,
}

impl StreamedBody {
    fn new(
        framing: RequestFraming,
        wanted: Option<Arc<Notify>>,
    ) -> (Self, mpsc::Sender<io::Result<Bytes>>) {
        // One piece in hand at a time: the client's sending is held back by the handler's
        // reading, as TCP's window then tells it.
        let (feed, pieces) = mpsc::channel(1);
        let remaining = match framing {
            RequestFraming::Length(length) => Some(length),
            RequestFraming::Empty => Some(0),
            RequestFraming::Chunked => None,
        };
        let body = Self {
            pieces,
            remaining,
            wanted,
        };
        (body, feed)
    }
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.remaining == Some(0) {
            return Poll::Ready(None);
        }
        if let Some(wanted) = self.wanted.take() {
            wanted.notify_one();
        }
        self.pieces.poll_recv(context).map(|piece| {
            piece.map(|piece| {
                let data = piece?;
                if let Some(remaining) = &mut self.remaining {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                Ok(Frame::data(data))
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_written_in_decimal() {
        for value in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(value, &mut out);
            assert_eq!(out, format!("x{value}").into_bytes());
        }
    }
}
