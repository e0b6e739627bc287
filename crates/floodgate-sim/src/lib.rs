//! What `floodgate demo` and `floodgate sim` ship: a simulated legacy shop that falls over above
//! its capacity, and the small JSON client the demo drives the gateway with. The tests use them
//! too (through `floodgate-testkit`); the test helpers themselves stay out of the binary.

mod client;
pub mod legacy;

pub use client::{HttpClient, JsonResponse};
/// The method and status types the client speaks in.
pub use http::{Method, StatusCode};
