//! The legacy order system as the dispatcher sees it: something that takes one order and
//! answers, and the rules ("Downstream" in API.md) that turn an answer into what happens next.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use floodgate_core::{Clock, Order, Timestamp};
use http::{HeaderMap, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// The longest `Retry-After` honoured; a longer one is taken as this (a bogus header must not
/// stop delivery for days).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The longest answer body read, for its `reference`.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the downstream did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// It answered.
    Answered {
        /// The status.
        status: StatusCode,
        /// Its `Retry-After`, as a delay from now.
        retry_after: Option<Duration>,
        /// `reference` from a JSON body, if any.
        reference: Option<String>,
    },
    /// No answer: refused or dropped connection, broken response.
    Unreachable(String),
}

/// The future a delivery returns.
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// A legacy order system. The dispatcher bounds each delivery with its own timeout.
pub trait Downstream: Send + Sync + 'static {
    /// Sends one order, with `Idempotency-Key: <order_id>`.
    fn deliver<'a>(&'a self, order: &'a Order) -> ReplyFuture<'a>;
}

/// What a reply means for the order and for the pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx, or 409 (it had the order already).
    Confirmed { reference: Option<String> },
    /// Any other 4xx: refused for good.
    Rejected { reason: String },
    /// 429, 5xx, timeout, no connection, or an answer that means neither yes nor no.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        /// 429, 503, 504 or a timeout: the downstream is saturated, so slow down.
        overload: bool,
    },
}

/// Applies API.md's table; `None` is a delivery that timed out.
pub(crate) fn verdict(reply: Option<Reply>) -> Verdict {
    let (status, retry_after, reference) = match reply {
        None => {
            return Verdict::Retry {
                reason: "timed out".into(),
                retry_after: None,
                overload: true,
            };
        }
        Some(Reply::Unreachable(reason)) => {
            return Verdict::Retry {
                reason,
                retry_after: None,
                overload: false,
            };
        }
        Some(Reply::Answered {
            status,
            retry_after,
            reference,
        }) => (status, retry_after, reference),
    };
    if status.is_success() || status == StatusCode::CONFLICT {
        return Verdict::Confirmed { reference };
    }
    let reason = format!("answered {status}");
    let overload = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    );
    if status.is_client_error() && !overload {
        Verdict::Rejected { reason }
    } else {
        Verdict::Retry {
            reason,
            retry_after,
            overload,
        }
    }
}

/// The body of a delivery, as API.md's "Downstream" specifies it.
pub fn order_body(order: &Order) -> serde_json::Value {
    serde_json::json!({
        "order_id": order.order_id.as_str(),
        "drop": order.drop_id.as_str(),
        "sku": order.sku,
        "quantity": order.quantity,
        "customer": order.customer,
        "accepted_at": order.accepted_at,
    })
}

/// A downstream reached over HTTP/1.1 with pooled keep-alive connections.
pub struct HttpDownstream {
    url: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    clock: Clock,
}

impl HttpDownstream {
    /// Opens and closes a TCP connection to the downstream at `url`, sending nothing: the
    /// pre-warm's check that it can be reached, which no legacy system can mistake for an order.
    pub async fn check_reachable(url: &Uri, timeout: Duration) -> Result<(), String> {
        let host = url.host().ok_or_else(|| format!("{url} names no host"))?;
        let port = url.port_u16().unwrap_or(80);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
            Ok(Ok(_connection)) => Ok(()),
            Ok(Err(error)) => Err(format!("cannot connect to {host}:{port}: {error}")),
            Err(_) => Err(format!("no connection to {host}:{port} within {timeout:?}")),
        }
    }

    /// A client for `url` (`http://…`). The clock reads `Retry-After` dates.
    pub fn new(url: Uri, clock: Clock) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { url, client, clock }
    }

    async fn post(&self, order: &Order) -> Result<Reply, String> {
        let body = order_body(order);
        let request = Request::post(self.url.clone())
            .header("idempotency-key", order.order_id.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| error.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| format!("no answer: {error}"))?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), self.clock.now());
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| format!("broken answer: {error}"))?
            .to_bytes();
        Ok(Reply::Answered {
            status,
            retry_after,
            reference: reference(&body),
        })
    }
}

impl Downstream for HttpDownstream {
    fn deliver<'a>(&'a self, order: &'a Order) -> ReplyFuture<'a> {
        Box::pin(async move { self.post(order).await.unwrap_or_else(Reply::Unreachable) })
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3), capped.
fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let format = time::format_description::well_known::Rfc2822;
            let at = time::OffsetDateTime::parse(value, &format).ok()?;
            let millis = (at.unix_timestamp_nanos() / 1_000_000) as i64 - now.unix_millis();
            Duration::from_millis(u64::try_from(millis).unwrap_or(0))
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

fn reference(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Answer {
        reference: Option<String>,
    }
    serde_json::from_slice::<Answer>(body).ok()?.reference
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, retry_after: Option<u64>) -> Option<Reply> {
        Some(Reply::Answered {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: retry_after.map(Duration::from_secs),
            reference: Some("L-1".into()),
        })
    }

    #[test]
    fn answers_map_as_api_md_says() {
        let confirmed = Verdict::Confirmed {
            reference: Some("L-1".into()),
        };
        assert_eq!(verdict(answered(201, None)), confirmed);
        assert_eq!(verdict(answered(200, None)), confirmed);
        assert_eq!(verdict(answered(409, None)), confirmed);
        for status in [400, 404, 422] {
            assert!(matches!(
                verdict(answered(status, None)),
                Verdict::Rejected { .. }
            ));
        }
        for (status, overload) in [
            (429, true),
            (503, true),
            (504, true),
            (500, false),
            (502, false),
        ] {
            let Verdict::Retry {
                overload: seen,
                retry_after,
                ..
            } = verdict(answered(status, Some(2)))
            else {
                panic!("{status} should be retried");
            };
            assert_eq!(
                (seen, retry_after),
                (overload, Some(Duration::from_secs(2)))
            );
        }
        // A redirect is neither yes nor no: retried, and dead-lettered if it persists.
        assert!(matches!(
            verdict(answered(302, None)),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(None),
            Verdict::Retry { overload: true, .. }
        ));
        let unreachable = Some(Reply::Unreachable("refused".into()));
        assert!(matches!(
            verdict(unreachable),
            Verdict::Retry {
                overload: false,
                ..
            }
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = Timestamp::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(header("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            header("Sun, 22 Nov 2026 10:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            header("Sun, 22 Nov 2026 09:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(header("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(header("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn the_reference_comes_from_a_json_body_if_there_is_one() {
        assert_eq!(
            reference(br#"{"reference":"L-9","x":1}"#),
            Some("L-9".into())
        );
        assert_eq!(reference(b"created"), None);
        assert_eq!(reference(br#"{"id":3}"#), None);
    }
}
