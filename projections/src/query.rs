//! Reads of the projections, shaped as protocol views for one viewer. Everything here
//! is read-only and derived: unread counts are computed from sequence numbers, never
//! stored.

use crate::error::ProjectionError;
use crate::keys;
use crate::effects::Addressing;
use crate::records::{
    ChatRecord, MemberRecord, MessageRecord, UserRecord, decode, load_chat, load_member, load_members, load_user,
};
use crate::store::{Direction, ScanRange, StoreRead, Table, collect_prefix};
use osmium_proto::ids::{ChatId, MessageId, UserId};
use osmium_proto::prost::Message as _;
use osmium_proto::{media, refs, types};
use std::ops::ControlFlow;
use std::sync::Arc;

/// The sequence number of the newest message (deleted or not) with an id at most
/// `message`; 0 when there is none.
pub fn seq_at_or_before(
    store: &(impl StoreRead + ?Sized),
    chat: ChatId,
    message: MessageId,
) -> Result<u64, ProjectionError> {
    let prefix = keys::chat(chat);
    let start = keys::message(chat, message);
    let mut found = Ok(0);
    store.scan(
        Table::ChatidMsgidMessage,
        ScanRange::prefix_reverse(&prefix).starting_at(&start),
        &mut |key, value| {
            found = decode::<MessageRecord>(Table::ChatidMsgidMessage, key, value).map(|record| record.seq);
            ControlFlow::Break(())
        },
    )?;
    found
}

/// Unread messages for a member: non-deleted messages after the read position. The
/// member's own messages are never after it, because sending moves it to the message.
pub fn unread_count(
    store: &(impl StoreRead + ?Sized),
    chat_id: ChatId,
    chat: &ChatRecord,
    member: &MemberRecord,
) -> Result<u32, ProjectionError> {
    if member.read_seq >= chat.last_seq {
        return Ok(0);
    }
    let prefix = keys::chat(chat_id);
    let start = keys::deleted_seq(chat_id, member.read_seq + 1);
    let mut deleted_after = 0u64;
    store.scan(Table::ChatidSeqDeleted, ScanRange::prefix(&prefix).starting_at(&start), &mut |_, _| {
        deleted_after += 1;
        ControlFlow::Continue(())
    })?;
    let unread = (chat.last_seq - member.read_seq).saturating_sub(deleted_after);
    Ok(u32::try_from(unread).unwrap_or(u32::MAX))
}

