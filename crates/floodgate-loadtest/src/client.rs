//! A lean HTTP/1.1 client for load: a bounded keep-alive pool, one request at a time per connection.
//!
//! A load generator's client must cost less than the server it measures, so this one writes each
//! request with one `write` and parses answers in place with `httparse`, on the shopper's own task:
//! no connection driver tasks, no per-request channels. It speaks plain `http://` only.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::scenario::Method;

/// Bodies larger than this are read and dropped: shoppers' API answers are small JSON.
const KEPT_BODY_BYTES: usize = 64 * 1024;
/// Most response headers read.
const MAX_HEADERS: usize = 48;

/// Where the load goes: `http://host:port[/base]`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `Host` header.
    pub host: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// A path prefix put before every step's path, without a trailing `/`.
    pub base_path: String,
    /// The URL as given.
    pub url: String,
}

impl Target {
    /// Parses and resolves `url`.
    pub async fn resolve(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("--target {url:?}: only http:// targets are supported (terminate TLS in front)")
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err(format!("--target {url:?}: no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(with_port.as_str())
            .await
            .map_err(|error| format!("--target {url:?}: cannot resolve {with_port}: {error}"))?
            .next()
            .ok_or_else(|| format!("--target {url:?}: {with_port} resolves to nothing"))?;
        Ok(Self {
            host: authority.to_owned(),
            addr,
            base_path: path.trim_end_matches('/').to_owned(),
            url: url.to_owned(),
        })
    }

    /// Encodes one request.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let method = match method {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        let mut out = Vec::with_capacity(128 + path.len() + body.map_or(0, <[u8]>::len));
        for part in [
            method,
            " ",
            &self.base_path,
            path,
            " HTTP/1.1\r\nHost: ",
            &self.host,
            "\r\n",
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        for (name, value) in headers {
            for part in [*name, ": ", *value, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
        if let Some(body) = body {
            out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, empty when it was larger than the kept limit.
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, when given as a number.
    pub retry_after: Option<Duration>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be opened.
    Connect(io::Error),
    /// The connection broke or the answer was not HTTP.
    Broken(String),
}

/// One request's result and when it was actually written.
#[derive(Debug)]
pub struct Exchange {
    /// The answer or why there was none.
    pub result: Result<Response, Failure>,
    /// When the request was written, after waiting for a connection ("as sent").
    pub sent_at: Instant,
}

/// The shared keep-alive pool to one target.
#[derive(Debug)]
pub struct Pool {
    target: Target,
    timeout: Duration,
    max_connections: usize,
    slots: Mutex<Slots>,
}

/// The pool's books, under one lock: a checkout or a return is one lock, no semaphore.
#[derive(Debug, Default)]
struct Slots {
    idle: Vec<Connection>,
    /// Connections open or being opened, idle ones included.
    open: usize,
    /// Requests waiting for a connection, first come first served.
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

/// What a checkout gets: a kept-alive connection, or leave to open one.
#[derive(Debug)]
enum Grant {
    Reuse(Connection),
    Open,
}

/// A checked-out slot: given back on drop (a cancelled request's slot is never lost).
struct Checkout<'a> {
    pool: &'a Pool,
    returned: bool,
}

impl Checkout<'_> {
    fn give_back(mut self, connection: Option<Connection>) {
        self.returned = true;
        self.pool.give_back(connection);
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if !self.returned {
            self.pool.give_back(None);
        }
    }
}

/// A waiter's end of a grant: a grant sent to a waiter that gave up is passed on.
struct Waiting<'a> {
    pool: &'a Pool,
    receiver: oneshot::Receiver<Grant>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.receiver.close();
        match self.receiver.try_recv() {
            Ok(Grant::Reuse(connection)) => self.pool.give_back(Some(connection)),
            Ok(Grant::Open) => self.pool.give_back(None),
            Err(_) => {}
        }
    }
}

impl Pool {
    /// A pool of at most `max_connections` connections; each request may take `timeout` in all.
    pub fn new(target: Target, max_connections: usize, timeout: Duration) -> Self {
        Self {
            target,
            timeout,
            max_connections,
            slots: Mutex::new(Slots::default()),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends `request` and reads the whole answer; waiting for a free connection counts in the
    /// timeout, as it would for a shopper.
    pub async fn send(&self, request: &[u8]) -> Exchange {
        let mut sent_at = None;
        let result =
            match tokio::time::timeout(self.timeout, self.exchange(request, &mut sent_at)).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Timeout),
            };
        // Never sent (no connection in time): as sent, it took no time.
        Exchange {
            result,
            sent_at: sent_at.unwrap_or_else(Instant::now),
        }
    }

    /// Takes an idle connection, or leave to open one, waiting in line when all are busy.
    async fn check_out(&self) -> (Checkout<'_>, Grant) {
        let receiver = {
            let mut slots = self.slots.lock().expect("pool lock");
            let grant = match slots.idle.pop() {
                Some(connection) => Some(Grant::Reuse(connection)),
                None if slots.open < self.max_connections => {
                    slots.open += 1;
                    Some(Grant::Open)
                }
                None => None,
            };
            if let Some(grant) = grant {
                return (
                    Checkout {
                        pool: self,
                        returned: false,
                    },
                    grant,
                );
            }
            let (sender, receiver) = oneshot::channel();
            slots.waiters.push_back(sender);
            receiver
        };
        // Once the grant is received, the guard's drop finds nothing left to pass on.
        let mut waiting = Waiting {
            pool: self,
            receiver,
        };
        let grant = (&mut waiting.receiver)
            .await
            .expect("a waiter's sender is used, never dropped");
        (
            Checkout {
                pool: self,
                returned: false,
            },
            grant,
        )
    }

    /// Hands a slot (with its connection, if still good) to the first waiter, or keeps it.
    fn give_back(&self, connection: Option<Connection>) {
        let mut grant = connection.map_or(Grant::Open, Grant::Reuse);
        let mut slots = self.slots.lock().expect("pool lock");
        while let Some(waiter) = slots.waiters.pop_front() {
            match waiter.send(grant) {
                Ok(()) => return,
                Err(unwanted) => grant = unwanted,
            }
        }
        match grant {
            Grant::Reuse(connection) => slots.idle.push(connection),
            Grant::Open => slots.open -= 1,
        }
    }

    async fn exchange(
        &self,
        request: &[u8],
        sent_at: &mut Option<Instant>,
    ) -> Result<Response, Failure> {
        let (checkout, grant) = self.check_out().await;
        let fresh = matches!(grant, Grant::Open);
        let mut connection = match grant {
            Grant::Reuse(connection) => connection,
            Grant::Open => Connection::open(self.target.addr).await?,
        };
        *sent_at = Some(Instant::now());
        let outcome = match connection.round_trip(request).await {
            // A kept-alive connection the server closed while idle: try once more on a new one.
            Err(RoundTripError::ClosedBeforeAnswer) if !fresh => {
                connection = Connection::open(self.target.addr).await?;
                *sent_at = Some(Instant::now());
                connection.round_trip(request).await
            }
            outcome => outcome,
        };
        let (response, keep_alive) = outcome.map_err(RoundTripError::into_failure)?;
        checkout.give_back(keep_alive.then_some(connection));
        Ok(response)
    }

    /// Opens a dedicated connection (outside the pool, like a browser's `EventSource`) and
    /// returns the answer's head with a reader for its streamed body.
    pub async fn stream(&self, request: &[u8]) -> Result<(u16, EventStream), Failure> {
        let open = async {
            let mut connection = Connection::open(self.target.addr).await?;
            connection
                .write(request)
                .await
                .map_err(RoundTripError::into_failure)?;
            let head = connection
                .read_head()
                .await
                .map_err(RoundTripError::into_failure)?;
            Ok::<_, Failure>((
                head.status,
                EventStream {
                    body: BodyReader::new(head.framing),
                    connection,
                    pending: String::new(),
                },
            ))
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }
}

/// Server-sent events read from a streamed body.
#[derive(Debug)]
pub struct EventStream {
    connection: Connection,
    body: BodyReader,
    pending: String,
}

impl EventStream {
    /// The next event's `data`, or `None` when the stream ended.
    pub async fn next_data(&mut self) -> Result<Option<String>, Failure> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return Ok(Some(data.join("\n")));
                }
                continue;
            }
            let mut chunk = Vec::new();
            match self.body.next(&mut self.connection, &mut chunk).await {
                Ok(true) => self
                    .pending
                    .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                Ok(false) => return Ok(None),
                Err(error) => return Err(error.into_failure()),
            }
        }
    }
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
}

