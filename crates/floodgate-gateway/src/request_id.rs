//! A request id on every public request: taken from a well-formed `X-Request-Id` (a load
//! balancer's), or made here; put on the request (so the origin sees it), on every log line of
//! the request (a tracing span), and on the response.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use floodgate_core::hex;
use tracing::Span;

/// The header, in and out (a `HeaderName`, so no lookup parses the name again).
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest id taken from a client; longer ones are replaced, so logs stay bounded.
const MAX_ID_BYTES: usize = 128;

/// Takes or makes the request's id, puts it on the request, and opens the request's span;
/// [`stamp`] puts the id on the answer.
pub(crate) fn tag(request: &mut Request) -> (HeaderValue, Span) {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| well_formed(value.as_bytes()))
        .cloned()
        .unwrap_or_else(new_id);
    request.headers_mut().insert(REQUEST_ID, id.clone());
    // At the highest level, so the span is kept whenever any event of the request is logged.
    // Two fields, both Display. The fmt layer writes a span's fields when it opens, each
    // through the `fmt` machinery: about 1,000 instructions a field with the default
    // formatter (callgrind), so method and path share one (`/healthz` 23.6 k -> 22.7 k). A `str`
    // field would go through `Debug`, escaping char by char, where a checked id and a parsed
    // path (no spaces, no control characters) have nothing to escape.
    let span = tracing::error_span!(
        "request",
        request_id = %id.to_str().unwrap_or_default(),
        line = %RequestLine(request.method(), request.uri().path()),
    );
    (id, span)
}

/// A request's method and path, as in the first line of an HTTP request: `POST /cart`.
struct RequestLine<'a>(&'a Method, &'a str);

impl std::fmt::Display for RequestLine<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.0.as_str())?;
        formatter.write_str(" ")?;
        formatter.write_str(self.1)
    }
}

/// Puts the request's id on its answer.
pub(crate) fn stamp(response: &mut Response, id: HeaderValue) {
    response.headers_mut().insert(REQUEST_ID, id);
}

/// An id made here: a random prefix per process and a counter, 32 hex digits like a UUID's.
/// The prefix keeps ids apart across restarts and nodes without asking the kernel for
/// randomness per request (that `getrandom` was one of a proxied request's five system calls).
/// Ids label log lines; they are not secrets, and the counter makes them predictable.
fn new_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(32);
    hex::push_digits(
        &mut id,
        (u128::from(*prefix) << 64) | u128::from(serial),
        32,
    );
    HeaderValue::try_from(id).expect("hex digits are a valid header value")
}

/// Visible ASCII without spaces, up to [`MAX_ID_BYTES`].
fn well_formed(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ids_are_taken() {
        assert!(well_formed(b"lb-7f3a.42"));
        assert!(!well_formed(b""));
        assert!(!well_formed(b"has space"));
        assert!(!well_formed(&[b'a'; 129]));
    }

    #[test]
    fn the_request_line_is_method_space_path() {
        let line = RequestLine(&Method::POST, "/api/drops/spring/orders").to_string();
        assert_eq!(line, "POST /api/drops/spring/orders");
    }

    #[test]
    fn ids_made_here_are_distinct_and_well_formed() {
        let (first, second) = (new_id(), new_id());
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
        assert!(well_formed(first.as_bytes()));
        assert_eq!(
            first.as_bytes()[..16],
            second.as_bytes()[..16],
            "one prefix per process"
        );
    }
}