/// Unread mentions of a member: mentions by non-deleted messages after the read position
/// (a deleted message's mention keys are removed with it).
pub fn unread_mentions_count(
    store: &(impl StoreRead + ?Sized),
    chat_id: ChatId,
    viewer: UserId,
    member: &MemberRecord,
) -> Result<u32, ProjectionError> {
    let Some(first) = member.read_seq.checked_add(1) else { return Ok(0) };
    let prefix = keys::mentions_of(chat_id, viewer);
    let start = keys::mention(chat_id, viewer, first);
    let mut count = 0u64;
    store.scan(Table::ChatidUseridSeqMention, ScanRange::prefix(&prefix).starting_at(&start), &mut |_, _| {
        count += 1;
        ControlFlow::Continue(())
    })?;
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// How `viewer` addresses `chat`: a group by its id, a DM by the other user, the self chat as `self`.
pub fn chat_ref_for(viewer: UserId, chat_id: ChatId, chat: &ChatRecord) -> refs::ChatRef {
    chat_ref_by(viewer, chat_id, Addressing::of(&chat.kind))
}

/// [`chat_ref_for`] from the chat's addressing alone (what effects carry).
pub fn chat_ref_by(viewer: UserId, chat_id: ChatId, addressing: Addressing) -> refs::ChatRef {
    let reference = match addressing {
        Addressing::Group => refs::chat_ref::Ref::Group(refs::GroupRef { group_id: chat_id.get() }),
        Addressing::Direct { user_a, user_b } if user_a == user_b => refs::chat_ref::Ref::Self_(refs::RefSelf {}),
        Addressing::Direct { user_a, user_b } => {
            let other = if viewer == user_a { user_b } else { user_a };
            refs::chat_ref::Ref::User(refs::UserRef { user_id: other.get() })
        }
    };
    refs::ChatRef { r#ref: Some(reference) }
}

/// `viewer`'s Conversation for a chat they are a member of.
///
/// `last_read_message_id` is the stored read position, but never above
/// `last_message_id` (the read message may have been deleted since), and 0 while the
/// chat has no message.
pub fn conversation(
    store: &(impl StoreRead + ?Sized),
    viewer: UserId,
    chat_id: ChatId,
    chat: &ChatRecord,
    member: &MemberRecord,
) -> Result<types::Conversation, ProjectionError> {
    let unread = unread_count(store, chat_id, chat, member)?;
    let mentions = unread_mentions_count(store, chat_id, viewer, member)?;
    Ok(conversation_of(viewer, chat_id, chat, member, unread, mentions))
}

/// [`conversation`] with the unread and unread mention counts already known.
pub fn conversation_of(
    viewer: UserId,
    chat_id: ChatId,
    chat: &ChatRecord,
    member: &MemberRecord,
    unread_count: u32,
    unread_mentions_count: u32,
) -> types::Conversation {
    let last_read = if chat.has_messages(chat_id) {
        member.read_message_id.min(chat.last_message_id)
    } else {
        MessageId(0)
    };
    types::Conversation {
        chat_ref: Some(chat_ref_for(viewer, chat_id, chat)),
        last_message_id: chat.last_message_id.get(),
        last_read_message_id: last_read.get(),
        unread_count,
        draft: member.draft.clone(),
        permissions: member.overrides.map(|(pos, neg)| types::PermissionOverrides { pos, neg }),
        notif_prefs: member.notif_prefs.to_proto(),
        unread_mentions_count,
    }
}

/// One page of a user's chat list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatListPage {
    /// At most this many conversations.
    pub limit: usize,
    /// Only conversations whose last message id is below this.
    pub max_id: Option<MessageId>,
    /// Only conversations whose last message id is above this.
    pub min_id: Option<MessageId>,
}

/// The chats of `user` in `page`, ordered by last message id, newest first.
///
/// With only `min_id`, the page holds the `limit` conversations just above `min_id`
/// (forward paging); otherwise the `limit` newest below `max_id` (backward paging).
/// Last message ids are unique (message and chat ids share one snowflake space), so
/// paging visits every conversation exactly once.
pub fn chat_list(
    store: &(impl StoreRead + ?Sized),
    user: UserId,
    page: ChatListPage,
) -> Result<Vec<(MessageId, ChatId)>, ProjectionError> {
    let above = |id: MessageId| page.min_id.is_none_or(|min| id > min);
    let below = |id: MessageId| page.max_id.is_none_or(|max| id < max);
    let forward = page.min_id.is_some() && page.max_id.is_none();
    if page.limit == 0 || page.max_id == Some(MessageId(0)) {
        return Ok(Vec::new());
    }
    let prefix = keys::user_prefix(user);
    let start = if forward {
        page.min_id.and_then(|min| min.get().checked_add(1)).map(|first| keys::chat_list_entry(user, MessageId(first), ChatId(0)))
    } else {
        page.max_id.map(|max| keys::chat_list_entry(user, MessageId(max.get() - 1), ChatId(u64::MAX)))
    };
    if forward && start.is_none() {
        return Ok(Vec::new()); // min_id = u64::MAX: nothing is above it
    }
    let direction = if forward { Direction::Forward } else { Direction::Reverse };
    let range = ScanRange { prefix: &prefix, start: start.as_deref(), direction };
    // Chats whose index entries are stale (changed since the index was last written):
    // skipped in the scan, placed by their current records below.
    let touched = store.touched_chats(user);
    let mut entries = Vec::with_capacity(page.limit);
    let mut failure = None;
    store.scan(Table::UseridLastmsgidChatidChatlist, range, &mut |key, _| match keys::parse_chat_list_entry(key) {
        Ok((_, chat)) if touched.binary_search(&chat).is_ok() => ControlFlow::Continue(()),
        Ok((last, chat)) if above(last) && below(last) => {
            entries.push((last, chat));
            if entries.len() >= page.limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        }
        Ok(_) => ControlFlow::Break(()), // past the other bound
        Err(err) => {
            failure = Some(err);
            ControlFlow::Break(())
        }
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    for &chat in &touched {
        let Some(record) = load_chat(store, chat)? else { continue };
        if record.large || load_member(store, chat, user)?.is_none() {
            continue; // large chats come from the large-chat index; non-members have no entry
        }
        if above(record.last_message_id) && below(record.last_message_id) {
            entries.push((record.last_message_id, chat));
        }
    }
    // Large chats are placed by their last message id: from the store's cache where it
    // knows it (one hash lookup), from the chat record otherwise.
    let large = large_chats(store, user)?;
    let cached = store.cached_last_message_ids(&large);
    let mut read = Vec::new();
    for (&chat, cached) in large.iter().zip(cached) {
        let last = match cached {
            Some(last) => last,
            None => {
                let record = load_chat(store, chat)?.ok_or_else(|| ProjectionError::Inconsistent {
                    position: 0,
                    reason: format!("user {user} lists large chat {chat}, which does not exist"),
                })?;
                read.push((chat, record.last_message_id));
                record.last_message_id
            }
        };
        if above(last) && below(last) {
            entries.push((last, chat));
        }
    }
    store.remember_last_message_ids(&read);
    // The page's entries are chosen before they are sorted: a user in 1,000 large chats
    // sorts a page, not 1,000 entries.
    let newest_first = |a: &(MessageId, ChatId), b: &(MessageId, ChatId)| b.cmp(a);
    if forward {
        select_first(&mut entries, page.limit, Ord::cmp);
        entries.reverse();
    } else {
        select_first(&mut entries, page.limit, newest_first);
    }
    Ok(entries)
}

/// Keeps the first `count` of `entries` in `order`, sorted.
fn select_first<T>(entries: &mut Vec<T>, count: usize, mut order: impl FnMut(&T, &T) -> std::cmp::Ordering) {
    if count == 0 {
        entries.clear();
        return;
    }
    if entries.len() > count {
        entries.select_nth_unstable_by(count - 1, &mut order);
        entries.truncate(count);
    }
    entries.sort_unstable_by(order);
}

/// The large chats of `user`: from the store's cache of them where it has one (see
/// [`crate::read_caches`]), else scanned from `userid_chatid_largechat` (and remembered).
fn large_chats(store: &(impl StoreRead + ?Sized), user: UserId) -> Result<Arc<[ChatId]>, ProjectionError> {
    if let Some(chats) = store.cached_large_chats(user) {
        return Ok(chats);
    }
    let chats: Arc<[ChatId]> =
        collect_prefix(store, Table::UseridChatidLargechat, &keys::user_prefix(user), |key, _| keys::large_chat_chat(key))?.into();
    store.remember_large_chats(user, chats.clone());
    Ok(chats)
}

/// The protocol `Group` of a group chat as `viewer` sees it; participants in join order
/// (from the store's cache of them where it has one, see [`crate::read_caches`]).
pub fn group_view(
    store: &(impl StoreRead + ?Sized),
    viewer: UserId,
    chat_id: ChatId,
    chat: &ChatRecord,
) -> Result<Option<types::Group>, ProjectionError> {
    if chat.group().is_none() {
        return Ok(None);
    }
    Ok(group_of(viewer, chat_id, chat, &participants(store, chat_id)?))
}

/// The members of `chat_id` in join order: from the store's cache of them where it has
/// one (see [`crate::read_caches`]), else read from their member records (and remembered).
pub fn participants(store: &(impl StoreRead + ?Sized), chat_id: ChatId) -> Result<Arc<[UserId]>, ProjectionError> {
    if let Some(participants) = store.cached_participants(chat_id) {
        return Ok(participants);
    }
    let mut members = load_members(store, chat_id)?;
    members.sort_by_key(|(_, member)| member.join_order);
    let participants: Arc<[UserId]> = members.into_iter().map(|(user, _)| user).collect();
    store.remember_participants(chat_id, participants.clone());
    Ok(participants)
}

/// [`group_view`] with the participants (in join order) already known.
pub fn group_of(viewer: UserId, chat_id: ChatId, chat: &ChatRecord, participants: &[UserId]) -> Option<types::Group> {
    let group = chat.group()?;
    Some(types::Group {
        id: chat_id.get(),
        name: group.name.clone(),
        owner: group.owner == viewer,
        participant_ids: participants.iter().map(|user| user.get()).collect(),
        photo: group.photo.as_ref().map(|(file_id, preview)| types::ChatPhoto { file_id: *file_id, preview: preview.clone() }),
    })
}

/// The protocol `Message` for a stored message, addressed as `chat_ref`.
pub fn message_view(
    chat_ref: refs::ChatRef,
    chat_id: ChatId,
    message_id: MessageId,
    record: &MessageRecord,
) -> Result<types::Message, ProjectionError> {
    let corrupt = |what: &str, err: osmium_proto::prost::DecodeError| ProjectionError::Decode {
        table: Table::ChatidMsgidMessage,
        key_hex: crate::error::hex(&keys::message(chat_id, message_id)),
        reason: format!("{what}: {err}"),
    };
    let entities = record
        .entities
        .iter()
        .map(|bytes| types::MessageEntity::decode(bytes.as_slice()).map_err(|err| corrupt("entity", err)))
        .collect::<Result<_, _>>()?;
    let media = record
        .media
        .iter()
        .map(|bytes| media::MessageMedia::decode(bytes.as_slice()).map_err(|err| corrupt("media", err)))
        .collect::<Result<_, _>>()?;
    let reply = record
        .reply
        .as_ref()
        .map(|bytes| types::message::MessageReplyInfo::decode(bytes.as_slice()).map_err(|err| corrupt("reply", err)))
        .transpose()?;
    Ok(types::Message {
        chat_ref: Some(chat_ref),
        message_id: message_id.get(),
        author_id: record.author.get(),
        message: record.text.clone(),
        media,
        entities,
        edited_at: record.edited_at_ms,
        r#type: (record.message_type != 0).then_some(record.message_type),
        // The deprecated field carries the replied-to id for older clients.
        reply_to: reply.as_ref().and_then(|reply| reply.message_id),
        forward: None,
        reply,
        bot_info: None,
    })
}

/// The protocol `User` for a directory entry; a user never upserted shows with an empty name.
pub fn user_view(store: &(impl StoreRead + ?Sized), user: UserId) -> Result<types::User, ProjectionError> {
    let record = load_user(store, user)?.unwrap_or(UserRecord {
        name: String::new(),
        username: None,
        photo: None,
        bot: false,
        icon: None,
        color: None,
    });
    Ok(types::User {
        id: user.get(),
        name: record.name,
        username: record.username,
        photo: record.photo.map(|(file_id, preview)| types::ChatPhoto { file_id, preview }),
        bot: record.bot,
        icon: record.icon,
        color: record.color,
    })
}

/// Where a history page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryFrom {
    /// The newest messages.
    Latest,
    /// Messages with ids above this one, oldest first.
    Since(MessageId),
    /// Messages with ids below this one, newest first.
    Before(MessageId),
    /// Messages on both sides of this one (half before, the rest at or after).
    Around(MessageId),
}

/// Up to `limit` non-deleted messages of a chat, returned oldest first.
pub fn history(
    store: &(impl StoreRead + ?Sized),
    chat_id: ChatId,
    from: HistoryFrom,
    limit: usize,
) -> Result<Vec<(MessageId, MessageRecord)>, ProjectionError> {
    let collect = |start: Option<Vec<u8>>, direction: Direction, limit: usize| {
        let prefix = keys::chat(chat_id);
        let range = ScanRange { prefix: &prefix, start: start.as_deref(), direction };
        let mut found = Vec::new();
        let mut failure = None;
        if limit == 0 {
            return Ok(found);
        }
        store.scan(Table::ChatidMsgidMessage, range, &mut |key, value| {
            match decode::<MessageRecord>(Table::ChatidMsgidMessage, key, value)
                .and_then(|record| Ok((keys::message_id(key)?, record)))
            {
                Ok((_, record)) if record.deleted => {}
                Ok(entry) => found.push(entry),
                Err(err) => {
                    failure = Some(err);
                    return ControlFlow::Break(());
                }
            }
            if found.len() >= limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })?;
        failure.map_or(Ok(found), Err)
    };
    let key = |id: u64| Some(keys::message(chat_id, MessageId(id)));
    let mut messages = match from {
        HistoryFrom::Latest => collect(None, Direction::Reverse, limit)?,
        HistoryFrom::Before(id) if id.get() == 0 => Vec::new(),
        HistoryFrom::Before(id) => collect(key(id.get() - 1), Direction::Reverse, limit)?,
        HistoryFrom::Since(id) => match id.get().checked_add(1) {
            Some(first) => collect(key(first), Direction::Forward, limit)?,
            None => Vec::new(),
        },
        HistoryFrom::Around(id) => {
            let before = limit / 2;
            let mut older = if id.get() == 0 { Vec::new() } else { collect(key(id.get() - 1), Direction::Reverse, before)? };
            let newer = collect(key(id.get()), Direction::Forward, limit - older.len())?;
            older.reverse();
            older.extend(newer);
            return Ok(older);
        }
    };
    if !matches!(from, HistoryFrom::Since(_)) {
        messages.reverse();
    }
    Ok(messages)
}

/// Active and inactive invites of a chat: `(code, record)` in code order.
pub fn chat_invites(
    store: &(impl StoreRead + ?Sized),
    chat_id: ChatId,
) -> Result<Vec<(String, crate::records::InviteRecord)>, ProjectionError> {
    let codes = collect_prefix(store, Table::ChatidCodeInvite, &keys::chat(chat_id), |key, _| keys::chat_invite_code(key))?;
    let mut invites = Vec::with_capacity(codes.len());
    for code in codes {
        let record = crate::records::load_invite(store, &code)?.ok_or_else(|| ProjectionError::Inconsistent {
            position: 0,
            reason: format!("chat {chat_id} lists invite {code}, which does not exist"),
        })?;
        invites.push((code, record));
    }
    Ok(invites)
}

/// The chat-list index as the next flush will write it: the stored entries, with those of
/// touched chats (see [`StoreRead::touched_chats`]) replaced by their current ones.
pub fn chat_list_index(store: &(impl StoreRead + ?Sized)) -> Result<Vec<Vec<u8>>, ProjectionError> {
    let touched = store.touched_entries();
    let mut entries = Vec::new();
    let mut failure = None;
    store.scan(Table::UseridLastmsgidChatidChatlist, ScanRange::prefix(&[]), &mut |key, _| {
        let user = key.get(..8).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()).map(UserId::from_be_bytes);
        match (user, keys::parse_chat_list_entry(key)) {
            (Some(user), Ok((_, chat))) => {
                if touched.binary_search(&(user, chat)).is_err() {
                    entries.push(key.to_vec());
                }
                ControlFlow::Continue(())
            }
            (_, Err(err)) => {
                failure = Some(err);
                ControlFlow::Break(())
            }
            (None, Ok(_)) => {
                failure = Some(short_key(key));
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    for (user, chat) in touched {
        let Some(record) = load_chat(store, chat)? else { continue };
        if !record.large && load_member(store, chat, user)?.is_some() {
            entries.push(keys::chat_list_entry(user, record.last_message_id, chat));
        }
    }
    entries.sort_unstable();
    Ok(entries)
}

fn short_key(key: &[u8]) -> ProjectionError {
    ProjectionError::MalformedKey {
        table: Table::UseridLastmsgidChatidChatlist,
        expected: "user id, last message id, chat id (24 bytes)".into(),
        found: crate::error::hex(key),
    }
}
