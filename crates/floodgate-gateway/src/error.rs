//! The one place where failures become HTTP answers: `{"error": "<code>", "message": "<text>"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use floodgate_core::OrderState;
use floodgate_core::drop::SpecProblem;
use floodgate_core::ledger::Refusal;
use floodgate_http::ProtocolError;
use floodgate_store::StoreError;
use serde_json::json;

/// Seconds a client is told to wait after `503 overloaded`: long enough for a commit backlog to
/// clear, short enough that a shopper does not give up.
const OVERLOADED_RETRY_AFTER_S: u32 = 1;

/// Every answer other than success that the HTTP API gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No `Idempotency-Key` header.
    #[error("the Idempotency-Key header is required")]
    MissingIdempotencyKey,
    /// An `Idempotency-Key` that is not 1 to 255 printable ASCII characters.
    #[error("the Idempotency-Key must be 1 to 255 printable ASCII characters")]
    InvalidIdempotencyKey,
    /// The body is not what the endpoint takes.
    #[error("{0}")]
    InvalidBody(String),
    /// A drop definition broke rules; every problem is listed.
    #[error("the drop definition has {} problem(s)", .0.len())]
    InvalidDrop(Vec<SpecProblem>),
    /// The body is larger than the configured limit.
    #[error("the body is larger than {limit_bytes} bytes")]
    BodyTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// No such drop.
    #[error("no drop with that id")]
    UnknownDrop,
    /// No such order.
    #[error("no order with that id")]
    UnknownOrder,
    /// No such route.
    #[error("nothing is served at this path")]
    NotFound,
    /// Refused by the stock ledger.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The same key is still being processed.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    RequestInProgress,
    /// The same key was used with a different body.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// The order is not in a state the operation applies to (a redrive of an order that is not
    /// in the dead-letter view).
    #[error("the order is {}; only a failed order can be redriven", .0.as_str())]
    NotRedrivable(OrderState),
    /// A waiting-room ticket that is forged, expired or for another drop.
    #[error("the ticket is not valid")]
    InvalidTicket,
    /// The ticket's place lapsed: not polled in time, or its pass went unused.
    #[error(
        "this place in the queue lapsed (not polled in time, or the pass went unused); join again"
    )]
    PlaceLapsed,
    /// The trusted identity header is missing.
    #[error("the {0} header set by the shop's login is required")]
    MissingIdentity(String),
    /// An order without the visitor cookie that joining the waiting room issued.
    #[error("the floodgate_visitor cookie issued when joining the waiting room is required")]
    MissingVisitor,
    /// The body names another customer than the trusted identity header.
    #[error("the customer does not match the identity the shop's login set")]
    IdentityMismatch,
    /// An order without a valid, unused pass for a drop with a waiting room.
    #[error("a valid, unused Floodgate-Pass for this drop and customer is required")]
    InvalidPass,
    /// The waiting room is not open (before the start or after the end).
    #[error("the waiting room is not open")]
    NotOpen(floodgate_core::DropState),
    /// The drop has no waiting room: order directly.
    #[error("this drop has no waiting room; order directly")]
    NoWaitingRoom,
    /// A drop update would strand held units.
    #[error("the change would strand units held by orders")]
    StockInUse(Vec<SpecProblem>),
    /// The admin token is missing or wrong.
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    /// Too many failed admin authentications from this address; retry after so many seconds.
    #[error("too many failed authentications from this address; retry after the indicated delay")]
    TooManyFailures(u32),
    /// The store's write queue is full or the node is shutting down.
    #[error("the gateway is at capacity; retry after the indicated delay")]
    Overloaded,
    /// A request the protocol refused before it was handed on; the connection closes after
    /// the answer.
    #[error(transparent)]
    Protocol(ProtocolError),
    /// Something failed that the client cannot fix.
    #[error("internal error; the request was not carried out")]
    Internal,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MissingIdempotencyKey => (StatusCode::BAD_REQUEST, "missing_idempotency_key"),
            Self::InvalidIdempotencyKey => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            Self::InvalidBody(_) | Self::InvalidDrop(_) => {
                (StatusCode::BAD_REQUEST, "invalid_body")
            }
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnknownDrop => (StatusCode::NOT_FOUND, "unknown_drop"),
            Self::UnknownOrder => (StatusCode::NOT_FOUND, "unknown_order"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Refused(Refusal::UnknownSku(_)) => (StatusCode::NOT_FOUND, "unknown_sku"),
            Self::Refused(Refusal::NotLive(_)) => (StatusCode::CONFLICT, "not_live"),
            Self::Refused(Refusal::SoldOut) => (StatusCode::GONE, "sold_out"),
            Self::Refused(Refusal::InsufficientStock { .. }) => {
                (StatusCode::CONFLICT, "insufficient_stock")
            }
            Self::Refused(Refusal::LimitReached { .. }) => (StatusCode::CONFLICT, "limit_reached"),
            // The intake leases more and asks again; it never answers with this.
            Self::Refused(Refusal::LeaseShort) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::RequestInProgress => (StatusCode::CONFLICT, "request_in_progress"),
            Self::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            Self::StockInUse(_) => (StatusCode::CONFLICT, "stock_in_use"),
            Self::InvalidTicket | Self::PlaceLapsed => (StatusCode::FORBIDDEN, "invalid_ticket"),
            Self::InvalidPass => (StatusCode::FORBIDDEN, "invalid_pass"),
            Self::MissingIdentity(_) | Self::MissingVisitor => {
                (StatusCode::BAD_REQUEST, "missing_identity")
            }
            Self::IdentityMismatch => (StatusCode::FORBIDDEN, "identity_mismatch"),
            Self::NotOpen(_) => (StatusCode::CONFLICT, "not_open"),
            Self::NoWaitingRoom => (StatusCode::CONFLICT, "no_waiting_room"),
            Self::NotRedrivable(_) => (StatusCode::CONFLICT, "not_redrivable"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::TooManyFailures(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_failures"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Protocol(error) => (
                error.status(),
                match error {
                    ProtocolError::Malformed(_) => "bad_request",
                    ProtocolError::HeadTooLarge => "headers_too_large",
                    ProtocolError::MethodNotServed => "method_not_allowed",
                    ProtocolError::UnsupportedTransferCoding => "not_implemented",
                    ProtocolError::BeyondCaps => "overloaded",
                },
            ),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The one place a protocol refusal becomes an API error: beyond the listener's caps is the
/// same `503 overloaded` (with its `Retry-After`) as any other overload.
impl From<ProtocolError> for ApiError {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::BeyondCaps => Self::Overloaded,
            other => Self::Protocol(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            // The ledger let the order through but the store's own guard refused it: another
            // change (an operator lowering stock) won the race. Say what the shopper would see.
            StoreError::Oversell { .. } => Self::Refused(Refusal::SoldOut),
            StoreError::UnknownSku { sku, .. } => Self::Refused(Refusal::UnknownSku(sku)),
            // Orders through other nodes hold the limit (this node's memory could not see them).
            StoreError::LimitReached { limit, .. } => Self::Refused(Refusal::LimitReached {
                limit,
                held: u64::from(limit),
            }),
            StoreError::StockBelowHeld { sku, .. } => Self::StockInUse(vec![SpecProblem {
                path: "skus".into(),
                problem: format!("units of {sku} are held by orders; stock may not go lower"),
            }]),
            // The intake answers a taken key itself (a replay, or a reuse); anywhere else the
            // key was used for another request.
            StoreError::KeyTaken { .. } => Self::IdempotencyKeyReused,
            StoreError::UnknownOrder(_) => Self::UnknownOrder,
            StoreError::WrongState { state, .. } => Self::NotRedrivable(state),
            StoreError::Overloaded | StoreError::Closed => Self::Overloaded,
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "store failure");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body = json!({ "error": code, "message": self.to_string() });
        match &self {
            Self::InvalidDrop(problems) | Self::StockInUse(problems) => {
                body["problems"] = problems
                    .iter()
                    .map(|problem| json!({ "path": problem.path, "problem": problem.problem }))
                    .collect();
            }
            Self::Refused(Refusal::NotLive(state)) => body["state"] = json!(state.as_str()),
            Self::NotRedrivable(state) => body["state"] = json!(state.as_str()),
            Self::NotOpen(state) => body["state"] = json!(state.as_str()),
            Self::Refused(Refusal::InsufficientStock { available }) => {
                body["available"] = json!(available)
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Overloaded | Self::RequestInProgress => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(OVERLOADED_RETRY_AFTER_S),
                );
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyFailures(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            _ => {}
        }
        response
    }
}
