//! What readers keep in memory between reads, each entry true as of a batch sequence
//! number: large chats' last message ids, groups' participants and users' large chats
//! (issue #11).
//!
//! - **Last message ids of large chats**, for placing a user's large chats in their chat
//!   list without reading every chat record (a user in 1,000 groups above
//!   [`crate::limits::CHAT_LIST_FANOUT_MAX`] members paid 1,000 record reads per
//!   `get_chats`). Large chats have no per-member chat-list key, so a chat list places
//!   them by their last message id.
//! - **Participants of groups**, in join order, for the `Group` of a conversation (a page
//!   of 50 groups of 258 members read and decoded 12,900 member records per `get_chats`).
//! - **Large chats of a user** (their `userid_chatid_largechat` keys), for the same chat
//!   list: a user in 1,000 large groups scanned 1,000 index keys per `get_chats`, which
//!   made that call 1.6x to 1.7x a page of DMs.
//!
//! Each is a [`BatchCache`], filled two ways: the engine's state machine **records** every chat
//! (or user) a batch changed (before readers can see that batch): the new last message id,
//! or, for participants and large chats, that they changed (readers read them again); and
//! a reader at batch `S` that had to read them from records **remembers** them as of `S`.
//!
//! Architecture invariant: an entry `(seq, value)` holds the newest `seq` anyone recorded
//! or remembered, and every change at or after [`Inner::trusted_from`] was recorded; so
//! for a reader at `S >= seq`, no change happened in `(seq, S]` (it would have raised
//! `seq`), and `value` (when known) is true as of `S`. A reader at `S < seq` reads the
//! records instead. A cache holds at most its `units_max`; when full it starts over
//! empty, trusting only what is recorded or remembered from then on.

use crate::state::BatchWrites;
use osmium_proto::ids::{ChatId, MessageId, UserId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Most large chats whose last message id is kept (24 B each: about 24 MiB).
pub const LAST_MESSAGES_CHATS_MAX: usize = 1_000_000;
/// Most participant ids kept over all groups, plus one per group (8 B each and the
/// entry's ~40 B: at most about 40 MiB).
pub const PARTICIPANTS_IDS_MAX: usize = 4_000_000;
/// Most large-chat ids kept over all users, plus one per user (8 B each and the entry's
/// ~40 B: at most about 40 MiB).
pub const LARGE_CHATS_IDS_MAX: usize = 4_000_000;

/// What a [`BatchCache`] counts against its limit for one value.
pub trait Units {
    /// This value's units (at least 1).
    fn units(&self) -> usize;
}

impl Units for MessageId {
    fn units(&self) -> usize {
        1
    }
}

impl<T> Units for Arc<[T]> {
    fn units(&self) -> usize {
        1 + self.len()
    }
}

/// The read caches of one engine, recorded by its state machine (see the module docs).
#[derive(Debug)]
pub struct ReadCaches {
    /// Large chats' last message ids.
    pub last_messages: BatchCache<ChatId, MessageId>,
    /// Groups' participants, in join order.
    pub participants: BatchCache<ChatId, Arc<[UserId]>>,
    /// Each user's large chats, in chat id order.
    pub large_chats: BatchCache<UserId, Arc<[ChatId]>>,
}

impl Default for ReadCaches {
    fn default() -> Self {
        ReadCaches {
            last_messages: BatchCache::new(LAST_MESSAGES_CHATS_MAX),
            participants: BatchCache::new(PARTICIPANTS_IDS_MAX),
            large_chats: BatchCache::new(LARGE_CHATS_IDS_MAX),
        }
    }
}

impl ReadCaches {
    /// Empty caches (every change from batch 0 on must be recorded).
    pub fn new() -> Self {
        Self::default()
    }

    /// Batch `seq` (newer than every batch recorded before, not yet visible to readers)
    /// wrote `writes`: its large chats' last message ids, and the chats whose participants
    /// and the users whose large chats it changed.
    pub fn record(&self, seq: u64, writes: &BatchWrites) {
        self.last_messages.record(seq, writes.large_last_messages.iter().map(|&(chat, last)| (chat, Some(last))));
        self.participants.record(seq, writes.participants_changed.iter().map(|&chat| (chat, None)));
        self.large_chats.record(seq, writes.large_chats_changed.iter().map(|&user| (user, None)));
    }
}

/// Values per key (a chat or a user), each as of a batch sequence number (see the module
/// docs).
#[derive(Debug)]
pub struct BatchCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    units_max: usize,
}

