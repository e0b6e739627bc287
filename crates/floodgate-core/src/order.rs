//! Orders: what a shopper asks for, the record floodgate keeps, and the states it moves through.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{DropId, IdempotencyKey, Timestamp, hex};

/// Longest customer identity, in bytes.
pub const MAX_CUSTOMER_LEN: usize = 255;

/// An unguessable order id: `ord_`, 12 hex digits of the acceptance time in milliseconds, then
/// 20 hex digits (80 bits) of randomness.
///
/// The time prefix makes ids of new orders sort after older ones, so the store's index on them
/// grows at one end instead of touching a random page per order (as UUIDv7 does for the same
/// reason); the 80 random bits keep them unguessable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(String);

/// The random part of an [`OrderId`]: 80 bits.
const ORDER_ID_RANDOM_MASK: u128 = (1 << 80) - 1;
/// The time part of an [`OrderId`]: 48 bits of milliseconds (until the year 10889).
const ORDER_ID_TIME_MASK: i64 = (1 << 48) - 1;
/// `ord_` and 32 hex digits.
const ORDER_ID_LEN: usize = 36;

impl OrderId {
    /// Builds the id of an order accepted at `accepted_at`; the caller owns the randomness
    /// (core does no I/O), of which the low 80 bits are used.
    pub fn new(accepted_at: Timestamp, random_bits: u128) -> Self {
        let time = accepted_at.unix_millis() & ORDER_ID_TIME_MASK;
        let mut id = String::with_capacity(ORDER_ID_LEN);
        id.push_str("ord_");
        hex::push_digits(&mut id, u128::from(time.unsigned_abs()), 12);
        hex::push_digits(&mut id, random_bits & ORDER_ID_RANDOM_MASK, 20);
        Self(id)
    }

    /// Accepts text that has the shape of an order id, so lookups of junk never reach the store.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("ord_")?;
        let well_formed = digits.len() == 32 && digits.bytes().all(|byte| byte.is_ascii_hexdigit());
        well_formed.then(|| Self(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Where an order stands. Only `accepted → submitting → confirmed | rejected | failed` and the
/// operator's `released` exist; [`OrderState::may_become`] is the whole state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Durably stored with its reservation; waiting for the downstream.
    Accepted,
    /// Handed to the downstream at least once, outcome not yet known; stays here between
    /// retries, since the downstream may already have it.
    Submitting,
    /// The downstream has it.
    Confirmed,
    /// The downstream refused it for good; its units went back on sale.
    Rejected,
    /// Delivery gave up after the last attempt; held for an operator (dead letter).
    Failed,
    /// Let go by an operator before delivery; its units went back on sale.
    Released,
}

impl OrderState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Accepted,
        Self::Submitting,
        Self::Confirmed,
        Self::Rejected,
        Self::Failed,
        Self::Released,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Submitting => "submitting",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Released => "released",
        }
    }

    /// The state named `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Whether an order in this state keeps its units off sale.
    pub fn holds_stock(self) -> bool {
        !matches!(self, Self::Rejected | Self::Released)
    }

    /// Whether the state machine allows `self → next`.
    pub fn may_become(self, next: Self) -> bool {
        use OrderState::*;
        matches!(
            (self, next),
            (Accepted, Submitting | Released)
                | (Submitting, Confirmed | Rejected | Failed)
                // from the dead-letter view: redrive, or give the units back
                | (Failed, Accepted | Released)
        )
    }
}

/// What a shopper posts to `POST /api/drops/{drop}/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// Who is buying (absent in cookie identity mode, where the visitor cookie says).
    #[serde(default)]
    pub customer: String,
    /// What.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
}

/// Why an [`OrderRequest`] is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrderRequest {
    /// Customer missing, too long or with control characters.
    #[error("customer must be 1 to 255 bytes without control characters")]
    Customer,
    /// SKU code empty or too long.
    #[error("sku must be 1 to 64 bytes")]
    Sku,
    /// Quantity outside `1..=max`.
    #[error("quantity must be between 1 and {max}")]
    Quantity {
        /// The largest quantity one order may carry.
        max: u32,
    },
}

impl OrderRequest {
    /// Checks the fields' shapes; `max_quantity` caps one order.
    pub fn validate(&self, max_quantity: u32) -> Result<(), InvalidOrderRequest> {
        let customer_ok = !self.customer.is_empty()
            && self.customer.len() <= MAX_CUSTOMER_LEN
            && !self.customer.chars().any(char::is_control);
        if !customer_ok {
            return Err(InvalidOrderRequest::Customer);
        }
        if self.sku.is_empty() || self.sku.len() > crate::drop::MAX_ID_LEN {
            return Err(InvalidOrderRequest::Sku);
        }
        if self.quantity == 0 || self.quantity > max_quantity {
            return Err(InvalidOrderRequest::Quantity { max: max_quantity });
        }
        Ok(())
    }

