//! Command decisions: each validates one request against the current state (on the
//! state machine thread, so nothing can change in between) and decides the events that
//! record it and what the caller gets back. A refused command decides nothing, so it
//! writes nothing. Decisions read the state; they never change it (the fold does).

use super::limits::Limits;
use super::mentions::{Mention, mentions_in};
use super::resolve::{MemberChat, Records, Resolved, Tables, resolve, resolve_group, resolve_member, resolve_owned_group};
use crate::error::EngineError;
use crate::log::{Append, ExpectedVersion};
use crate::state_machine::{DecideContext, Decision, Idempotency, LiveState, Output};
use osmium_projections::limits::{MEMBER_DEFAULT_PERMISSIONS, PERMISSION_SEND_MEDIA, PERMISSION_SEND_MESSAGES};
use osmium_projections::records::{InviteRecord, NotifPrefs};
use osmium_projections::{ProjectionState, StoreRead, query};
use osmium_proto::events::{self, event_envelope::Event, EventEnvelope};
use osmium_proto::ids::{ChatId, MessageId, StreamId, UserId};
use osmium_proto::prost::Message as _;
use osmium_proto::{auth, chats, media, messages, types};
use std::collections::BTreeSet;

fn chars_within(field: &'static str, text: &str, min: usize, max: usize) -> Result<(), EngineError> {
    let count = text.chars().count();
    if count < min || count > max {
        return Err(EngineError::invalid(field, format!("must be {min} to {max} characters, got {count}")));
    }
    Ok(())
}

/// Refuses a request whose protobuf encoding exceeds `request_bytes_max`.
fn bytes_within(limits: &Limits, request: &impl osmium_proto::prost::Message) -> Result<(), EngineError> {
    let bytes = request.encoded_len();
    if bytes > limits.request_bytes_max {
        return Err(EngineError::invalid(
            "request",
            format!("must be at most {} bytes encoded, got {bytes}", limits.request_bytes_max),
        ));
    }
    Ok(())
}

/// A decision appending `events` to `chat`'s stream.
/// The actor of what the engine does on its own (purges): no user.
const ENGINE_ACTOR: UserId = UserId(0);

fn decision(chat: ChatId, actor: UserId, events: Vec<Event>, output: Output) -> Decision {
    let append =
        Append { stream: StreamId::Chat(chat), expected_version: ExpectedVersion::Any, actor, events, idempotency_key: None, fingerprint: None };
    Decision { append, output }
}

fn require_user(state: &mut LiveState, user: UserId) -> Result<(), EngineError> {
    match state.user(user)? {
        Some(_) => Ok(()),
        None => Err(EngineError::not_found(format!("user {user}"))),
    }
}

/// The output of a command that returns nothing, for a retry of it.
pub(crate) fn replay_done(_events: &[EventEnvelope]) -> Result<Output, EngineError> {
    Ok(Output::Done)
}

/// The message a send created, from its events (for a retry with the same `client_id`).
pub(crate) fn replay_message(events: &[EventEnvelope]) -> Result<Output, EngineError> {
    events
        .iter()
        .find_map(|event| match &event.event {
            Some(Event::MessageSent(sent)) => Some(Output::Message(MessageId(sent.message_id))),
            _ => None,
        })
        .ok_or_else(|| EngineError::Corrupt {
            what: "events recorded for a send".into(),
            expected: "a message_sent event".into(),
            found: format!("{} other events", events.len()),
        })
}

/// `upsert_user`: records a directory entry. A username (ASCII case-insensitive) belongs
/// to one user at a time; an empty username is none.
pub(crate) fn upsert_user(ctx: &mut DecideContext<'_>, limits: &Limits, user: types::User) -> Result<Decision, EngineError> {
    if user.id == 0 {
        return Err(EngineError::invalid("id", "user ids are non-zero snowflakes"));
    }
    chars_within("name", &user.name, 1, limits.user_name_max_chars)?;
    bytes_within(limits, &user)?;
    if let Some(username) = user.username.as_deref().filter(|name| !name.is_empty()) {
        chars_within("username", username, 1, limits.username_max_chars)?;
        // A user keeping their username is never refused (a sign-in re-upserts the profile),
        // even where a log written before this check gave it to two users.
        let current = ctx.state.user(UserId(user.id))?.and_then(|record| record.username.clone());
        let keeps = current.is_some_and(|current| current.eq_ignore_ascii_case(username));
        if let Some(holder) = ctx.state.user_by_username(username)?.filter(|&holder| holder != UserId(user.id) && !keeps) {
            return Err(EngineError::UsernameTaken { username: username.to_owned(), user: holder });
        }
    }
    let append = Append {
        stream: StreamId::User(UserId(user.id)),
        expected_version: ExpectedVersion::Any,
        actor: UserId(user.id),
        events: vec![Event::UserUpserted(events::UserUpserted { user: Some(user) })],
        idempotency_key: None,
        fingerprint: None,
    };
    Ok(Decision { append, output: Output::Done })
}

