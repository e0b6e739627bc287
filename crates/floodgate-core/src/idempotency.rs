//! Idempotency keys: the same key with the same request gets the same answer.
//!
//! Follows draft-ietf-httpapi-idempotency-key-header (see research/order_pipeline.md §6.2): a key
//! still being processed is a conflict (`409`), a key reused with another payload is `422`, and a
//! finished key replays its answer. Only accepted orders are remembered: a refusal (sold out,
//! limit reached) is cheap to compute again and may change as stock returns, so it is not stored.

use crate::sharded_map::{Entry, MapKey, SHARDS, ShardedMap};
use crate::{OrderId, RequestFingerprint, Timestamp};

/// Longest key accepted, as in Stripe's API.
pub const MAX_KEY_LEN: usize = 255;

/// A client's idempotency key: 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl MapKey for IdempotencyKey {
    type KeptHash = u64;
}

impl IdempotencyKey {
    /// Checks the key's shape.
    pub fn parse(text: &str) -> Result<Self, InvalidKey> {
        let well_formed = !text.is_empty()
            && text.len() <= MAX_KEY_LEN
            && text.bytes().all(|byte| (0x20..0x7f).contains(&byte));
        if well_formed {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidKey)
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An idempotency key broke the rules of [`IdempotencyKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("idempotency key must be 1 to 255 printable ASCII characters")]
pub struct InvalidKey;

/// What the table knows about a key when a request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// Never seen (or pruned): the caller now owns the key and must `finish` or `forget` it.
    Fresh,
    /// Answered before with this very request: replay that order.
    Replay(OrderId),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    Reused,
}

#[derive(Debug, Clone)]
enum KeyEntry {
    InFlight(RequestFingerprint),
    Answered {
        fingerprint: RequestFingerprint,
        order_id: OrderId,
        answered_at: Timestamp,
    },
}

impl KeyEntry {
    /// What a request with `fingerprint` under this known key gets.
    fn answer(&self, fingerprint: RequestFingerprint) -> KeyLookup {
        match self {
            Self::InFlight(first) if *first == fingerprint => KeyLookup::InProgress,
            Self::Answered {
                fingerprint: first,
                order_id,
                ..
            } if *first == fingerprint => KeyLookup::Replay(order_id.clone()),
            _ => KeyLookup::Reused,
        }
    }
}

/// The keys of one drop, in memory. Their number is bounded by the drop's stock: only accepted
/// orders leave an entry behind, and each holds at least one unit.
#[derive(Debug, Default)]
pub struct KeyTable {
    entries: ShardedMap<IdempotencyKey, KeyEntry>,
}

impl KeyTable {
    /// Makes room for `additional` more keys.
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    /// Looks `key` up and, when it is fresh, claims it for this request.
    pub fn claim(&mut self, key: &IdempotencyKey, fingerprint: RequestFingerprint) -> KeyLookup {
        // One probe of a table of millions: nearly every key is fresh, and owned either way.
        match self.entries.entry(key.clone()) {
            Entry::Vacant(vacant) => {
                vacant.insert(KeyEntry::InFlight(fingerprint));
                KeyLookup::Fresh
            }
            Entry::Occupied(known) => known.get().answer(fingerprint),
        }
    }

    /// What `key` would answer for a request with `fingerprint`, without claiming it.
    pub fn lookup(&self, key: &IdempotencyKey, fingerprint: RequestFingerprint) -> KeyLookup {
        self.entries
            .get(key)
            .map_or(KeyLookup::Fresh, |known| known.answer(fingerprint))
    }

    /// Records the answer of a claimed key.
    pub fn finish(&mut self, key: &IdempotencyKey, order_id: OrderId, answered_at: Timestamp) {
        if let Some(entry) = self.entries.get_mut(key)
            && let KeyEntry::InFlight(fingerprint) = *entry
        {
            *entry = KeyEntry::Answered {
                fingerprint,
                order_id,
                answered_at,
            };
        }
    }

    /// Releases a claimed key whose request ended without an order, so a retry starts afresh.
    pub fn forget(&mut self, key: &IdempotencyKey) {
        if matches!(self.entries.get(key), Some(KeyEntry::InFlight(_))) {
            self.entries.remove(key);
        }
    }

    /// Records an answered key (from the store at start-up, or when a claim finishes).
    pub fn restore(
        &mut self,
        key: IdempotencyKey,
        fingerprint: RequestFingerprint,
        order_id: OrderId,
        answered_at: Timestamp,
    ) {
        self.entries.insert(
            key,
            KeyEntry::Answered {
                fingerprint,
                order_id,
                answered_at,
            },
        );
    }

    /// How many parts [`KeyTable::prune_part`] sweeps the table in.
    pub const PARTS: usize = SHARDS;

    /// Drops the answered keys of part `part` (below [`KeyTable::PARTS`]) older than
    /// `answered_before`; their keys count as new afterwards. A million keys take 10–90 ms to
    /// sweep, and every order of the drop waits while its ledger is locked: a part at a time,
    /// the longest wait is a [`KeyTable::PARTS`]th of that.
    pub fn prune_part(&mut self, part: usize, answered_before: Timestamp) {
        self.entries.retain_in_shard(part, |_, entry| match entry {
            KeyEntry::InFlight(_) => true,
            KeyEntry::Answered { answered_at, .. } => *answered_at >= answered_before,
        });
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrderRequest;

    fn fingerprint(quantity: u32) -> RequestFingerprint {
        OrderRequest {
            customer: "c".into(),
            sku: "s".into(),
            quantity,
        }
        .fingerprint()
    }

    #[test]
    fn a_key_moves_from_fresh_to_in_progress_to_replay() {
        let mut table = KeyTable::default();
        let key = IdempotencyKey::parse("k-1").unwrap();
        let order = OrderId::new(Timestamp::from_unix_millis(0), 7);
        assert_eq!(table.claim(&key, fingerprint(1)), KeyLookup::Fresh);
        assert_eq!(table.claim(&key, fingerprint(1)), KeyLookup::InProgress);
        assert_eq!(table.claim(&key, fingerprint(2)), KeyLookup::Reused);
        table.finish(&key, order.clone(), Timestamp::from_unix_millis(5));
        assert_eq!(table.claim(&key, fingerprint(1)), KeyLookup::Replay(order));
        assert_eq!(table.claim(&key, fingerprint(2)), KeyLookup::Reused);
    }

    #[test]
    fn a_forgotten_claim_starts_afresh_but_answers_stay() {
        let mut table = KeyTable::default();
        let key = IdempotencyKey::parse("k-1").unwrap();
        assert_eq!(table.claim(&key, fingerprint(1)), KeyLookup::Fresh);
        table.forget(&key);
        assert_eq!(table.claim(&key, fingerprint(2)), KeyLookup::Fresh);
        table.finish(
            &key,
            OrderId::new(Timestamp::from_unix_millis(0), 1),
            Timestamp::from_unix_millis(5),
        );
        table.forget(&key);
        assert!(matches!(
            table.claim(&key, fingerprint(2)),
            KeyLookup::Replay(_)
        ));
    }

    #[test]
    fn pruning_drops_old_answers_only() {
        let mut table = KeyTable::default();
        let old = IdempotencyKey::parse("old").unwrap();
        let new = IdempotencyKey::parse("new").unwrap();
        table.restore(
            old.clone(),
            fingerprint(1),
            OrderId::new(Timestamp::from_unix_millis(0), 1),
            Timestamp::from_unix_millis(10),
        );
        table.restore(
            new.clone(),
            fingerprint(1),
            OrderId::new(Timestamp::from_unix_millis(0), 2),
            Timestamp::from_unix_millis(20),
        );
        for part in 0..KeyTable::PARTS {
            table.prune_part(part, Timestamp::from_unix_millis(15));
        }
        assert_eq!(table.claim(&old, fingerprint(2)), KeyLookup::Fresh);
        assert!(matches!(
            table.claim(&new, fingerprint(1)),
            KeyLookup::Replay(_)
        ));
    }

    #[test]
    fn keys_are_printable_ascii_up_to_255() {
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(256),
            "clé".into(),
            "a\tb".into(),
            "x".repeat(10_240),
        ] {
            assert!(IdempotencyKey::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
