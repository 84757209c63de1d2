//! The projection tables, declared once: each is one RocksDB column family per projection
//! slot, named after its key layout (FORMAT.md has the layouts; `keys.rs` builds them).

/// Every projection table. Each is one RocksDB column family per projection slot,
/// named after its key layout (see FORMAT.md).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Table {
    /// `chat_id` -> [`crate::records::ChatRecord`].
    ChatidChat,
    /// `chat_id | user_id` -> [`crate::records::MemberRecord`]: one user's view of one chat.
    ChatidUseridMember,
    /// `user_id | last_message_id | chat_id` -> empty: the chat list of chats with at most
    /// [`crate::limits::CHAT_LIST_FANOUT_MAX`] members, ordered by last message.
    UseridLastmsgidChatidChatlist,
    /// `user_id | chat_id` -> empty: the user's memberships in chats above the fan-out limit,
    /// whose order is read from the chat record at query time.
    UseridChatidLargechat,
    /// `user_id | chat_id` -> `position` (big-endian u64): the user's memberships in chats
    /// with their own catch-up sequence (above [`crate::limits::USER_SEQUENCE_MEMBERS_MAX`]
    /// members), each with the first position of that sequence the user is told.
    UseridChatidChatsequence,
    /// `chat_id | message_id` -> [`crate::records::MessageRecord`] (deleted ones stay as tombstones).
    ChatidMsgidMessage,
    /// `chat_id | seq` -> empty: sequence numbers of deleted messages, to derive unread counts.
    ChatidSeqDeleted,
    /// `user_id | user_id` (lower first) -> `chat_id`: the DM (or self chat) between two users.
    UseridUseridDm,
    /// `code` -> [`crate::records::InviteRecord`].
    CodeInvite,
    /// `chat_id | code` -> empty: a chat's active invites.
    ChatidCodeInvite,
    /// `user_id` -> [`crate::records::UserRecord`]: the user directory.
    UseridUser,
    /// `chat_id | user_id | seq` -> `message_id`: a member mentioned by a message (removed
    /// with the message), to derive unread mention counts.
    ChatidUseridSeqMention,
    /// `username` (ASCII lowercased) -> `user_id`: resolves `@name` mentions.
    UsernameUserid,
    /// `chat_id | user_id` -> `pos | neg` (two big-endian u64): permission overrides of a
    /// user who is not a member (left, removed, or never joined), kept until the owner
    /// clears them and restored when the user joins again: bans stick.
    ChatidUseridOverride,
    /// `user_id | position` -> [`crate::catch_up::UserEntry`]: the user's catch-up sequence,
    /// one key per event that tells the user something outside the chats with their own
    /// sequence (see [`crate::catch_up`]).
    UseridPositionUpdate,
    /// `chat_id | position` -> empty: the catch-up sequence of a chat above
    /// [`crate::limits::USER_SEQUENCE_MEMBERS_MAX`] members, one key per event
    /// that tells all its members something (what its members read instead of a key each).
    ChatidPositionUpdate,
    /// `position` -> [`crate::catch_up::EffectsRecord`]: what an event told, once, for
    /// catch-up after a disconnect.
    PositionEffect,
    /// Fixed keys: checkpoint and schema version of this projection slot.
    ProjectionMeta,
}

impl Table {
    /// All tables, in a fixed order.
    pub const ALL: [Table; 18] = [
        Table::ChatidChat,
        Table::ChatidUseridMember,
        Table::UseridLastmsgidChatidChatlist,
        Table::UseridChatidLargechat,
        Table::UseridChatidChatsequence,
        Table::ChatidMsgidMessage,
        Table::ChatidSeqDeleted,
        Table::UseridUseridDm,
        Table::CodeInvite,
        Table::ChatidCodeInvite,
        Table::UseridUser,
        Table::ChatidUseridSeqMention,
        Table::UsernameUserid,
        Table::ChatidUseridOverride,
        Table::UseridPositionUpdate,
        Table::ChatidPositionUpdate,
        Table::PositionEffect,
        Table::ProjectionMeta,
    ];

    /// The table's name, which is its column family name without the slot suffix.
    pub const fn name(self) -> &'static str {
        match self {
            Table::ChatidChat => "chatid_chat",
            Table::ChatidUseridMember => "chatid_userid_member",
            Table::UseridLastmsgidChatidChatlist => "userid_lastmsgid_chatid_chatlist",
            Table::UseridChatidLargechat => "userid_chatid_largechat",
            Table::UseridChatidChatsequence => "userid_chatid_chatsequence",
            Table::ChatidMsgidMessage => "chatid_msgid_message",
            Table::ChatidSeqDeleted => "chatid_seq_deleted",
            Table::UseridUseridDm => "userid_userid_dm",
            Table::CodeInvite => "code_invite",
            Table::ChatidCodeInvite => "chatid_code_invite",
            Table::UseridUser => "userid_user",
            Table::ChatidUseridSeqMention => "chatid_userid_seq_mention",
            Table::UsernameUserid => "username_userid",
            Table::ChatidUseridOverride => "chatid_userid_override",
            Table::UseridPositionUpdate => "userid_position_update",
            Table::ChatidPositionUpdate => "chatid_position_update",
            Table::PositionEffect => "position_effect",
            Table::ProjectionMeta => "projection_meta",
        }
    }

    /// The table named `name` (as [`Table::name`] spells it).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
    }

    /// Dense index of the table in [`Table::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the fold only ever appends to the table: each key is put once, by the event
    /// at the position it names, and never changed or deleted by the fold (the catch-up
    /// index). Layers keep such writes in a vector per key group rather than a skip-list
    /// insert per key ([`crate::layers::Layer`]).
    pub const fn is_append_only(self) -> bool {
        self.append_group_bytes().is_some()
    }

    /// For an append-only table, the leading key bytes that name a group (the user or the
    /// chat; none for `position_effect`): the rest of the key is a position, so the fold puts
    /// each group's keys in increasing order. `None` for the other tables.
    pub const fn append_group_bytes(self) -> Option<usize> {
        match self {
            Table::UseridPositionUpdate | Table::ChatidPositionUpdate => Some(8),
            Table::PositionEffect => Some(0),
            _ => None,
        }
    }
}
