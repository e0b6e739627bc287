//! Header fields every layer above reads or writes the same way.

use std::time::Duration;

use http::{HeaderMap, header};

/// Whether the client is a browser asking for a page rather than an API client asking for JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    accept.contains("text/html") && !accept.contains("application/json")
}

/// A wait as the whole seconds a `Retry-After` says: rounded up, at least one.
pub fn retry_after_s(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs())
        .unwrap_or(u32::MAX)
        .saturating_add(u32::from(wait.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_s(Duration::ZERO), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_s(Duration::from_secs(3)), 3);
    }

    #[test]
    fn a_page_is_wanted_only_by_a_browser() {
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().unwrap());
            wants_html(&headers)
        };
        assert!(accept("text/html,application/xhtml+xml"));
        assert!(!accept("application/json, text/html"));
        assert!(!wants_html(&HeaderMap::new()));
    }
}