#[derive(Debug)]
struct Inner<K, V> {
    /// `(seq, value)`: `None` when a change at `seq` was recorded without its value.
    entries: HashMap<K, (u64, Option<V>)>,
    units: usize,
    /// Batch from which every change was recorded (the last time the cache started over).
    trusted_from: u64,
}

impl<K: Copy + Eq + Hash, V: Units + Clone> BatchCache<K, V> {
    /// An empty cache holding at most `units_max` units.
    pub fn new(units_max: usize) -> Self {
        BatchCache { inner: Mutex::new(Inner { entries: HashMap::new(), units: 0, trusted_from: 0 }), units_max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // A poisoned lock: a holder panicked between two whole-entry writes; entries are
        // still each true as of their sequence number.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Batch `seq` (newer than every batch recorded before, not yet visible to readers)
    /// changed these keys: their values as of it, or `None` where unknown.
    pub fn record(&self, seq: u64, changed: impl ExactSizeIterator<Item = (K, Option<V>)>) {
        if changed.len() == 0 {
            return;
        }
        let mut inner = self.lock();
        for (key, value) in changed {
            if inner.units + entry_units(value.as_ref()) > self.units_max {
                inner.entries.clear();
                inner.units = 0;
                inner.trusted_from = seq;
            }
            inner.put(key, seq, value);
        }
    }

    /// The value of each of `keys` as of batch `visible`, where known.
    pub fn lookup(&self, visible: u64, keys: &[K]) -> Vec<Option<V>> {
        let inner = self.lock();
        keys.iter().map(|key| inner.value_at(visible, key)).collect()
    }

    /// The value of `key` as of batch `visible`, where known.
    pub fn get(&self, visible: u64, key: &K) -> Option<V> {
        self.lock().value_at(visible, key)
    }

    /// A reader at batch `visible` read these values from records.
    pub fn remember(&self, visible: u64, read: impl Iterator<Item = (K, V)>) {
        let mut inner = self.lock();
        if visible < inner.trusted_from {
            return; // changes before the restart may be missing: its view may be older than one
        }
        for (key, value) in read {
            let newer = match inner.entries.get(&key) {
                Some((seq, known)) => *seq < visible || (*seq == visible && known.is_none()),
                None => true,
            };
            if newer && inner.units + entry_units(Some(&value)) <= self.units_max {
                inner.put(key, visible, Some(value));
            }
        }
    }
}

/// The units of one entry: its value's, or 1 for a change recorded without it.
fn entry_units<V: Units>(value: Option<&V>) -> usize {
    value.map_or(1, Units::units)
}

impl<K: Eq + Hash, V: Units + Clone> Inner<K, V> {
    /// The value of `key` if known and true as of batch `visible` (see the module docs).
    fn value_at(&self, visible: u64, key: &K) -> Option<V> {
        self.entries.get(key).filter(|(seq, _)| *seq <= visible).and_then(|(_, value)| value.clone())
    }

    fn put(&mut self, key: K, seq: u64, value: Option<V>) {
        self.units += entry_units(value.as_ref());
        if let Some((_, old)) = self.entries.insert(key, (seq, value)) {
            self.units -= entry_units(old.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: ChatId = ChatId(7);

    fn last_messages() -> BatchCache<ChatId, MessageId> {
        BatchCache::new(LAST_MESSAGES_CHATS_MAX)
    }

    fn recorded(chat: ChatId, last: u64) -> std::iter::Once<(ChatId, Option<MessageId>)> {
        std::iter::once((chat, Some(MessageId(last))))
    }

    fn read(chat: ChatId, last: u64) -> std::iter::Once<(ChatId, MessageId)> {
        std::iter::once((chat, MessageId(last)))
    }

    fn participants_changed(chat: ChatId) -> BatchWrites {
        BatchWrites { participants_changed: vec![chat], ..BatchWrites::default() }
    }

    fn participants(ids: &[u64]) -> Arc<[UserId]> {
        ids.iter().map(|&id| UserId(id)).collect()
    }

    #[test]
    fn a_recorded_id_is_seen_by_readers_at_or_after_its_batch_only() {
        let cache = last_messages();
        cache.record(5, recorded(CHAT, 50));
        assert_eq!(cache.lookup(4, &[CHAT]), [None]);
        assert_eq!(cache.lookup(5, &[CHAT]), [Some(MessageId(50))]);
        assert_eq!(cache.lookup(9, &[CHAT]), [Some(MessageId(50))]);
    }

    #[test]
    fn a_reader_never_overwrites_a_newer_recorded_id() {
        let cache = last_messages();
        cache.record(8, recorded(CHAT, 80));
        cache.remember(6, read(CHAT, 60)); // read its record at batch 6, late
        assert_eq!(cache.lookup(9, &[CHAT]), [Some(MessageId(80))]);
        assert_eq!(cache.lookup(7, &[CHAT]), [None], "batch 7 readers read the record");
    }

    #[test]
    fn a_remembered_id_serves_later_readers_until_a_change_is_recorded() {
        let cache = last_messages();
        cache.remember(6, read(CHAT, 60));
        assert_eq!(cache.lookup(6, &[CHAT]), [Some(MessageId(60))]);
        assert_eq!(cache.lookup(5, &[CHAT]), [None]);
        cache.record(7, recorded(CHAT, 70));
        assert_eq!(cache.lookup(7, &[CHAT]), [Some(MessageId(70))]);
    }

    #[test]
    fn after_starting_over_a_reader_older_than_the_restart_is_not_trusted() {
        let cache = last_messages();
        let many = (0..LAST_MESSAGES_CHATS_MAX as u64).map(|id| (ChatId(id + 100), Some(MessageId(id))));
        cache.record(1, many.collect::<Vec<_>>().into_iter());
        cache.record(2, recorded(ChatId(1), 1)); // full: starts over at batch 2
        cache.remember(1, read(CHAT, 10));
        assert_eq!(cache.lookup(3, &[CHAT]), [None], "batch 1's view may miss a change whose record was dropped");
        assert_eq!(cache.lookup(3, &[ChatId(1)]), [Some(MessageId(1))]);
    }

    #[test]
    fn a_recorded_membership_change_sends_readers_at_or_after_it_back_to_the_records() {
        let caches = ReadCaches::new();
        caches.participants.remember(3, std::iter::once((CHAT, participants(&[1, 2]))));
        caches.record(5, &participants_changed(CHAT));
        assert_eq!(caches.participants.lookup(3, &[CHAT]), [None], "one version is kept: the change's");
        assert_eq!(caches.participants.lookup(5, &[CHAT]), [None]);
        assert_eq!(caches.participants.lookup(9, &[CHAT]), [None]);
    }

    #[test]
    fn participants_read_at_the_batch_of_the_change_serve_readers_from_then_on() {
        let caches = ReadCaches::new();
        caches.record(5, &participants_changed(CHAT));
        caches.participants.remember(5, std::iter::once((CHAT, participants(&[1, 2, 3]))));
        assert_eq!(caches.participants.lookup(5, &[CHAT]), [Some(participants(&[1, 2, 3]))]);
        assert_eq!(caches.participants.lookup(4, &[CHAT]), [None]);
    }

    #[test]
    fn participants_read_before_a_recorded_change_are_not_remembered() {
        let caches = ReadCaches::new();
        caches.record(5, &participants_changed(CHAT));
        caches.participants.remember(4, std::iter::once((CHAT, participants(&[1, 2]))));
        assert_eq!(caches.participants.lookup(9, &[CHAT]), [None]);
    }

    #[test]
    fn a_recorded_change_of_a_users_large_chats_sends_readers_at_or_after_it_back_to_the_index() {
        let caches = ReadCaches::new();
        let user = UserId(9);
        let chats: Arc<[ChatId]> = Arc::from([CHAT]);
        caches.large_chats.remember(3, std::iter::once((user, chats.clone())));
        assert_eq!(caches.large_chats.lookup(4, &[user]), [Some(chats)]);
        caches.record(5, &BatchWrites { large_chats_changed: vec![user], ..BatchWrites::default() });
        assert_eq!(caches.large_chats.lookup(5, &[user]), [None]);
        assert_eq!(caches.large_chats.lookup(4, &[user]), [None], "one version is kept: the change's");
    }

    #[test]
    fn a_cache_counts_each_participant_against_its_limit() {
        let cache: BatchCache<ChatId, Arc<[UserId]>> = BatchCache::new(10);
        cache.remember(1, std::iter::once((ChatId(1), participants(&[1, 2, 3, 4, 5, 6, 7, 8]))));
        cache.remember(1, std::iter::once((ChatId(2), participants(&[1, 2]))));
        assert_eq!(cache.lookup(1, &[ChatId(1), ChatId(2)]), [Some(participants(&[1, 2, 3, 4, 5, 6, 7, 8])), None], "9 + 3 > 10");
        cache.record(2, std::iter::once((ChatId(1), None)));
        cache.remember(2, std::iter::once((ChatId(2), participants(&[1, 2]))));
        assert_eq!(cache.lookup(2, &[ChatId(1), ChatId(2)]), [None, Some(participants(&[1, 2]))], "1 + 3 <= 10");
    }
}
