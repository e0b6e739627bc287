//! A hash map that grows in small steps.
//!
//! A `HashMap` grows by doubling all at once: at a million idempotency keys one insert rehashes a
//! million entries, and every order of the drop waits behind the ledger's lock while it does
//! (measured with `bench/intake.sh`: 100–600 ms stalls, the whole p99). Split into [`SHARDS`]
//! maps that grow on their own, the longest pause is a [`SHARDS`]th of that; sweeps go shard by
//! shard for the same reason.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash};

use hashbrown::hash_table::{self, HashTable};

/// How many maps the entries are spread over.
pub const SHARDS: usize = 64;

/// A hash map split into [`SHARDS`] tables that grow on their own, hashing with SipHash (keyed
/// per map) for its protection against keys chosen to collide: customer ids and idempotency
/// keys come from the internet.
///
/// A key is hashed once per call: the shard and the slot come from that one hash. Entries of
/// keys whose bytes live on the heap keep their hash too (see [`MapKey`]).
#[derive(Debug)]
pub struct ShardedMap<K: MapKey, V> {
    hasher: RandomState,
    shards: Box<[HashTable<Slot<K, V>>]>,
}

/// A key of a [`ShardedMap`], with what its entries keep of its hash.
pub trait MapKey: Hash + Eq {
    /// `u64` for keys whose bytes live on the heap: growing then moves entries without reading
    /// a key. A `HashMap` re-hashes every key as it grows, fetching each key's bytes from
    /// wherever they are; for the idempotency keys and customer ids that was most of an order's
    /// SipHash time (`perf`: 1.4 % of a connection loop's samples). `()` for keys held in the
    /// entry, cheap to hash again, which saves 8 bytes an entry (a waiting room holds millions).
    type KeptHash: KeptHash;
}

/// What an entry keeps of its key's hash: all of it, or nothing.
pub trait KeptHash: Copy + Debug {
    /// What to keep of `hash`.
    fn keep(hash: u64) -> Self;
    /// The hash, if it was kept.
    fn recall(self) -> Option<u64>;
}

impl KeptHash for u64 {
    fn keep(hash: u64) -> Self {
        hash
    }
    fn recall(self) -> Option<u64> {
        Some(self)
    }
}

impl KeptHash for () {
    fn keep(_: u64) -> Self {}
    fn recall(self) -> Option<u64> {
        None
    }
}

impl MapKey for String {
    type KeptHash = u64;
}

impl MapKey for u64 {
    type KeptHash = ();
}

#[derive(Debug)]
struct Slot<K: MapKey, V> {
    hash: K::KeptHash,
    key: K,
    value: V,
}

/// A key's place in the map, found with one lookup: its value, or room for one.
pub enum Entry<'a, K: MapKey, V> {
    /// The key has a value.
    Occupied(OccupiedEntry<'a, V>),
    /// The key has none.
    Vacant(VacantEntry<'a, K, V>),
}

/// A key's value, found by [`ShardedMap::entry`].
pub struct OccupiedEntry<'a, V> {
    value: &'a mut V,
}

/// Room for a key's value, found by [`ShardedMap::entry`].
pub struct VacantEntry<'a, K: MapKey, V> {
    room: hash_table::VacantEntry<'a, Slot<K, V>>,
    hash: u64,
    key: K,
}

