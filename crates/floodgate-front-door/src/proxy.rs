//! Forwarding one request to an upstream over a kept-alive connection ([`super::upstream`]):
//! bodies streamed both ways, hop-by-hop headers left out (RFC 9110 §7.6.1), `X-Forwarded-*` and
//! `Via` added, the request's head written straight from the client's headers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::Entry;
use axum::http::response::Parts;
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::admission::Permit;
use super::pool::Upstream;
use super::upstream::{ExchangeError, SendError, UpstreamBody, request_framing};
use floodgate_http::ClientAddr;
use floodgate_http::wire::{self, HOP_BY_HOP, HeaderLines, RequestFraming};

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The request's id, in and out: the application stamps each request and answer with one, and an
/// upstream's own is left out as its answer is read (a `HeaderName`, so no lookup parses it).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static VIA_FLOODGATE: HeaderValue = HeaderValue::from_static("1.1 floodgate");

/// Why forwarding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// No response head within the route's timeout.
    Timeout,
    /// No connection, or the connection broke before a response head.
    Unreachable(String),
    /// The client's own body could not be read (malformed, cut short, or too slow): the
    /// client's failure, never the upstream's.
    ClientBody,
}

/// Sends `request` to `upstream` and returns its response head with the body still streaming.
pub(crate) async fn forward(
    upstream: &Upstream,
    request: Request<Body>,
    client: &ClientAddr,
    timeout: Duration,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    put_under(&upstream.base, &mut parts.uri)?;
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let connections = &upstream.connections;
    let framing = request_framing(&parts.method, &body);
    let mut head = Vec::with_capacity(512);
    encode_forwarded_head(
        &parts.method,
        target,
        &parts.headers,
        client,
        connections.authority(),
        framing,
        &mut head,
    );
    connections
        .send(&parts.method, &head, framing, body, timeout)
        .await
        .map_err(|error| match error {
            SendError::TimedOut => ProxyError::Timeout,
            SendError::Exchange(ExchangeError::RequestBody(_) | ExchangeError::RequestBodyLate) => {
                ProxyError::ClientBody
            }
            error => ProxyError::Unreachable(error.to_string()),
        })
}

/// Rewrites `uri` to the request's path and query under `base`'s path, in origin form; a URI
/// already in that form under a base without a path is left as it is.
fn put_under(base: &Uri, uri: &mut Uri) -> Result<(), ProxyError> {
    let prefix = base.path().trim_end_matches('/');
    if prefix.is_empty() && uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(());
    }
    let path_and_query = uri
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    *uri = format!("{prefix}{path_and_query}")
        .parse()
        .map_err(|_| ProxyError::Unreachable("request path not forwardable".into()))?;
    Ok(())
}

/// Adds `value` to the list in header `name`, after the values it has (joined into one line).
fn append(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
        Entry::Occupied(mut slot) => {
            let mut joined = Vec::new();
            for existing in slot.iter() {
                joined.extend_from_slice(existing.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
            if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                slot.insert(joined);
            }
        }
    }
}

/// Appends the head of a request forwarded to the upstream at `authority`: `method` and
/// `target` (origin form), then the client's `headers` without the hop-by-hop ones and any that
/// `Connection` names (RFC 9110 §7.6.1), then who asked (`X-Forwarded-For`), how
/// (`X-Forwarded-Proto`) and for which host (`X-Forwarded-Host`; `Host` itself is kept, so a
/// shop that serves several domains still sees which, and is the upstream's own when the
/// client sent none), that floodgate passed it on (`Via`), and the body's `framing`.
///
/// What a client says of where a request comes from is believed only of a trusted proxy: its
/// `X-Forwarded-For` is extended, its `-Proto` and `-Host` are kept. Anyone else's forwarding
/// headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are left out, so an origin that builds
/// links or checks addresses from them sees floodgate's word only.
///
/// Written straight from the client's headers: adding these to the header map first, then
/// writing it, cost a proxied request 2 k instructions, most of them hashing header names.
pub fn encode_forwarded_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    client: &ClientAddr,
    authority: &Authority,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    let named_by_connection: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let trusted = client.is_trusted_proxy();
    let forwarded = |name: &HeaderName| {
        !HOP_BY_HOP.contains(name)
            && (trusted || !claims_origin(name))
            && !(named_by_connection.iter()).any(|token| token.eq_ignore_ascii_case(name.as_str()))
    };
    // Forwarded as they are, but for the lists floodgate extends: those come after the loop,
    // the earlier hops' values first (kept here: they are rare, and a vector allocates nothing
    // until it holds one).
    let (mut hops, mut vias) = (Vec::new(), Vec::new());
    let (mut proto, mut forwarded_host, mut host) = (false, false, None);
    wire::encode_request_line(method, target, out);
    for (name, value) in headers {
        if !forwarded(name) {
            continue;
        }
        if *name == X_FORWARDED_FOR {
            hops.push(value.as_bytes());
        } else if *name == header::VIA {
            vias.push(value.as_bytes());
        } else {
            proto |= *name == X_FORWARDED_PROTO;
            forwarded_host |= *name == X_FORWARDED_HOST;
            if *name == header::HOST {
                host = Some(value.as_bytes());
            }
            wire::encode_header(name.as_str(), [value.as_bytes()], out);
        }
    }
    let hops = hops.into_iter().chain([client.ip().as_bytes()]);
    wire::encode_header(X_FORWARDED_FOR.as_str(), hops, out);
    if !proto {
        let scheme: &[u8] = if client.is_tls() { b"https" } else { b"http" };
        wire::encode_header(X_FORWARDED_PROTO.as_str(), [scheme], out);
    }
    match host {
        Some(host) if !forwarded_host => {
            wire::encode_header(X_FORWARDED_HOST.as_str(), [host], out);
        }
        Some(_) => {}
        // HTTP/1.1 needs a Host; the client sent none (or named it in `Connection`).
        None => wire::encode_header(header::HOST.as_str(), [authority.as_str().as_bytes()], out),
    }
    let vias = vias.into_iter().chain([VIA_FLOODGATE.as_bytes()]);
    wire::encode_header(header::VIA.as_str(), vias, out);
    wire::encode_head_end(framing, out);
}

