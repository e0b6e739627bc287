//! The `Date` of answers (RFC 9110 §6.6.1), written once a second per thread rather than per
//! answer.

use std::cell::RefCell;

use floodgate_core::Timestamp;

thread_local! {
    /// The second last written, and its HTTP date.
    static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Appends `now` as an HTTP date.
pub(super) fn append(now: Timestamp, out: &mut Vec<u8>) {
    let second = now.unix_millis().div_euclid(1000);
    LAST.with_borrow_mut(|(written, text)| {
        if *written != second {
            *written = second;
            *text = now.to_http_date();
        }
        out.extend_from_slice(text.as_bytes());
    });
}
