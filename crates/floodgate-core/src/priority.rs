//! Priority classes of traffic, highest first, and the share of a pool each may fill.

use serde::{Deserialize, Serialize};

/// What a request is worth to the shop during a surge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Health checks and operators: never counted, queued or shed.
    Critical,
    /// Paying: checkout and order placement.
    Checkout,
    /// Filling a cart.
    Cart,
    /// Looking around: product and category pages.
    Browse,
    /// Everything that can wait: feeds, crawlers, prefetches.
    Background,
}

impl Priority {
    /// Every class, highest first.
    pub const ALL: [Self; 5] = [
        Self::Critical,
        Self::Checkout,
        Self::Cart,
        Self::Browse,
        Self::Background,
    ];

    /// The class's config and metrics name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Checkout => "checkout",
            Self::Cart => "cart",
            Self::Browse => "browse",
            Self::Background => "background",
        }
    }

    /// Parses a config name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == text)
    }

    /// The share of a pool's concurrency limit this class may fill. Once a pool is that busy,
    /// the class waits, so the rest of the limit is left to the classes above it: a browsing
    /// storm can never take the last slots a checkout needs.
    pub fn share_of_limit(self) -> f64 {
        match self {
            Self::Critical | Self::Checkout => 1.0,
            Self::Cart => 0.95,
            Self::Browse => 0.9,
            Self::Background => 0.75,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_shares_fall_with_priority() {
        for class in Priority::ALL {
            assert_eq!(Priority::parse(class.as_str()), Some(class));
        }
        assert_eq!(Priority::parse("vip"), None);
        let shares: Vec<f64> = Priority::ALL
            .iter()
            .map(|class| class.share_of_limit())
            .collect();
        assert!(shares.windows(2).all(|pair| pair[0] >= pair[1]));
    }
}