/// `create_chat`: a new group owned by the actor, with the listed users as members.
pub(crate) fn create_chat(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &chats::CreateChat,
) -> Result<Decision, EngineError> {
    chars_within("name", &request.name, 1, limits.group_name_max_chars)?;
    let mut members = Vec::with_capacity(request.users.len());
    for user in &request.users {
        let user = UserId(user.user_id);
        if user != actor && !members.contains(&user) {
            require_user(ctx.state, user)?;
            members.push(user);
        }
    }
    if members.len() + 1 > limits.group_members_max as usize {
        return Err(EngineError::invalid("users", format!("a group has at most {} members", limits.group_members_max)));
    }
    let chat = ChatId(ctx.next_id());
    let created = events::GroupCreated {
        owner_id: actor.get(),
        name: request.name.clone(),
        member_ids: members.iter().map(|user| user.get()).collect(),
    };
    Ok(decision(chat, actor, vec![Event::GroupCreated(created)], Output::Chat(chat)))
}

/// `edit_chat`: the owner renames, sets the photo or the highlighted message.
pub(crate) fn edit_chat(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &chats::EditChat,
) -> Result<Decision, EngineError> {
    let group = resolve_owned_group(ctx.state, actor, request.chat_ref.as_ref(), "group settings")?;
    bytes_within(limits, request)?;
    if let Some(name) = &request.name {
        chars_within("name", name, 1, limits.group_name_max_chars)?;
    }
    let highlighted = request.highlighted_msg_id.as_ref().and_then(|highlight| highlight.highlighted_msg_id);
    if let Some(message) = highlighted.filter(|&id| id != 0) {
        live_message(ctx.state, group.id, MessageId(message))?;
    }
    // `EditChat.Photo` with a file sets the photo (the file's id, no preview: the engine
    // stores no file bytes); without one it removes the photo.
    let (photo, photo_removed) = match request.photo.as_ref().map(|photo| photo.file.as_ref()) {
        None => (None, false),
        Some(None) => (None, true),
        Some(Some(file)) => (Some(types::ChatPhoto { file_id: uploaded_file_id("photo", file)?, preview: Vec::new() }), false),
    };
    let edited = events::GroupEdited { name: request.name.clone(), highlighted_msg_id: highlighted, photo, photo_removed };
    Ok(decision(group.id, actor, vec![Event::GroupEdited(edited)], Output::Chat(group.id)))
}

/// `add_chat_member`: the owner adds a user.
pub(crate) fn add_chat_member(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &chats::AddChatMember,
) -> Result<Decision, EngineError> {
    let group = resolve_owned_group(ctx.state, actor, request.chat_ref.as_ref(), "members")?;
    let user = UserId(request.user_id);
    require_user(ctx.state, user)?;
    if ctx.state.member(group.id, user)?.is_some() {
        return Err(EngineError::AlreadyMember);
    }
    if group.chat.member_count >= limits.group_members_max {
        return Err(EngineError::invalid("user_id", format!("the group is full ({} members)", limits.group_members_max)));
    }
    let added = events::MemberAdded { user_id: user.get(), added_by: actor.get(), invite_code: None };
    Ok(decision(group.id, actor, vec![Event::MemberAdded(added)], Output::Done))
}

