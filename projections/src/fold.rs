//! The fold: one function from (projection state, event) to a new state, used alike by
//! the live engine (on its state machine thread), by recovery at open and by the replay
//! CLI. It changes typed records in [`ProjectionState`]; the state reports the writes.
//!
//! The fold trusts that commands were validated before their events were written,
//! but it checks what it relies on: an event that contradicts the state (a message
//! from a non-member, a chat that does not exist) is a [`ProjectionError::Inconsistent`]
//! naming the position, never a panic and never a silent skip.
//!
//! What one event changes (N = chat members): `MessageSent` the message, the chat and
//! the sender's member record, plus one `chatid_userid_seq_mention` key per member it
//! mentions (at most the message's entity count), in O(1) whatever N (the chat-list index
//! is derived at the next cut, see [`crate::chat_list`]); `ChatMarkedRead`, `DraftSaved`,
//! `MuteSet`, `PermissionOverridesSet` one member record. Unread counts are never stored:
//! they are derived from the chat's message sequence, the member's read sequence and the
//! deleted sequence numbers; unread mention counts likewise, from the mention keys after
//! the member's read sequence (a deleted message's keys are removed with it).

use crate::catch_up::Told;
use crate::effects::{Addressing, Audience, ConversationSnapshot, Effect};
use crate::error::ProjectionError;
use crate::limits::{CHAT_LIST_FANOUT_MAX, USER_SEQUENCE_MEMBERS_MAX};
use crate::records::{ChatKind, ChatRecord, GroupInfo, InviteRecord, MemberRecord, MessageRecord, NotifPrefs, UserRecord};
use crate::state::ProjectionState;
use crate::store::StoreRead;
use osmium_proto::events::{self, event_envelope::Event, stream_ref::Stream};
use osmium_proto::ids::{ChatId, MessageId, Position, StreamId, UserId};
use osmium_proto::prost::Message as _;

/// The stream of an envelope.
pub fn stream_of(envelope: &events::EventEnvelope) -> Result<StreamId, ProjectionError> {
    match envelope.stream.as_ref().and_then(|stream| stream.stream) {
        Some(Stream::ChatId(chat)) => Ok(StreamId::Chat(ChatId(chat))),
        Some(Stream::UserId(user)) => Ok(StreamId::User(UserId(user))),
        None => Err(ProjectionError::MalformedEvent { position: envelope.position, reason: "no stream".into() }),
    }
}

/// Folds one event into `state` and advances its checkpoint to the event's position.
pub fn apply<S: StoreRead>(state: &mut ProjectionState<S>, envelope: &events::EventEnvelope) -> Result<(), ProjectionError> {
    fold(state, envelope, None)
}

/// Folds one event like [`apply`] and appends what it means for live updates to `told`.
pub fn apply_with_effects<S: StoreRead>(
    state: &mut ProjectionState<S>,
    envelope: &events::EventEnvelope,
    told: &mut Vec<Told>,
) -> Result<(), ProjectionError> {
    fold(state, envelope, Some(told))
}

/// Every event's effects are computed, also when nobody listens: they make the catch-up
/// index ([`crate::catch_up`]), which a fold from scratch must write the same way.
fn fold<S: StoreRead>(
    state: &mut ProjectionState<S>,
    envelope: &events::EventEnvelope,
    told: Option<&mut Vec<Told>>,
) -> Result<(), ProjectionError> {
    let mut effects = Vec::new();
    let position = envelope.position;
    let malformed = |reason: String| ProjectionError::MalformedEvent { position, reason };
    let event = envelope.event.as_ref().ok_or_else(|| malformed("no event".into()))?;
    if position <= state.checkpoint().get() {
        return Err(ProjectionError::Inconsistent {
            position,
            reason: format!("already folded up to position {}", state.checkpoint()),
        });
    }
    match (stream_of(envelope)?, event) {
        (StreamId::User(user), Event::UserUpserted(upserted)) => upsert_user(state, user, upserted, position)?,
        (StreamId::Chat(chat), event) if !matches!(event, Event::UserUpserted(_)) => {
            let mut fold =
                ChatFold { state, chat, position, recorded_at_ms: envelope.recorded_at_ms, effects: Some(&mut effects) };
            fold.apply(event)?;
        }
        (stream, event) => return Err(malformed(format!("{} does not belong in stream {stream}", event_kind(event)))),
    }
    let recorded = state.record_effects(Position(position), effects)?;
    if let Some(told) = told {
        told.extend(recorded);
    }
    state.set_checkpoint(Position(position));
    Ok(())
}

