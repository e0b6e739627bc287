//! Drops: a limited sale with a schedule, SKUs with stock and a per-customer limit.
//!
//! A [`DropSpec`] is what an operator writes (`PUT /admin/drops/{drop}`); [`DropState`] is what a
//! shopper sees, derived from the schedule, the pause switch and the stock at a given instant.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Longest drop id or SKU code, in bytes. Ids appear in URLs and logs, so they stay short.
pub const MAX_ID_LEN: usize = 64;
/// Most SKUs one drop may carry: every SKU is a counter in memory and a row in the store.
pub const MAX_SKUS_PER_DROP: usize = 1_000;

/// A drop's identifier: 1 to 64 ASCII letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DropId(String);

impl DropId {
    /// Checks `text` against the id rules.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        validate_id(text).map(|()| Self(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DropId {
    type Error = InvalidId;
    fn try_from(text: String) -> Result<Self, InvalidId> {
        validate_id(&text).map(|()| Self(text))
    }
}

impl From<DropId> for String {
    fn from(id: DropId) -> Self {
        id.0
    }
}

impl std::fmt::Display for DropId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// An id broke the rules of [`DropId`] (SKU codes follow the same rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 64 ASCII letters, digits, '-' or '_'")]
pub struct InvalidId;

/// Checks the shared rule for drop ids and SKU codes.
pub fn validate_id(text: &str) -> Result<(), InvalidId> {
    let well_formed = !text.is_empty()
        && text.len() <= MAX_ID_LEN
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if well_formed { Ok(()) } else { Err(InvalidId) }
}

/// What an operator declares about a drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropSpec {
    /// Human name shown to shoppers.
    pub name: String,
    /// When orders open.
    pub starts_at: Timestamp,
    /// When orders close.
    pub ends_at: Timestamp,
    /// Most units one customer may hold across the drop's SKUs.
    pub limit_per_customer: u32,
    /// What is on sale.
    pub skus: Vec<SkuSpec>,
    /// The waiting room in front of the drop.
    #[serde(default)]
    pub waiting_room: WaitingRoomSpec,
    /// Set by `pause` and cleared by `resume`; a paused drop takes no orders.
    #[serde(default)]
    pub paused: bool,
    /// Seconds before the start that floodgate gets ready for the surge: it loads
    /// `prewarm_paths` into the edge cache, opens connections to the origin and the downstream,
    /// sizes its tables for `expected_shoppers` and raises `floodgate_expected_load`.
    #[serde(default = "default_prewarm_s")]
    pub prewarm_s: u32,
    /// Shoppers the shop expects, for the pre-warm's table sizes and for autoscalers.
    #[serde(default)]
    pub expected_shoppers: u64,
    /// Pages of the shop the drop will send shoppers to (paths on the public listener, such as
    /// the product page), fetched through the front door at pre-warm so the first shoppers hit
    /// the edge cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prewarm_paths: Vec<String>,
}

/// Five minutes: time for an autoscaler to add nodes before the surge.
const DEFAULT_PREWARM_S: u32 = 300;
/// A day: longer lead times only hold resources for nothing.
const MAX_PREWARM_S: u32 = 86_400;
/// The pre-warm fetches each path once; a drop has a handful of pages, not a site map.
const MAX_PREWARM_PATHS: usize = 100;
/// Shoppers expected at most: ten times the largest drops seen, and still a small table.
const MAX_EXPECTED_SHOPPERS: u64 = 100_000_000;

fn default_prewarm_s() -> u32 {
    DEFAULT_PREWARM_S
}

/// One sellable item of a drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuSpec {
    /// The SKU code, unique within the drop.
    pub sku: String,
    /// Human name.
    pub name: String,
    /// Price in the smallest currency unit.
    pub price_cents: u64,
    /// Units on sale in total (sold, reserved and available together).
    pub stock: u64,
}

