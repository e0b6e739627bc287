//! HTTP/1.1 as floodgate speaks it to an upstream (RFC 9112), without I/O: a request head
//! written into one buffer, a response head parsed in place from the read buffer, and the
//! response body taken out of that buffer by its framing. The framing rules and the body
//! decoder serve the listeners' side too ([`crate::server`]), for the bodies clients send.
//!
//! The proxy forwards a head it has already parsed, to a server the shop runs, so this side
//! needs no more than that: a request head is written line by line as the proxy chooses its
//! lines (see `proxy::encode_forwarded_head`), the framing header always the codec's own, and
//! an answer's headers are read with those of the upstream's connection left out, their values
//! pointing into the read buffer rather than copied.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), as text: an
/// answer's lines are compared with these as they are read (a `HeaderName`'s text is a lookup
/// each time, 0.3 k instructions of a proxied request).
const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The same as header names, for header maps. A `static`: a `const` array would be built (and
/// dropped) again at every use.
pub static HOP_BY_HOP: [HeaderName; 8] = {
    let names = HOP_BY_HOP_NAMES;
    [
        HeaderName::from_static(names[0]),
        HeaderName::from_static(names[1]),
        HeaderName::from_static(names[2]),
        HeaderName::from_static(names[3]),
        HeaderName::from_static(names[4]),
        HeaderName::from_static(names[5]),
        HeaderName::from_static(names[6]),
        HeaderName::from_static(names[7]),
    ]
};

/// The longest response head accepted, and the most trailer bytes after a chunked body.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header lines in a response head.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (the size and any extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// What is wrong with an upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The head does not parse as an HTTP/1.x response.
    #[error("malformed response head: {0}")]
    Syntax(httparse::Error),
    /// The head parses, but says something floodgate cannot take.
    #[error("unusable response head: {0}")]
    Head(&'static str),
    /// The head is longer than [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] lines.
    #[error("response head too large")]
    HeadTooLarge,
    /// A `Content-Length` that is not one number.
    #[error("invalid content-length")]
    ContentLength,
    /// A chunk-size line or chunk end that breaks the chunked framing.
    #[error("malformed chunked body")]
    Chunk,
    /// The connection ended before the body did.
    #[error("connection closed inside the body")]
    Truncated,
}

/// How a request's body follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks, their length not known in advance.
    Chunked,
}

