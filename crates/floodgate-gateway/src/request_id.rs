//! A request id on every public request: taken from a well-formed `X-Request-Id` (a load
//! balancer's), or made here; put on the request (so the origin sees it), on every log line of
//! the request (a tracing span), and on the response.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header, in and out.
pub(crate) const REQUEST_ID: &str = "x-request-id";
/// Longest id taken from a client; longer ones are replaced, so logs stay bounded.
const MAX_ID_BYTES: usize = 128;

/// The middleware.
pub(crate) async fn tag(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|value| well_formed(value.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
                .expect("a uuid is a valid header value")
        });
    request.headers_mut().insert(REQUEST_ID, id.clone());
    // At the highest level, so the span is kept whenever any event of the request is logged.
    let span = tracing::error_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
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
}
