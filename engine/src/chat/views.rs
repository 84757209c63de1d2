//! Read responses: the projections shaped into the protocol's `Chat`, `Chats`,
//! `Messages` and `InvitePreview` for one viewer.

use crate::error::EngineError;
use osmium_projections::effects::ConversationSnapshot;
use osmium_projections::query::{self, ChatListPage, HistoryFrom};
use osmium_projections::records::{InviteRecord, load_chat, load_member, load_message};
use osmium_projections::{ProjectionError, StoreRead};
use osmium_proto::ids::{ChatId, MessageId, UserId};
use osmium_proto::{auth, chats, messages, types};
use std::collections::BTreeSet;

/// The last message of a chat as `viewer` addresses it, if any.
fn last_message(
    view: &dyn StoreRead,
    viewer: UserId,
    chat_id: ChatId,
    chat: &osmium_projections::records::ChatRecord,
) -> Result<Option<types::Message>, ProjectionError> {
    if !chat.has_messages(chat_id) {
        return Ok(None);
    }
    let Some(record) = load_message(view, chat_id, chat.last_message_id)? else { return Ok(None) };
    query::message_view(query::chat_ref_for(viewer, chat_id, chat), chat_id, chat.last_message_id, &record).map(Some)
}

fn users(view: &dyn StoreRead, ids: BTreeSet<UserId>) -> Result<Vec<types::User>, ProjectionError> {
    ids.into_iter().map(|user| query::user_view(view, user)).collect()
}

/// The directory entries of `ids`, each once, in id order.
pub(crate) fn users_of(view: &dyn StoreRead, ids: impl IntoIterator<Item = UserId>) -> Result<Vec<types::User>, EngineError> {
    Ok(users(view, ids.into_iter().collect())?)
}

/// `GetChat`'s answer built from a member's snapshot (what an effect carries); only user
/// profiles are read from `view`.
pub(crate) fn chat_of_snapshot(
    view: &dyn StoreRead,
    viewer: UserId,
    chat_id: ChatId,
    snapshot: &ConversationSnapshot,
) -> Result<chats::Chat, EngineError> {
    let chat = &snapshot.chat;
    let conversation = query::conversation_of(
        viewer,
        chat_id,
        chat,
        &snapshot.member,
        snapshot.unread_count,
        snapshot.unread_mentions_count,
    );
    let message = match &snapshot.last_message {
        Some((id, record)) => Some(query::message_view(query::chat_ref_for(viewer, chat_id, chat), chat_id, *id, record)?),
        None => None,
    };
    let group = query::group_of(viewer, chat_id, chat, &snapshot.participants);
    let mut ids = BTreeSet::new();
    referenced_users(chat, group.as_ref(), &mut ids);
    if let Some(message) = &message {
        ids.insert(UserId(message.author_id));
    }
    Ok(chats::Chat { chat: Some(conversation), message, users: users(view, ids)?, group, channel: None })
}

/// The users a chat references for `viewer`: DM peers, or a group's participants.
fn referenced_users(
    chat: &osmium_projections::records::ChatRecord,
    group: Option<&types::Group>,
    ids: &mut BTreeSet<UserId>,
) {
    match (&chat.kind, group) {
        (osmium_projections::records::ChatKind::Direct { user_a, user_b }, _) => {
            ids.insert(*user_a);
            ids.insert(*user_b);
        }
        (_, Some(group)) => ids.extend(group.participant_ids.iter().map(|&id| UserId(id))),
        _ => {}
    }
}

/// `GetChat`'s answer for a chat `viewer` is a member of; `None` if not a member.
pub(crate) fn chat_view(view: &dyn StoreRead, viewer: UserId, chat_id: ChatId) -> Result<Option<chats::Chat>, ProjectionError> {
    let Some(chat) = load_chat(view, chat_id)? else { return Ok(None) };
    let Some(member) = load_member(view, chat_id, viewer)? else { return Ok(None) };
    let conversation = query::conversation(view, viewer, chat_id, &chat, &member)?;
    let message = last_message(view, viewer, chat_id, &chat)?;
    let group = query::group_view(view, viewer, chat_id, &chat)?;
    let mut ids = BTreeSet::new();
    referenced_users(&chat, group.as_ref(), &mut ids);
    if let Some(message) = &message {
        ids.insert(UserId(message.author_id));
    }
    Ok(Some(chats::Chat {
        chat: Some(conversation),
        message,
        users: users(view, ids)?,
        group,
        channel: None,
    }))
}

/// How many group members `GetChats.users` lists (see [`super::limits::Limits`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct UsersBound {
    /// The first members of each group, in join order.
    pub(crate) per_group: usize,
    /// Group members are added while the answer holds fewer users than this.
    pub(crate) total: usize,
}

