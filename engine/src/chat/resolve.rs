//! From a protocol `ChatRef`, as seen by the acting user, to a chat they belong to.
//! Shared by reads (over the published tables) and command decisions (over the state
//! machine's records), so both refuse the same way.

use crate::error::EngineError;
use osmium_projections::records::{ChatRecord, MemberRecord, load_chat, load_direct_chat, load_member, load_user};
use osmium_projections::{ProjectionState, StoreRead};
use osmium_proto::ids::{ChatId, MessageId, UserId};
use osmium_proto::refs::{ChatRef, chat_ref::Ref};

/// The records chat resolution needs, wherever they are read from.
pub(crate) trait Records {
    /// What resolution needs of a chat record.
    fn chat(&mut self, chat: ChatId) -> Result<Option<ChatSummary>, EngineError>;
    /// A member record.
    fn member(&mut self, chat: ChatId, user: UserId) -> Result<Option<MemberRecord>, EngineError>;
    /// Whether the user is in the directory.
    fn user_exists(&mut self, user: UserId) -> Result<bool, EngineError>;
    /// The DM (or self chat) between two users.
    fn direct_chat(&mut self, a: UserId, b: UserId) -> Result<Option<ChatId>, EngineError>;
}

/// The parts of a chat record that resolution and decisions use (cheap to copy: no name,
/// no photo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChatSummary {
    /// The owner, for groups.
    pub(crate) owner: Option<UserId>,
    /// Whether the group was closed (its last member left).
    pub(crate) closed: bool,
    /// The newest non-deleted message, or the chat id.
    pub(crate) last_message_id: MessageId,
    /// Whether there is a non-deleted message.
    pub(crate) has_messages: bool,
    /// Current members.
    pub(crate) member_count: u32,
}

impl ChatSummary {
    pub(crate) fn of(chat: ChatId, record: &ChatRecord) -> Self {
        let group = record.group();
        ChatSummary {
            owner: group.map(|group| group.owner),
            closed: group.is_some_and(|group| group.closed),
            last_message_id: record.last_message_id,
            has_messages: record.has_messages(chat),
            member_count: record.member_count,
        }
    }

    /// Whether the chat is a group.
    pub(crate) fn is_group(&self) -> bool {
        self.owner.is_some()
    }
}

/// Records read from key-value tables (the published view).
pub(crate) struct Tables<'a>(pub(crate) &'a dyn StoreRead);

impl Records for Tables<'_> {
    fn chat(&mut self, chat: ChatId) -> Result<Option<ChatSummary>, EngineError> {
        Ok(load_chat(self.0, chat)?.map(|record| ChatSummary::of(chat, &record)))
    }

    fn member(&mut self, chat: ChatId, user: UserId) -> Result<Option<MemberRecord>, EngineError> {
        Ok(load_member(self.0, chat, user)?)
    }

    fn user_exists(&mut self, user: UserId) -> Result<bool, EngineError> {
        Ok(load_user(self.0, user)?.is_some())
    }

    fn direct_chat(&mut self, a: UserId, b: UserId) -> Result<Option<ChatId>, EngineError> {
        Ok(load_direct_chat(self.0, a, b)?)
    }
}

impl<S: StoreRead> Records for ProjectionState<S> {
    fn chat(&mut self, chat: ChatId) -> Result<Option<ChatSummary>, EngineError> {
        Ok(ProjectionState::chat(self, chat)?.map(|record| ChatSummary::of(chat, record)))
    }

    fn member(&mut self, chat: ChatId, user: UserId) -> Result<Option<MemberRecord>, EngineError> {
        Ok(ProjectionState::member(self, chat, user)?.cloned())
    }

    fn user_exists(&mut self, user: UserId) -> Result<bool, EngineError> {
        Ok(ProjectionState::user(self, user)?.is_some())
    }

    fn direct_chat(&mut self, a: UserId, b: UserId) -> Result<Option<ChatId>, EngineError> {
        Ok(ProjectionState::direct_chat(self, a, b)?)
    }
}

