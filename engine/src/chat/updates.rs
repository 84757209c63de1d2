//! Live updates: per-user subscriptions, the fan-out of committed events to them, and the
//! ephemeral typing state (never in the durable log).
//!
//! Fan-out runs in one task that consumes committed batches in position order, so every
//! subscriber sees updates in log order. Recipients and views are read from the
//! projections when the batch is fanned out (at most a few batches after its commit).

use super::views;
use crate::clock::Clock;
use crate::log::{CommittedBatch, LogShared};
use crate::rocks::RocksView;
use osmium_projections::records::{load_chat, load_member, load_members};
use osmium_projections::{ProjectionError, StoreRead, query};
use osmium_proto::events::{EventEnvelope, event_envelope::Event, stream_ref::Stream};
use osmium_proto::ids::{ChatId, MessageId, Position, UserId};
use osmium_proto::updates;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// One update for one user, tagged with the log position it follows from (typing updates,
/// which are not logged, carry the log position current when they were made).
#[derive(Clone, Debug, PartialEq)]
pub struct TaggedUpdate {
    /// The log position this update reflects.
    pub position: Position,
    /// The protocol update.
    pub update: updates::Update,
    /// Whether a client should notify the user (a new message from someone else in a
    /// conversation they have not muted).
    pub notify: bool,
}

/// A user's stream of updates. It ends when the engine closes, or when the subscriber
/// fell `subscription_queue_max` updates behind (then it should resync with `get_chats`).
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<TaggedUpdate>,
}

impl Subscription {
    /// The next update; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<TaggedUpdate> {
        self.receiver.recv().await
    }

    /// The next update if one is already waiting.
    pub fn try_next(&mut self) -> Option<TaggedUpdate> {
        self.receiver.try_recv().ok()
    }
}

/// Subscribers by user.
#[derive(Debug, Default)]
pub(crate) struct UpdateHub {
    subscribers: Mutex<HashMap<UserId, Vec<mpsc::Sender<TaggedUpdate>>>>,
}

