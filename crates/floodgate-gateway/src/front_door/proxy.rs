//! Forwarding one request to an upstream over a kept-alive connection ([`super::upstream`]):
//! bodies streamed both ways, hop-by-hop headers removed (RFC 9110 §7.6.1), `X-Forwarded-*` and
//! `Via` added.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::Entry;
use axum::http::response::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::ClientAddr;
use super::admission::Permit;
use super::pool::Upstream;
use super::upstream::UpstreamBody;
use super::upstream::wire::HOP_BY_HOP;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const VIA_FLOODGATE: HeaderValue = HeaderValue::from_static("1.1 floodgate");

/// Why forwarding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// No response head within the route's timeout.
    Timeout,
    /// No connection, or the connection broke before a response head.
    Unreachable(String),
}

/// Sends `request` to `upstream` and returns its response head with the body still streaming.
pub(crate) async fn forward(
    upstream: &Upstream,
    mut request: Request<Body>,
    client: &ClientAddr,
    timeout: Duration,
) -> Result<Response<UpstreamBody>, ProxyError> {
    put_under(&upstream.base, request.uri_mut())?;
    prepare_request_headers(request.headers_mut(), client);
    let connections = &upstream.connections;
    // HTTP/1.1 needs a Host; a client may have sent none (or named it in `Connection`).
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(connections.authority().as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    tokio::time::timeout(timeout, connections.send(request))
        .await
        .map_err(|_| ProxyError::Timeout)?
        .map_err(|error| ProxyError::Unreachable(error.to_string()))
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

/// Removes hop-by-hop headers, including any the `Connection` header names. One pass over the
/// names, since usually none is one: removing each of the eight by name hashed every one.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named_by_connection: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let hop_by_hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            HOP_BY_HOP.contains(name)
                || (named_by_connection.iter())
                    .any(|token| token.eq_ignore_ascii_case(name.as_str()))
        })
        .cloned()
        .collect();
    for name in &hop_by_hop {
        headers.remove(name);
    }
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

/// The upstream learns who asked (`X-Forwarded-For`), how (`X-Forwarded-Proto`, kept if a load
/// balancer in front already set it), for which host (`X-Forwarded-Host`; `Host` itself is kept,
/// so a shop that serves several domains still sees which), and that floodgate passed it on.
pub fn prepare_request_headers(headers: &mut HeaderMap, client: &ClientAddr) {
    remove_hop_by_hop(headers);
    append(headers, X_FORWARDED_FOR, client.ip().clone());
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }
    append(headers, header::VIA, VIA_FLOODGATE);
}

/// Marks an upstream's answer as passed on (`Via`). Its hop-by-hop headers never got this far:
/// the upstream codec leaves them out as it reads the head (see [`super::upstream::wire`]).
pub(crate) fn prepare_response_headers(headers: &mut HeaderMap) {
    append(headers, header::VIA, VIA_FLOODGATE);
}

/// The upstream's response as the client gets it; `permit` is held until the body has streamed.
pub(crate) fn relay<B>(mut parts: Parts, body: B, permit: Option<Permit>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error> + Unpin + Send + 'static,
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
    type Error = std::io::Error;

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
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error> + Unpin,
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
        headers.insert("x-customer", "c-1".parse().unwrap());
        let client = ClientAddr::new("192.0.2.1".parse().unwrap());
        prepare_request_headers(&mut headers, &client);
        for gone in ["connection", "keep-alive", "x-trace", "te"] {
            assert!(!headers.contains_key(gone), "{gone}");
        }
        let forwarded_for: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(forwarded_for, ["203.0.113.9, 198.51.100.4, 192.0.2.1"]);
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "shop.example");
        assert_eq!(headers[header::HOST], "shop.example");
        assert_eq!(headers[header::VIA], "1.1 floodgate");
        assert_eq!(headers["x-customer"], "c-1");
    }
}
