//! The `Date` of answers (RFC 9110 §5.6.7, IMF-fixdate), written once a second per thread
//! rather than per answer.

use std::cell::RefCell;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

thread_local! {
    /// The second last written, and its HTTP date.
    static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Appends the HTTP date of `unix_millis`.
pub(super) fn append(unix_millis: i64, out: &mut Vec<u8>) {
    let second = unix_millis.div_euclid(1000);
    LAST.with_borrow_mut(|(written, text)| {
        if *written != second {
            *written = second;
            *text = http_date(second);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for a Unix second.
fn http_date(unix_second: i64) -> String {
    // RFC 2822 in UTC is the same but for the zone, written `+0000`.
    OffsetDateTime::from_unix_timestamp(unix_second)
        .ok()
        .and_then(|at| at.format(&Rfc2822).ok())
        .and_then(|text| Some(format!("{} GMT", text.strip_suffix(" +0000")?)))
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 GMT".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_http_dates() {
        // 2026-11-22T10:00:00.250Z and 2026-12-05T09:05:07Z.
        let mut out = Vec::new();
        append(1_795_341_600_250, &mut out);
        assert_eq!(out, b"Sun, 22 Nov 2026 10:00:00 GMT");
        assert_eq!(http_date(1_796_461_507), "Sat, 05 Dec 2026 09:05:07 GMT");
    }
}