/// Appends the request line for `method` and `target` (origin form): a request head's start.
pub fn encode_request_line(method: &Method, target: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// Appends the header line `name: ` with `values` joined by `, ` (one line for a list). The
/// framing headers (`content-length`, `transfer-encoding`, lowercase as `HeaderName`s are) are
/// left out: [`encode_head_end`] writes the head's own.
pub fn encode_header<'a>(
    name: &str,
    values: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) {
    if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for (index, value) in values.into_iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Ends a request head: the framing header for `framing`, then the blank line.
pub fn encode_head_end(framing: RequestFraming, out: &mut Vec<u8>) {
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the line that opens a chunk of `length` bytes (a chunk of 0 ends the body).
pub fn encode_chunk_start(length: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{length:x}\r\n").as_bytes());
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body, whatever the headers say (a `HEAD` request's answer, `204`, `304`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks, ended by a chunk of size 0 and any trailers.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The final status (interim `1xx` answers are skipped).
    pub status: StatusCode,
    /// The message's header lines as they go on to the client: without those of the
    /// connection, nor the length of a body (the client's side frames it anew).
    pub lines: HeaderLines,
    /// How the body that follows is delimited.
    pub framing: ResponseFraming,
    /// Whether the connection may carry another request once the body has been read.
    pub keep_alive: bool,
}

/// Takes the final response head (after any `1xx` interim answers) to a request with `method`
/// off the front of `buffer`; `None` while it is incomplete. Lines named `replaced` are left
/// out as they are read: the caller writes its own (the proxy, its request id).
pub fn parse_response_head(
    buffer: &mut BytesMut,
    method: &Method,
    replaced: &HeaderName,
) -> Result<Option<ResponseHead>, WireError> {
    // Nothing yet is the usual first look, before the upstream has answered.
    while !buffer.is_empty() {
        // Left unset, since the parser sets those it fills: setting up all of them first was
        // 4 KiB of stores, a twentieth of a proxied request's instructions.
        let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buffer,
            &mut lines,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD_BYTES => {
                return Err(WireError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
            Err(error) => return Err(WireError::Syntax(error)),
        };
        if length > MAX_HEAD_BYTES {
            return Err(WireError::HeadTooLarge);
        }
        let code = response.code.ok_or(WireError::Head("no status"))?;
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Head("bad status"))?;
        // `101` would switch protocols, and `Upgrade` is never forwarded: no upstream should.
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buffer.advance(length);
            continue;
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::Head("unexpected 101"));
        }
        let lines = &*response.headers;
        let facts = LineFacts::of(lines);
        let framing = facts.framing(status, method)?;
        let keep_alive = response.version == Some(1)
            && framing != ResponseFraming::UntilClose
            && !facts.both_framings()
            && !facts.close;
        let lines = message_lines(lines, &facts, framing, length, replaced);
        buffer.advance(length);
        return Ok(Some(ResponseHead {
            status,
            lines,
            framing,
            keep_alive,
        }));
    }
    Ok(None)
}

/// What a head's lines say about its body's framing and its connection, read in one pass.
pub(crate) struct LineFacts<'a> {
    /// Whether there is a `Transfer-Encoding` line.
    transfer_encoding: bool,
    /// How many codings the `Transfer-Encoding` lines name.
    codings: usize,
    /// The last coding the `Transfer-Encoding` lines name: the one applied last.
    last_coding: Option<&'a [u8]>,
    /// What the `Content-Length` lines say, if there are any: one length, or an error.
    content_length: Option<Result<u64, WireError>>,
    /// Whether `Connection` says `close`.
    pub(crate) close: bool,
    /// Whether `Connection` says `keep-alive` (which an HTTP/1.0 client must, to keep it).
    pub(crate) keep_alive: bool,
    /// Whether the sender waits for a `100 Continue` before it sends the body.
    pub(crate) expects_continue: bool,
    /// Whether `Connection` names headers (anything beyond `keep-alive` and `close`): usually
    /// not, and then no line needs its options read again.
    names_headers: bool,
}

impl<'a> LineFacts<'a> {
    /// The facts of a head's `lines`.
    pub(crate) fn of(lines: &'a [httparse::Header<'a>]) -> Self {
        let mut facts = Self {
            transfer_encoding: false,
            codings: 0,
            last_coding: None,
            content_length: None,
            close: false,
            keep_alive: false,
            expects_continue: false,
            names_headers: false,
        };
        for line in lines {
            if line.name.eq_ignore_ascii_case(TRANSFER_ENCODING) {
                facts.transfer_encoding = true;
                for coding in list(line.value) {
                    facts.codings += 1;
                    facts.last_coding = Some(coding);
                }
            } else if line.name.eq_ignore_ascii_case(CONTENT_LENGTH) {
                // A list of equal values is one length (RFC 9110 §8.6); differing ones, or an
                // empty element, are an error.
                for each in line.value.split(|&byte| byte == b',') {
                    let parsed = content_length(each.trim_ascii());
                    facts.content_length = Some(match (facts.content_length.take(), parsed) {
                        (Some(Err(error)), _) | (_, Err(error)) => Err(error),
                        (Some(Ok(known)), Ok(length)) if known != length => {
                            Err(WireError::ContentLength)
                        }
                        (_, Ok(length)) => Ok(length),
                    });
                }
            } else if line.name.eq_ignore_ascii_case(CONNECTION) {
                for option in list(line.value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        facts.close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        facts.keep_alive = true;
                    } else {
                        facts.names_headers = true;
                    }
                }
            } else if line.name.eq_ignore_ascii_case(EXPECT) {
                facts.expects_continue |= line
                    .value
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"100-continue");
            }
        }
        facts
    }

    /// How the body of a request in HTTP/1.`minor_version` is delimited (RFC 9112 §6.3), or
    /// why it cannot be told safely. Where a client and a server before floodgate could read a
    /// body's end differently (both framings, a list of lengths, `Transfer-Encoding` in
    /// HTTP/1.0), requests could be smuggled past it: those are refused, not guessed at.
    pub(crate) fn request_framing(
        &self,
        minor_version: u8,
    ) -> Result<RequestFraming, FramingRefusal> {
        if self.transfer_encoding {
            if minor_version == 0 || self.content_length.is_some() {
                return Err(FramingRefusal::Ambiguous);
            }
            return match self.last_coding {
                Some(coding) if coding.eq_ignore_ascii_case(b"chunked") && self.codings == 1 => {
                    Ok(RequestFraming::Chunked)
                }
                Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => {
                    Err(FramingRefusal::UnknownCoding)
                }
                _ => Err(FramingRefusal::Ambiguous),
            };
        }
        match &self.content_length {
            None | Some(Ok(0)) => Ok(RequestFraming::Empty),
            Some(Ok(length)) => Ok(RequestFraming::Length(*length)),
            Some(Err(_)) => Err(FramingRefusal::Ambiguous),
        }
    }

    /// Both framings at once is how responses are split (RFC 9112 §6.3): the chunked one is
    /// read, the length is not passed on, and the connection is not used again.
    fn both_framings(&self) -> bool {
        self.transfer_encoding && self.content_length.is_some()
    }

    /// How the body of an answer with `status` to a `method` request is delimited.
    fn framing(&self, status: StatusCode, method: &Method) -> Result<ResponseFraming, WireError> {
        if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(ResponseFraming::Empty);
        }
        // With a Transfer-Encoding, chunked only if it is the last coding applied; otherwise the
        // end is the close. Content-Length is then ignored.
        if self.transfer_encoding {
            return Ok(match self.last_coding {
                Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => ResponseFraming::Chunked,
                _ => ResponseFraming::UntilClose,
            });
        }
        match &self.content_length {
            None => Ok(ResponseFraming::UntilClose),
            Some(Ok(length)) => Ok(ResponseFraming::Length(*length)),
            Some(Err(error)) => Err(error.clone()),
        }
    }
}

