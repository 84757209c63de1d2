//! Live updates: per-user subscriptions, the fan-out of committed events to them, and the
//! ephemeral typing state (never in the durable log).
//!
//! Fan-out runs in one task that consumes the fold's effects of every durable batch in
//! position order, so every subscriber sees updates in log order. Recipients and contents
//! come from the effects, as of each event's position; only user profiles (names, photos)
//! are read from the published state.

use super::views;
use crate::view::Views;
use osmium_projections::StoreRead;
use osmium_projections::records::{load_chat, load_members};
use crate::clock::Clock;
use crate::error::EngineError;
use crate::state_machine::EffectBatch;
use osmium_projections::state::Recipient;
use osmium_projections::{Effect, query};
use osmium_proto::ids::{ChatId, Position, UserId};
use osmium_proto::updates;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;

/// One update for one user, tagged with the log position it follows from (typing updates,
/// which are not logged, carry the log position current when they were made).
#[derive(Clone, Debug, PartialEq)]
pub struct TaggedUpdate {
    /// The log position this update reflects.
    pub position: Position,
    /// The protocol update.
    pub update: updates::Update,
    /// Whether a client should notify the user: a new message from someone else, as the
    /// user's notification preferences for the conversation say (NONE: never; MENTIONS:
    /// only when it mentions them; ALL, DEFAULT: always). False for every other update.
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

    /// Whether `user` has a subscription.
    pub(crate) fn is_subscribed(&self, user: UserId) -> bool {
        self.subscribers.lock().map(|subscribers| subscribers.contains_key(&user)).unwrap_or(false)
    }

    /// The recipients (in user id order) who have a subscription, found from whichever
    /// side is smaller: a message to 20,000 members with 3 of them online costs 3 lookups.
    pub(crate) fn subscribed(&self, recipients: &[Recipient]) -> Vec<Recipient> {
        let Ok(subscribers) = self.subscribers.lock() else { return Vec::new() };
        if subscribers.len() < recipients.len() {
            let mut found: Vec<Recipient> = subscribers
                .keys()
                .filter_map(|user| {
                    recipients.binary_search_by_key(user, |recipient| recipient.user).ok().map(|index| recipients[index])
                })
                .collect();
            found.sort_unstable_by_key(|recipient| recipient.user);
            found
        } else {
            recipients.iter().filter(|recipient| subscribers.contains_key(&recipient.user)).copied().collect()
        }
    }
}

fn update(kind: updates::update::Update) -> updates::Update {
    updates::Update { update: Some(kind) }
}

/// What the fan-out needs: the subscribers, the typing state, and (weakly: the engine's
/// drop must not wait for this task) the published state, for user profiles.
pub(super) struct FanOut {
    pub(super) hub: Arc<UpdateHub>,
    pub(super) typing: Arc<TypingState>,
    pub(super) views: Weak<Views>,
}

/// Runs until the engine closes: turns the effects of every durable batch, in log order,
/// into updates for the users subscribed.
pub(super) async fn fan_out(fan_out: Arc<FanOut>, mut effects: mpsc::UnboundedReceiver<EffectBatch>) {
    while let Some(batch) = effects.recv().await {
        if !fan_out.hub.has_subscribers() && !fan_out.typing.any() {
            continue;
        }
        for (position, effect) in batch {
            if let Err(err) = publish_effect(&fan_out, position, effect) {
                tracing::warn!(position = position.get(), %err, "could not build updates for an event");
            }
        }
    }
}

impl FanOut {
    /// Publishes `typing = false` for every indicator past its expiry.
    pub(super) fn expire_typing(&self) {
        for (chat_id, typist) in self.typing.take_expired() {
            let found = self.read(|view| {
                let Some(chat) = load_chat(view, chat_id)? else { return Ok(None) };
                Ok(Some((chat, load_members(view, chat_id)?)))
            });
            let Ok(Some((chat, members))) = found else { continue };
            let position = self.views.upgrade().map_or(Position::ZERO, |views| views.position());
            for (user, _) in members.iter().filter(|(user, _)| *user != typist) {
                self.hub.publish(*user, typing_update(&chat, chat_id, *user, typist, false, position));
            }
        }
    }

    /// Reads the published state; `Closed` once the engine is gone.
    fn read<T>(&self, read: impl FnOnce(&dyn StoreRead) -> Result<T, EngineError>) -> Result<T, EngineError> {
        let views = self.views.upgrade().ok_or(EngineError::Closed)?;
        views.read(read)
    }
}

