//! From a protocol `ChatRef`, as seen by the acting user, to a chat they belong to.
//! Shared by reads and command decisions, so both refuse the same way.

use crate::error::EngineError;
use osmium_projections::StoreRead;
use osmium_projections::records::{ChatRecord, MemberRecord, load_chat, load_direct_chat, load_member, load_user};
use osmium_proto::ids::{ChatId, UserId};
use osmium_proto::refs::{ChatRef, chat_ref::Ref};

/// A chat the actor is a member of.
#[derive(Clone, Debug)]
pub(crate) struct MemberChat {
    pub(crate) id: ChatId,
    pub(crate) chat: ChatRecord,
    pub(crate) member: MemberRecord,
}

impl MemberChat {
    pub(crate) fn is_owner(&self, user: UserId) -> bool {
        self.chat.group().is_some_and(|group| group.owner == user)
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
pub(crate) fn resolve(state: &dyn StoreRead, actor: UserId, chat_ref: Option<&ChatRef>) -> Result<Resolved, EngineError> {
    let reference = chat_ref
        .and_then(|chat_ref| chat_ref.r#ref.as_ref())
        .ok_or_else(|| EngineError::invalid("chat_ref", "missing"))?;
    let (chat_id, peer) = match reference {
        Ref::Group(group) => (Some(ChatId(group.group_id)), None),
        Ref::User(user) => {
            let peer = UserId(user.user_id);
            if peer != actor && load_user(state, peer)?.is_none() {
                return Err(EngineError::not_found(format!("user {peer}")));
            }
            (load_direct_chat(state, actor, peer)?, Some(peer))
        }
        Ref::Self_(_) => (load_direct_chat(state, actor, actor)?, Some(actor)),
        Ref::Channel(_) => return Err(EngineError::invalid("chat_ref", "channels are not part of the chat subset")),
    };
    let Some(chat_id) = chat_id else {
        return match peer {
            Some(peer) => Ok(Resolved::NoDirectChatYet { peer }),
            None => Err(not_found()),
        };
    };
    let chat = load_chat(state, chat_id)?.ok_or_else(not_found)?;
    let is_group = chat.group().is_some();
    if peer.is_some() == is_group || chat.group().is_some_and(|group| group.closed) {
        return Err(not_found()); // a group id used as a user ref or the reverse, or a closed group
    }
    let member = load_member(state, chat_id, actor)?.ok_or_else(not_found)?;
    Ok(Resolved::Member(MemberChat { id: chat_id, chat, member }))
}

/// Resolves a chat that must exist with the actor as member.
pub(crate) fn resolve_member(
    state: &dyn StoreRead,
    actor: UserId,
    chat_ref: Option<&ChatRef>,
) -> Result<MemberChat, EngineError> {
    match resolve(state, actor, chat_ref)? {
        Resolved::Member(member) => Ok(member),
        Resolved::NoDirectChatYet { .. } => Err(not_found()),
    }
}

/// Resolves a group the actor is a member of (`InvalidArgument` for a DM).
pub(crate) fn resolve_group(
    state: &dyn StoreRead,
    actor: UserId,
    chat_ref: Option<&ChatRef>,
    what: &str,
) -> Result<MemberChat, EngineError> {
    let resolved = resolve_member(state, actor, chat_ref)?;
    if resolved.chat.group().is_none() {
        return Err(EngineError::invalid("chat_ref", format!("direct chats cannot have {what}")));
    }
    Ok(resolved)
}

/// Resolves a group the actor owns.
pub(crate) fn resolve_owned_group(
    state: &dyn StoreRead,
    actor: UserId,
    chat_ref: Option<&ChatRef>,
    what: &str,
) -> Result<MemberChat, EngineError> {
    let resolved = resolve_group(state, actor, chat_ref, what)?;
    if !resolved.is_owner(actor) {
        return Err(EngineError::denied(format!("only the group owner can manage {what}")));
    }
    Ok(resolved)
}