/// Why a request's body framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingRefusal {
    /// Its end could be read in more than one way (`400`).
    Ambiguous,
    /// It is chunked over a coding floodgate does not decode (`501`).
    UnknownCoding,
}

/// One `Content-Length` element: digits only (no sign, no spaces inside).
fn content_length(digits: &[u8]) -> Result<u64, WireError> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u64>().ok())
        .ok_or(WireError::ContentLength)
}

/// The header lines of the message itself, copied in wire form from the `head_length` bytes
/// of a head. Those that describe the connection are left out: the hop-by-hop ones and any
/// `Connection` names (RFC 9110 §7.6.1), which is the proxy's duty, done here in the pass that
/// reads them. So is the length of a body, which the client's side writes itself; an answer
/// without one (to `HEAD`, a `304`) keeps it, as it tells the length a `GET` would get. So are
/// the lines named `replaced`, which the caller writes itself.
fn message_lines(
    lines: &[httparse::Header<'_>],
    facts: &LineFacts<'_>,
    framing: ResponseFraming,
    head_length: usize,
    replaced: &HeaderName,
) -> HeaderLines {
    let without_length = framing != ResponseFraming::Empty;
    let mut kept = HeaderLines::with_capacity(head_length + ADDED_LINES_ROOM);
    for line in lines {
        let name = line.name.as_bytes();
        let named_by_connection = || {
            (lines.iter())
                .filter(|line| line.name.eq_ignore_ascii_case(CONNECTION))
                .flat_map(|line| list(line.value))
                .any(|option| option.eq_ignore_ascii_case(name))
        };
        let hop_by_hop = HOP_BY_HOP_NAMES
            .iter()
            .any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()));
        if hop_by_hop
            || (facts.names_headers && named_by_connection())
            || (without_length && name.eq_ignore_ascii_case(CONTENT_LENGTH.as_bytes()))
            || name.eq_ignore_ascii_case(replaced.as_str().as_bytes())
        {
            continue;
        }
        kept.push(name, line.value);
    }
    kept
}

/// Header lines in wire form, `name: value` and CRLF each: an upstream's answer headers passed
/// on to the client as they were read, not parsed into a header map to be written out again
/// (that was a fifth of a proxied request's instructions). The server writes them after the
/// answer's own headers; code that must read them (the edge cache) parses them into a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderLines {
    bytes: BytesMut,
    /// Whether a line is the `Date`, or a `Content-Length`: the server writes its own otherwise,
    /// and asks for every answer.
    dated: bool,
    with_length: bool,
}