/// The event's kind, as named in FORMAT.md and the replay CLI.
pub fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::UserUpserted(_) => "user_upserted",
        Event::GroupCreated(_) => "group_created",
        Event::DirectChatCreated(_) => "direct_chat_created",
        Event::GroupEdited(_) => "group_edited",
        Event::MemberAdded(_) => "member_added",
        Event::MemberRemoved(_) => "member_removed",
        Event::OwnershipTransferred(_) => "ownership_transferred",
        Event::GroupClosed(_) => "group_closed",
        Event::MessageSent(_) => "message_sent",
        Event::MessageEdited(_) => "message_edited",
        Event::MessagesDeleted(_) => "messages_deleted",
        Event::ChatMarkedRead(_) => "chat_marked_read",
        Event::DraftSaved(_) => "draft_saved",
        Event::MuteSet(_) => "mute_set",
        Event::PermissionOverridesSet(_) => "permission_overrides_set",
        Event::InviteCreated(_) => "invite_created",
        Event::InviteUsed(_) => "invite_used",
        Event::InviteDeleted(_) => "invite_deleted",
    }
}

fn upsert_user<S: StoreRead>(
    state: &mut ProjectionState<S>,
    user: UserId,
    upserted: &events::UserUpserted,
    position: u64,
) -> Result<(), ProjectionError> {
    let profile = upserted.user.as_ref().ok_or_else(|| ProjectionError::MalformedEvent {
        position,
        reason: "user_upserted without a user".into(),
    })?;
    if profile.id != user.get() {
        return Err(ProjectionError::MalformedEvent {
            position,
            reason: format!("user {} upserted in the stream of user {user}", profile.id),
        });
    }
    // The username index follows the directory: the old name is freed if it still points at
    // this user, the new one points at it (the engine refuses a name held by someone else;
    // should a log hold one anyway, the newest upsert holds the index entry).
    let old = state.user(user)?.and_then(|record| record.username.clone()).filter(|name| !name.is_empty());
    let new = profile.username.clone().filter(|name| !name.is_empty());
    if old.as_deref().map(crate::keys::username) != new.as_deref().map(crate::keys::username) {
        if let Some(old) = old
            && state.user_by_username(&old)? == Some(user)
        {
            state.set_username(&old, None);
        }
        if let Some(new) = &new {
            state.set_username(new, Some(user));
        }
    } else if let Some(new) = &new
        && state.user_by_username(new)? != Some(user)
    {
        state.set_username(new, Some(user));
    }
    let record = UserRecord {
        name: profile.name.clone(),
        username: profile.username.clone(),
        photo: profile.photo.as_ref().map(|photo| (photo.file_id, photo.preview.clone())),
        bot: profile.bot,
        icon: profile.icon,
        color: profile.color,
    };
    state.set_user(user, record);
    Ok(())
}

struct ChatFold<'s, S: StoreRead> {
    state: &'s mut ProjectionState<S>,
    chat: ChatId,
    position: u64,
    recorded_at_ms: u64,
    effects: Option<&'s mut Vec<Effect>>,
}

/// The parts of a chat record a handler reads before it changes the state.
#[derive(Clone, Copy)]
struct ChatHead {
    last_seq: u64,
    last_message_id: MessageId,
    has_messages: bool,
    joins: u64,
    chat_sequence: bool,
}

