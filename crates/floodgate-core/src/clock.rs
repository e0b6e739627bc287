//! The source of "now" for the outer crates: the wall clock in production, a settable one in
//! tests. Nothing else in this crate reads it; its functions take `now` as an argument.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::Timestamp;

/// Where the gateway and the dispatcher read the time; cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(|| {
            // The one place floodgate reads the wall clock; everything below takes `now`.
            #[allow(clippy::disallowed_types)]
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            Timestamp::from_unix_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
        }))
    }

    /// A clock that reads `at` until moved, for tests; returns the handle that moves it.
    pub fn manual(at: Timestamp) -> (Self, Arc<AtomicI64>) {
        let millis = Arc::new(AtomicI64::new(at.unix_millis()));
        let reader = Arc::clone(&millis);
        let clock = Self(Arc::new(move || {
            Timestamp::from_unix_millis(reader.load(Ordering::Relaxed))
        }));
        (clock, millis)
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}