    /// A digest of the request's meaning, to tell a replay from a reused key.
    pub fn fingerprint(&self) -> RequestFingerprint {
        let mut hasher = Sha256::new();
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for field in [self.customer.as_bytes(), self.sku.as_bytes()] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        hasher.update(self.quantity.to_le_bytes());
        RequestFingerprint(hasher.finalize().into())
    }
}

/// SHA-256 of an order request's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestFingerprint(pub [u8; 32]);

/// The record floodgate keeps for every accepted order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Unguessable id handed to the shopper.
    pub order_id: OrderId,
    /// The drop it belongs to.
    pub drop_id: DropId,
    /// What was ordered.
    pub sku: String,
    /// How many units it reserves.
    pub quantity: u32,
    /// Who ordered.
    pub customer: String,
    /// Where it stands.
    pub state: OrderState,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the order and its reservation were stored.
    pub accepted_at: Timestamp,
    /// Last state change.
    pub updated_at: Timestamp,
    /// The downstream's reference once confirmed.
    pub downstream_ref: Option<String>,
    /// Why the last delivery attempt did not go through, for the dead-letter view.
    pub last_error: Option<String>,
    /// The key the shopper sent.
    pub idempotency_key: IdempotencyKey,
    /// Digest of the request, to recognise replays.
    pub fingerprint: RequestFingerprint,
}

impl Order {
    /// A freshly accepted order for `request`, holding its units from `now`.
    pub fn accepted(
        order_id: OrderId,
        drop_id: DropId,
        idempotency_key: IdempotencyKey,
        request: OrderRequest,
        fingerprint: RequestFingerprint,
        now: Timestamp,
    ) -> Self {
        Self {
            order_id,
            drop_id,
            sku: request.sku,
            quantity: request.quantity,
            customer: request.customer,
            state: OrderState::Accepted,
            attempts: 0,
            accepted_at: now,
            updated_at: now,
            downstream_ref: None,
            last_error: None,
            idempotency_key,
            fingerprint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_has_no_shortcuts() {
        use OrderState::*;
        let allowed = [
            (Accepted, Submitting),
            (Accepted, Released),
            (Submitting, Confirmed),
            (Submitting, Rejected),
            (Submitting, Failed),
            (Failed, Accepted),
            (Failed, Released),
        ];
        for from in OrderState::ALL {
            for to in OrderState::ALL {
                assert_eq!(
                    from.may_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn only_returned_orders_free_their_units() {
        let freeing: Vec<_> = OrderState::ALL
            .into_iter()
            .filter(|state| !state.holds_stock())
            .collect();
        assert_eq!(freeing, [OrderState::Rejected, OrderState::Released]);
    }

    #[test]
    fn order_ids_are_well_formed_sorted_by_time_and_parse_back() {
        let id = OrderId::new(Timestamp::from_unix_millis(0x0123_4567_89ab), u128::MAX);
        assert_eq!(id.as_str(), "ord_0123456789abffffffffffffffffffff");
        assert_eq!(OrderId::parse(id.as_str()), Some(id.clone()));
        let later = OrderId::new(Timestamp::from_unix_millis(0x0123_4567_89ac), 0);
        assert!(later > id);
        for junk in [
            "",
            "ord_",
            "ord_xyz",
            "ORD_00000000000000000000000000000000",
            "ord_0000",
        ] {
            assert_eq!(OrderId::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let good = OrderRequest {
            customer: "c-1".into(),
            sku: "rod".into(),
            quantity: 1,
        };
        assert_eq!(good.validate(10), Ok(()));
        let cases = [
            (
                OrderRequest {
                    customer: String::new(),
                    ..good.clone()
                },
                InvalidOrderRequest::Customer,
            ),
            (
                OrderRequest {
                    customer: "a\nb".into(),
                    ..good.clone()
                },
                InvalidOrderRequest::Customer,
            ),
            (
                OrderRequest {
                    customer: "c".repeat(256),
                    ..good.clone()
                },
                InvalidOrderRequest::Customer,
            ),
            (
                OrderRequest {
                    sku: String::new(),
                    ..good.clone()
                },
                InvalidOrderRequest::Sku,
            ),
            (
                OrderRequest {
                    quantity: 0,
                    ..good.clone()
                },
                InvalidOrderRequest::Quantity { max: 10 },
            ),
            (
                OrderRequest {
                    quantity: 11,
                    ..good.clone()
                },
                InvalidOrderRequest::Quantity { max: 10 },
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(request.validate(10), Err(expected), "{request:?}");
        }
    }

    #[test]
    fn fingerprints_separate_fields() {
        let one = OrderRequest {
            customer: "ab".into(),
            sku: "c".into(),
            quantity: 1,
        };
        let two = OrderRequest {
            customer: "a".into(),
            sku: "bc".into(),
            quantity: 1,
        };
        assert_ne!(one.fingerprint(), two.fingerprint());
        assert_eq!(one.fingerprint(), one.clone().fingerprint());
    }
}
