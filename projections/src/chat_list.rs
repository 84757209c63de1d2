//! The chat-list index (`userid_lastmsgid_chatid_chatlist`) is derived, not folded: an
//! entry `(user, last_message_id, chat)` exists for every member of every chat of at most
//! [`crate::limits::CHAT_LIST_FANOUT_MAX`] members. Chats above it are listed through
//! `userid_chatid_largechat` and placed by their chat record at query time.
//!
//! The fold only notes, per chat, that its entries will change ([`ListChange`]: the last
//! message id the flushed index has, and the members added and removed since). When the
//! state is cut for a flush, the entries that differ are deleted and put once
//! ([`ListChange::index_writes`]): a message moves each member's entry once per flush,
//! not once per message. Until that flush lands, readers skip the stale entries of the
//! chats the changes touched ([`crate::store::StoreRead::touched_chats`]) and place those
//! chats by their current records.

use crate::keys;
use crate::layers::KvWrite;
use crate::tables::Table;
use osmium_proto::ids::{ChatId, MessageId, UserId};
use std::collections::{BTreeSet, HashSet};

/// How one chat's chat-list entries changed since the last cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListChange {
    /// The chat's last message id as the flushed index has it; `None` when the chat did
    /// not exist (or was already large) at the last cut, so that it has no entries.
    at_cut: Option<MessageId>,
    /// Members who joined since the last cut (and are still members).
    added: HashSet<UserId>,
    /// Members at the last cut who left since.
    removed: HashSet<UserId>,
}

impl ListChange {
    /// No change yet to a chat whose flushed entries carry `at_cut`.
    pub fn new(at_cut: Option<MessageId>) -> Self {
        ListChange { at_cut, added: HashSet::new(), removed: HashSet::new() }
    }

    /// `user` joined.
    pub fn member_added(&mut self, user: UserId) {
        if !self.removed.remove(&user) {
            self.added.insert(user);
        }
    }

    /// `user` left.
    pub fn member_removed(&mut self, user: UserId) {
        if !self.added.remove(&user) {
            self.removed.insert(user);
        }
    }

    /// The index writes that bring the chat's flushed entries to its state now: `now` is
    /// `(last_message_id, large)` of the chat (`None` when it does not exist), `members`
    /// its members now.
    pub fn index_writes(&self, chat: ChatId, now: Option<(MessageId, bool)>, members: &[UserId]) -> Vec<KvWrite> {
        let entry = |user: UserId, last: MessageId| keys::chat_list_entry(user, last, chat);
        let old: BTreeSet<Vec<u8>> = match self.at_cut {
            None => BTreeSet::new(),
            Some(last) => members
                .iter()
                .filter(|user| !self.added.contains(user))
                .chain(self.removed.iter())
                .map(|&user| entry(user, last))
                .collect(),
        };
        let new: BTreeSet<Vec<u8>> = match now {
            Some((last, false)) => members.iter().map(|&user| entry(user, last)).collect(),
            _ => BTreeSet::new(),
        };
        let table = Table::UseridLastmsgidChatidChatlist;
        let deletes = old.difference(&new).map(|key| (table, key.clone(), None));
        let puts = new.difference(&old).map(|key| (table, key.clone(), Some(Vec::new())));
        deletes.chain(puts).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: u64, last: u64, chat: u64) -> Vec<u8> {
        keys::chat_list_entry(UserId(user), MessageId(last), ChatId(chat))
    }

    #[test]
    fn a_moved_chat_deletes_and_puts_each_members_entry_once() {
        let change = ListChange::new(Some(MessageId(10)));
        let writes = change.index_writes(ChatId(1), Some((MessageId(30), false)), &[UserId(1), UserId(2)]);
        let table = Table::UseridLastmsgidChatidChatlist;
        assert_eq!(
            writes,
            vec![
                (table, entry(1, 10, 1), None),
                (table, entry(2, 10, 1), None),
                (table, entry(1, 30, 1), Some(Vec::new())),
                (table, entry(2, 30, 1), Some(Vec::new())),
            ]
        );
    }

    #[test]
    fn a_member_who_joined_and_left_between_two_cuts_writes_nothing() {
        let mut change = ListChange::new(Some(MessageId(10)));
        change.member_added(UserId(3));
        change.member_removed(UserId(3));
        assert!(change.index_writes(ChatId(1), Some((MessageId(10), false)), &[UserId(1)]).is_empty());
    }

    #[test]
    fn a_member_who_left_loses_the_entry_and_one_who_joined_gains_one() {
        let mut change = ListChange::new(Some(MessageId(10)));
        change.member_removed(UserId(2));
        change.member_added(UserId(3));
        let writes = change.index_writes(ChatId(1), Some((MessageId(10), false)), &[UserId(1), UserId(3)]);
        let table = Table::UseridLastmsgidChatidChatlist;
        assert_eq!(writes, vec![(table, entry(2, 10, 1), None), (table, entry(3, 10, 1), Some(Vec::new()))]);
    }

    #[test]
    fn a_chat_that_became_large_loses_every_entry() {
        let change = ListChange::new(Some(MessageId(10)));
        let writes = change.index_writes(ChatId(1), Some((MessageId(20), true)), &[UserId(1), UserId(2)]);
        assert_eq!(writes.len(), 2);
        assert!(writes.iter().all(|(_, _, value)| value.is_none()));
    }

    #[test]
    fn a_new_chat_puts_an_entry_per_member() {
        let mut change = ListChange::new(None);
        change.member_added(UserId(1));
        change.member_added(UserId(2));
        let writes = change.index_writes(ChatId(5), Some((MessageId(5), false)), &[UserId(1), UserId(2)]);
        assert_eq!(writes.len(), 2);
        assert!(writes.iter().all(|(_, _, value)| value.is_some()));
    }
}
