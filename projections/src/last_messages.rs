//! The last message id of each large chat, in memory, for placing a user's large chats in
//! their chat list without reading every chat record (issue #11: a user in 1,000 groups
//! above [`crate::limits::CHAT_LIST_FANOUT_MAX`] members paid 1,000 record reads per
//! `get_chats`).
//!
//! Large chats have no per-member chat-list key (a message to them writes nothing per
//! member), so a chat list places them by their last message id. [`LastMessages`] keeps
//! that id per large chat under the batch sequence number it is true as of, filled two
//! ways: the engine's writer **records** every large chat whose record a batch changed
//! (before readers can see that batch), and a reader at batch `S` that had to read a chat
//! record **remembers** its id as of `S`.
//!
//! Architecture invariant: an entry `(seq, id)` holds the newest `seq` anyone recorded or
//! remembered, and every change at or after [`Inner::trusted_from`] was recorded; so for
//! a reader at `S >= seq`, no change happened in `(seq, S]` (it would have raised `seq`),
//! and `id` is the chat's last message id as of `S`. A reader at `S < seq` reads the
//! record instead. The cache holds at most [`LAST_MESSAGES_CHATS_MAX`] chats; when full it
//! starts over empty, trusting only what is recorded or remembered from then on.

use osmium_proto::ids::{ChatId, MessageId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most large chats whose last message id is kept (24 B each: about 24 MiB).
pub const LAST_MESSAGES_CHATS_MAX: usize = 1_000_000;

/// Last message ids of large chats, each as of a batch sequence number (see the module docs).
#[derive(Debug, Default)]
pub struct LastMessages {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ChatId, (u64, MessageId)>,
    /// Batch from which every change was recorded (the last time the cache started over).
    trusted_from: u64,
}

impl LastMessages {
    /// An empty cache (every change from batch 0 on must be recorded).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock: a holder panicked between two whole-entry writes; entries are
        // still each true as of their sequence number.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Batch `seq` (newer than every batch recorded before, not yet visible to readers)
    /// changed these large chats' records: their last message ids as of it.
    pub fn record(&self, seq: u64, changed: &[(ChatId, MessageId)]) {
        if changed.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.len() + changed.len() > LAST_MESSAGES_CHATS_MAX {
            inner.entries.clear();
            inner.trusted_from = seq;
        }
        for &(chat, last) in changed {
            inner.entries.insert(chat, (seq, last));
        }
    }

    /// The last message id of each of `chats` as of batch `visible`, where known.
    pub fn lookup(&self, visible: u64, chats: &[ChatId]) -> Vec<Option<MessageId>> {
        let inner = self.lock();
        chats
            .iter()
            .map(|chat| inner.entries.get(chat).filter(|(seq, _)| *seq <= visible).map(|&(_, last)| last))
            .collect()
    }

    /// A reader at batch `visible` read these last message ids from chat records.
    pub fn remember(&self, visible: u64, read: &[(ChatId, MessageId)]) {
        let mut inner = self.lock();
        if visible < inner.trusted_from {
            return; // changes before the restart may be missing: its view may be older than one
        }
        for &(chat, last) in read {
            let room = inner.entries.len() < LAST_MESSAGES_CHATS_MAX;
            match inner.entries.get_mut(&chat) {
                Some(entry) if entry.0 < visible => *entry = (visible, last),
                Some(_) => {} // as new or newer
                None if room => {
                    inner.entries.insert(chat, (visible, last));
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: ChatId = ChatId(7);

    #[test]
    fn a_recorded_id_is_seen_by_readers_at_or_after_its_batch_only() {
        let cache = LastMessages::new();
        cache.record(5, &[(CHAT, MessageId(50))]);
        assert_eq!(cache.lookup(4, &[CHAT]), [None]);
        assert_eq!(cache.lookup(5, &[CHAT]), [Some(MessageId(50))]);
        assert_eq!(cache.lookup(9, &[CHAT]), [Some(MessageId(50))]);
    }

    #[test]
    fn a_reader_never_overwrites_a_newer_recorded_id() {
        let cache = LastMessages::new();
        cache.record(8, &[(CHAT, MessageId(80))]);
        cache.remember(6, &[(CHAT, MessageId(60))]); // read its record at batch 6, late
        assert_eq!(cache.lookup(9, &[CHAT]), [Some(MessageId(80))]);
        assert_eq!(cache.lookup(7, &[CHAT]), [None], "batch 7 readers read the record");
    }

    #[test]
    fn a_remembered_id_serves_later_readers_until_a_change_is_recorded() {
        let cache = LastMessages::new();
        cache.remember(6, &[(CHAT, MessageId(60))]);
        assert_eq!(cache.lookup(6, &[CHAT]), [Some(MessageId(60))]);
        assert_eq!(cache.lookup(5, &[CHAT]), [None]);
        cache.record(7, &[(CHAT, MessageId(70))]);
        assert_eq!(cache.lookup(7, &[CHAT]), [Some(MessageId(70))]);
    }

    #[test]
    fn after_starting_over_a_reader_older_than_the_restart_is_not_trusted() {
        let cache = LastMessages::new();
        let many: Vec<(ChatId, MessageId)> = (0..LAST_MESSAGES_CHATS_MAX as u64).map(|id| (ChatId(id + 100), MessageId(id))).collect();
        cache.record(1, &many);
        cache.record(2, &[(ChatId(1), MessageId(1))]); // full: starts over at batch 2
        cache.remember(1, &[(CHAT, MessageId(10))]);
        assert_eq!(cache.lookup(3, &[CHAT]), [None], "batch 1's view may miss a change whose record was dropped");
        assert_eq!(cache.lookup(3, &[ChatId(1)]), [Some(MessageId(1))]);
    }
}