impl HeaderLines {
    /// No lines yet, with room for `bytes` of them.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: BytesMut::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Adds a line. `name` and `value` must be a header's (as a parser has checked them).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.dated |= name.eq_ignore_ascii_case(b"date");
        self.with_length |= name.eq_ignore_ascii_case(CONTENT_LENGTH.as_bytes());
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(b": ");
        self.bytes.extend_from_slice(value);
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// The lines, as they are written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether there is a `Date` line.
    pub fn has_date(&self) -> bool {
        self.dated
    }

    /// Whether there is a `Content-Length` line.
    pub fn has_length(&self) -> bool {
        self.with_length
    }

    /// Each line without its CRLF.
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        memchr::memchr_iter(b'\n', &self.bytes).map(move |end| {
            let line = &self.bytes[start..end - 1];
            start = end + 1;
            line
        })
    }

    /// Each line's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines().map(|line| {
            let colon = memchr::memchr(b':', line).unwrap_or(line.len());
            let value = line.get(colon + 1..).unwrap_or_default();
            (&line[..colon], value.trim_ascii())
        })
    }

    /// The lines as a header map; none are lost, having been checked when they were read.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in self.iter() {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                headers.append(name, value);
            }
        }
        headers
    }
}

/// Room kept in an answer's [`HeaderLines`] for the lines the gateway adds (`Via`, and an
/// `X-Request-Id` of up to 128 bytes), so adding them does not copy the lines to a larger buffer.
const ADDED_LINES_ROOM: usize = 192;

/// The elements of a comma-separated header value, trimmed, empty ones left out.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

const TRANSFER_ENCODING: &str = "transfer-encoding";
const CONTENT_LENGTH: &str = "content-length";
const CONNECTION: &str = "connection";
const EXPECT: &str = "expect";

/// Room made in a connection's read buffer when it runs short of [`MIN_READ`].
const READ_SIZE: usize = 16 * 1024;
/// The least room a read is given.
const MIN_READ: usize = 2 * 1024;

/// Makes room in a connection's read buffer for the next read, in steps large enough that a
/// head or a body piece rarely needs two (both sides of the proxy read this way).
pub fn make_read_room(buffer: &mut BytesMut) {
    if buffer.capacity() - buffer.len() < MIN_READ {
        buffer.reserve(READ_SIZE);
    }
}

/// Takes a response body out of the read buffer, piece by piece, by its framing.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left of a body with a length.
    Length(u64),
    /// Next: a chunk-size line.
    ChunkSize,
    /// This many bytes left of the current chunk.
    ChunkData(u64),
    /// Next: the CRLF that closes a chunk.
    ChunkEnd,
    /// After the last chunk: trailer lines until an empty one; this many trailer bytes so far.
    Trailers(usize),
    /// Until the connection closes.
    UntilClose,
    /// The body has ended.
    Done,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The next piece of the body.
    Data(Bytes),
    /// The buffer holds no more of the body: read more from the connection.
    NeedMore,
    /// The body has ended.
    Done,
}

impl BodyDecoder {
    /// A decoder for a request body with `framing`.
    pub fn for_request(framing: RequestFraming) -> Self {
        Self::new(match framing {
            RequestFraming::Empty => ResponseFraming::Empty,
            RequestFraming::Length(length) => ResponseFraming::Length(length),
            RequestFraming::Chunked => ResponseFraming::Chunked,
        })
    }

