//! The fold: one pure function from (projection state, event) to projection writes,
//! used alike by the live engine (inside its commit batch) and by the replay CLI.
//!
//! The fold trusts that commands were validated before their events were written,
//! but it checks what it relies on: an event that contradicts the state (a message
//! from a non-member, a chat that does not exist) is a [`ProjectionError::Inconsistent`]
//! naming the position, never a panic and never a silent skip.
//!
//! What one event writes (N = chat members):
//! - `MessageSent`: the message, the chat record, the sender's member record, and for a
//!   chat of at most [`CHAT_LIST_FANOUT_MAX`] members a delete and a put of each member's
//!   chat-list key (so at most `2 * 256` small keys); for larger chats nothing per member.
//! - `ChatMarkedRead`, `DraftSaved`, `MuteSet`, `PermissionOverridesSet`: one member record.
//! - Unread counts are never written: they are derived from the chat's message sequence,
//!   the member's read sequence and the deleted sequence numbers.

use crate::error::ProjectionError;
use crate::keys;
use crate::limits::CHAT_LIST_FANOUT_MAX;
use crate::records::{
    self, ChatKind, ChatRecord, GroupInfo, InviteRecord, MemberRecord, MessageRecord, UserRecord, load_chat,
    load_invite, load_member, load_message, save, save_checkpoint,
};
use crate::store::{ScanRange, Store, Table, collect_prefix};
use osmium_proto::events::{self, event_envelope::Event, stream_ref::Stream};
use osmium_proto::ids::{ChatId, MessageId, Position, StreamId, UserId};
use osmium_proto::prost::Message as _;
use std::ops::ControlFlow;

/// The stream of an envelope.
pub fn stream_of(envelope: &events::EventEnvelope) -> Result<StreamId, ProjectionError> {
    match envelope.stream.as_ref().and_then(|stream| stream.stream) {
        Some(Stream::ChatId(chat)) => Ok(StreamId::Chat(ChatId(chat))),
        Some(Stream::UserId(user)) => Ok(StreamId::User(UserId(user))),
        None => Err(ProjectionError::MalformedEvent { position: envelope.position, reason: "no stream".into() }),
    }
}

/// Folds one event into `store` and advances the checkpoint to its position.
pub fn apply<S: Store + ?Sized>(store: &mut S, envelope: &events::EventEnvelope) -> Result<(), ProjectionError> {
    let position = envelope.position;
    let malformed = |reason: String| ProjectionError::MalformedEvent { position, reason };
    let event = envelope.event.as_ref().ok_or_else(|| malformed("no event".into()))?;
    match (stream_of(envelope)?, event) {
        (StreamId::User(user), Event::UserUpserted(upserted)) => upsert_user(store, user, upserted, position)?,
        (StreamId::Chat(chat), event) if !matches!(event, Event::UserUpserted(_)) => {
            let mut fold = ChatFold { store, chat, position, recorded_at_ms: envelope.recorded_at_ms };
            fold.apply(event)?;
        }
        (stream, event) => return Err(malformed(format!("{} does not belong in stream {stream}", event_kind(event)))),
    }
    save_checkpoint(store, Position(position));
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

fn upsert_user<S: Store + ?Sized>(
    store: &mut S,
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
    let record = UserRecord {
        name: profile.name.clone(),
        username: profile.username.clone(),
        photo: profile.photo.as_ref().map(|photo| (photo.file_id, photo.preview.clone())),
        bot: profile.bot,
        icon: profile.icon,
        color: profile.color,
    };
    save(store, Table::UseridUser, keys::user(user), &record);
    Ok(())
}

struct ChatFold<'s, S: Store + ?Sized> {
    store: &'s mut S,
    chat: ChatId,
    position: u64,
    recorded_at_ms: u64,
}