/// `remove_chat_member`: the owner removes someone, or anyone removes themselves (leaves).
/// When the owner leaves, the longest-standing member becomes owner; when the last member
/// leaves, the group is closed.
pub(crate) fn remove_chat_member(
    ctx: &mut DecideContext<'_>,
    actor: UserId,
    request: &chats::RemoveChatMember,
) -> Result<Decision, EngineError> {
    let group = resolve_group(ctx.state, actor, request.chat_ref.as_ref(), "members")?;
    let user = UserId(request.user_id);
    if user != actor && !group.is_owner(actor) {
        return Err(EngineError::denied("only the group owner can remove other members"));
    }
    if ctx.state.member(group.id, user)?.is_none() {
        return Err(EngineError::not_found(format!("member {user}")));
    }
    let mut events = vec![Event::MemberRemoved(events::MemberRemoved { user_id: user.get(), removed_by: actor.get() })];
    if group.is_owner(user) {
        let successor = ctx
            .state
            .members(group.id)?
            .into_iter()
            .filter(|(member, _)| *member != user)
            .min_by_key(|(_, record)| record.join_order)
            .map(|(member, _)| member);
        events.push(match successor {
            Some(successor) => {
                Event::OwnershipTransferred(events::OwnershipTransferred { new_owner_id: successor.get() })
            }
            None => Event::GroupClosed(events::GroupClosed {}),
        });
    }
    Ok(decision(group.id, actor, events, Output::Done))
}

/// The permissions `user` has in `chat`: owners and DM members may do everything,
/// group members get `(defaults & !neg) | pos`.
pub(crate) fn effective_permissions(chat: &MemberChat, user: UserId) -> u64 {
    match chat.chat.owner {
        None => u64::MAX,
        Some(owner) if owner == user => u64::MAX,
        Some(_) => {
            let (pos, neg) = chat.member.overrides.unwrap_or((0, 0));
            (MEMBER_DEFAULT_PERMISSIONS & !neg) | pos
        }
    }
}

/// The id of an uploaded file: the client's `UploadedFileRef.id`, a non-zero snowflake.
fn uploaded_file_id(field: &'static str, file: &media::UploadedFileRef) -> Result<u64, EngineError> {
    if file.id == 0 {
        return Err(EngineError::invalid(field, "an uploaded file's id must be non-zero"));
    }
    Ok(file.id)
}

/// The `File` an uploaded file becomes (the engine stores no file bytes and has no file
/// service, so it keeps what the reference says): `file_id` = `UploadedFileRef.id`,
/// `region` 0, `size` 0 (unknown: neither the reference nor `FileMetadata` carries it),
/// `mimetype` as given, `filename` = `MediaRefUploadedFile.filename`, else
/// `UploadedFileRef.name` when not empty, `metadata` as given.
pub(crate) fn file_from_upload(uploaded: &media::MediaRefUploadedFile) -> Result<media::File, EngineError> {
    let reference = uploaded.file.as_ref().ok_or_else(|| EngineError::invalid("media", "an uploaded file needs its `file` reference"))?;
    Ok(media::File {
        file_id: uploaded_file_id("media", reference)?,
        region: 0,
        size: 0,
        mimetype: uploaded.mimetype.clone(),
        filename: uploaded.filename.clone().or_else(|| (!reference.name.is_empty()).then(|| reference.name.clone())),
        metadata: uploaded.metadata.clone(),
    })
}

fn media_from_ref(reference: &media::MediaRef) -> Result<media::MessageMedia, EngineError> {
    use media::{media_ref::Ref, message_media::Media};
    let media = match reference.r#ref.as_ref() {
        Some(Ref::Uploaded(uploaded)) => Media::File(media::MediaFile { file: Some(file_from_upload(uploaded)?) }),
        Some(Ref::Embed(embed)) => {
            if embed.url.is_empty() {
                return Err(EngineError::invalid("media", "an embed needs a url"));
            }
            Media::Embed(media::MediaEmbed { url: embed.url.clone(), title: None, description: None, file: None })
        }
        None => return Err(EngineError::invalid("media", "empty media reference")),
    };
    Ok(media::MessageMedia { media: Some(media) })
}

/// Attachments of a send or an edit: within `media_per_message_max`, each converted.
fn media_from_refs(limits: &Limits, references: &[media::MediaRef]) -> Result<Vec<media::MessageMedia>, EngineError> {
    if references.len() > limits.media_per_message_max {
        return Err(EngineError::invalid("media", format!("at most {} attachments", limits.media_per_message_max)));
    }
    references.iter().map(media_from_ref).collect()
}