    /// A decoder for a body with `framing`.
    pub fn new(framing: ResponseFraming) -> Self {
        let state = match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => State::Done,
            ResponseFraming::Length(length) => State::Length(length),
            ResponseFraming::Chunked => State::ChunkSize,
            ResponseFraming::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Takes the next piece of the body from the front of `buffer`.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                _ if buffer.is_empty() => return Ok(Decoded::NeedMore),
                State::Length(left) | State::ChunkData(left) => {
                    let data = take_up_to(buffer, left);
                    let left = left - data.len() as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), left) => State::Length(left),
                        (_, 0) => State::ChunkEnd,
                        (_, left) => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(data));
                }
                State::UntilClose => return Ok(Decoded::Data(buffer.split().freeze())),
                State::ChunkSize => {
                    let Some(line) = take_line(buffer, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.state = match chunk_size(&line)? {
                        0 => State::Trailers(0),
                        size => State::ChunkData(size),
                    };
                }
                State::ChunkEnd => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buffer[..2] != b"\r\n" {
                        return Err(WireError::Chunk);
                    }
                    buffer.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(read) => {
                    let Some(line) = take_line(buffer, MAX_HEAD_BYTES - read)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    // Trailers are not forwarded: the proxy streams bodies, and few clients
                    // ask for them.
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(read + line.len() + 2)
                    };
                }
            }
        }
    }

    /// The connection has ended: fine for a body that runs until the close (which then ends
    /// too), an error for one that had not.
    pub fn finish_at_close(&mut self) -> Result<(), WireError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(WireError::Truncated),
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The bytes still to come, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            State::Done => Some(0),
            _ => None,
        }
    }
}

/// Up to `limit` bytes off the front of `buffer` (which is not empty).
fn take_up_to(buffer: &mut BytesMut, limit: u64) -> Bytes {
    let length = usize::try_from(limit).map_or(buffer.len(), |limit| limit.min(buffer.len()));
    buffer.split_to(length).freeze()
}

/// The line at the front of `buffer` without its CRLF, once it is complete; an error if it is
/// longer than `limit`.
fn take_line(buffer: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, WireError> {
    match buffer.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) if end <= limit => {
            let line = buffer.split_to(end);
            buffer.advance(2);
            Ok(Some(line))
        }
        Some(_) => Err(WireError::Chunk),
        None if buffer.len() > limit => Err(WireError::Chunk),
        None => Ok(None),
    }
}

