//! The `Cache-Control` directives a shared cache acts on (RFC 9111 §5.2.2), and what they mean
//! for how long a response may be served.

use std::time::Duration;

/// Directives of a response's `Cache-Control`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: never keep it.
    pub no_store: bool,
    /// `no-cache`: never serve it without asking the origin (floodgate does not keep it).
    pub no_cache: bool,
    /// `private`: for one user only; a shared cache must not keep it.
    pub private: bool,
    /// `max-age`, seconds.
    pub max_age: Option<u64>,
    /// `s-maxage`, seconds; overrides `max-age` in shared caches.
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    /// Parses a header value; unknown directives and malformed numbers are ignored (a malformed
    /// `max-age` gives no freshness, the safe reading).
    pub fn parse(value: &str) -> Self {
        let mut directives = Self::default();
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || argument.and_then(|text| text.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => directives.no_store = true,
                "no-cache" => directives.no_cache = true,
                "private" => directives.private = true,
                "max-age" => directives.max_age = seconds(),
                "s-maxage" => directives.s_maxage = seconds(),
                _ => {}
            }
        }
        directives
    }

    /// Whether a shared cache may keep the response at all.
    pub fn storable(&self) -> bool {
        !(self.no_store || self.no_cache || self.private)
    }

    /// How long the response is fresh in a shared cache, if the origin said.
    pub fn freshness(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_caches_prefer_s_maxage_and_respect_refusals() {
        let public = CacheControl::parse("public, max-age=60, s-maxage=300");
        assert!(public.storable());
        assert_eq!(public.freshness(), Some(Duration::from_secs(300)));
        assert_eq!(
            CacheControl::parse("max-age=\"30\"").freshness(),
            Some(Duration::from_secs(30))
        );
        for refusal in [
            "no-store",
            "private, max-age=60",
            "No-Cache",
            "max-age=5, no-store",
        ] {
            assert!(!CacheControl::parse(refusal).storable(), "{refusal}");
        }
        assert_eq!(CacheControl::parse("max-age=soon").freshness(), None);
        assert_eq!(CacheControl::parse("").freshness(), None);
        assert_eq!(CacheControl::parse("max-age=-1,,=,").freshness(), None);
    }
}
