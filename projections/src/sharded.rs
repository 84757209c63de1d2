//! A hash map split by the key's hash into [`SHARDS`] maps, for the state's largest
//! tables. A `HashMap` grows by allocating a table twice its size while the old one is
//! still alive, and shrinks the same way: for a table of a million messages that is
//! 100 MB held twice over for a moment (issue #11: the 10M-event opening peaked while the
//! message table was shrunk, its old 103 MB table beside the new 51 MB one). Split, only
//! one shard, 1/[`SHARDS`] of the table, is held twice at a time.
//!
//! Architecture invariant: a key lives in the shard its hash chooses, with a hasher of
//! its own (seeded apart from the shards' hashers, whose top bits would otherwise be the
//! same for every key of a shard).

use foldhash::{HashMap, HashMapExt as _};
use std::hash::{BuildHasher, Hash};

/// Shards of a [`ShardedMap`]: a power of two.
pub(crate) const SHARDS: usize = 64;

/// Entries below which [`ShardedMap::shrink_sparse`] leaves a shard as it is.
const SHRINK_ENTRIES_MIN: usize = 256;

/// A hash map split into [`SHARDS`] maps (see the module's documentation).
pub(crate) struct ShardedMap<K, V> {
    shards: Box<[HashMap<K, V>]>,
    chooser: foldhash::fast::RandomState,
}

impl<K, V> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: usize = self.shards.iter().map(HashMap::len).sum();
        f.debug_struct("ShardedMap").field("entries", &entries).finish_non_exhaustive()
    }
}

impl<K: Eq + Hash, V> ShardedMap<K, V> {
    pub(crate) fn new() -> Self {
        ShardedMap { shards: (0..SHARDS).map(|_| HashMap::new()).collect(), chooser: foldhash::fast::RandomState::default() }
    }

    fn shard(&self, key: &K) -> usize {
        // The hash's top bits: below SHARDS, a power of two.
        (self.chooser.hash_one(key) >> (u64::BITS - SHARDS.trailing_zeros())) as usize
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.shards[self.shard(key)].get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.shards[self.shard(key)].contains_key(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard(&key);
        self.shards[shard].insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let shard = self.shard(key);
        self.shards[shard].remove(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in self.shards.iter_mut() {
            shard.retain(&mut keep);
        }
    }

    /// Entries the shards hold room for.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    /// Gives back the room of every shard that is more than half empty
    /// ([`shrink_sparse`]), one shard at a time.
    pub(crate) fn shrink_sparse(&mut self) {
        for shard in self.shards.iter_mut() {
            shrink_sparse(shard, SHRINK_ENTRIES_MIN);
        }
    }
}

/// Gives back the room of a table that is more than half empty, past `entries_min`
/// entries. A table keeps its capacity when entries leave; the state counts entries at
/// twice their size, which holds for a table that grew, not for one that eviction emptied
/// (issue #11: the users table of the 10M-event opening kept room for 1M users, 152 MB,
/// long after most of them were evicted for messages).
pub(crate) fn shrink_sparse<K: Eq + Hash, V>(table: &mut HashMap<K, V>, entries_min: usize) {
    if table.capacity() > 2 * table.len() + entries_min {
        table.shrink_to(table.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_found_in_its_shard_after_inserts_removes_and_shrinks() {
        let mut map = ShardedMap::new();
        for key in 0..100_000u64 {
            map.insert(key, key * 2);
        }
        map.retain(|key, _| key % 10 == 0);
        map.shrink_sparse();
        assert_eq!(map.len(), 10_000);
        assert!(map.capacity() <= 2 * 10_000 + SHARDS * SHRINK_ENTRIES_MIN, "capacity {}", map.capacity());
        for key in 0..100_000u64 {
            assert_eq!(map.get(&key).copied(), (key % 10 == 0).then_some(key * 2), "key {key}");
        }
        assert_eq!(map.remove(&10), Some(20));
        assert!(!map.contains_key(&10));
    }

    #[test]
    fn keys_spread_over_every_shard() {
        let mut map = ShardedMap::new();
        for key in 0..10_000u64 {
            map.insert(key, ());
        }
        let smallest = map.shards.iter().map(HashMap::len).min().unwrap_or(0);
        assert!(smallest > 10_000 / SHARDS / 2, "a shard of {smallest} of {} keys", 10_000);
    }
}
