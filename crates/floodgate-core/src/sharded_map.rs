//! A hash map that grows in small steps.
//!
//! A `HashMap` grows by doubling all at once: at a million idempotency keys one insert rehashes a
//! million entries, and every order of the drop waits behind the ledger's lock while it does
//! (measured with `bench/intake.sh`: 100–600 ms stalls, the whole p99). Split into [`SHARDS`]
//! maps that grow on their own, the longest pause is a [`SHARDS`]th of that; sweeps go shard by
//! shard for the same reason.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};

/// How many maps the entries are spread over.
pub const SHARDS: usize = 64;

/// A `HashMap` split into [`SHARDS`] maps, each keeping SipHash's protection against keys chosen
/// to collide (customer ids and idempotency keys come from the internet).
#[derive(Debug)]
pub struct ShardedMap<K, V> {
    // Picks the shard; independent of the shards' own hashers, so the keys of one shard still
    // spread over all of its buckets.
    spread: RandomState,
    shards: Box<[HashMap<K, V>]>,
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            spread: RandomState::new(),
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
        }
    }

    /// Makes room for `additional` more entries at once, spread over the shards, so a surge
    /// that was announced grows nothing while it lasts.
    pub fn reserve(&mut self, additional: usize) {
        let per_shard = additional.div_ceil(SHARDS);
        for shard in self.shards.iter_mut() {
            shard.reserve(per_shard);
        }
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    /// The value of `key`, to change in place.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard_of(key);
        self.shards[shard].get_mut(key)
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard_of(&key);
        self.shards[shard].insert(key, value)
    }

    /// The entry of `key`, to insert or update in one lookup.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        let shard = self.shard_of(&key);
        self.shards[shard].entry(key)
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard_of(key);
        self.shards[shard].remove(key)
    }

    /// Keeps only the entries of shard `shard` (below [`SHARDS`]) for which `keep` answers
    /// true. One shard at a time, so a caller can sweep the map without holding its lock for
    /// the whole sweep.
    pub fn retain_in_shard(&mut self, shard: usize, keep: impl FnMut(&K, &mut V) -> bool) {
        self.shards[shard].retain(keep);
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }

    /// Entries the shards can hold without growing.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // SHARDS is a power of two, so the low bits choose evenly.
        (self.spread.hash_one(key) as usize) % SHARDS
    }
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
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
        for number in 0..(SHARDS * 1_000) {
            map.insert(number, ());
        }
        let sizes: Vec<usize> = map.shards.iter().map(HashMap::len).collect();
        // A shard never holds twice its share, so none has to rehash twice its share at once.
        assert!(
            sizes.iter().all(|&size| size > 500 && size < 2_000),
            "{sizes:?}"
        );
    }
}
