//! What the fold reports besides the state it changed: who must be told what, as of the
//! event's position. The engine's update fan-out turns effects into protocol updates for
//! the users subscribed; it never reads the state again to find recipients or contents.
//!
//! Effects carry typed records (cheap to clone; a chat's recipients are shared until its
//! membership changes), not protocol messages: each recipient addresses a chat in their
//! own way (a DM by the other user), which the fan-out resolves per recipient.

use crate::records::{ChatKind, ChatRecord, MemberRecord, MessageRecord};
use crate::state::Recipient;
use osmium_proto::ids::{ChatId, MessageId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How members address a chat: a group by its id, a DM by the other user.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Addressing {
    /// A group.
    Group,
    /// A DM between two users (the same user twice for a self chat).
    Direct {
        /// One side.
        user_a: UserId,
        /// The other side.
        user_b: UserId,
    },
}

impl Addressing {
    /// How `kind` is addressed.
    pub fn of(kind: &ChatKind) -> Self {
        match kind {
            ChatKind::Group(_) => Addressing::Group,
            ChatKind::Direct { user_a, user_b } => Addressing::Direct { user_a: *user_a, user_b: *user_b },
        }
    }
}

/// A chat and the members to tell about it, as of an event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Audience {
    /// The chat.
    pub chat: ChatId,
    /// Group or DM (each recipient's `ChatRef` depends on it).
    pub addressing: Addressing,
    /// The members, in user id order. Not kept in [`crate::catch_up::EffectsRecord`]s
    /// (empty when read back): the catch-up index says who was told.
    #[serde(skip)]
    pub recipients: Arc<[Recipient]>,
}

/// A member's own view of a chat, as of an event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConversationSnapshot {
    /// The chat's record.
    pub chat: ChatRecord,
    /// The member's record.
    pub member: MemberRecord,
    /// The member's unread count.
    pub unread_count: u32,
    /// The member's unread mentions.
    pub unread_mentions_count: u32,
    /// The last non-deleted message, if any.
    pub last_message: Option<(MessageId, MessageRecord)>,
    /// A group's members in join order (empty for a DM).
    pub participants: Vec<UserId>,
}

/// One thing to tell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Effect {
    /// A new message, for every member; the author's own copy carries `client_id`. Who is
    /// notified follows each recipient's notification preferences and the message's
    /// mentions (`message.mentions`).
    MessageCreated {
        /// Who is told.
        audience: Audience,
        /// The message.
        message_id: MessageId,
        /// Its record.
        message: MessageRecord,
    },
    /// A message's new content, for every member.
    MessageEdited {
        /// Who is told.
        audience: Audience,
        /// The message.
        message_id: MessageId,
        /// Its record after the edit.
        message: MessageRecord,
    },
    /// Messages deleted, for every member.
    MessagesDeleted {
        /// Who is told.
        audience: Audience,
        /// The deleted ids, as the command named them.
        message_ids: Vec<u64>,
    },
    /// A member's read position, for that member only.
    ReadPositionMoved {
        /// The chat.
        chat: ChatId,
        /// Group or DM.
        addressing: Addressing,
        /// The member.
        user: UserId,
        /// The read position as views show it (clamped to the last message; 0 before any).
        last_read_message_id: MessageId,
        /// Unread messages left.
        unread_count: u32,
        /// Unread mentions of the member left.
        unread_mentions_count: u32,
    },
    /// A member's own view of the chat changed (draft, notification preferences), for that
    /// member only.
    ConversationChanged {
        /// The chat.
        chat: ChatId,
        /// The member.
        user: UserId,
        /// Their view.
        snapshot: Box<ConversationSnapshot>,
    },
    /// A member's permission overrides, for that member only.
    PermissionsChanged {
        /// The chat.
        chat: ChatId,
        /// Group or DM.
        addressing: Addressing,
        /// The member.
        user: UserId,
        /// Granted bits.
        pos: u64,
        /// Denied bits.
        neg: u64,
    },
    /// The group changed (created, edited, a member added or removed, a new owner), for
    /// every member and for `removed`, who no longer is one.
    GroupChanged {
        /// The members after the change.
        audience: Audience,
        /// The group's record after the change.
        chat: ChatRecord,
        /// Its members in join order.
        participants: Vec<UserId>,
        /// A member who was removed by this event.
        removed: Option<UserId>,
    },
}

impl Effect {
    /// The members told, for the effects addressed to a whole chat.
    pub fn audience(&self) -> Option<&Audience> {
        match self {
            Effect::MessageCreated { audience, .. }
            | Effect::MessageEdited { audience, .. }
            | Effect::MessagesDeleted { audience, .. }
            | Effect::GroupChanged { audience, .. } => Some(audience),
            Effect::ReadPositionMoved { .. } | Effect::ConversationChanged { .. } | Effect::PermissionsChanged { .. } => None,
        }
    }

    /// The one member told, for the effects addressed to one member.
    pub fn member(&self) -> Option<UserId> {
        match self {
            Effect::ReadPositionMoved { user, .. }
            | Effect::ConversationChanged { user, .. }
            | Effect::PermissionsChanged { user, .. } => Some(*user),
            Effect::MessageCreated { .. } | Effect::MessageEdited { .. } | Effect::MessagesDeleted { .. } | Effect::GroupChanged { .. } => None,
        }
    }

    /// The chat the effect is about.
    pub fn chat(&self) -> ChatId {
        match self {
            Effect::MessageCreated { audience, .. }
            | Effect::MessageEdited { audience, .. }
            | Effect::MessagesDeleted { audience, .. }
            | Effect::GroupChanged { audience, .. } => audience.chat,
            Effect::ReadPositionMoved { chat, .. }
            | Effect::ConversationChanged { chat, .. }
            | Effect::PermissionsChanged { chat, .. } => *chat,
        }
    }
}
