//! Wall-clock instants as milliseconds since the Unix epoch, written as RFC 3339 on the wire.
//!
//! Policy code never reads a clock: callers pass `now` in, so tests choose the time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant, in whole milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// This instant moved by `millis` (negative moves back), saturating at the ends.
    pub const fn add_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Parses an RFC 3339 date-time such as `2026-11-22T10:00:00Z` or `...+01:00`.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError)?;
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).map(Self).map_err(|_| TimestampError)
    }

    /// Formats as RFC 3339 in UTC with millisecond precision.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|at| at.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("@{}ms", self.0))
    }
}

/// The text was not an RFC 3339 date-time within the representable range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected an RFC 3339 date-time such as 2026-11-22T10:00:00Z")]
pub struct TimestampError;

impl fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let at = Timestamp::parse_rfc3339("2026-11-22T10:00:00.250Z").unwrap();
        assert_eq!(at.unix_millis(), 1_795_341_600_250);
        assert_eq!(at.to_rfc3339(), "2026-11-22T10:00:00.25Z");
        assert_eq!(Timestamp::parse_rfc3339(&at.to_rfc3339()), Ok(at));
    }

    #[test]
    fn honours_offsets_and_rejects_garbage() {
        let utc = Timestamp::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        let paris = Timestamp::parse_rfc3339("2026-11-22T11:00:00+01:00").unwrap();
        assert_eq!(utc, paris);
        assert!(Timestamp::parse_rfc3339("tomorrow").is_err());
        assert!(Timestamp::parse_rfc3339("2026-11-22").is_err());
    }
}
