//! Test support for floodgate: run the real binary on port 0, and talk HTTP to it.
//!
//! Used by tests, the demo and benchmarks only; nothing in the product depends on it.

mod client;
mod process;

pub use client::{HttpClient, JsonResponse};
pub use http::{Method, StatusCode};
pub use process::GatewayProcess;