impl<S: StoreRead> ChatFold<'_, S> {
    fn inconsistent(&self, reason: impl Into<String>) -> ProjectionError {
        ProjectionError::Inconsistent { position: self.position, reason: reason.into() }
    }

    fn apply(&mut self, event: &Event) -> Result<(), ProjectionError> {
        match event {
            Event::GroupCreated(created) => self.group_created(created),
            Event::DirectChatCreated(created) => self.direct_chat_created(created),
            Event::GroupEdited(edited) => self.group_edited(edited),
            Event::MemberAdded(added) => {
                self.add_member(UserId(added.user_id))?;
                self.tell_group(None)
            }
            Event::MemberRemoved(removed) => self.member_removed(UserId(removed.user_id)),
            Event::OwnershipTransferred(transferred) => self.ownership_transferred(UserId(transferred.new_owner_id)),
            Event::GroupClosed(_) => self.group_closed(),
            Event::MessageSent(sent) => self.message_sent(sent),
            Event::MessageEdited(edited) => self.message_edited(edited),
            Event::MessagesDeleted(deleted) => self.messages_deleted(deleted),
            Event::ChatMarkedRead(marked) => self.chat_marked_read(marked),
            Event::DraftSaved(saved) => {
                let user = UserId(saved.user_id);
                self.member_mut(user)?.draft = saved.draft.clone();
                self.tell_conversation(user)
            }
            Event::MuteSet(mute) => {
                let user = UserId(mute.user_id);
                let prefs = match mute.notif_prefs {
                    // Events written before notif_prefs: the seeds' mute.
                    None if mute.muted => NotifPrefs::None,
                    None => NotifPrefs::All,
                    Some(value) => NotifPrefs::from_proto(value).ok_or_else(|| ProjectionError::MalformedEvent {
                        position: self.position,
                        reason: format!("notif_prefs {value} is not a NotifPrefs value"),
                    })?,
                };
                self.member_mut(user)?.notif_prefs = prefs;
                self.state.recipients_changed(self.chat); // recipients carry the preferences
                self.tell_conversation(user)
            }
            Event::PermissionOverridesSet(set) => self.permission_overrides_set(set),
            Event::InviteCreated(created) => self.invite_created(created),
            Event::InviteUsed(used) => self.invite_used(used),
            Event::InviteDeleted(deleted) => self.invite_deleted(&deleted.code),
            Event::UserUpserted(_) => Err(self.inconsistent("user_upserted in a chat stream")),
        }
    }

    fn chat_record(&mut self) -> Result<&ChatRecord, ProjectionError> {
        let chat = self.chat;
        let position = self.position;
        self.state
            .chat(chat)?
            .ok_or_else(|| ProjectionError::Inconsistent { position, reason: format!("chat {chat} does not exist") })
    }

    fn head(&mut self) -> Result<ChatHead, ProjectionError> {
        let chat = self.chat;
        let record = self.chat_record()?;
        Ok(ChatHead {
            last_seq: record.last_seq,
            last_message_id: record.last_message_id,
            has_messages: record.has_messages(chat),
            joins: record.joins,
            chat_sequence: record.chat_sequence,
        })
    }

    fn chat_mut(&mut self) -> Result<&mut ChatRecord, ProjectionError> {
        let (chat, position) = (self.chat, self.position);
        self.state
            .chat_mut(chat)?
            .ok_or_else(|| ProjectionError::Inconsistent { position, reason: format!("chat {chat} does not exist") })
    }

    fn group_mut(&mut self, what: &str) -> Result<&mut GroupInfo, ProjectionError> {
        let position = self.position;
        match &mut self.chat_mut()?.kind {
            ChatKind::Group(group) => Ok(group),
            ChatKind::Direct { .. } => {
                Err(ProjectionError::Inconsistent { position, reason: format!("{what} on a direct chat") })
            }
        }
    }

    fn require_member(&mut self, user: UserId) -> Result<(), ProjectionError> {
        if self.state.member(self.chat, user)?.is_none() {
            return Err(self.inconsistent(format!("user {user} is not a member of chat {}", self.chat)));
        }
        Ok(())
    }

    fn member_mut(&mut self, user: UserId) -> Result<&mut MemberRecord, ProjectionError> {
        self.require_member(user)?;
        let (chat, position) = (self.chat, self.position);
        self.state
            .member_mut(chat, user)?
            .ok_or_else(|| ProjectionError::Inconsistent { position, reason: format!("user {user} is not a member") })
    }

    fn new_chat(&mut self, kind: ChatKind) -> Result<(), ProjectionError> {
        if self.state.chat(self.chat)?.is_some() {
            return Err(self.inconsistent(format!("chat {} is created twice", self.chat)));
        }
        let record = ChatRecord {
            kind,
            last_seq: 0,
            last_message_id: MessageId(self.chat.get()),
            member_count: 0,
            joins: 0,
            large: false,
            chat_sequence: false,
            last_update_position: Position::ZERO,
        };
        self.state.insert_chat(self.chat, record)
    }

    fn group_created(&mut self, created: &events::GroupCreated) -> Result<(), ProjectionError> {
        let owner = UserId(created.owner_id);
        self.new_chat(ChatKind::Group(GroupInfo {
            name: created.name.clone(),
            owner,
            photo: None,
            highlighted: None,
            closed: false,
        }))?;
        self.add_member(owner)?;
        for &member in &created.member_ids {
            self.add_member(UserId(member))?;
        }
        self.tell_group(None)
    }

    fn direct_chat_created(&mut self, created: &events::DirectChatCreated) -> Result<(), ProjectionError> {
        let (user_a, user_b) = (UserId(created.user_a), UserId(created.user_b));
        self.new_chat(ChatKind::Direct { user_a, user_b })?;
        self.add_member(user_a)?;
        if user_b != user_a {
            self.add_member(user_b)?;
        }
        self.state.set_direct_chat(user_a, user_b, self.chat);
        Ok(())
    }

    fn group_edited(&mut self, edited: &events::GroupEdited) -> Result<(), ProjectionError> {
        let group = self.group_mut("group_edited")?;
        if let Some(name) = &edited.name {
            group.name.clone_from(name);
        }
        if let Some(highlighted) = edited.highlighted_msg_id {
            group.highlighted = (highlighted != 0).then_some(MessageId(highlighted));
        }
        if let Some(photo) = &edited.photo {
            group.photo = Some((photo.file_id, photo.preview.clone()));
        } else if edited.photo_removed {
            group.photo = None;
        }
        self.tell_group(None)
    }

    /// Adds `user` with a read position at the chat's last message (earlier history is not unread).
    fn add_member(&mut self, user: UserId) -> Result<(), ProjectionError> {
        if self.state.member(self.chat, user)?.is_some() {
            return Err(self.inconsistent(format!("user {user} joins chat {} twice", self.chat)));
        }
        let head = self.head()?;
        // Bans stick: overrides kept while the user was away come back with them.
        let overrides = self.state.parked_overrides(self.chat, user)?;
        if overrides.is_some() {
            self.state.set_parked_overrides(self.chat, user, None);
        }
        let member = MemberRecord {
            join_order: head.joins,
            read_seq: head.last_seq,
            read_message_id: if head.has_messages { head.last_message_id } else { MessageId(0) },
            draft: None,
            notif_prefs: NotifPrefs::All,
            overrides,
            chat_sequence_from: if head.chat_sequence { Position(self.position) } else { Position::ZERO },
        };
        self.state.insert_member(self.chat, user, member)?;
        let chat = self.chat_mut()?;
        chat.joins += 1;
        chat.member_count += 1;
        let starts_sequence = !chat.chat_sequence && chat.member_count > USER_SEQUENCE_MEMBERS_MAX;
        if !chat.large && chat.member_count > CHAT_LIST_FANOUT_MAX {
            chat.large = true; // listed through userid_chatid_largechat from now on
            self.state.reindex_large_chat(self.chat)?;
        }
        if starts_sequence {
            self.state.start_chat_sequence(self.chat, Position(self.position))?;
        }
        Ok(())
    }

    fn member_removed(&mut self, user: UserId) -> Result<(), ProjectionError> {
        self.chat_record()?;
        self.require_member(user)?;
        let overrides = self.state.member(self.chat, user)?.and_then(|member| member.overrides);
        if overrides.is_some() {
            self.state.set_parked_overrides(self.chat, user, overrides); // until the owner clears them
        }
        self.state.remove_member(self.chat, user)?;
        let position = self.position;
        let chat = self.chat_mut()?;
        chat.member_count = chat.member_count.checked_sub(1).ok_or_else(|| ProjectionError::Inconsistent {
            position,
            reason: "member count below zero".into(),
        })?;
        self.tell_group(Some(user))
    }

    fn ownership_transferred(&mut self, new_owner: UserId) -> Result<(), ProjectionError> {
        self.require_member(new_owner)?;
        self.group_mut("ownership_transferred")?.owner = new_owner;
        self.tell_group(None)
    }

    fn group_closed(&mut self) -> Result<(), ProjectionError> {
        self.group_mut("group_closed")?.closed = true;
        for code in self.state.invite_codes(self.chat)? {
            self.invite_deleted(&code)?;
        }
        Ok(())
    }

    fn message_sent(&mut self, sent: &events::MessageSent) -> Result<(), ProjectionError> {
        let head = self.head()?;
        let (message_id, author) = (MessageId(sent.message_id), UserId(sent.author_id));
        if message_id.get() <= head.last_message_id.get() && head.has_messages {
            return Err(self.inconsistent(format!(
                "message {message_id} is not newer than the last message {}",
                head.last_message_id
            )));
        }
        self.require_member(author)?;
        let mentions = self.mentioned_members(&sent.mentioned_user_ids, author)?;
        let seq = head.last_seq + 1;
        let record = MessageRecord {
            seq,
            author,
            sent_at_ms: self.recorded_at_ms,
            deleted: false,
            text: sent.text.clone(),
            entities: sent.entities.iter().map(|entity| entity.encode_to_vec()).collect(),
            media: sent.media.iter().map(|media| media.encode_to_vec()).collect(),
            edited_at_ms: None,
            message_type: sent.r#type,
            client_id: sent.client_id,
            reply: sent.reply.as_ref().map(|reply| reply.encode_to_vec()),
            mentions: mentions.clone(),
        };
        let told = self.effects.is_some().then(|| record.clone());
        self.state.insert_message(self.chat, message_id, record)?;
        for user in mentions {
            self.state.add_mention(self.chat, user, seq, message_id)?;
        }
        self.state.note_list_change(self.chat)?;
        let chat = self.chat_mut()?;
        chat.last_seq = seq;
        chat.last_message_id = message_id;
        // Sending reads everything up to the sent message and clears the sender's draft.
        let sender = self.member_mut(author)?;
        sender.read_seq = seq;
        sender.read_message_id = message_id;
        sender.draft = None;
        if let Some(message) = told {
            let audience = self.audience()?;
            self.tell(Effect::MessageCreated { audience, message_id, message });
        }
        Ok(())
    }

    fn live_message_mut(&mut self, message_id: MessageId) -> Result<&mut MessageRecord, ProjectionError> {
        let (chat, position) = (self.chat, self.position);
        match self.state.message_mut(chat, message_id)? {
            Some(message) if !message.deleted => Ok(message),
            _ => Err(ProjectionError::Inconsistent {
                position,
                reason: format!("message {message_id} does not exist in chat {chat}"),
            }),
        }
    }

    /// The mentioned users of an event, checked: members of the chat other than the author,
    /// in user id order, each once (the decision resolved them so).
    fn mentioned_members(&mut self, mentioned: &[u64], author: UserId) -> Result<Vec<UserId>, ProjectionError> {
        let users: Vec<UserId> = mentioned.iter().copied().map(UserId).collect();
        if !users.is_sorted_by(|a, b| a < b) {
            return Err(self.inconsistent("mentioned users are not in increasing user id order"));
        }
        for &user in &users {
            if user == author {
                return Err(self.inconsistent(format!("the author {user} mentions themselves")));
            }
            self.require_member(user)?;
        }
        Ok(users)
    }

    fn message_edited(&mut self, edited: &events::MessageEdited) -> Result<(), ProjectionError> {
        let message_id = MessageId(edited.message_id);
        let wanted = self.effects.is_some();
        let author = self.live_message_mut(message_id)?.author;
        let mentions = if edited.replaces_all { Some(self.mentioned_members(&edited.mentioned_user_ids, author)?) } else { None };
        let message = self.live_message_mut(message_id)?;
        message.text.clone_from(&edited.text);
        message.edited_at_ms = Some(edited.edited_at_ms);
        let mut mention_changes = None;
        if let Some(mentions) = mentions {
            message.entities = edited.entities.iter().map(|entity| entity.encode_to_vec()).collect();
            message.media = edited.media.iter().map(|media| media.encode_to_vec()).collect();
            let old = std::mem::replace(&mut message.mentions, mentions.clone());
            mention_changes = Some((message.seq, old, mentions));
        }
        let told = wanted.then(|| message.clone());
        self.state.remeasure_message(self.chat, message_id);
        if let Some((seq, old, new)) = mention_changes {
            for &user in old.iter().filter(|user| !new.contains(user)) {
                self.state.remove_mention(self.chat, user, seq)?;
            }
            for &user in new.iter().filter(|user| !old.contains(user)) {
                self.state.add_mention(self.chat, user, seq, message_id)?;
            }
        }
        if let Some(message) = told {
            let audience = self.audience()?;
            self.tell(Effect::MessageEdited { audience, message_id, message });
        }
        Ok(())
    }

    fn messages_deleted(&mut self, deleted: &events::MessagesDeleted) -> Result<(), ProjectionError> {
        let head = self.head()?;
        for &id in &deleted.message_ids {
            let message_id = MessageId(id);
            let (chat, position) = (self.chat, self.position);
            let Some(message) = self.state.message_mut(chat, message_id)? else {
                return Err(ProjectionError::Inconsistent {
                    position,
                    reason: format!("deleted message {message_id} does not exist"),
                });
            };
            if message.deleted {
                continue; // the same id twice in one deletion
            }
            message.deleted = true;
            message.text = String::new();
            message.entities = Vec::new();
            message.media = Vec::new();
            message.reply = None;
            let mentions = std::mem::take(&mut message.mentions);
            let seq = message.seq;
            self.state.remeasure_message(chat, message_id);
            self.state.add_deleted_seq(chat, seq)?;
            for user in mentions {
                self.state.remove_mention(chat, user, seq)?; // deleting a mention lowers its count
            }
        }
        let newest = self.state.newest_live_message_at_or_before(self.chat, head.last_message_id)?;
        let last = newest.unwrap_or(MessageId(self.chat.get()));
        if last != head.last_message_id {
            self.state.note_list_change(self.chat)?;
            self.chat_mut()?.last_message_id = last;
        }
        if self.effects.is_some() {
            let audience = self.audience()?;
            self.tell(Effect::MessagesDeleted { audience, message_ids: deleted.message_ids.clone() });
        }
        Ok(())
    }

    fn chat_marked_read(&mut self, marked: &events::ChatMarkedRead) -> Result<(), ProjectionError> {
        let user = UserId(marked.user_id);
        let target = MessageId(marked.message_id);
        self.require_member(user)?;
        let current = self.state.member(self.chat, user)?.map_or(MessageId(0), |member| member.read_message_id);
        if target > current {
            let seq = self.state.seq_at_or_before(self.chat, target)?;
            let member = self.member_mut(user)?;
            member.read_seq = member.read_seq.max(seq);
            member.read_message_id = target;
        }
        if self.effects.is_some() {
            let head = self.head()?;
            let (read_seq, read_message_id) =
                self.state.member(self.chat, user)?.map_or((0, MessageId(0)), |member| (member.read_seq, member.read_message_id));
            let unread_count = self.unread(head, read_seq)?;
            let unread_mentions_count = self.state.mentions_after(self.chat, user, read_seq)?;
            let last_read_message_id =
                if head.has_messages { read_message_id.min(head.last_message_id) } else { MessageId(0) };
            let addressing = Addressing::of(&self.chat_record()?.kind);
            self.tell(Effect::ReadPositionMoved {
                chat: self.chat,
                addressing,
                user,
                last_read_message_id,
                unread_count,
                unread_mentions_count,
            });
        }
        Ok(())
    }

    fn unread(&mut self, head: ChatHead, read_seq: u64) -> Result<u32, ProjectionError> {
        if read_seq >= head.last_seq {
            return Ok(0);
        }
        let deleted = self.state.deleted_between(self.chat, read_seq, head.last_seq)?;
        Ok(u32::try_from((head.last_seq - read_seq).saturating_sub(deleted)).unwrap_or(u32::MAX))
    }

    fn permission_overrides_set(&mut self, set: &events::PermissionOverridesSet) -> Result<(), ProjectionError> {
        let user = UserId(set.user_id);
        let overrides = (set.pos != 0 || set.neg != 0).then_some((set.pos, set.neg));
        if self.state.member(self.chat, user)?.is_none() {
            // Set for a non-member: kept until they join (nobody to tell).
            self.state.set_parked_overrides(self.chat, user, overrides);
            return Ok(());
        }
        self.member_mut(user)?.overrides = overrides;
        if self.effects.is_some() {
            let addressing = Addressing::of(&self.chat_record()?.kind);
            self.tell(Effect::PermissionsChanged { chat: self.chat, addressing, user, pos: set.pos, neg: set.neg });
        }
        Ok(())
    }

    fn invite_created(&mut self, created: &events::InviteCreated) -> Result<(), ProjectionError> {
        if self.state.invite(&created.code)?.is_some() {
            return Err(self.inconsistent(format!("invite code {} is created twice", created.code)));
        }
        let record = InviteRecord {
            chat: self.chat,
            creator: UserId(created.creator_id),
            created_at_ms: created.created_at_ms,
            expires_at_ms: created.expires_at_ms,
            max_uses: created.max_uses,
            uses: 0,
            used_up_at_ms: None,
        };
        self.state.insert_invite(self.chat, &created.code, record)
    }

    fn invite_used(&mut self, used: &events::InviteUsed) -> Result<(), ProjectionError> {
        let (chat, position, recorded_at_ms) = (self.chat, self.position, self.recorded_at_ms);
        let invite = self
            .state
            .invite_mut(&used.code)?
            .filter(|invite| invite.chat == chat)
            .ok_or_else(|| ProjectionError::Inconsistent { position, reason: format!("used invite {} does not exist", used.code) })?;
        if invite.is_used_up() {
            return Err(self.inconsistent(format!("invite {} used beyond its max_uses", used.code)));
        }
        invite.uses += 1;
        if invite.is_used_up() {
            invite.used_up_at_ms = Some(recorded_at_ms);
        }
        Ok(())
    }

    fn invite_deleted(&mut self, code: &str) -> Result<(), ProjectionError> {
        self.state.remove_invite(self.chat, code)
    }

    // ---- effects ----------------------------------------------------------------

    fn tell(&mut self, effect: Effect) {
        if let Some(effects) = self.effects.as_deref_mut() {
            effects.push(effect);
        }
    }

    fn audience(&mut self) -> Result<Audience, ProjectionError> {
        let addressing = Addressing::of(&self.chat_record()?.kind);
        Ok(Audience { chat: self.chat, addressing, recipients: self.state.recipients(self.chat)? })
    }

    fn participants(&mut self) -> Result<Vec<UserId>, ProjectionError> {
        let mut members: Vec<(u64, UserId)> =
            self.state.members(self.chat)?.into_iter().map(|(user, member)| (member.join_order, user)).collect();
        members.sort_unstable();
        Ok(members.into_iter().map(|(_, user)| user).collect())
    }

    fn tell_group(&mut self, removed: Option<UserId>) -> Result<(), ProjectionError> {
        if self.effects.is_none() {
            return Ok(());
        }
        let audience = self.audience()?;
        let chat = self.chat_record()?.clone();
        let participants = self.participants()?;
        self.tell(Effect::GroupChanged { audience, chat, participants, removed });
        Ok(())
    }

    fn tell_conversation(&mut self, user: UserId) -> Result<(), ProjectionError> {
        if self.effects.is_none() {
            return Ok(());
        }
        let head = self.head()?;
        let chat = self.chat_record()?.clone();
        let member = self.state.member(self.chat, user)?.cloned().ok_or_else(|| self.inconsistent("member vanished"))?;
        let unread_count = self.unread(head, member.read_seq)?;
        let unread_mentions_count = self.state.mentions_after(self.chat, user, member.read_seq)?;
        let last_message = if head.has_messages {
            self.state.message(self.chat, head.last_message_id)?.cloned().map(|message| (head.last_message_id, message))
        } else {
            None
        };
        let participants = if chat.group().is_some() { self.participants()? } else { Vec::new() };
        let snapshot =
            Box::new(ConversationSnapshot { chat, member, unread_count, unread_mentions_count, last_message, participants });
        self.tell(Effect::ConversationChanged { chat: self.chat, user, snapshot });
        Ok(())
    }
}