impl UpdateHub {
    pub(crate) fn subscribe(&self, user: UserId, queue_max: usize) -> Subscription {
        let (sender, receiver) = mpsc::channel(queue_max.max(1));
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.entry(user).or_default().push(sender);
        }
        Subscription { receiver }
    }

    /// Delivers to every subscription of `user`; drops the closed and the full ones.
    pub(crate) fn publish(&self, user: UserId, update: TaggedUpdate) {
        let Ok(mut subscribers) = self.subscribers.lock() else { return };
        let Some(senders) = subscribers.get_mut(&user) else { return };
        senders.retain(|sender| match sender.try_send(update.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(%user, "subscriber fell behind; closing its subscription");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if senders.is_empty() {
            subscribers.remove(&user);
        }
    }

    pub(crate) fn has_subscribers(&self) -> bool {
        self.subscribers.lock().map(|subscribers| !subscribers.is_empty()).unwrap_or(false)
    }
}

fn update(kind: updates::update::Update) -> updates::Update {
    updates::Update { update: Some(kind) }
}

/// Runs until the log closes: turns every committed batch into user updates.
///
/// It holds the log only weakly, so that dropping the engine closes the database (and
/// releases the directory lock) at once, not when this task is next polled; while it works
/// on a batch it checks `is_closing` before each event, so a drop waits for one event at
/// most (see `EventLog`'s `Drop`).
pub(crate) async fn fan_out(
    shared: std::sync::Weak<LogShared>,
    hub: Arc<UpdateHub>,
    typing: Arc<TypingState>,
    mut batches: broadcast::Receiver<Arc<CommittedBatch>>,
) {
    loop {
        match batches.recv().await {
            Ok(batch) => {
                if !hub.has_subscribers() && !typing.any() {
                    continue;
                }
                let Some(shared) = shared.upgrade() else { return };
                let view = RocksView::snapshot(&shared.db, shared.slot);
                for event in &batch.events {
                    if shared.is_closing() {
                        return; // the engine is being dropped: let go of the database
                    }
                    if let Err(err) = publish_event(&view, &hub, &typing, event) {
                        tracing::warn!(position = event.position, %err, "could not build updates for an event");
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "update fan-out fell behind; some live updates were skipped");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn publish_event(
    view: &dyn StoreRead,
    hub: &UpdateHub,
    typing: &TypingState,
    envelope: &EventEnvelope,
) -> Result<(), ProjectionError> {
    let Some(Stream::ChatId(chat_id)) = envelope.stream.as_ref().and_then(|stream| stream.stream) else {
        return Ok(()); // user directory events have no live update
    };
    let chat_id = ChatId(chat_id);
    let Some(chat) = load_chat(view, chat_id)? else { return Ok(()) };
    let Some(event) = &envelope.event else { return Ok(()) };
    let position = Position(envelope.position);
    let members = load_members(view, chat_id)?;
    let to_members = |make: &dyn Fn(UserId) -> Result<Option<updates::Update>, ProjectionError>| {
        for (user, _) in &members {
            if let Some(update) = make(*user)? {
                hub.publish(*user, TaggedUpdate { position, update, notify: false });
            }
        }
        Ok::<(), ProjectionError>(())
    };
    match event {
        Event::MessageSent(sent) => {
            let author = UserId(sent.author_id);
            if typing.clear(chat_id, author) {
                for (user, _) in members.iter().filter(|(user, _)| *user != author) {
                    hub.publish(*user, typing_update(&chat, chat_id, *user, author, false, position));
                }
            }
            let Some(record) = osmium_projections::records::load_message(view, chat_id, MessageId(sent.message_id))?
            else {
                return Ok(()); // deleted again before the fan-out got to it
            };
            let author_view = query::user_view(view, author)?;
            for (user, member) in &members {
                let chat_ref = query::chat_ref_for(*user, chat_id, &chat);
                let message = query::message_view(chat_ref, chat_id, MessageId(sent.message_id), &record)?;
                let created = updates::UpdateMessageCreated {
                    message: Some(message),
                    channel_unread_count: 0,
                    author: Some(author_view.clone()),
                    client_id: if *user == author { sent.client_id } else { None },
                };
                let notify = *user != author && !member.muted;
                let update = update(updates::update::Update::MessageCreated(created));
                hub.publish(*user, TaggedUpdate { position, update, notify });
            }
        }
        Event::MessageEdited(edited) => to_members(&|user| {
            let Some(record) = osmium_projections::records::load_message(view, chat_id, MessageId(edited.message_id))?
            else {
                return Ok(None);
            };
            if record.deleted {
                return Ok(None);
            }
            let chat_ref = query::chat_ref_for(user, chat_id, &chat);
            let message = query::message_view(chat_ref, chat_id, MessageId(edited.message_id), &record)?;
            Ok(Some(update(updates::update::Update::Message(updates::UpdateMessage { message: Some(message) }))))
        })?,
        Event::MessagesDeleted(deleted) => to_members(&|user| {
            let deleted = updates::UpdateMessageDeleted {
                chat_ref: Some(query::chat_ref_for(user, chat_id, &chat)),
                message_ids: deleted.message_ids.clone(),
            };
            Ok(Some(update(updates::update::Update::MessageDeleted(deleted))))
        })?,
        Event::ChatMarkedRead(marked) => {
            let user = UserId(marked.user_id);
            if let Some(member) = load_member(view, chat_id, user)? {
                let conversation = query::conversation(view, user, chat_id, &chat, &member)?;
                let last_read = updates::UpdateConversationLastRead {
                    chat_ref: conversation.chat_ref,
                    last_read_message_id: conversation.last_read_message_id,
                    unread_count: Some(conversation.unread_count),
                    unread_mentions_count: None,
                };
                let update = update(updates::update::Update::ConversationLastRead(last_read));
                hub.publish(user, TaggedUpdate { position, update, notify: false });
            }
        }
        Event::DraftSaved(saved) => publish_chat(view, hub, chat_id, UserId(saved.user_id), position)?,
        Event::MuteSet(mute) => publish_chat(view, hub, chat_id, UserId(mute.user_id), position)?,
        Event::PermissionOverridesSet(set) => {
            let permissions = updates::UpdateConversationPermissions {
                chat_ref: Some(query::chat_ref_for(UserId(set.user_id), chat_id, &chat)),
                permissions: Some(osmium_proto::types::PermissionOverrides { pos: set.pos, neg: set.neg }),
            };
            let update = update(updates::update::Update::ConversationPermissions(permissions));
            hub.publish(UserId(set.user_id), TaggedUpdate { position, update, notify: false });
        }
        Event::GroupCreated(_) | Event::GroupEdited(_) | Event::MemberAdded(_) | Event::OwnershipTransferred(_) => {
            to_members(&|user| group_update(view, user, chat_id, &chat))?;
        }
        Event::MemberRemoved(removed) => {
            to_members(&|user| group_update(view, user, chat_id, &chat))?;
            let removed = UserId(removed.user_id);
            if let Some(update) = group_update(view, removed, chat_id, &chat)? {
                hub.publish(removed, TaggedUpdate { position, update, notify: false });
            }
        }
        _ => {}
    }
    Ok(())
}

fn publish_chat(
    view: &dyn StoreRead,
    hub: &UpdateHub,
    chat_id: ChatId,
    user: UserId,
    position: Position,
) -> Result<(), ProjectionError> {
    if let Some(chat) = views::chat_view(view, user, chat_id)? {
        let update = update(updates::update::Update::Chat(updates::UpdateChat { chat: Some(chat) }));
        hub.publish(user, TaggedUpdate { position, update, notify: false });
    }
    Ok(())
}

fn group_update(
    view: &dyn StoreRead,
    viewer: UserId,
    chat_id: ChatId,
    chat: &osmium_projections::records::ChatRecord,
) -> Result<Option<updates::Update>, ProjectionError> {
    let Some(group) = query::group_view(view, viewer, chat_id, chat)? else { return Ok(None) };
    let users = group
        .participant_ids
        .iter()
        .map(|&user| query::user_view(view, UserId(user)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(update(updates::update::Update::Group(updates::UpdateGroup { group: Some(group), users }))))
}

pub(crate) fn typing_update(
    chat: &osmium_projections::records::ChatRecord,
    chat_id: ChatId,
    viewer: UserId,
    typist: UserId,
    typing: bool,
    position: Position,
) -> TaggedUpdate {
    let chat_typing = updates::UpdateChatTyping {
        chat_ref: Some(query::chat_ref_for(viewer, chat_id, chat)),
        user_id: typist.get(),
        typing,
        action: None,
    };
    TaggedUpdate { position, update: update(updates::update::Update::ChatTyping(chat_typing)), notify: false }
}

/// Who is typing where, until when (engine clock, unix ms). In memory only.
#[derive(Debug)]
pub(crate) struct TypingState {
    clock: Arc<dyn Clock>,
    expiry_ms: u64,
    typing: Mutex<HashMap<(ChatId, UserId), u64>>,
}

impl TypingState {
    pub(crate) fn new(clock: Arc<dyn Clock>, expiry_ms: u64) -> Self {
        TypingState { clock, expiry_ms, typing: Mutex::new(HashMap::new()) }
    }

    fn any(&self) -> bool {
        self.typing.lock().map(|typing| !typing.is_empty()).unwrap_or(false)
    }

    /// Records a refresh (`true`, always to be published) or a stop (`false`, to be
    /// published only if the user was typing).
    pub(crate) fn set(&self, chat: ChatId, user: UserId, typing: bool) -> bool {
        let Ok(mut state) = self.typing.lock() else { return false };
        if typing {
            state.insert((chat, user), self.clock.now_ms() + self.expiry_ms);
            true
        } else {
            state.remove(&(chat, user)).is_some()
        }
    }

    /// Clears `user`'s indicator in `chat`; true if there was one.
    pub(crate) fn clear(&self, chat: ChatId, user: UserId) -> bool {
        self.typing.lock().map(|mut state| state.remove(&(chat, user)).is_some()).unwrap_or(false)
    }

    /// Removes and returns the indicators past their expiry.
    pub(crate) fn take_expired(&self) -> Vec<(ChatId, UserId)> {
        let now = self.clock.now_ms();
        let Ok(mut state) = self.typing.lock() else { return Vec::new() };
        let expired: Vec<_> = state.iter().filter(|(_, until)| now >= **until).map(|(&key, _)| key).collect();
        for key in &expired {
            state.remove(key);
        }
        expired
    }
}