/// A chat the actor is a member of.
#[derive(Clone, Debug)]
pub(crate) struct MemberChat {
    pub(crate) id: ChatId,
    pub(crate) chat: ChatSummary,
    pub(crate) member: MemberRecord,
}

impl MemberChat {
    pub(crate) fn is_owner(&self, user: UserId) -> bool {
        self.chat.owner == Some(user)
    }
}

/// What a chat reference points at for the actor.
#[derive(Clone, Debug)]
pub(crate) enum Resolved {
    /// An existing chat with the actor as member.
    Member(MemberChat),
    /// A DM (or the self chat) that does not exist yet: its first message creates it.
    NoDirectChatYet { peer: UserId },
}

fn not_found() -> EngineError {
    EngineError::not_found("chat")
}

/// Resolves `chat_ref` for `actor`. Groups the actor is not in, closed groups and
/// unknown ids are all `NotFound`, so that a group's existence does not leak.
pub(crate) fn resolve(records: &mut impl Records, actor: UserId, chat_ref: Option<&ChatRef>) -> Result<Resolved, EngineError> {
    let reference = chat_ref
        .and_then(|chat_ref| chat_ref.r#ref.as_ref())
        .ok_or_else(|| EngineError::invalid("chat_ref", "missing"))?;
    let (chat_id, peer) = match reference {
        Ref::Group(group) => (Some(ChatId(group.group_id)), None),
        Ref::User(user) => {
            let peer = UserId(user.user_id);
            if peer != actor && !records.user_exists(peer)? {
                return Err(EngineError::not_found(format!("user {peer}")));
            }
            (records.direct_chat(actor, peer)?, Some(peer))
        }
        Ref::Self_(_) => (records.direct_chat(actor, actor)?, Some(actor)),
        Ref::Channel(_) => return Err(EngineError::invalid("chat_ref", "channels are not part of the chat subset")),
    };
    let Some(chat_id) = chat_id else {
        return match peer {
            Some(peer) => Ok(Resolved::NoDirectChatYet { peer }),
            None => Err(not_found()),
        };
    };
    let chat = records.chat(chat_id)?.ok_or_else(not_found)?;
    if peer.is_some() == chat.is_group() || chat.closed {
        return Err(not_found()); // a group id used as a user ref or the reverse, or a closed group
    }
    let member = records.member(chat_id, actor)?.ok_or_else(not_found)?;
    Ok(Resolved::Member(MemberChat { id: chat_id, chat, member }))
}

/// Resolves a chat that must exist with the actor as member.
pub(crate) fn resolve_member(records: &mut impl Records, actor: UserId, chat_ref: Option<&ChatRef>) -> Result<MemberChat, EngineError> {
    match resolve(records, actor, chat_ref)? {
        Resolved::Member(member) => Ok(member),
        Resolved::NoDirectChatYet { .. } => Err(not_found()),
    }
}

/// Resolves a group the actor is a member of (`InvalidArgument` for a DM).
pub(crate) fn resolve_group(
    records: &mut impl Records,
    actor: UserId,
    chat_ref: Option<&ChatRef>,
    what: &str,
) -> Result<MemberChat, EngineError> {
    let resolved = resolve_member(records, actor, chat_ref)?;
    if !resolved.chat.is_group() {
        return Err(EngineError::invalid("chat_ref", format!("direct chats cannot have {what}")));
    }
    Ok(resolved)
}

/// Resolves a group the actor owns.
pub(crate) fn resolve_owned_group(
    records: &mut impl Records,
    actor: UserId,
    chat_ref: Option<&ChatRef>,
    what: &str,
) -> Result<MemberChat, EngineError> {
    let resolved = resolve_group(records, actor, chat_ref, what)?;
    if !resolved.is_owner(actor) {
        return Err(EngineError::denied(format!("only the group owner can manage {what}")));
    }
    Ok(resolved)
}