/// The size in a chunk-size line: hex digits, then optional extensions after `;`.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line
        .split(|&byte| byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(WireError::Chunk);
    }
    digits.iter().try_fold(0u64, |size, &digit| {
        let value = char::from(digit).to_digit(16).ok_or(WireError::Chunk)?;
        Ok(size << 4 | u64::from(value))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The header the tests' caller replaces with its own.
    static REPLACED: HeaderName = HeaderName::from_static("x-request-id");

    fn head(bytes: &[u8], method: &Method) -> Result<Option<ResponseHead>, WireError> {
        parse_response_head(&mut BytesMut::from(bytes), method, &REPLACED)
    }

    fn framing(bytes: &[u8]) -> ResponseFraming {
        head(bytes, &Method::GET).unwrap().unwrap().framing
    }

    /// The whole body of `wire` (a head and what follows), decoded from pieces of `split` bytes.
    fn body_of(wire: &[u8], split: usize, method: &Method) -> Result<(Vec<u8>, bool), WireError> {
        let mut pieces = wire.chunks(split.max(1));
        let mut buffer = BytesMut::new();
        let parsed = loop {
            if let Some(parsed) = parse_response_head(&mut buffer, method, &REPLACED)? {
                break parsed;
            }
            buffer.extend_from_slice(pieces.next().ok_or(WireError::Truncated)?);
        };
        let mut decoder = BodyDecoder::new(parsed.framing);
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buffer)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Done => return Ok((body, buffer.is_empty())),
                Decoded::NeedMore => match pieces.next() {
                    Some(piece) => buffer.extend_from_slice(piece),
                    None => {
                        decoder.finish_at_close()?;
                        return Ok((body, true));
                    }
                },
            }
        }
    }

    #[test]
    fn the_request_head_carries_the_headers_and_its_own_framing() {
        let mut out = Vec::new();
        encode_request_line(&Method::POST, "/cart?x=1", &mut out);
        encode_header("host", [b"shop.example".as_slice()], &mut out);
        encode_header("x-tag", [b"a".as_slice(), b"b"], &mut out);
        encode_header("content-length", [b"99".as_slice()], &mut out);
        encode_head_end(RequestFraming::Length(5), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /cart?x=1 HTTP/1.1\r\nhost: shop.example\r\nx-tag: a, b\r\n\
             content-length: 5\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_request_line(&Method::GET, "/", &mut out);
        encode_head_end(RequestFraming::Chunked, &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
        let mut out = Vec::new();
        encode_chunk_start(255, &mut out);
        assert_eq!(out, b"ff\r\n");
    }

    #[test]
    fn a_head_is_parsed_once_complete_and_its_values_are_kept() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Tag: a\r\nx-tag: b\r\n\r\nabc";
        assert!(head(&wire[..20], &Method::GET).unwrap().is_none());
        let mut buffer = BytesMut::from(&wire[..]);
        let parsed = parse_response_head(&mut buffer, &Method::GET, &REPLACED)
            .unwrap()
            .unwrap();
        assert_eq!(parsed.status, StatusCode::OK);
        assert_eq!(
            parsed.lines.as_bytes(),
            b"X-Tag: a\r\nx-tag: b\r\n",
            "the length is the server's to write"
        );
        let headers = parsed.lines.to_header_map();
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(parsed.framing, ResponseFraming::Length(3));
        assert!(parsed.keep_alive);
        assert_eq!(&buffer[..], b"abc", "the body stays in the buffer");
    }

    #[test]
    fn the_connections_own_headers_are_left_out() {
        let wire = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Upstream-Node\r\n\
                     Keep-Alive: timeout=5\r\nX-Upstream-Node: 7\r\nTransfer-Encoding: chunked\r\n\
                     Trailer: x-sum\r\nCache-Control: max-age=60\r\n\r\n";
        let parsed = head(wire, &Method::GET).unwrap().unwrap();
        let lines: Vec<_> = parsed.lines.iter().collect();
        assert_eq!(lines, [(&b"Cache-Control"[..], &b"max-age=60"[..])]);
        assert_eq!(parsed.framing, ResponseFraming::Chunked);
        assert!(parsed.keep_alive);
    }

    #[test]
    fn an_answer_without_a_body_keeps_its_length_for_the_client() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"v1\"\r\n\r\n";
        let parsed = head(wire, &Method::HEAD).unwrap().unwrap();
        assert_eq!(parsed.framing, ResponseFraming::Empty);
        assert_eq!(
            parsed.lines.as_bytes(),
            b"Content-Length: 1234\r\nETag: \"v1\"\r\n"
        );
    }

    /// Whether `lines` has one named `name` (in any case).
    fn has_line(lines: &HeaderLines, name: &str) -> bool {
        lines
            .iter()
            .any(|(line, _)| line.eq_ignore_ascii_case(name.as_bytes()))
    }

    #[test]
    fn header_lines_are_read_back_as_a_map() {
        let mut lines = HeaderLines::default();
        lines.push(b"Cache-Control", b"no-store");
        lines.push(b"X-Empty", b"");
        lines.push(b"cache-control", b"private");
        let headers = lines.to_header_map();
        assert_eq!(headers["x-empty"], "");
        let controls: Vec<_> = headers.get_all("cache-control").iter().collect();
        assert_eq!(controls, ["no-store", "private"]);
    }

    #[test]
    fn an_upstreams_request_id_is_left_for_the_gateways_own() {
        let wire = b"HTTP/1.1 200 OK\r\nX-Request-Id: up-1\r\nETag: \"v1\"\r\n\r\n";
        let parsed = head(wire, &Method::GET).unwrap().unwrap();
        assert_eq!(parsed.lines.as_bytes(), b"ETag: \"v1\"\r\n");
    }

    #[test]
    fn an_answer_with_both_framings_is_read_by_its_chunks_and_ends_its_connection() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\nhello\r\n0\r\n\r\n";
        let parsed = head(wire, &Method::GET).unwrap().unwrap();
        assert_eq!(parsed.framing, ResponseFraming::Chunked);
        assert!(!has_line(&parsed.lines, "content-length"));
        assert!(!parsed.keep_alive);
        assert_eq!(body_of(wire, 7, &Method::GET).unwrap().0, b"hello");
    }

    #[test]
    fn interim_answers_are_skipped() {
        let wire =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                     HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let parsed = head(wire, &Method::POST).unwrap().unwrap();
        assert_eq!(parsed.status, StatusCode::CREATED);
        assert!(!has_line(&parsed.lines, "link"));
        let switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert!(head(switching, &Method::GET).is_err());
    }

    #[test]
    fn the_framing_follows_rfc_9112() {
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"),
            ResponseFraming::Length(7)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n"),
            ResponseFraming::Length(7)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 7\r\n\r\n"
            ),
            ResponseFraming::Chunked
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ResponseFraming::UntilClose
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n"),
            ResponseFraming::UntilClose
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
            ResponseFraming::Empty
        );
        assert_eq!(
            framing(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
            ResponseFraming::Empty
        );
        let to_head = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(to_head.unwrap().unwrap().framing, ResponseFraming::Empty);
        for bad in ["7, 8", "-1", "+7", "", "0x10", "99999999999999999999999"] {
            let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                head(wire.as_bytes(), &Method::GET).unwrap_err(),
                WireError::ContentLength,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_connection_is_kept_only_when_http_1_1_says_so_and_the_body_has_an_end() {
        let keep = |wire: &[u8]| head(wire, &Method::GET).unwrap().unwrap().keep_alive;
        assert!(keep(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(b"HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn oversized_and_malformed_heads_are_refused() {
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        long.extend(std::iter::repeat_n(b"x-filler: 0123456789\r\n".as_slice(), 4000).flatten());
        assert_eq!(
            head(&long, &Method::GET).unwrap_err(),
            WireError::HeadTooLarge
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        many.extend(std::iter::repeat_n(b"x: 1\r\n".as_slice(), MAX_HEADERS + 1).flatten());
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            head(&many, &Method::GET).unwrap_err(),
            WireError::HeadTooLarge
        );
        assert!(head(b"SSH-2.0-OpenSSH\r\n\r\n", &Method::GET).is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", &Method::GET).is_err());
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     3;name=value\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 1\r\n\r\n";
        let (body, clean) = body_of(wire, wire.len(), &Method::GET).unwrap();
        assert_eq!(body, b"abc0123456789abcdef");
        assert!(clean);
        for bad in [
            &b"zz\r\n"[..],
            b"3\r\nabcXY",
            b"\r\n",
            b"1234567890abcdef0\r\n",
        ] {
            let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            wire.extend_from_slice(bad);
            wire.extend_from_slice(b"0\r\n\r\n");
            assert_eq!(
                body_of(&wire, wire.len(), &Method::GET).unwrap_err(),
                WireError::Chunk
            );
        }
    }

    #[test]
    fn a_body_cut_short_is_an_error_unless_it_runs_to_the_close() {
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(
            body_of(cut, 4, &Method::GET).unwrap_err(),
            WireError::Truncated
        );
        let chunk_cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert_eq!(
            body_of(chunk_cut, 4, &Method::GET).unwrap_err(),
            WireError::Truncated
        );
        let to_close = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(body_of(to_close, 4, &Method::GET).unwrap().0, b"all of it");
    }

    #[test]
    fn bytes_after_the_body_stay_in_the_buffer() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1";
        let (body, clean) = body_of(wire, wire.len(), &Method::GET).unwrap();
        assert_eq!(body, b"ok");
        assert!(!clean, "a connection with stray bytes must not be reused");
    }

    proptest! {
        /// However the bytes arrive, a chunked body decodes to what was sent, and nothing of
        /// it is left over.
        #[test]
        fn chunked_bodies_decode_whatever_the_read_sizes(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..8),
            split in 1usize..64,
        ) {
            let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for chunk in &chunks {
                encode_chunk_start(chunk.len(), &mut wire);
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let (body, clean) = body_of(&wire, split, &Method::GET).unwrap();
            prop_assert_eq!(body, chunks.concat());
            prop_assert!(clean);
        }

        /// Whatever an upstream sends, parsing and decoding end in a body or an error, never a
        /// panic, and a body with a length is never longer than it.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(wire in prop::collection::vec(any::<u8>(), 0..200), split in 1usize..32) {
            let mut wire_with_head = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n".to_vec();
            wire_with_head.extend_from_slice(&wire);
            if let Ok((body, _)) = body_of(&wire_with_head, split, &Method::GET) {
                prop_assert!(body.len() <= 20);
            }
            let _ = body_of(&wire, split, &Method::GET);
        }
    }
}