impl<K: MapKey, V> ShardedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
        }
    }

    /// Makes room for `additional` more entries at once, spread over the shards, so a surge
    /// that was announced grows nothing while it lasts.
    pub fn reserve(&mut self, additional: usize) {
        let per_shard = additional.div_ceil(SHARDS);
        let hasher = &self.hasher;
        for shard in self.shards.iter_mut() {
            shard.reserve(per_shard, |slot| slot.hash(hasher));
        }
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shards[shard_of(hash)]
            .find(hash, |slot| slot.key.borrow() == key)
            .map(|slot| &slot.value)
    }

    /// The value of `key`, to change in place.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shards[shard_of(hash)]
            .find_mut(hash, |slot| slot.key.borrow() == key)
            .map(|slot| &mut slot.value)
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.entry(key) {
            Entry::Occupied(known) => Some(std::mem::replace(known.value, value)),
            Entry::Vacant(room) => {
                room.insert(value);
                None
            }
        }
    }

    /// The entry of `key`, to insert or update in one lookup.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        let shard = &mut self.shards[shard_of(hash)];
        match shard.entry(hash, |slot| slot.key == key, |slot| slot.hash(hasher)) {
            hash_table::Entry::Occupied(known) => Entry::Occupied(OccupiedEntry {
                value: &mut known.into_mut().value,
            }),
            hash_table::Entry::Vacant(room) => Entry::Vacant(VacantEntry { room, hash, key }),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let found = self.shards[shard_of(hash)].find_entry(hash, |slot| slot.key.borrow() == key);
        found.ok().map(|known| known.remove().0.value)
    }

    /// Keeps only the entries of shard `shard` (below [`SHARDS`]) for which `keep` answers
    /// true. One shard at a time, so a caller can sweep the map without holding its lock for
    /// the whole sweep.
    pub fn retain_in_shard(&mut self, shard: usize, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.shards[shard].retain(|slot| keep(&slot.key, &mut slot.value));
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards
            .iter()
            .flat_map(|shard| shard.iter().map(|slot| &slot.value))
    }

    /// Entries the shards can hold without growing.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(HashTable::capacity).sum()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashTable::is_empty)
    }

    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }
}

/// The shard of a hash: bits 32 to 37, which a shard's table reads neither for its slot (the
/// low bits, below 2^32 slots) nor for its tag (the top 7), so one shard's keys still spread
/// over all of its slots.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

impl<K: MapKey, V> Slot<K, V> {
    /// The slot's hash, kept or computed again.
    fn hash(&self, hasher: &RandomState) -> u64 {
        self.hash
            .recall()
            .unwrap_or_else(|| hasher.hash_one(&self.key))
    }
}

impl<K: MapKey, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, K: MapKey, V: Default> Entry<'a, K, V> {
    /// The key's value, set to `V::default()` first if it had none.
    pub fn or_default(self) -> &'a mut V {
        match self {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(room) => room.insert(V::default()),
        }
    }
}

impl<'a, V> OccupiedEntry<'a, V> {
    /// The value.
    pub fn get(&self) -> &V {
        self.value
    }

    /// The value, to change in place for as long as the map is borrowed.
    pub fn into_mut(self) -> &'a mut V {
        self.value
    }
}

impl<'a, K: MapKey, V> VacantEntry<'a, K, V> {
    /// Gives the key `value`.
    pub fn insert(self, value: V) -> &'a mut V {
        let slot = Slot {
            hash: K::KeptHash::keep(self.hash),
            key: self.key,
            value,
        };
        &mut self.room.insert(slot).into_mut().value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_hash_map() {
        let mut map = ShardedMap::new();
        for number in 0..10_000u32 {
            assert_eq!(map.insert(number.to_string(), number), None);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.insert("7".to_owned(), 70), Some(7));
        assert_eq!(map.get("7"), Some(&70));
        *map.get_mut("8").expect("present") += 1;
        assert_eq!(map.get("8"), Some(&9));
        *map.entry("new".to_owned()).or_default() += 5;
        assert_eq!(map.get("new"), Some(&5));
        assert_eq!(map.remove("9"), Some(9));
        assert_eq!(map.get("9"), None);
        let one_shard = map.shards[0].len();
        map.retain_in_shard(0, |_, _| false);
        assert_eq!(map.len(), 10_000 - one_shard, "only shard 0 is swept");
        for shard in 0..SHARDS {
            map.retain_in_shard(shard, |_, value| *value % 2 == 0);
        }
        assert!(map.values().all(|value| value % 2 == 0));
        for shard in 0..SHARDS {
            map.retain_in_shard(shard, |_, _| false);
        }
        assert!(map.is_empty());
    }

    #[test]
    fn spreads_entries_over_every_shard() {
        let mut map = ShardedMap::new();
        for number in 0..(SHARDS as u64 * 1_000) {
            map.insert(number, ());
        }
        let sizes: Vec<usize> = map.shards.iter().map(HashTable::len).collect();
        // A shard never holds twice its share, so none has to rehash twice its share at once.
        assert!(
            sizes.iter().all(|&size| size > 500 && size < 2_000),
            "{sizes:?}"
        );
    }
}