/// Waiting-room settings of a drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WaitingRoomSpec {
    /// Whether orders need a pass from the waiting room.
    pub enabled: bool,
    /// Shoppers holding a pass at once before a queue forms.
    pub max_active: u32,
    /// Seconds before the start that the pre-queue opens.
    pub prequeue_s: u32,
    /// Seconds a pass stays valid.
    pub pass_ttl_s: u32,
    /// At most this many admissions a minute, whatever the free capacity (`None`: no ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admit_per_minute: Option<u32>,
}

impl Default for WaitingRoomSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            max_active: 1_000,
            prequeue_s: 0,
            pass_ttl_s: 600,
            admit_per_minute: None,
        }
    }
}

/// A rule a [`DropSpec`] broke, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Where, e.g. `skus[2].stock`.
    pub path: String,
    /// What is wrong, lower case.
    pub problem: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.path, self.problem)
    }
}

impl DropSpec {
    /// A drop selling `skus` between `starts_at` and `ends_at`, running, behind the default
    /// waiting room and with no pre-warm.
    pub fn new(
        name: String,
        starts_at: Timestamp,
        ends_at: Timestamp,
        limit_per_customer: u32,
        skus: Vec<SkuSpec>,
    ) -> Self {
        Self {
            name,
            starts_at,
            ends_at,
            limit_per_customer,
            skus,
            waiting_room: WaitingRoomSpec::default(),
            paused: false,
            prewarm_s: 0,
            expected_shoppers: 0,
            prewarm_paths: Vec::new(),
        }
    }

    /// Every rule the spec breaks, in one go (empty when valid).
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        let mut report = |path: String, problem: &str| {
            problems.push(SpecProblem {
                path,
                problem: problem.to_owned(),
            });
        };
        if self.name.trim().is_empty() || self.name.len() > 200 {
            report("name".into(), "must be 1 to 200 bytes of text");
        }
        if self.ends_at <= self.starts_at {
            report("ends_at".into(), "must be after starts_at");
        }
        if self.limit_per_customer == 0 {
            report("limit_per_customer".into(), "must be at least 1");
        }
        if self.skus.is_empty() || self.skus.len() > MAX_SKUS_PER_DROP {
            report("skus".into(), "must list 1 to 1000 SKUs");
        }
        for (index, sku) in self.skus.iter().enumerate() {
            if validate_id(&sku.sku).is_err() {
                report(
                    format!("skus[{index}].sku"),
                    "must be 1 to 64 ASCII letters, digits, '-' or '_'",
                );
            } else if self.skus[..index]
                .iter()
                .any(|earlier| earlier.sku == sku.sku)
            {
                report(format!("skus[{index}].sku"), "appears twice");
            }
            if sku.name.trim().is_empty() || sku.name.len() > 200 {
                report(
                    format!("skus[{index}].name"),
                    "must be 1 to 200 bytes of text",
                );
            }
            if sku.stock > u64::from(u32::MAX) {
                report(format!("skus[{index}].stock"), "must be at most 4294967295");
            }
        }
        if self.waiting_room.enabled && self.waiting_room.max_active == 0 {
            report(
                "waiting_room.max_active".into(),
                "must be at least 1 when enabled",
            );
        }
        if self.waiting_room.admit_per_minute == Some(0) {
            report(
                "waiting_room.admit_per_minute".into(),
                "must be at least 1 (leave it out for no ceiling)",
            );
        }
        if self.waiting_room.enabled && self.waiting_room.pass_ttl_s == 0 {
            report(
                "waiting_room.pass_ttl_s".into(),
                "must be at least 1 when enabled",
            );
        }
        if self.prewarm_s > MAX_PREWARM_S {
            report("prewarm_s".into(), "must be at most 86400 (a day)");
        }
        if self.expected_shoppers > MAX_EXPECTED_SHOPPERS {
            report("expected_shoppers".into(), "must be at most 100000000");
        }
        if self.prewarm_paths.len() > MAX_PREWARM_PATHS {
            report("prewarm_paths".into(), "must list at most 100 paths");
        }
        for (index, path) in self.prewarm_paths.iter().enumerate() {
            let plain = path.starts_with('/')
                && path.len() <= 2_000
                && path.bytes().all(|byte| byte.is_ascii_graphic());
            if !plain {
                report(
                    format!("prewarm_paths[{index}]"),
                    "must be a path starting with '/', at most 2000 visible ASCII bytes",
                );
            }
        }
        problems
    }

    /// When floodgate starts getting ready for the drop.
    pub fn prewarm_starts_at(&self) -> Timestamp {
        self.starts_at
            .add_millis(-i64::from(self.prewarm_s) * 1_000)
    }

    /// The pre-warm stage due at `now`, if any: the rehearsal from `prewarm_s` before the
    /// start, the final warm-up in the last [`FINAL_WARM_UP_S`] seconds (and, after a restart,
    /// until the end).
    pub fn prewarm_stage(&self, now: Timestamp) -> Option<PrewarmStage> {
        let final_from = self.starts_at.add_millis(-FINAL_WARM_UP_S * 1_000);
        if now >= self.ends_at || now < self.prewarm_starts_at() {
            None
        } else if now >= final_from {
            Some(PrewarmStage::Final)
        } else {
            Some(PrewarmStage::Rehearsal)
        }
    }

    /// Whether floodgate expects the drop's shoppers at `now`: from the pre-warm to the end.
    pub fn expects_load(&self, now: Timestamp) -> bool {
        now >= self.prewarm_starts_at() && now < self.ends_at
    }

    /// The SKU with code `sku`, if the drop sells it.
    pub fn sku(&self, sku: &str) -> Option<&SkuSpec> {
        self.skus.iter().find(|candidate| candidate.sku == sku)
    }

    /// When the pre-queue opens (the start itself when there is no pre-queue).
    pub fn prequeue_opens_at(&self) -> Timestamp {
        let window_s = if self.waiting_room.enabled {
            self.waiting_room.prequeue_s
        } else {
            0
        };
        self.starts_at.add_millis(-i64::from(window_s) * 1_000)
    }

    /// The state a shopper sees at `now`, given how many units are still available.
    pub fn state_at(&self, now: Timestamp, units_available: u64) -> DropState {
        if now >= self.ends_at {
            DropState::Ended
        } else if self.paused {
            DropState::Paused
        } else if now < self.prequeue_opens_at() {
            DropState::Scheduled
        } else if now < self.starts_at {
            DropState::Prequeue
        } else if units_available == 0 {
            DropState::SoldOut
        } else {
            DropState::Live
        }
    }
}