impl<S: Store + ?Sized> ChatFold<'_, S> {
    fn inconsistent(&self, reason: impl Into<String>) -> ProjectionError {
        ProjectionError::Inconsistent { position: self.position, reason: reason.into() }
    }

    fn apply(&mut self, event: &Event) -> Result<(), ProjectionError> {
        match event {
            Event::GroupCreated(created) => self.group_created(created),
            Event::DirectChatCreated(created) => self.direct_chat_created(created),
            Event::GroupEdited(edited) => self.group_edited(edited),
            Event::MemberAdded(added) => {
                let mut chat = self.chat_record()?;
                self.add_member(&mut chat, UserId(added.user_id))?;
                self.save_chat(&chat);
                Ok(())
            }
            Event::MemberRemoved(removed) => self.member_removed(UserId(removed.user_id)),
            Event::OwnershipTransferred(transferred) => self.ownership_transferred(UserId(transferred.new_owner_id)),
            Event::GroupClosed(_) => self.group_closed(),
            Event::MessageSent(sent) => self.message_sent(sent),
            Event::MessageEdited(edited) => self.message_edited(edited),
            Event::MessagesDeleted(deleted) => self.messages_deleted(deleted),
            Event::ChatMarkedRead(marked) => self.chat_marked_read(marked),
            Event::DraftSaved(saved) => {
                self.update_member(UserId(saved.user_id), |member| member.draft = saved.draft.clone())
            }
            Event::MuteSet(mute) => self.update_member(UserId(mute.user_id), |member| member.muted = mute.muted),
            Event::PermissionOverridesSet(set) => self.update_member(UserId(set.user_id), |member| {
                member.overrides = (set.pos != 0 || set.neg != 0).then_some((set.pos, set.neg));
            }),
            Event::InviteCreated(created) => self.invite_created(created),
            Event::InviteUsed(used) => self.invite_used(used),
            Event::InviteDeleted(deleted) => self.invite_deleted(&deleted.code),
            Event::UserUpserted(_) => Err(self.inconsistent("user_upserted in a chat stream")),
        }
    }

    fn chat_record(&self) -> Result<ChatRecord, ProjectionError> {
        load_chat(self.store, self.chat)?.ok_or_else(|| self.inconsistent(format!("chat {} does not exist", self.chat)))
    }

    fn save_chat(&mut self, chat: &ChatRecord) {
        save(self.store, Table::ChatidChat, keys::chat(self.chat), chat);
    }

    fn member(&self, user: UserId) -> Result<MemberRecord, ProjectionError> {
        load_member(self.store, self.chat, user)?
            .ok_or_else(|| self.inconsistent(format!("user {user} is not a member of chat {}", self.chat)))
    }

    fn save_member(&mut self, user: UserId, member: &MemberRecord) {
        save(self.store, Table::ChatidUseridMember, keys::member(self.chat, user), member);
    }

    fn update_member(&mut self, user: UserId, change: impl FnOnce(&mut MemberRecord)) -> Result<(), ProjectionError> {
        let mut member = self.member(user)?;
        change(&mut member);
        self.save_member(user, &member);
        Ok(())
    }

    fn new_chat(&self, kind: ChatKind) -> Result<ChatRecord, ProjectionError> {
        if load_chat(self.store, self.chat)?.is_some() {
            return Err(self.inconsistent(format!("chat {} is created twice", self.chat)));
        }
        Ok(ChatRecord {
            kind,
            last_seq: 0,
            last_message_id: MessageId(self.chat.get()),
            member_count: 0,
            joins: 0,
            large: false,
        })
    }

    fn group_created(&mut self, created: &events::GroupCreated) -> Result<(), ProjectionError> {
        let owner = UserId(created.owner_id);
        let mut chat = self.new_chat(ChatKind::Group(GroupInfo {
            name: created.name.clone(),
            owner,
            photo: None,
            highlighted: None,
            closed: false,
        }))?;
        self.add_member(&mut chat, owner)?;
        for &member in &created.member_ids {
            self.add_member(&mut chat, UserId(member))?;
        }
        self.save_chat(&chat);
        Ok(())
    }

    fn direct_chat_created(&mut self, created: &events::DirectChatCreated) -> Result<(), ProjectionError> {
        let (user_a, user_b) = (UserId(created.user_a), UserId(created.user_b));
        let mut chat = self.new_chat(ChatKind::Direct { user_a, user_b })?;
        self.add_member(&mut chat, user_a)?;
        if user_b != user_a {
            self.add_member(&mut chat, user_b)?;
        }
        self.save_chat(&chat);
        self.store.put(Table::UseridUseridDm, keys::direct_chat(user_a, user_b), self.chat.to_be_bytes().to_vec());
        Ok(())
    }

    fn group_edited(&mut self, edited: &events::GroupEdited) -> Result<(), ProjectionError> {
        let mut chat = self.chat_record()?;
        let ChatKind::Group(group) = &mut chat.kind else {
            return Err(self.inconsistent("group_edited on a direct chat"));
        };
        if let Some(name) = &edited.name {
            group.name.clone_from(name);
        }
        if let Some(highlighted) = edited.highlighted_msg_id {
            group.highlighted = (highlighted != 0).then_some(MessageId(highlighted));
        }
        if let Some(photo) = &edited.photo {
            group.photo = Some((photo.file_id, photo.preview.clone()));
        }
        self.save_chat(&chat);
        Ok(())
    }

    /// Adds `user` with a read position at the chat's last message (earlier history is not unread).
    fn add_member(&mut self, chat: &mut ChatRecord, user: UserId) -> Result<(), ProjectionError> {
        if load_member(self.store, self.chat, user)?.is_some() {
            return Err(self.inconsistent(format!("user {user} joins chat {} twice", self.chat)));
        }
        let member = MemberRecord {
            join_order: chat.joins,
            read_seq: chat.last_seq,
            read_message_id: if chat.has_messages(self.chat) { chat.last_message_id } else { MessageId(0) },
            draft: None,
            muted: false,
            overrides: None,
        };
        self.save_member(user, &member);
        chat.joins += 1;
        chat.member_count += 1;
        if chat.large {
            self.store.put(Table::UseridChatidLargechat, keys::large_chat(user, self.chat), Vec::new());
        } else {
            let entry = keys::chat_list_entry(user, chat.last_message_id, self.chat);
            self.store.put(Table::UseridLastmsgidChatidChatlist, entry, Vec::new());
            if chat.member_count > CHAT_LIST_FANOUT_MAX {
                self.promote_to_large(chat)?;
            }
        }
        Ok(())
    }

    /// Moves every member's chat-list entry from the per-message index to the large-chat set.
    fn promote_to_large(&mut self, chat: &mut ChatRecord) -> Result<(), ProjectionError> {
        for user in self.member_ids()? {
            self.store.delete(
                Table::UseridLastmsgidChatidChatlist,
                keys::chat_list_entry(user, chat.last_message_id, self.chat),
            );
            self.store.put(Table::UseridChatidLargechat, keys::large_chat(user, self.chat), Vec::new());
        }
        chat.large = true;
        Ok(())
    }

    fn member_ids(&self) -> Result<Vec<UserId>, ProjectionError> {
        collect_prefix(self.store, Table::ChatidUseridMember, &keys::members_of(self.chat), |key, _| keys::member_user(key))
    }

    fn member_removed(&mut self, user: UserId) -> Result<(), ProjectionError> {
        let mut chat = self.chat_record()?;
        self.member(user)?;
        self.store.delete(Table::ChatidUseridMember, keys::member(self.chat, user));
        if chat.large {
            self.store.delete(Table::UseridChatidLargechat, keys::large_chat(user, self.chat));
        } else {
            let entry = keys::chat_list_entry(user, chat.last_message_id, self.chat);
            self.store.delete(Table::UseridLastmsgidChatidChatlist, entry);
        }
        chat.member_count = chat
            .member_count
            .checked_sub(1)
            .ok_or_else(|| self.inconsistent("member count below zero"))?;
        self.save_chat(&chat);
        Ok(())
    }

    fn ownership_transferred(&mut self, new_owner: UserId) -> Result<(), ProjectionError> {
        let mut chat = self.chat_record()?;
        self.member(new_owner)?;
        let ChatKind::Group(group) = &mut chat.kind else {
            return Err(self.inconsistent("ownership_transferred on a direct chat"));
        };
        group.owner = new_owner;
        self.save_chat(&chat);
        Ok(())
    }

    fn group_closed(&mut self) -> Result<(), ProjectionError> {
        let mut chat = self.chat_record()?;
        let ChatKind::Group(group) = &mut chat.kind else {
            return Err(self.inconsistent("group_closed on a direct chat"));
        };
        group.closed = true;
        self.save_chat(&chat);
        for code in self.invite_codes()? {
            self.invite_deleted(&code)?;
        }
        Ok(())
    }

    fn invite_codes(&self) -> Result<Vec<String>, ProjectionError> {
        collect_prefix(self.store, Table::ChatidCodeInvite, &keys::chat(self.chat), |key, _| keys::chat_invite_code(key))
    }

    fn message_sent(&mut self, sent: &events::MessageSent) -> Result<(), ProjectionError> {
        let mut chat = self.chat_record()?;
        let (message_id, author) = (MessageId(sent.message_id), UserId(sent.author_id));
        if message_id.get() <= chat.last_message_id.get() && chat.has_messages(self.chat) {
            return Err(self.inconsistent(format!(
                "message {message_id} is not newer than the last message {}",
                chat.last_message_id
            )));
        }
        let mut sender = self.member(author)?;
        let seq = chat.last_seq + 1;
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
        };
        save(self.store, Table::ChatidMsgidMessage, keys::message(self.chat, message_id), &record);
        let previous_last = chat.last_message_id;
        chat.last_seq = seq;
        chat.last_message_id = message_id;
        self.move_chat_list(&chat, previous_last)?;
        self.save_chat(&chat);
        // Sending reads everything up to the sent message and clears the sender's draft.
        sender.read_seq = seq;
        sender.read_message_id = message_id;
        sender.draft = None;
        self.save_member(author, &sender);
        Ok(())
    }

    /// Re-keys each member's chat-list entry after the last message changed (small chats only).
    fn move_chat_list(&mut self, chat: &ChatRecord, previous_last: MessageId) -> Result<(), ProjectionError> {
        if chat.large || previous_last == chat.last_message_id {
            return Ok(());
        }
        for user in self.member_ids()? {
            let table = Table::UseridLastmsgidChatidChatlist;
            self.store.delete(table, keys::chat_list_entry(user, previous_last, self.chat));
            self.store.put(table, keys::chat_list_entry(user, chat.last_message_id, self.chat), Vec::new());
        }
        Ok(())
    }

    fn live_message(&self, message_id: MessageId) -> Result<MessageRecord, ProjectionError> {
        match load_message(self.store, self.chat, message_id)? {
            Some(message) if !message.deleted => Ok(message),
            _ => Err(self.inconsistent(format!("message {message_id} does not exist in chat {}", self.chat))),
        }
    }

    fn message_edited(&mut self, edited: &events::MessageEdited) -> Result<(), ProjectionError> {
        let message_id = MessageId(edited.message_id);
        let mut message = self.live_message(message_id)?;
        message.text.clone_from(&edited.text);
        message.edited_at_ms = Some(edited.edited_at_ms);
        save(self.store, Table::ChatidMsgidMessage, keys::message(self.chat, message_id), &message);
        Ok(())
    }

    fn messages_deleted(&mut self, deleted: &events::MessagesDeleted) -> Result<(), ProjectionError> {
        let mut chat = self.chat_record()?;
        for &id in &deleted.message_ids {
            let message_id = MessageId(id);
            let Some(message) = load_message(self.store, self.chat, message_id)? else {
                return Err(self.inconsistent(format!("deleted message {message_id} does not exist")));
            };
            if message.deleted {
                continue; // the same id twice in one deletion
            }
            let tombstone = MessageRecord {
                deleted: true,
                text: String::new(),
                entities: Vec::new(),
                media: Vec::new(),
                ..message
            };
            save(self.store, Table::ChatidMsgidMessage, keys::message(self.chat, message_id), &tombstone);
            self.store.put(Table::ChatidSeqDeleted, keys::deleted_seq(self.chat, tombstone.seq), Vec::new());
        }
        let previous_last = chat.last_message_id;
        chat.last_message_id = self.newest_live_message_at_or_before(previous_last)?;
        self.move_chat_list(&chat, previous_last)?;
        self.save_chat(&chat);
        Ok(())
    }

    /// The newest non-deleted message with an id at most `from`, or the chat id when none.
    fn newest_live_message_at_or_before(&self, from: MessageId) -> Result<MessageId, ProjectionError> {
        let prefix = keys::chat(self.chat);
        let start = keys::message(self.chat, from);
        let mut newest = None;
        let mut failure = None;
        let range = ScanRange::prefix_reverse(&prefix).starting_at(&start);
        self.store.scan(Table::ChatidMsgidMessage, range, &mut |key, value| {
            let decoded = records::decode::<MessageRecord>(Table::ChatidMsgidMessage, key, value)
                .and_then(|message| Ok((keys::message_id(key)?, message)));
            match decoded {
                Ok((_, message)) if message.deleted => ControlFlow::Continue(()),
                Ok((id, _)) => {
                    newest = Some(id);
                    ControlFlow::Break(())
                }
                Err(err) => {
                    failure = Some(err);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(err) = failure {
            return Err(err);
        }
        Ok(newest.unwrap_or(MessageId(self.chat.get())))
    }

    fn chat_marked_read(&mut self, marked: &events::ChatMarkedRead) -> Result<(), ProjectionError> {
        let user = UserId(marked.user_id);
        let mut member = self.member(user)?;
        let target = MessageId(marked.message_id);
        if target <= member.read_message_id {
            return Ok(()); // a read position never moves back
        }
        let seq = crate::query::seq_at_or_before(self.store, self.chat, target)?;
        member.read_seq = member.read_seq.max(seq);
        member.read_message_id = target;
        self.save_member(user, &member);
        Ok(())
    }

    fn invite_created(&mut self, created: &events::InviteCreated) -> Result<(), ProjectionError> {
        let record = InviteRecord {
            chat: self.chat,
            creator: UserId(created.creator_id),
            created_at_ms: created.created_at_ms,
            expires_at_ms: created.expires_at_ms,
            max_uses: created.max_uses,
            uses: 0,
        };
        if load_invite(self.store, &created.code)?.is_some() {
            return Err(self.inconsistent(format!("invite code {} is created twice", created.code)));
        }
        save(self.store, Table::CodeInvite, keys::invite(&created.code), &record);
        self.store.put(Table::ChatidCodeInvite, keys::chat_invite(self.chat, &created.code), Vec::new());
        Ok(())
    }

    fn invite_used(&mut self, used: &events::InviteUsed) -> Result<(), ProjectionError> {
        let mut invite = load_invite(self.store, &used.code)?
            .filter(|invite| invite.chat == self.chat)
            .ok_or_else(|| self.inconsistent(format!("used invite {} does not exist", used.code)))?;
        if invite.is_used_up() {
            return Err(self.inconsistent(format!("invite {} used beyond its max_uses", used.code)));
        }
        invite.uses += 1;
        save(self.store, Table::CodeInvite, keys::invite(&used.code), &invite);
        Ok(())
    }

    fn invite_deleted(&mut self, code: &str) -> Result<(), ProjectionError> {
        self.store.delete(Table::CodeInvite, keys::invite(code));
        self.store.delete(Table::ChatidCodeInvite, keys::chat_invite(self.chat, code));
        Ok(())
    }
}
