//! Forwarding one request to an upstream over a kept-alive connection ([`super::upstream`]):
//! bodies streamed both ways, hop-by-hop headers removed (RFC 9110 §7.6.1), `X-Forwarded-*` and
//! `Via` added.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::response::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::admission::Permit;
use super::upstream::{Connections, SendError, UpstreamBody};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const VIA_FLOODGATE: &str = "1.1 floodgate";

/// Why forwarding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// No response head within the route's timeout.
    Timeout,
    /// No connection, or the connection broke before a response head.
    Unreachable(String),
}

/// The upstream side of the front door.
#[derive(Clone, Default)]
pub(crate) struct Proxy {
    connections: Connections,
}

impl Proxy {
    /// Opens up to `count` idle connections to `base`; how many it opened.
    pub(crate) async fn open_connections(&self, base: &Uri, count: usize) -> usize {
        match base.authority() {
            Some(authority) => self.connections.open(authority, count).await,
            None => 0,
        }
    }

    /// Sends `request` to `base` and returns the upstream's response head with its body still
    /// streaming. A request without a body that fails on a reused connection (the upstream may
    /// have closed it while idle) is tried once more.
    pub(crate) async fn forward(
        &self,
        base: &Uri,
        mut request: Request<Body>,
        client: SocketAddr,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let authority = base
            .authority()
            .cloned()
            .ok_or_else(|| ProxyError::Unreachable(format!("{base} names no host")))?;
        *request.uri_mut() = upstream_path(base, request.uri())?;
        prepare_request_headers(request.headers_mut(), client);
        // HTTP/1.1 needs a Host; a client may have sent none (or named it in `Connection`).
        if !request.headers().contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        let replay = matches!(*request.method(), Method::GET | Method::HEAD).then(|| {
            let mut head = Request::new(Body::empty());
            *head.method_mut() = request.method().clone();
            *head.uri_mut() = request.uri().clone();
            *head.headers_mut() = request.headers().clone();
            head
        });
        let exchange = async {
            match self.connections.send(&authority, request).await {
                Err(SendError::Exchange { reused: true, .. }) if replay.is_some() => {
                    let head = replay.expect("checked");
                    self.connections.send(&authority, head).await
                }
                sent => sent,
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ProxyError::Timeout)?
            .map_err(|error| ProxyError::Unreachable(error.to_string()))
    }
}

/// The request's path and query under `base`'s path, in origin form.
fn upstream_path(base: &Uri, requested: &Uri) -> Result<Uri, ProxyError> {
    let prefix = base.path().trim_end_matches('/');
    let path_and_query = requested
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    format!("{prefix}{path_and_query}")
        .parse()
        .map_err(|_| ProxyError::Unreachable("request path not forwardable".into()))
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn append(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = match headers
        .get(&name)
        .and_then(|existing| existing.to_str().ok())
    {
        Some(existing) => format!("{existing}, {value}"),
        None => value.to_owned(),
    };
    if let Ok(joined) = HeaderValue::from_str(&joined) {
        headers.insert(name, joined);
    }
}

/// The upstream learns who asked (`X-Forwarded-For`), how (`X-Forwarded-Proto`, kept if a load
/// balancer in front already set it), for which host (`X-Forwarded-Host`; `Host` itself is kept,
/// so a shop that serves several domains still sees which), and that floodgate passed it on.
pub fn prepare_request_headers(headers: &mut HeaderMap, client: SocketAddr) {
    remove_hop_by_hop(headers);
    append(headers, X_FORWARDED_FOR, &client.ip().to_string());
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }
    append(headers, header::VIA, VIA_FLOODGATE);
}

/// Cleans an upstream response head for the client: hop-by-hop headers out, `Via` in.
pub(crate) fn prepare_response_headers(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    append(headers, header::VIA, VIA_FLOODGATE);
}

/// The upstream's response as the client gets it; `permit` is held until the body has streamed.
pub(crate) fn relay<B>(mut parts: Parts, body: B, permit: Option<Permit>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin + Send + 'static,
{
    prepare_response_headers(&mut parts.headers);
    Response::from_parts(parts, Body::new(Guarded { body, permit }))
}

/// A body read as far as needed to know whether it fits in `limit` bytes.
pub(crate) enum Buffered {
    /// All of it.
    Whole(Bytes),
    /// Too large: what was read, then the rest, still streaming.
    TooLarge(Box<Prefixed>),
    /// The upstream broke off.
    Broken,
}

/// Reads `body` whole if it is at most `limit` bytes.
pub(crate) async fn buffer(mut body: UpstreamBody, limit: usize) -> Buffered {
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
                return Buffered::TooLarge(Box::new(Prefixed { read, rest: body }));
            }
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(length);
    for chunk in read {
        whole.extend_from_slice(&chunk);
    }
    Buffered::Whole(whole.freeze())
}

/// The chunks already read, then the rest of the body.
pub(crate) struct Prefixed {
    read: VecDeque<Bytes>,
    rest: UpstreamBody,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.read.pop_front() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Pin::new(&mut self.rest).poll_frame(context),
        }
    }
}

/// A streaming body that gives the pool slot back when it ends.
struct Guarded<B> {
    body: B,
    permit: Option<Permit>,
}

impl<B> hyper::body::Body for Guarded<B>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = hyper::Error;

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
        let base: Uri = "http://127.0.0.1:8000/".parse().unwrap();
        let asked: Uri = "/shop/rods?page=2".parse().unwrap();
        assert_eq!(upstream_path(&base, &asked).unwrap(), "/shop/rods?page=2");
        let prefixed: Uri = "http://10.0.0.1/legacy".parse().unwrap();
        assert_eq!(
            upstream_path(&prefixed, &asked).unwrap(),
            "/legacy/shop/rods?page=2"
        );
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
        headers.insert("x-customer", "c-1".parse().unwrap());
        prepare_request_headers(&mut headers, "192.0.2.1:5555".parse().unwrap());
        for gone in ["connection", "keep-alive", "x-trace", "te"] {
            assert!(!headers.contains_key(gone), "{gone}");
        }
        assert_eq!(headers[X_FORWARDED_FOR], "203.0.113.9, 192.0.2.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "shop.example");
        assert_eq!(headers[header::HOST], "shop.example");
        assert_eq!(headers[header::VIA], "1.1 floodgate");
        assert_eq!(headers["x-customer"], "c-1");
    }
}
