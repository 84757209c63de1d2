//! Rate limits shared across connections: token buckets kept per key (a user, a remote
//! address), in memory, bounded in entries.
//!
//! A bucket holds at most `max` tokens and refills at `max` per `period`; a bucket that
//! has refilled completely is the same as no bucket, so such entries are dropped whenever
//! the table grows past its last size after a prune (and always before it could pass
//! `entries_max`). Only keys that were limited within the last period are kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket's rate: `max` per `period`, and never more than `max` held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens per period, and the most a bucket holds.
    pub max: u32,
    /// The refill period.
    pub period: Duration,
}

impl Rate {
    /// One token, in the bucket's units: the period in microseconds, capped at
    /// `u32::MAX` (71 minutes) so that `max` tokens always fit in a `u64`.
    fn period_us(self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX).min(u64::from(u32::MAX))
    }

    /// The units of a full bucket: `max` tokens of `period_us` units each.
    fn full(self) -> u64 {
        u64::from(self.max).saturating_mul(self.period_us())
    }
}

/// One bucket: `units` / `period_us` tokens, as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    units: u64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket { units: rate.full(), at: now }
    }

    /// Refills for the time since `at` (each microsecond adds `max` units).
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed_us = u64::try_from(now.saturating_duration_since(self.at).as_micros()).unwrap_or(u64::MAX);
        self.units = self.units.saturating_add(elapsed_us.saturating_mul(u64::from(rate.max))).min(rate.full());
        self.at = now;
    }

    fn has_token(&self, rate: Rate) -> bool {
        self.units >= rate.period_us()
    }

    fn take(&mut self, rate: Rate) -> bool {
        if !self.has_token(rate) {
            return false;
        }
        self.units -= rate.period_us();
        true
    }
}

#[derive(Debug)]
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    /// Prune when the table grows past this (twice its size after the last prune).
    prune_at: usize,
}

/// Token buckets by key, at most `entries_max` of them.
#[derive(Debug)]
pub(crate) struct KeyedBuckets<K> {
    rate: Rate,
    entries_max: usize,
    table: Mutex<Table<K>>,
}

/// Entries a table starts pruning at.
const PRUNE_AT_MIN: usize = 1_024;

impl<K: Hash + Eq + Copy> KeyedBuckets<K> {
    pub(crate) fn new(rate: Rate, entries_max: usize) -> KeyedBuckets<K> {
        KeyedBuckets {
            rate,
            entries_max: entries_max.max(1),
            table: Mutex::new(Table { buckets: HashMap::new(), prune_at: PRUNE_AT_MIN.min(entries_max.max(1)) }),
        }
    }

    /// Takes a token of `key`'s bucket; `false` when it is empty (the call is over the
    /// limit).
    pub(crate) fn take(&self, key: K, now: Instant) -> bool {
        self.with_bucket(key, now, |bucket, rate| bucket.take(rate))
    }

    /// Whether `key`'s bucket has a token, without taking it.
    pub(crate) fn has_token(&self, key: K, now: Instant) -> bool {
        let Ok(table) = self.table.lock() else { return true };
        table.buckets.get(&key).is_none_or(|bucket| {
            let mut bucket = *bucket;
            bucket.refill(self.rate, now);
            bucket.has_token(self.rate)
        })
    }

    /// Entries held (for tests of the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().map(|table| table.buckets.len()).unwrap_or(0)
    }

    fn with_bucket(&self, key: K, now: Instant, act: impl FnOnce(&mut Bucket, Rate) -> bool) -> bool {
        let rate = self.rate;
        // A poisoned lock only means another thread panicked mid-update of a counter:
        // the table is still a valid map, so keep limiting with it.
        let mut table = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !table.buckets.contains_key(&key) && table.buckets.len() >= table.prune_at {
            table.buckets.retain(|_, bucket| {
                bucket.refill(rate, now);
                bucket.units < rate.full()
            });
            if table.buckets.len() >= self.entries_max {
                // Every entry is still limited: forget them all rather than grow without
                // bound (the limit fails open for a moment; logged for the operator).
                tracing::warn!(entries = table.buckets.len(), "rate limit table full: cleared");
                table.buckets.clear();
            }
            table.prune_at = table.buckets.len().saturating_mul(2).clamp(PRUNE_AT_MIN.min(self.entries_max), self.entries_max);
        }
        let bucket = table.buckets.entry(key).or_insert_with(|| Bucket::full(rate, now));
        bucket.refill(rate, now);
        act(bucket, rate)
    }
}

/// The key remote addresses are limited by: an IPv4 address as it is, an IPv6 address by
/// its /64 (one subscriber's allocation), an IPv4-mapped IPv6 address as the IPv4 one.
pub(crate) fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_SECOND_3: Rate = Rate { max: 3, period: Duration::from_secs(1) };

    #[test]
    fn a_bucket_allows_max_at_once_then_refills_at_the_rate() {
        let buckets = KeyedBuckets::new(PER_SECOND_3, 100);
        let start = Instant::now();
        assert!((0..3).all(|_| buckets.take(1u64, start)));
        assert!(!buckets.take(1u64, start));
        // A third of a second later exactly one token is back.
        let later = start + Duration::from_millis(334);
        assert!(buckets.take(1u64, later));
        assert!(!buckets.take(1u64, later));
        // Another key has its own bucket.
        assert!(buckets.take(2u64, later));
    }

    #[test]
    fn has_token_does_not_take_one() {
        let buckets = KeyedBuckets::new(Rate { max: 1, period: Duration::from_secs(60) }, 100);
        let now = Instant::now();
        assert!(buckets.has_token(7u64, now));
        assert!(buckets.has_token(7u64, now));
        assert!(buckets.take(7u64, now));
        assert!(!buckets.has_token(7u64, now));
    }

    #[test]
    fn refilled_buckets_are_dropped_and_the_table_stays_bounded() {
        let buckets = KeyedBuckets::new(PER_SECOND_3, 2_000);
        let start = Instant::now();
        for key in 0..5_000u64 {
            buckets.take(key, start + Duration::from_millis(key));
            assert!(buckets.len() <= 2_000, "{} entries at key {key}", buckets.len());
        }
        // A second after the last take, every bucket is full again: the next new key
        // past the prune threshold drops them all.
        let later = start + Duration::from_secs(7);
        for key in 10_000..12_100u64 {
            buckets.take(key, later);
        }
        assert!(buckets.len() <= 2_000);
    }

    #[test]
    fn addresses_are_limited_by_ipv4_or_ipv6_slash_64() {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(address_key(mapped), v4);
    }
}