/// Entities of `text`: within `entities_per_message_max`, each inside the text (UTF-16 units).
fn entities_within(field: &'static str, limits: &Limits, text: &str, entities: &[types::MessageEntity]) -> Result<(), EngineError> {
    if entities.len() > limits.entities_per_message_max {
        return Err(EngineError::invalid(field, format!("at most {} entities", limits.entities_per_message_max)));
    }
    let text_units = text.encode_utf16().count() as u64;
    if let Some(entity) = entities.iter().find(|e| u64::from(e.start_index) + u64::from(e.length) > text_units) {
        return Err(EngineError::invalid(
            field,
            format!("entity at {}+{} runs past the text ({text_units} UTF-16 units)", entity.start_index, entity.length),
        ));
    }
    Ok(())
}

/// Who a message may mention: the members of an existing chat, or the two sides of a DM
/// its first message creates.
#[derive(Clone, Copy)]
enum Members {
    Chat(ChatId),
    NewDirect { actor: UserId, peer: UserId },
}

/// The members `text` mentions through `entities` (see [`super::mentions`]): resolved,
/// members only, the author left out, in user id order, each once. At most one per entity.
fn mentioned_members(
    state: &mut LiveState,
    members: Members,
    author: UserId,
    text: &str,
    entities: &[types::MessageEntity],
) -> Result<Vec<u64>, EngineError> {
    let mut mentioned = BTreeSet::new();
    for mention in mentions_in(text, entities) {
        let user = match mention {
            Mention::Id(user) => Some(user),
            Mention::Username(name) => state.user_by_username(&name)?,
        };
        let Some(user) = user.filter(|&user| user != author) else { continue };
        let member = match members {
            Members::Chat(chat) => state.member(chat, user)?.is_some(),
            Members::NewDirect { actor, peer } => user == actor || user == peer,
        };
        if member {
            mentioned.insert(user.get());
        }
    }
    Ok(mentioned.into_iter().collect())
}

/// The reply of a send: `reply_to` (7), or the deprecated `reply_to_old` (3) as a reply
/// without a quote. The message replied to must be a non-deleted message of the chat.
fn reply_of(
    state: &mut LiveState,
    limits: &Limits,
    chat: Option<ChatId>,
    request: &messages::SendMessage,
) -> Result<Option<types::message::MessageReplyInfo>, EngineError> {
    let (message_id, quote) = match (&request.reply_to, request.reply_to_old) {
        (Some(reply), Some(old)) if old != reply.message_id => {
            return Err(EngineError::invalid("reply_to", "reply_to and reply_to_old name different messages"));
        }
        (Some(reply), _) => (MessageId(reply.message_id), reply.quote.clone()),
        (None, Some(old)) => (MessageId(old), None),
        (None, None) => return Ok(None),
    };
    if let Some(quote) = &quote {
        chars_within("reply_to", &quote.message, 0, limits.message_text_max_chars)?;
        entities_within("reply_to", limits, &quote.message, &quote.entities)?;
    }
    let exists = match chat {
        Some(chat) => state.message(chat, message_id)?.is_some_and(|message| !message.deleted),
        None => false, // a DM its first message creates has nothing to reply to
    };
    if !exists {
        return Err(EngineError::ReplyTargetNotFound { message_id });
    }
    Ok(Some(types::message::MessageReplyInfo { message_id: Some(message_id.get()), quote }))
}

/// The idempotency key of a message send: the sender and their `client_id`.
pub(crate) fn send_idempotency_key(actor: UserId, client_id: u64) -> Vec<u8> {
    let mut key = b"send:".to_vec();
    key.extend_from_slice(&actor.to_be_bytes());
    key.extend_from_slice(&client_id.to_be_bytes());
    key
}

/// A send's idempotency: its key, and the fingerprint of the request (SHA-256, first 16
/// bytes, of `send:` and the request's protobuf encoding without `client_id`: the chat, the
/// text, media, entities, reply).
pub(crate) fn send_idempotency(actor: UserId, client_id: u64, request: &messages::SendMessage) -> Idempotency {
    use sha2::Digest as _;
    let mut unkeyed = request.clone();
    unkeyed.client_id = None;
    let digest = sha2::Sha256::new().chain_update(b"send:").chain_update(unkeyed.encode_to_vec()).finalize();
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&digest[..16]);
    Idempotency { key: send_idempotency_key(actor, client_id), client_id, fingerprint }
}

