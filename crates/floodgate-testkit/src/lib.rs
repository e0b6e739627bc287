//! Test support for floodgate: run the real binary on port 0, talk HTTP to it, and stand in for
//! the shop's legacy order system.
//!
//! Used by tests, the demo and benchmarks only; nothing in the product depends on it.

pub mod browser;
mod client;
pub mod legacy;
pub mod origin;
pub mod postgres;
mod process;
pub mod recorder;

pub use client::{HttpClient, JsonResponse};
pub use http::{Method, StatusCode};
pub use process::GatewayProcess;