fn publish_effect(inner: &FanOut, position: Position, effect: Effect) -> Result<(), EngineError> {
    let hub = &inner.hub;
    let tell = |user: UserId, kind: updates::update::Update, notify: bool| {
        hub.publish(user, TaggedUpdate { position, update: update(kind), notify });
    };
    match effect {
        Effect::MessageCreated { audience, message_id, message } => {
            let author = message.author;
            if inner.typing.clear(audience.chat, author) {
                for recipient in hub.subscribed(&audience.recipients).into_iter().filter(|r| r.user != author) {
                    let chat_ref = query::chat_ref_by(recipient.user, audience.chat, audience.addressing);
                    hub.publish(recipient.user, typing_update_to(chat_ref, author, false, position));
                }
            }
            let subscribed = hub.subscribed(&audience.recipients);
            if subscribed.is_empty() {
                return Ok(());
            }
            let author_view = inner.read(|view| Ok(query::user_view(view, author)?))?;
            for recipient in subscribed {
                let chat_ref = query::chat_ref_by(recipient.user, audience.chat, audience.addressing);
                let created = updates::UpdateMessageCreated {
                    message: Some(query::message_view(chat_ref, audience.chat, message_id, &message)?),
                    channel_unread_count: 0,
                    author: Some(author_view.clone()),
                    client_id: if recipient.user == author { message.client_id } else { None },
                };
                let mentioned = message.mentions.binary_search(&recipient.user).is_ok();
                let notify = recipient.user != author && recipient.notif_prefs.notifies(mentioned);
                tell(recipient.user, updates::update::Update::MessageCreated(created), notify);
            }
        }
        Effect::MessageEdited { audience, message_id, message } => {
            for recipient in hub.subscribed(&audience.recipients) {
                let chat_ref = query::chat_ref_by(recipient.user, audience.chat, audience.addressing);
                let message = query::message_view(chat_ref, audience.chat, message_id, &message)?;
                tell(recipient.user, updates::update::Update::Message(updates::UpdateMessage { message: Some(message) }), false);
            }
        }
        Effect::MessagesDeleted { audience, message_ids } => {
            for recipient in hub.subscribed(&audience.recipients) {
                let deleted = updates::UpdateMessageDeleted {
                    chat_ref: Some(query::chat_ref_by(recipient.user, audience.chat, audience.addressing)),
                    message_ids: message_ids.clone(),
                };
                tell(recipient.user, updates::update::Update::MessageDeleted(deleted), false);
            }
        }
        Effect::ReadPositionMoved { chat, addressing, user, last_read_message_id, unread_count, unread_mentions_count } => {
            let last_read = updates::UpdateConversationLastRead {
                chat_ref: Some(query::chat_ref_by(user, chat, addressing)),
                last_read_message_id: last_read_message_id.get(),
                unread_count: Some(unread_count),
                unread_mentions_count: Some(unread_mentions_count),
            };
            tell(user, updates::update::Update::ConversationLastRead(last_read), false);
        }
        Effect::ConversationChanged { chat, user, snapshot } => {
            if !hub.is_subscribed(user) {
                return Ok(());
            }
            let view = inner.read(|view| views::chat_of_snapshot(view, user, chat, &snapshot))?;
            tell(user, updates::update::Update::Chat(updates::UpdateChat { chat: Some(view) }), false);
        }
        Effect::PermissionsChanged { chat, addressing, user, pos, neg } => {
            let permissions = updates::UpdateConversationPermissions {
                chat_ref: Some(query::chat_ref_by(user, chat, addressing)),
                permissions: Some(osmium_proto::types::PermissionOverrides { pos, neg }),
            };
            tell(user, updates::update::Update::ConversationPermissions(permissions), false);
        }
        Effect::GroupChanged { audience, chat: record, participants, removed } => {
            let mut told: Vec<UserId> = hub.subscribed(&audience.recipients).into_iter().map(|recipient| recipient.user).collect();
            told.extend(removed.filter(|&user| hub.is_subscribed(user)));
            if told.is_empty() {
                return Ok(());
            }
            let users = inner.read(|view| views::users_of(view, participants.iter().copied()))?;
            for viewer in told {
                let Some(group) = query::group_of(viewer, audience.chat, &record, &participants) else { continue };
                let changed = updates::UpdateGroup { group: Some(group), users: users.clone() };
                tell(viewer, updates::update::Update::Group(changed), false);
            }
        }
    }
    Ok(())
}

pub(crate) fn typing_update(
    chat: &osmium_projections::records::ChatRecord,
    chat_id: ChatId,
    viewer: UserId,
    typist: UserId,
    typing: bool,
    position: Position,
) -> TaggedUpdate {
    typing_update_to(query::chat_ref_for(viewer, chat_id, chat), typist, typing, position)
}

fn typing_update_to(chat_ref: osmium_proto::refs::ChatRef, typist: UserId, typing: bool, position: Position) -> TaggedUpdate {
    let chat_typing = updates::UpdateChatTyping { chat_ref: Some(chat_ref), user_id: typist.get(), typing, action: None };
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

    pub(crate) fn any(&self) -> bool {
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