/// `send_message`: a new message; the first message of a DM creates the DM.
pub(crate) fn send_message(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &messages::SendMessage,
) -> Result<Decision, EngineError> {
    chars_within("message", &request.message, 0, limits.message_text_max_chars)?;
    bytes_within(limits, request)?;
    let media = media_from_refs(limits, &request.media)?;
    entities_within("entities", limits, &request.message, &request.entities)?;
    if request.message.is_empty() && media.is_empty() {
        return Err(EngineError::invalid("message", "a message needs text or media"));
    }
    let members = match resolve(ctx.state, actor, request.chat_ref.as_ref())? {
        Resolved::Member(chat) => {
            let permissions = effective_permissions(&chat, actor);
            if permissions & PERMISSION_SEND_MESSAGES == 0 {
                return Err(EngineError::denied("sending messages is not allowed here"));
            }
            if !media.is_empty() && permissions & PERMISSION_SEND_MEDIA == 0 {
                return Err(EngineError::denied("sending media is not allowed here"));
            }
            Members::Chat(chat.id)
        }
        Resolved::NoDirectChatYet { peer } => Members::NewDirect { actor, peer },
    };
    let existing = match members {
        Members::Chat(chat) => Some(chat),
        Members::NewDirect { .. } => None,
    };
    let reply = reply_of(ctx.state, limits, existing, request)?;
    let mentioned_user_ids = mentioned_members(ctx.state, members, actor, &request.message, &request.entities)?;
    let mut events = Vec::with_capacity(2);
    let chat = match members {
        Members::Chat(chat) => chat,
        Members::NewDirect { actor, peer } => {
            let chat = ChatId(ctx.next_id());
            events.push(Event::DirectChatCreated(events::DirectChatCreated { user_a: actor.get(), user_b: peer.get() }));
            chat
        }
    };
    let message_id = MessageId(ctx.next_id());
    events.push(Event::MessageSent(events::MessageSent {
        message_id: message_id.get(),
        author_id: actor.get(),
        text: request.message.clone(),
        entities: request.entities.clone(),
        media,
        client_id: request.client_id,
        r#type: types::MessageType::Unknown as i32,
        reply,
        mentioned_user_ids,
    }));
    Ok(decision(chat, actor, events, Output::Message(message_id)))
}

/// A non-deleted message of `chat`.
fn live_message<S: StoreRead>(
    state: &mut ProjectionState<S>,
    chat: ChatId,
    message: MessageId,
) -> Result<&osmium_projections::records::MessageRecord, EngineError> {
    match state.message(chat, message)? {
        Some(record) if !record.deleted => Ok(record),
        _ => Err(EngineError::not_found(format!("message {message}"))),
    }
}

/// `edit_message`: the author changes their message, as the protocol says: `message`
/// replaces the text; `entities` replace the entities when not empty or when `message` is
/// set (so new text without entities has none); `media` replaces the attachments and
/// `remove_media` removes them (not both). The result needs text or media; its mentions
/// are resolved again.
pub(crate) fn edit_message(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &messages::EditMessage,
) -> Result<Decision, EngineError> {
    let chat = resolve_member(ctx.state, actor, request.chat_ref.as_ref())?;
    let message_id = MessageId(request.message_id);
    let record = live_message(ctx.state, chat.id, message_id)?.clone();
    if record.author != actor {
        return Err(EngineError::denied("only the author can edit a message"));
    }
    bytes_within(limits, request)?;
    if request.remove_media && !request.media.is_empty() {
        return Err(EngineError::invalid("remove_media", "cannot both remove the media and replace it"));
    }
    if request.message.is_none() && request.entities.is_empty() && request.media.is_empty() && !request.remove_media {
        return Err(EngineError::invalid("message", "an edit needs a message, entities, media or remove_media"));
    }
    let current = query::message_view(osmium_proto::refs::ChatRef::default(), chat.id, message_id, &record)?;
    let text = request.message.clone().unwrap_or(current.message);
    chars_within("message", &text, 0, limits.message_text_max_chars)?;
    let entities = if request.message.is_some() || !request.entities.is_empty() { request.entities.clone() } else { current.entities };
    entities_within("entities", limits, &text, &entities)?;
    let media = if !request.media.is_empty() {
        let media = media_from_refs(limits, &request.media)?;
        if effective_permissions(&chat, actor) & PERMISSION_SEND_MEDIA == 0 {
            return Err(EngineError::denied("sending media is not allowed here"));
        }
        media
    } else if request.remove_media {
        Vec::new()
    } else {
        current.media
    };
    if text.is_empty() && media.is_empty() {
        return Err(EngineError::invalid("message", "a message needs text or media"));
    }
    let mentioned_user_ids = mentioned_members(ctx.state, Members::Chat(chat.id), actor, &text, &entities)?;
    let edited = events::MessageEdited {
        message_id: message_id.get(),
        text,
        edited_at_ms: ctx.now_ms,
        entities,
        media,
        mentioned_user_ids,
        replaces_all: true,
    };
    Ok(decision(chat.id, actor, vec![Event::MessageEdited(edited)], Output::Done))
}

