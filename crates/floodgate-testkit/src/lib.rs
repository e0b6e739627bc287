//! Test support for floodgate: run the real binary on port 0, talk HTTP to it, a test origin and
//! a recording one, headless Chromium, throwaway PostgreSQL clusters; and, from `floodgate-sim`,
//! the simulated legacy shop.
//!
//! Used by tests and benchmarks only; the binary ships `floodgate-sim`, not this.

pub mod browser;
pub mod drops;
pub mod origin;
pub mod postgres;
mod process;
pub mod recorder;
pub mod tls;

pub use floodgate_sim::{HttpClient, JsonResponse, Method, StatusCode, legacy};
pub use process::GatewayProcess;