/// `GetChats`' answer: one page of the viewer's conversations, newest first, with the
/// users, groups and last messages they reference. `users` holds every DM peer (and the
/// viewer, for DMs), every last message's author, and group members, bounded: the first
/// `per_group` of each group in join order, group by group in page order, while fewer than
/// `total` users are listed (so a page holding a 10,000-member group lists its first
/// `per_group` members, not 10,000).
pub(crate) fn chats_view(
    view: &dyn StoreRead,
    viewer: UserId,
    page: ChatListPage,
    bound: UsersBound,
) -> Result<chats::Chats, ProjectionError> {
    let mut response = chats::Chats::default();
    let mut ids = BTreeSet::new();
    let mut group_members: Vec<UserId> = Vec::new();
    for (_, chat_id) in query::chat_list(view, viewer, page)? {
        let chat = load_chat(view, chat_id)?.ok_or_else(|| ProjectionError::Inconsistent {
            position: 0,
            reason: format!("chat list of {viewer} names chat {chat_id}, which does not exist"),
        })?;
        let member = load_member(view, chat_id, viewer)?.ok_or_else(|| ProjectionError::Inconsistent {
            position: 0,
            reason: format!("chat list of {viewer} names chat {chat_id}, of which they are not a member"),
        })?;
        response.chats.push(query::conversation(view, viewer, chat_id, &chat, &member)?);
        let group = query::group_view(view, viewer, chat_id, &chat)?;
        referenced_users(&chat, None, &mut ids);
        if let Some(group) = &group {
            group_members.extend(group.participant_ids.iter().take(bound.per_group).map(|&id| UserId(id)));
        }
        if let Some(message) = last_message(view, viewer, chat_id, &chat)? {
            ids.insert(UserId(message.author_id));
            response.messages.push(message);
        }
        response.groups.extend(group);
    }
    for member in group_members {
        if ids.len() >= bound.total {
            break;
        }
        ids.insert(member);
    }
    response.users = users(view, ids)?;
    Ok(response)
}

/// `GetHistory`'s answer.
pub(crate) fn history_view(
    view: &dyn StoreRead,
    viewer: UserId,
    chat_id: ChatId,
    from: HistoryFrom,
    limit: usize,
) -> Result<messages::Messages, ProjectionError> {
    let Some(chat) = load_chat(view, chat_id)? else { return Ok(messages::Messages::default()) };
    let mut ids = BTreeSet::new();
    let mut found = Vec::new();
    for (message_id, record) in query::history(view, chat_id, from, limit)? {
        ids.insert(record.author);
        found.push(query::message_view(query::chat_ref_for(viewer, chat_id, &chat), chat_id, message_id, &record)?);
    }
    Ok(messages::Messages { messages: found, users: users(view, ids)? })
}

/// An `InvitePreview` of an invite to a group.
pub(crate) fn invite_preview(
    view: &dyn StoreRead,
    viewer: UserId,
    code: &str,
    invite: &InviteRecord,
) -> Result<auth::InvitePreview, EngineError> {
    let chat = load_chat(view, invite.chat)?.ok_or(EngineError::InviteNotFound)?;
    let group = query::group_view(view, viewer, invite.chat, &chat)?;
    Ok(auth::InvitePreview {
        code: code.to_owned(),
        creator_id: invite.creator.get(),
        target_id: invite.chat.get(),
        target_type: auth::InviteType::Group as i32,
        expires_at: invite.expires_at_ms,
        creator: Some(query::user_view(view, invite.creator)?),
        target_info: group.map(auth::invite_preview::TargetInfo::Chat),
    })
}

/// The engine's own view of an invite: the preview plus its use counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteInfo {
    /// The code.
    pub code: String,
    /// The group it admits to.
    pub chat: ChatId,
    /// Who created it.
    pub creator: UserId,
    /// When it was created (unix ms).
    pub created_at_ms: u64,
    /// Expiry (unix ms), if any.
    pub expires_at_ms: Option<u64>,
    /// Use limit, if any.
    pub max_uses: Option<u32>,
    /// Successful uses so far.
    pub uses: u32,
}

impl InviteInfo {
    pub(crate) fn new(code: String, record: &InviteRecord) -> Self {
        InviteInfo {
            code,
            chat: record.chat,
            creator: record.creator,
            created_at_ms: record.created_at_ms,
            expires_at_ms: record.expires_at_ms,
            max_uses: record.max_uses,
            uses: record.uses,
        }
    }
}

/// The message id in a history offset.
pub(crate) fn history_from(offset: Option<&messages::get_history::Offset>) -> HistoryFrom {
    use messages::get_history::Offset;
    match offset {
        None => HistoryFrom::Latest,
        Some(Offset::Since(id)) => HistoryFrom::Since(MessageId(*id)),
        Some(Offset::Before(id)) => HistoryFrom::Before(MessageId(*id)),
        Some(Offset::Around(id)) => HistoryFrom::Around(MessageId(*id)),
    }
}