/// `delete_message`: authors delete their messages; a group owner deletes any.
pub(crate) fn delete_message(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &messages::DeleteMessage,
) -> Result<Decision, EngineError> {
    let chat = resolve_member(ctx.state, actor, request.chat_ref.as_ref())?;
    if request.message_ids.is_empty() || request.message_ids.len() > limits.delete_message_ids_max {
        return Err(EngineError::invalid("message_ids", format!("1 to {} ids", limits.delete_message_ids_max)));
    }
    let mut ids = request.message_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    for &id in &ids {
        let author = live_message(ctx.state, chat.id, MessageId(id))?.author;
        if author != actor && !chat.is_owner(actor) {
            return Err(EngineError::denied("only the author or the group owner can delete a message"));
        }
    }
    Ok(decision(chat.id, actor, vec![Event::MessagesDeleted(events::MessagesDeleted { message_ids: ids })], Output::Done))
}

/// `mark_chat_read`: read position = max(current, min(message_id, last message)).
pub(crate) fn mark_chat_read(
    ctx: &mut DecideContext<'_>,
    actor: UserId,
    request: &chats::MarkChatRead,
) -> Result<Decision, EngineError> {
    let chat = resolve_member(ctx.state, actor, request.chat_ref.as_ref())?;
    let current = chat.member.read_message_id;
    let target = if chat.chat.has_messages {
        current.max(MessageId(request.message_id).min(chat.chat.last_message_id))
    } else {
        current
    };
    let marked = events::ChatMarkedRead { user_id: actor.get(), message_id: target.get(), read_amount: request.read_amount };
    Ok(decision(chat.id, actor, vec![Event::ChatMarkedRead(marked)], Output::Done))
}

/// `save_draft`: sets (or with `None`, clears) the actor's draft.
pub(crate) fn save_draft(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    chat_ref: Option<&osmium_proto::refs::ChatRef>,
    draft: Option<String>,
) -> Result<Decision, EngineError> {
    let chat = resolve_member(ctx.state, actor, chat_ref)?;
    if let Some(draft) = &draft {
        chars_within("draft", draft, 0, limits.draft_max_chars)?;
    }
    let draft = draft.filter(|text| !text.is_empty());
    Ok(decision(chat.id, actor, vec![Event::DraftSaved(events::DraftSaved { user_id: actor.get(), draft })], Output::Done))
}

/// `set_notif_prefs`: who notifies the actor of new messages in a chat (a `mute_set`
/// event; its `muted` says NONE, for readers of the seeds' bool).
pub(crate) fn set_notif_prefs(
    ctx: &mut DecideContext<'_>,
    actor: UserId,
    chat_ref: Option<&osmium_proto::refs::ChatRef>,
    prefs: NotifPrefs,
) -> Result<Decision, EngineError> {
    let chat = resolve_member(ctx.state, actor, chat_ref)?;
    let set = events::MuteSet { user_id: actor.get(), muted: prefs == NotifPrefs::None, notif_prefs: Some(prefs.to_proto()) };
    Ok(decision(chat.id, actor, vec![Event::MuteSet(set)], Output::Done))
}