/// Whether a header says where a request came from, which only a trusted proxy may.
fn claims_origin(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
}

/// Marks an upstream's answer as passed on (`Via`), in its header lines as they came or in its
/// header map once they have been read into it ([`read_answer_headers`]). Its hop-by-hop
/// headers never got this far: the upstream codec leaves them out as it reads the head (see
/// [`super::upstream::wire`]).
pub(crate) fn mark_passed_on(parts: &mut Parts) {
    match parts.extensions.get_mut::<HeaderLines>() {
        // A line of its own: several `Via` lines are one list (RFC 9110 §5.3).
        Some(lines) => lines.push(header::VIA.as_str().as_bytes(), VIA_FLOODGATE.as_bytes()),
        None => append(&mut parts.headers, header::VIA, VIA_FLOODGATE.clone()),
    }
}

/// Moves an upstream answer's header lines into its header map, for code that reads them.
pub(crate) fn read_answer_headers(parts: &mut Parts) {
    if let Some(lines) = parts.extensions.remove::<HeaderLines>() {
        parts.headers.extend(lines.to_header_map());
    }
}

/// The upstream's response as the client gets it; `permit` is held until the body has streamed.
pub(crate) fn relay<B>(mut parts: Parts, body: B, permit: Option<Permit>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes, Error = std::io::Error> + Unpin + Send + 'static,
{
    mark_passed_on(&mut parts);
    Response::from_parts(parts, Body::new(Guarded { body, permit }))
}

/// A body read as far as needed to know whether it fits in `limit` bytes.
pub(crate) enum Buffered<B> {
    /// All of it.
    Whole(Bytes),
    /// Too large: what was read, then the rest, still streaming.
    TooLarge(Box<Prefixed<B>>),
    /// The body broke off.
    Broken,
}

/// Reads `body` whole if it is at most `limit` bytes: an answer for the cache, or a client's
/// request body before it takes an origin slot (as nginx buffers it).
pub(crate) async fn buffer<B>(mut body: B, limit: usize) -> Buffered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut read = VecDeque::new();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Buffered::Broken;
        };
        if let Ok(data) = frame.into_data() {
            length += data.len();
            read.push_back(data);
            if length > limit {
                let prefix = length as u64;
                return Buffered::TooLarge(Box::new(Prefixed {
                    read,
                    prefix,
                    rest: body,
                }));
            }
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(length);
    for chunk in read {
        whole.extend_from_slice(&chunk);
    }
    Buffered::Whole(whole.freeze())
}

/// The chunks already read (`prefix` bytes in all), then the rest of the body.
pub(crate) struct Prefixed<B> {
    read: VecDeque<Bytes>,
    prefix: u64,
    rest: B,
}

impl<B> http_body::Body for Prefixed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.read.pop_front() {
            Some(chunk) => {
                self.prefix -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Pin::new(&mut self.rest).poll_frame(context),
        }
    }

    /// The rest's, with what is still held before it: a length the client said is kept.
    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.prefix);
        }
        hint
    }
}

/// A streaming body that gives the pool slot back when it ends.
struct Guarded<B> {
    body: B,
    permit: Option<Permit>,
}