/// Seconds before the start of the final warm-up: late enough that the connections it opens
/// are still idle-fresh and the pages it caches still fresh when the surge comes.
pub const FINAL_WARM_UP_S: i64 = 10;

/// The two passes of the pre-warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrewarmStage {
    /// At `prewarm_s` before the start: sizes the tables and tries every page and connection,
    /// so what does not work is known minutes ahead.
    Rehearsal,
    /// Seconds before the start: fills the cache and opens the connections again, fresh.
    Final,
}

impl PrewarmStage {
    /// The stage's name in the admin API and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rehearsal => "rehearsal",
            Self::Final => "final",
        }
    }
}

/// Where a drop stands, as shoppers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropState {
    /// Announced; neither the pre-queue nor orders are open.
    Scheduled,
    /// The pre-queue is open; orders are not.
    Prequeue,
    /// Orders are open and units are available.
    Live,
    /// Every unit is reserved or sold; returned units make it live again.
    SoldOut,
    /// Past `ends_at`.
    Ended,
    /// Stopped by an operator until resumed.
    Paused,
}

impl DropState {
    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Prequeue => "prequeue",
            Self::Live => "live",
            Self::SoldOut => "sold_out",
            Self::Ended => "ended",
            Self::Paused => "paused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DropSpec {
        DropSpec {
            name: "Muskie rod".into(),
            starts_at: Timestamp::from_unix_millis(100_000),
            ends_at: Timestamp::from_unix_millis(200_000),
            limit_per_customer: 2,
            skus: vec![SkuSpec {
                sku: "rod-1".into(),
                name: "Rod".into(),
                price_cents: 100,
                stock: 5,
            }],
            waiting_room: WaitingRoomSpec {
                enabled: true,
                prequeue_s: 30,
                ..WaitingRoomSpec::default()
            },
            paused: false,
            prewarm_s: 60,
            expected_shoppers: 0,
            prewarm_paths: Vec::new(),
        }
    }

    #[test]
    fn state_follows_the_schedule_and_the_stock() {
        let drop = spec();
        let cases = [
            (0, 5, DropState::Scheduled),
            (69_999, 5, DropState::Scheduled),
            (70_000, 5, DropState::Prequeue),
            (100_000, 5, DropState::Live),
            (150_000, 0, DropState::SoldOut),
            (200_000, 5, DropState::Ended),
            (200_000, 0, DropState::Ended),
        ];
        for (now, available, expected) in cases {
            assert_eq!(
                drop.state_at(Timestamp::from_unix_millis(now), available),
                expected,
                "at {now}"
            );
        }
    }

    #[test]
    fn paused_wins_until_the_end() {
        let drop = DropSpec {
            paused: true,
            ..spec()
        };
        assert_eq!(
            drop.state_at(Timestamp::from_unix_millis(150_000), 5),
            DropState::Paused
        );
        assert_eq!(
            drop.state_at(Timestamp::from_unix_millis(250_000), 5),
            DropState::Ended
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let mut drop = spec();
        drop.ends_at = drop.starts_at;
        drop.limit_per_customer = 0;
        drop.skus.push(drop.skus[0].clone());
        drop.skus.push(SkuSpec {
            sku: "bad sku".into(),
            name: " ".into(),
            price_cents: 1,
            stock: 1,
        });
        drop.prewarm_s = 86_401;
        drop.prewarm_paths = vec!["/shop/ok".into(), "no-slash".into()];
        let paths: Vec<String> = drop
            .problems()
            .into_iter()
            .map(|problem| problem.path)
            .collect();
        assert_eq!(
            paths,
            [
                "ends_at",
                "limit_per_customer",
                "skus[1].sku",
                "skus[2].sku",
                "skus[2].name",
                "prewarm_s",
                "prewarm_paths[1]"
            ]
        );
    }

    #[test]
    fn a_definition_without_pre_warm_fields_gets_five_minutes() {
        let mut fields = serde_json::to_value(spec()).unwrap();
        let object = fields.as_object_mut().unwrap();
        for field in ["prewarm_s", "expected_shoppers", "prewarm_paths"] {
            object.remove(field);
        }
        let read: DropSpec = serde_json::from_value(fields).unwrap();
        assert_eq!((read.prewarm_s, read.expected_shoppers), (300, 0));
        assert_eq!(
            read.prewarm_starts_at(),
            Timestamp::from_unix_millis(100_000 - 300_000)
        );
    }

    #[test]
    fn the_pre_warm_rehearses_then_warms_up_just_before_the_start() {
        let drop = spec();
        let at = |millis| drop.prewarm_stage(Timestamp::from_unix_millis(millis));
        let cases = [
            (39_999, None),
            (40_000, Some(PrewarmStage::Rehearsal)),
            (89_999, Some(PrewarmStage::Rehearsal)),
            (90_000, Some(PrewarmStage::Final)),
            (150_000, Some(PrewarmStage::Final)),
            (200_000, None),
        ];
        for (millis, stage) in cases {
            assert_eq!(at(millis), stage, "at {millis}");
        }
        assert!(!drop.expects_load(Timestamp::from_unix_millis(39_999)));
        assert!(drop.expects_load(Timestamp::from_unix_millis(40_000)));
        assert!(!drop.expects_load(Timestamp::from_unix_millis(200_000)));
    }

    #[test]
    fn ids_are_short_and_plain() {
        assert!(DropId::parse("spring-drop_2026").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65), "a/b"] {
            assert!(DropId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