/// `get_chat` of a DM (or the self chat) that does not exist yet: opens it with a
/// `direct_chat_created` event, as its first message would. Decided here, on the state
/// machine thread, so that concurrent opens (and a first message racing them) create one
/// chat: an open that finds the DM already there appends nothing.
pub(crate) fn open_direct_chat(
    ctx: &mut DecideContext<'_>,
    actor: UserId,
    chat_ref: Option<&osmium_proto::refs::ChatRef>,
) -> Result<Decision, EngineError> {
    match resolve(ctx.state, actor, chat_ref)? {
        Resolved::Member(chat) => Ok(decision(chat.id, actor, Vec::new(), Output::Chat(chat.id))),
        Resolved::NoDirectChatYet { peer } => {
            let chat = ChatId(ctx.next_id());
            let created = events::DirectChatCreated { user_a: actor.get(), user_b: peer.get() };
            Ok(decision(chat, actor, vec![Event::DirectChatCreated(created)], Output::Chat(chat)))
        }
    }
}

/// `set_permission_overrides`: the owner sets a member's `pos`/`neg` bits.
pub(crate) fn set_permission_overrides(
    ctx: &mut DecideContext<'_>,
    actor: UserId,
    chat_ref: Option<&osmium_proto::refs::ChatRef>,
    user: UserId,
    overrides: types::PermissionOverrides,
) -> Result<Decision, EngineError> {
    let group = resolve_owned_group(ctx.state, actor, chat_ref, "permissions")?;
    // A non-member's overrides are kept until they join (bans stick, and can be set
    // before someone joins); any known user can have them.
    if ctx.state.member(group.id, user)?.is_none() {
        require_user(ctx.state, user)?;
    }
    if overrides.pos & overrides.neg != 0 {
        return Err(EngineError::invalid("permissions", "a bit cannot be both granted (pos) and denied (neg)"));
    }
    let set = events::PermissionOverridesSet { user_id: user.get(), pos: overrides.pos, neg: overrides.neg };
    Ok(decision(group.id, actor, vec![Event::PermissionOverridesSet(set)], Output::Done))
}

/// `create_chat_invite`: the owner creates a code for a group.
pub(crate) fn create_chat_invite(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &chats::CreateChatInvite,
    code: String,
) -> Result<Decision, EngineError> {
    let group = resolve_owned_group(ctx.state, actor, request.chat_ref.as_ref(), "invites")?;
    if request.expires_at.is_some_and(|expires_at| expires_at <= ctx.now_ms) {
        return Err(EngineError::invalid("expires_at", "must be in the future (unix milliseconds)"));
    }
    if request.max_uses == Some(0) {
        return Err(EngineError::invalid("max_uses", "must be at least 1 when given"));
    }
    let codes = ctx.state.invite_codes(group.id)?;
    if codes.len() >= limits.invites_kept_per_chat_max {
        return Err(EngineError::invalid(
            "chat_ref",
            format!(
                "a chat keeps at most {} invites, active or awaiting their purge ({} ms after they expire or are used up): delete some",
                limits.invites_kept_per_chat_max, limits.invite_purge_grace_ms
            ),
        ));
    }
    let mut active = 0;
    for code in codes {
        if ctx.state.invite(&code)?.is_some_and(|invite| invite.is_active(ctx.now_ms)) {
            active += 1;
        }
    }
    if active >= limits.invites_per_chat_max {
        return Err(EngineError::invalid("chat_ref", format!("a chat has at most {} active invites", limits.invites_per_chat_max)));
    }
    if ctx.state.invite(&code)?.is_some() {
        return Err(EngineError::Conflict {
            stream: StreamId::Chat(group.id),
            expected: ExpectedVersion::Any,
            found: osmium_proto::ids::StreamVersion::EMPTY,
        });
    }
    let created = events::InviteCreated {
        code: code.clone(),
        creator_id: actor.get(),
        expires_at_ms: request.expires_at,
        max_uses: request.max_uses,
        created_at_ms: ctx.now_ms,
    };
    Ok(decision(group.id, actor, vec![Event::InviteCreated(created)], Output::Invite(code)))
}

