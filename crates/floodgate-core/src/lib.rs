//! floodgate's domain model: drops and their schedule, stock ledgers, orders and their states,
//! idempotency keys; and the maths of the front door: path globs, priority classes, the GCRA
//! rate limit and the adaptive concurrency limit; a lock-free latency histogram.
//!
//! Everything here is pure: no I/O, no async runtime, no HTTP types. Time is passed in as a
//! [`Timestamp`] (only the outer crates read a [`Clock`]), randomness as bytes, so every rule can
//! be tested exactly.

pub mod cache_control;
pub mod clock;
pub mod concurrency;
pub mod delivery;
pub mod drop;
pub mod gcra;
pub mod glob;
pub mod hex;
pub mod idempotency;
pub mod latency;
pub mod ledger;
pub mod order;
pub mod priority;
pub mod sharded_map;
pub mod timestamp;
pub mod token;
pub mod waiting_room;

pub use cache_control::CacheControl;
pub use clock::Clock;
pub use concurrency::AdaptiveLimit;
pub use drop::{DropId, DropSpec, DropState, PrewarmStage, SkuSpec, WaitingRoomSpec};
pub use gcra::Gcra;
pub use glob::PathGlob;
pub use idempotency::{IdempotencyKey, KeyLookup, KeyTable};
pub use latency::{LatencyCounts, LatencyHistogram};
pub use ledger::{DropLedger, Refusal};
pub use order::{Order, OrderId, OrderRequest, OrderState, RequestFingerprint};
pub use priority::Priority;
pub use timestamp::Timestamp;
pub use token::{Claims, Identity, Opened, TokenError, TokenKeys, TokenKind};
pub use waiting_room::{
    RecentTurns, RoomRules, RoomTotals, Standing, WaitingRoom, commitment, draw_key, throttled_cap,
};
