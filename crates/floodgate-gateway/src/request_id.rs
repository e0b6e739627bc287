//! A request id on every public request: taken from a well-formed `X-Request-Id` (a load
//! balancer's), or made here; put on the request (so the origin sees it), on every log line
//! written while the request is served, and on the response.
//!
//! The log lines get it from the thread's current [`RequestLabel`], not from a tracing span: a
//! span's fields are formatted when it opens, so every request paid for lines that few
//! requests write (a proxied request 31.6 k instructions with its span, 27.4 k without; `/healthz`
//! 22.2 k and 18.4 k). A label is formatted only when a line is written, as nginx's error log
//! adds the request to its lines. The log formatters read it with [`with_current_request`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use floodgate_core::hex;

use floodgate_http::wire::HeaderLines;

/// The header, in and out: the one the front door leaves out of an upstream's answer.
pub(crate) use floodgate_front_door::X_REQUEST_ID as REQUEST_ID;
/// Longest id taken from a client; longer ones are replaced, so logs stay bounded.
const MAX_ID_BYTES: usize = 128;

/// What a request's log lines say about it: its id and its request line.
#[derive(Debug)]
pub(crate) struct RequestLabel {
    id: HeaderValue,
    method: Method,
    target: Option<PathAndQuery>,
}

impl RequestLabel {
    /// The request's id (visible ASCII, checked when it was taken).
    pub(crate) fn id(&self) -> &str {
        self.id.to_str().unwrap_or_default()
    }

    /// The request's method and path, as in the first line of an HTTP request: `POST /cart`.
    pub(crate) fn line(&self) -> RequestLine<'_> {
        RequestLine(
            &self.method,
            self.target.as_ref().map_or("/", PathAndQuery::path),
        )
    }
}

/// A request's method and path, as in the first line of an HTTP request: `POST /cart`.
pub(crate) struct RequestLine<'a>(&'a Method, &'a str);

impl std::fmt::Display for RequestLine<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.0.as_str())?;
        formatter.write_str(" ")?;
        formatter.write_str(self.1)
    }
}

/// Takes or makes the request's id and puts it on the request; the id, for [`stamp`] to put on
/// the answer, and the request's label, for [`labelled`].
pub(crate) fn tag(request: &mut Request) -> (HeaderValue, RequestLabel) {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| well_formed(value.as_bytes()))
        .cloned()
        .unwrap_or_else(new_id);
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let label = RequestLabel {
        id: id.clone(),
        method: request.method().clone(),
        target: request.uri().path_and_query().cloned(),
    };
    (id, label)
}

thread_local! {
    /// The request whose future this thread is polling, if any.
    static CURRENT: RefCell<Option<RequestLabel>> = const { RefCell::new(None) };
}

/// Runs `future` with `label` as its thread's current request whenever it is polled, so every
/// line it logs names the request.
pub(crate) fn labelled<F: Future>(label: RequestLabel, future: F) -> Labelled<F> {
    Labelled {
        label: Some(label),
        future,
    }
}

pin_project_lite::pin_project! {
    /// A future with its request's label (a struct, not an `async fn`, whose first poll would
    /// copy the whole request future once more).
    pub(crate) struct Labelled<F> {
        label: Option<RequestLabel>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Labelled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = Current::install(this.label);
        this.future.poll(context)
    }
}

/// Calls `with` with the request being served on this thread, if any.
pub(crate) fn with_current_request<R>(with: impl FnOnce(Option<&RequestLabel>) -> R) -> R {
    CURRENT.with_borrow(|current| with(current.as_ref()))
}

/// A label installed as the current request; dropped (after a poll, or while unwinding from
/// one), it takes the label back and reinstates what it replaced.
struct Current<'a> {
    label: &'a mut Option<RequestLabel>,
    replaced: Option<RequestLabel>,
}

impl<'a> Current<'a> {
    fn install(label: &'a mut Option<RequestLabel>) -> Self {
        let replaced = CURRENT.replace(label.take());
        Self { label, replaced }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        *self.label = CURRENT.replace(self.replaced.take());
    }
}

/// Puts the request's id on its answer. An upstream's answer gets it among the lines it came
/// with (which have left out the upstream's own id), so its header map stays empty: giving
/// the map this one header cost an allocation and hashing, 0.4 k instructions.
pub(crate) fn stamp(response: &mut Response, id: HeaderValue) {
    match response.extensions_mut().get_mut::<HeaderLines>() {
        Some(lines) => lines.push(REQUEST_ID.as_str().as_bytes(), id.as_bytes()),
        None => {
            response.headers_mut().insert(REQUEST_ID, id);
        }
    }
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

    fn label(id: &'static str, line: &str) -> RequestLabel {
        let (method, target) = line.split_once(' ').unwrap();
        RequestLabel {
            id: HeaderValue::from_static(id),
            method: method.parse().unwrap(),
            target: Some(target.parse().unwrap()),
        }
    }

    #[test]
    fn the_request_line_is_method_space_path_without_the_query() {
        let label = label("lb-42", "POST /api/drops/spring/orders?debug=1");
        assert_eq!(label.line().to_string(), "POST /api/drops/spring/orders");
        assert_eq!(label.id(), "lb-42");
    }

    #[test]
    fn a_label_is_current_only_while_its_future_is_polled() {
        let current_id = || with_current_request(|label| label.map(|label| label.id().to_owned()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (inner, outer) = runtime.block_on(async {
            let inner = labelled(label("outer", "GET /a"), async {
                let before = current_id();
                tokio::task::yield_now().await;
                let nested = labelled(label("inner", "GET /b"), async { current_id() }).await;
                (before, nested, current_id())
            })
            .await;
            (inner, current_id())
        });
        assert_eq!(
            inner,
            (
                Some("outer".to_owned()),
                Some("inner".to_owned()),
                Some("outer".to_owned())
            ),
            "the label survives a yield, and a nested one gives way to it again"
        );
        assert_eq!(outer, None);
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