#[derive(Debug)]
enum RoundTripError {
    /// The server closed the connection before sending a byte of the answer.
    ClosedBeforeAnswer,
    Io(io::Error),
    Protocol(String),
}

impl RoundTripError {
    fn into_failure(self) -> Failure {
        Failure::Broken(match self {
            Self::ClosedBeforeAnswer => "connection closed before the answer".to_owned(),
            Self::Io(error) => error.to_string(),
            Self::Protocol(problem) => problem,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    retry_after: Option<Duration>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self, Failure> {
        let stream = TcpStream::connect(addr).await.map_err(Failure::Connect)?;
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            pos: 0,
        })
    }

    async fn write(&mut self, request: &[u8]) -> Result<(), RoundTripError> {
        self.stream
            .write_all(request)
            .await
            .map_err(|error| match error.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    RoundTripError::ClosedBeforeAnswer
                }
                _ => RoundTripError::Io(error),
            })
    }

    async fn round_trip(&mut self, request: &[u8]) -> Result<(Response, bool), RoundTripError> {
        self.write(request).await?;
        let head = self.read_head().await?;
        let mut body = Vec::new();
        let mut reader = BodyReader::new(head.framing);
        let mut kept = true;
        while reader.next(self, &mut body).await? {
            if body.len() > KEPT_BODY_BYTES {
                kept = false;
                body.clear();
            }
        }
        if !kept {
            body = Vec::new();
        }
        let keep_alive = head.keep_alive && !matches!(head.framing, Framing::UntilClose);
        if keep_alive {
            self.expect_silence();
        }
        Ok((
            Response {
                status: head.status,
                body,
                retry_after: head.retry_after,
            },
            keep_alive,
        ))
    }

    /// Reads more bytes; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> Result<usize, RoundTripError> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.capacity() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        loop {
            self.stream.readable().await.map_err(RoundTripError::Io)?;
            match self.stream.try_read_buf(&mut self.buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                read => return read.map_err(RoundTripError::Io),
            }
        }
    }

    /// Forgets that the socket was readable once an answer is fully read, so the next answer is
    /// awaited on the poller's event instead of a read that would only say "not yet": one
    /// system call fewer per request. A later close or reset is a new event, so none is missed.
    fn expect_silence(&self) {
        if self.pos == self.buf.len() {
            let _ = self.stream.try_io(tokio::io::Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
    }

    async fn read_head(&mut self) -> Result<Head, RoundTripError> {
        let mut received_any = self.pos < self.buf.len();
        loop {
            if let Some((head, length)) = Head::parse(&self.buf[self.pos..])? {
                self.pos += length;
                return Ok(head);
            }
            match self.fill().await {
                Ok(0) if !received_any => return Err(RoundTripError::ClosedBeforeAnswer),
                Ok(0) => {
                    return Err(RoundTripError::Protocol(
                        "connection closed inside the answer's head".to_owned(),
                    ));
                }
                Ok(_) => received_any = true,
                Err(RoundTripError::Io(error))
                    if !received_any && error.kind() == io::ErrorKind::ConnectionReset =>
                {
                    return Err(RoundTripError::ClosedBeforeAnswer);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The position of the next CRLF at or after `pos`, reading more until there is one.
    async fn line_end(&mut self) -> Result<usize, RoundTripError> {
        loop {
            if let Some(at) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                return Ok(self.pos + at);
            }
            if self.fill().await? == 0 {
                return Err(RoundTripError::Protocol(
                    "connection closed inside a chunked body".to_owned(),
                ));
            }
        }
    }
}

impl Head {
    /// The head at the start of `bytes` and its length, or `None` while it is incomplete.
    /// Synchronous, so the header array never lives in a waiting shopper's future.
    fn parse(bytes: &[u8]) -> Result<Option<(Self, usize)>, RoundTripError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(bytes) {
            Ok(httparse::Status::Complete(length)) => Ok(Some((Self::of(&response)?, length))),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(error) => Err(RoundTripError::Protocol(format!(
                "not an HTTP answer: {error}"
            ))),
        }
    }

    fn of(response: &httparse::Response<'_, '_>) -> Result<Self, RoundTripError> {
        let status = response.code.unwrap_or(0);
        let mut framing = Framing::UntilClose;
        let mut keep_alive = response.version == Some(1);
        let mut retry_after = None;
        for header in response.headers.iter() {
            // Only four headers matter here; the value is decoded for those alone.
            let name = header.name.as_bytes();
            let wanted =
                |known: &[u8]| name.len() == known.len() && name.eq_ignore_ascii_case(known);
            let value = || std::str::from_utf8(header.value).unwrap_or("").trim();
            if wanted(b"content-length") {
                let value = value();
                let length = value.parse().map_err(|_| {
                    RoundTripError::Protocol(format!("bad Content-Length {value:?}"))
                })?;
                if !matches!(framing, Framing::Chunked) {
                    framing = Framing::Length(length);
                }
            } else if wanted(b"transfer-encoding") {
                if value().to_ascii_lowercase().ends_with("chunked") {
                    framing = Framing::Chunked;
                }
            } else if wanted(b"connection") {
                keep_alive = !value().eq_ignore_ascii_case("close");
            } else if wanted(b"retry-after") {
                retry_after = value().parse().ok().map(Duration::from_secs);
            }
        }
        // No body by definition, whatever the headers say.
        if status == 204 || status == 304 || (100..200).contains(&status) {
            framing = Framing::Length(0);
        }
        Ok(Self {
            status,
            framing,
            keep_alive,
            retry_after,
        })
    }
}

/// Decodes a body by its framing, a piece at a time (so event streams can be read as they come).
#[derive(Debug)]
struct BodyReader {
    framing: Framing,
    /// Bytes left in the body (`Length`) or in the current chunk (`Chunked`).
    remaining: usize,
    /// Inside a chunked body: whether the next thing to read is a chunk-size line.
    at_chunk_start: bool,
    done: bool,
}

impl BodyReader {
    fn new(framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Length(length) => length,
            _ => 0,
        };
        Self {
            framing,
            remaining,
            at_chunk_start: true,
            done: matches!(framing, Framing::Length(0)),
        }
    }

    /// Appends the next piece of the body to `out`; `false` once the body is complete.
    async fn next(
        &mut self,
        connection: &mut Connection,
        out: &mut Vec<u8>,
    ) -> Result<bool, RoundTripError> {
        while !self.done {
            match self.framing {
                Framing::Length(_) => {
                    if connection.pos == connection.buf.len() && connection.fill().await? == 0 {
                        return Err(RoundTripError::Protocol(
                            "connection closed inside the body".to_owned(),
                        ));
                    }
                    self.take(connection, out);
                    self.done = self.remaining == 0;
                    return Ok(true);
                }
                Framing::UntilClose => {
                    if connection.pos == connection.buf.len() && connection.fill().await? == 0 {
                        self.done = true;
                        return Ok(false);
                    }
                    out.extend_from_slice(&connection.buf[connection.pos..]);
                    connection.pos = connection.buf.len();
                    return Ok(true);
                }
                Framing::Chunked if self.at_chunk_start => {
                    let end = connection.line_end().await?;
                    let line =
                        std::str::from_utf8(&connection.buf[connection.pos..end]).unwrap_or("");
                    let size_text = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                        RoundTripError::Protocol(format!("bad chunk size {size_text:?}"))
                    })?;
                    connection.pos = end + 2;
                    if size == 0 {
                        // Trailers, if any, end with an empty line.
                        loop {
                            let end = connection.line_end().await?;
                            let empty = end == connection.pos;
                            connection.pos = end + 2;
                            if empty {
                                break;
                            }
                        }
                        self.done = true;
                        return Ok(false);
                    }
                    self.remaining = size;
                    self.at_chunk_start = false;
                }
                Framing::Chunked if self.remaining == 0 => {
                    let end = connection.line_end().await?;
                    connection.pos = end + 2;
                    self.at_chunk_start = true;
                }
                Framing::Chunked => {
                    if connection.pos == connection.buf.len() && connection.fill().await? == 0 {
                        return Err(RoundTripError::Protocol(
                            "connection closed inside a chunk".to_owned(),
                        ));
                    }
                    self.take(connection, out);
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Moves up to `remaining` buffered bytes to `out`.
    fn take(&mut self, connection: &mut Connection, out: &mut Vec<u8>) {
        let n = (connection.buf.len() - connection.pos).min(self.remaining);
        out.extend_from_slice(&connection.buf[connection.pos..connection.pos + n]);
        connection.pos += n;
        self.remaining -= n;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Serves each accepted connection the canned bytes once per request read.
    async fn canned(answers: Vec<&'static [u8]>) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for answer in answers {
                let _ = stream.read(&mut buf).await.unwrap();
                stream.write_all(answer).await.unwrap();
            }
        });
        Target::resolve(&format!("http://{addr}/base/"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_kept_alive_connection() {
        let target = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        assert_eq!(target.base_path, "/base");
        let pool = Pool::new(target.clone(), 1, Duration::from_secs(5));
        let first = pool
            .send(&target.request(Method::Get, "/a", &[], None))
            .await
            .result
            .unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"hello"[..]));
        let second = pool
            .send(&target.request(Method::Post, "/b", &[("X", "y")], Some(b"{}")))
            .await;
        let second = second.result.unwrap();
        assert_eq!(
            (second.status, second.body.as_slice()),
            (503, &b"abcde"[..])
        );
        assert_eq!(second.retry_after, Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn reads_server_sent_events_as_they_come() {
        let target = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
              e\r\ndata: {\"a\":1}\n\r\n1\r\n\n\r\n11\r\n: ping\n\ndata: 2\n\n\r\n0\r\n\r\n",
        ])
        .await;
        let pool = Pool::new(target.clone(), 1, Duration::from_secs(5));
        let (status, mut events) = pool
            .stream(&target.request(Method::Get, "/e", &[], None))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            events.next_data().await.unwrap().as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(events.next_data().await.unwrap().as_deref(), Some("2"));
        assert_eq!(events.next_data().await.unwrap(), None);
    }

    #[tokio::test]
    async fn refused_connections_and_garbage_are_failures_not_panics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = Target::resolve(&format!("http://{addr}")).await.unwrap();
        let pool = Pool::new(target.clone(), 1, Duration::from_secs(5));
        let request = target.request(Method::Get, "/", &[], None);
        assert!(matches!(
            pool.send(&request).await.result,
            Err(Failure::Connect(_))
        ));

        let target = canned(vec![b"SMTP ready\r\n\r\n"]).await;
        let pool = Pool::new(target.clone(), 1, Duration::from_secs(5));
        assert!(matches!(
            pool.send(&request).await.result,
            Err(Failure::Broken(_))
        ));
        assert!(
            Target::resolve("https://example.test")
                .await
                .unwrap_err()
                .contains("only http://")
        );
    }
}
