//! HTTP/1.1 as floodgate speaks it, at the bottom of the house: the request-head parser and the
//! normal form of request targets, the wire codec both sides share (framing, chunked bodies,
//! header lines), the listener's connections with every limit a client meets, and the loops
//! that serve them.
//!
//! It knows nothing of drops, routes or answers' bodies: a [`server::Handler`] above answers
//! each request and renders each [`ProtocolError`], and what a connection may hold is given in
//! [`server::ConnectionLimits`].

mod client_addr;
mod connection_loops;
mod error;
mod fields;
mod html;
pub mod server;
pub mod tls;
pub mod wire;

pub use client_addr::ClientAddr;
pub use connection_loops::{ConnectionLoops, current_loop};
pub use error::ProtocolError;
pub use fields::{retry_after_s, wants_html};
pub use html::escape_html;

/// A lock that outlives a panic in another holder: every value kept under one here is whole
/// between statements, so a panic elsewhere leaves nothing half-written.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