/// `delete_chat_invite`: the invite's creator or the group owner revokes it.
pub(crate) fn delete_chat_invite(
    ctx: &mut DecideContext<'_>,
    actor: UserId,
    request: &chats::DeleteChatInvite,
) -> Result<Decision, EngineError> {
    let invite = ctx.state.invite(&request.code)?.cloned().ok_or(EngineError::InviteNotFound)?;
    let chat_ref = super::group_ref(invite.chat);
    let group = resolve_group(ctx.state, actor, Some(&chat_ref), "invites").map_err(|_| EngineError::InviteNotFound)?;
    if invite.creator != actor && !group.is_owner(actor) {
        return Err(EngineError::denied("only the invite's creator or the group owner can delete it"));
    }
    let deleted = events::InviteDeleted { code: request.code.clone(), deleted_by: actor.get() };
    Ok(decision(group.id, actor, vec![Event::InviteDeleted(deleted)], Output::Done))
}

/// `purge_invites`, for one chat: deletes those of `codes` that are still in the chat and
/// have been unusable for `invite_purge_grace_ms` (re-checked here, against the state the
/// events will follow). The engine itself is the actor (`deleted_by` 0).
pub(crate) fn purge_invites(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    chat: ChatId,
    codes: &[String],
) -> Result<Decision, EngineError> {
    let mut events = Vec::new();
    for code in codes {
        let purgeable = ctx
            .state
            .invite(code)?
            .is_some_and(|invite| invite.chat == chat && invite.is_purgeable(ctx.now_ms, limits.invite_purge_grace_ms));
        if purgeable {
            events.push(Event::InviteDeleted(events::InviteDeleted { code: code.clone(), deleted_by: 0 }));
        }
    }
    let purged = events.len();
    Ok(decision(chat, ENGINE_ACTOR, events, Output::Purged(purged)))
}

/// The checks shared by `lookup_invite` and `use_invite`: the invite exists, is not
/// expired at `now_ms` and not used up, and its group is open.
pub(crate) fn usable_invite(records: &mut impl InviteRecords, code: &str, now_ms: u64) -> Result<InviteRecord, EngineError> {
    let invite = records.invite(code)?.ok_or(EngineError::InviteNotFound)?;
    let open = records.chat(invite.chat)?.is_some_and(|chat| chat.is_group() && !chat.closed);
    if !open {
        return Err(EngineError::InviteNotFound);
    }
    if invite.is_expired(now_ms) {
        return Err(EngineError::InviteExpired);
    }
    if invite.is_used_up() {
        return Err(EngineError::InviteUsedUp);
    }
    Ok(invite)
}

/// `use_invite`: joins the invite's group and counts one use.
pub(crate) fn use_invite(
    ctx: &mut DecideContext<'_>,
    limits: &Limits,
    actor: UserId,
    request: &auth::UseInvite,
) -> Result<Decision, EngineError> {
    let invite = usable_invite(ctx.state, &request.code, ctx.now_ms)?;
    if ctx.state.member(invite.chat, actor)?.is_some() {
        return Err(EngineError::AlreadyMember);
    }
    let chat = Records::chat(ctx.state, invite.chat)?.ok_or(EngineError::InviteNotFound)?;
    if chat.member_count >= limits.group_members_max {
        return Err(EngineError::invalid("code", format!("the group is full ({} members)", limits.group_members_max)));
    }
    let events = vec![
        Event::InviteUsed(events::InviteUsed { code: request.code.clone(), user_id: actor.get() }),
        Event::MemberAdded(events::MemberAdded {
            user_id: actor.get(),
            added_by: invite.creator.get(),
            invite_code: Some(request.code.clone()),
        }),
    ];
    Ok(decision(invite.chat, actor, events, Output::Done))
}

/// Invites and the chats they admit to, wherever they are read from.
pub(crate) trait InviteRecords: Records {
    /// An invite by code.
    fn invite(&mut self, code: &str) -> Result<Option<InviteRecord>, EngineError>;
}

impl InviteRecords for Tables<'_> {
    fn invite(&mut self, code: &str) -> Result<Option<InviteRecord>, EngineError> {
        Ok(osmium_projections::records::load_invite(self.0, code)?)
    }
}

impl<S: StoreRead> InviteRecords for ProjectionState<S> {
    fn invite(&mut self, code: &str) -> Result<Option<InviteRecord>, EngineError> {
        Ok(ProjectionState::invite(self, code)?.cloned())
    }
}
