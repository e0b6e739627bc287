//! Delivery of accepted orders to the shop's legacy order system, at exactly the rate it can take.
//!
//! The [`Dispatcher`] reads `accepted` orders from the store in acceptance order and sends each
//! with `Idempotency-Key: <order_id>` ("Downstream" in API.md). Every step is durable before it
//! is acted on: an attempt is recorded (`submitting`) before the request starts, and the outcome
//! (`confirmed`, `rejected`, `failed`) before it counts as done, so a restart resends exactly the
//! orders whose fate is unknown, with the same key. The crate never sees a shopper's request; the
//! store is its only link to intake.
//!
//! The pace is the legacy system's: at most `rate_per_second` starts in any one-second window
//! ([`pacer`]), slower while it shows overload, nothing while the [`breaker`] is open. Several
//! nodes sharing a store deliver through one leader at a time ([`leadership`]).

mod breaker;
mod dispatcher;
mod downstream;
mod leadership;
mod outbox;
mod pacer;

pub use dispatcher::{DispatchSettings, Dispatcher, UnitsReturned};
pub use downstream::{Downstream, HttpDownstream, MAX_RETRY_AFTER, Reply, ReplyFuture, order_body};
pub use floodgate_core::delivery::{BreakerState, DispatchStats};
pub use leadership::{Fence, Leadership};
pub use outbox::Outbox;
pub use pacer::WINDOW;