impl<B> http_body::Body for Guarded<B>
where
    B: http_body::Body<Data = Bytes, Error = std::io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(context);
        match &polled {
            Poll::Ready(None) => {
                if let Some(permit) = self.permit.take() {
                    permit.finish(false);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(permit) = self.permit.take() {
                    permit.finish(true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_and_query_go_under_the_base() {
        let put = |base: &str, asked: &str| {
            let mut uri: Uri = asked.parse().unwrap();
            put_under(&base.parse().unwrap(), &mut uri).unwrap();
            uri
        };
        let root = "http://127.0.0.1:8000/";
        assert_eq!(put(root, "/shop/rods?page=2"), "/shop/rods?page=2");
        assert_eq!(put(root, "http://shop.example/shop/rods"), "/shop/rods");
        let legacy = "http://10.0.0.1/legacy";
        assert_eq!(put(legacy, "/shop/rods?page=2"), "/legacy/shop/rods?page=2");
    }

    /// The head `encode_forwarded_head` writes for a GET of `/page` with `headers`, as the
    /// upstream reads it: the header lines in order.
    fn forwarded_lines(headers: &HeaderMap, trusted: bool) -> Vec<(String, String)> {
        let ip = "192.0.2.1".parse().unwrap();
        let proxies = ["192.0.2.0/24".parse().unwrap()];
        let client = ClientAddr::new(ip).trusted_if_in(if trusted { &proxies } else { &[] });
        let authority = Authority::from_static("origin.internal:8080");
        let mut head = Vec::new();
        let framing = RequestFraming::Empty;
        encode_forwarded_head(
            &Method::GET,
            "/page",
            headers,
            &client,
            &authority,
            framing,
            &mut head,
        );
        let mut lines = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut lines);
        assert!(request.parse(&head).unwrap().is_complete());
        assert_eq!((request.method, request.path), (Some("GET"), Some("/page")));
        (request.headers.iter())
            .map(|line| {
                (
                    line.name.to_owned(),
                    String::from_utf8(line.value.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn value<'a>(lines: &'a [(String, String)], name: &str) -> Option<&'a str> {
        let mut found = lines.iter().filter(|(each, _)| each == name);
        let value = found.next().map(|(_, value)| value.as_str());
        assert!(found.next().is_none(), "{name} twice: {lines:?}");
        value
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-trace".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-trace", "1".parse().unwrap());
        headers.insert(header::TE, "trailers".parse().unwrap());
        headers.insert(header::HOST, "shop.example".parse().unwrap());
        headers.insert(X_FORWARDED_FOR, "203.0.113.9".parse().unwrap());
        headers.append(X_FORWARDED_FOR, "198.51.100.4".parse().unwrap());
        headers.insert(header::VIA, "1.1 cdn".parse().unwrap());
        headers.insert("x-customer", "c-1".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        let lines = forwarded_lines(&headers, true);
        for gone in [
            "connection",
            "keep-alive",
            "x-trace",
            "te",
            "content-length",
        ] {
            assert_eq!(value(&lines, gone), None, "{gone}");
        }
        let forwarded_for = value(&lines, "x-forwarded-for");
        assert_eq!(forwarded_for, Some("203.0.113.9, 198.51.100.4, 192.0.2.1"));
        assert_eq!(value(&lines, "x-forwarded-proto"), Some("http"));
        assert_eq!(value(&lines, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(value(&lines, "host"), Some("shop.example"));
        assert_eq!(value(&lines, "via"), Some("1.1 cdn, 1.1 floodgate"));
        assert_eq!(value(&lines, "x-customer"), Some("c-1"));
    }

    #[test]
    fn a_load_balancers_forwarding_headers_are_kept_and_a_missing_host_is_the_upstreams() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        headers.insert(X_FORWARDED_HOST, "shop.example".parse().unwrap());
        let lines = forwarded_lines(&headers, true);
        assert_eq!(value(&lines, "x-forwarded-proto"), Some("https"));
        assert_eq!(value(&lines, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(value(&lines, "host"), Some("origin.internal:8080"));
        assert_eq!(value(&lines, "x-forwarded-for"), Some("192.0.2.1"));
        assert_eq!(value(&lines, "via"), Some("1.1 floodgate"));
        let mut named = HeaderMap::new();
        named.insert(header::HOST, "shop.example".parse().unwrap());
        named.insert(X_FORWARDED_FOR, "203.0.113.9".parse().unwrap());
        named.insert(header::CONNECTION, "host, x-forwarded-for".parse().unwrap());
        let lines = forwarded_lines(&named, true);
        assert_eq!(
            value(&lines, "host"),
            Some("origin.internal:8080"),
            "a Host named by Connection"
        );
        assert_eq!(value(&lines, "x-forwarded-host"), None);
        assert_eq!(value(&lines, "x-forwarded-for"), Some("192.0.2.1"));
    }

    #[test]
    fn a_clients_own_word_on_where_it_comes_from_is_not_passed_on() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "shop.example".parse().unwrap());
        for (name, value) in [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("forwarded", "for=10.0.0.1;host=evil.example"),
            ("x-real-ip", "10.0.0.1"),
        ] {
            headers.insert(HeaderName::from_static(name), value.parse().unwrap());
        }
        let lines = forwarded_lines(&headers, false);
        assert_eq!(value(&lines, "x-forwarded-for"), Some("192.0.2.1"));
        assert_eq!(value(&lines, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(value(&lines, "x-forwarded-proto"), Some("http"));
        for gone in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "forwarded",
            "x-real-ip",
        ] {
            assert_eq!(value(&lines, gone), None, "{gone}");
        }
        let trusted = forwarded_lines(&headers, true);
        assert_eq!(
            value(&trusted, "x-forwarded-for"),
            Some("10.0.0.1, 192.0.2.1")
        );
        assert_eq!(value(&trusted, "x-forwarded-host"), Some("evil.example"));
        assert_eq!(
            value(&trusted, "forwarded"),
            Some("for=10.0.0.1;host=evil.example")
        );
    }
}
