//! What the protocol refuses before a handler sees a request; the connection closes after the
//! answer, which the handler renders (the gateway as its JSON error).

use http::StatusCode;

/// A request the listener will not hand on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A request head that cannot be read safely (RFC 9112), with what is wrong.
    #[error("{0}")]
    Malformed(&'static str),
    /// A request head over the size limits ([`crate::server::MAX_HEAD_BYTES`], 100 lines).
    #[error("the request head is too large (at most 64 KiB and 100 lines)")]
    HeadTooLarge,
    /// A method no gateway serves (`CONNECT`, `TRACE`).
    #[error("this method is not served")]
    MethodNotServed,
    /// A request body in a transfer coding other than `chunked`.
    #[error("the request body's transfer coding is not supported")]
    UnsupportedTransferCoding,
    /// A request on a connection beyond the listener's caps that the handler does not serve
    /// there (anything but a health check).
    #[error("the listener holds as many connections as it may")]
    BeyondCaps,
}

impl ProtocolError {
    /// The status the refusal is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::MethodNotServed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Self::BeyondCaps => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
