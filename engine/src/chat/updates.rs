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
use osmium_projections::records::load_chat;
use crate::clock::Clock;
use crate::error::EngineError;
use crate::state_machine::EffectBatch;
use osmium_projections::catch_up::Told;
use osmium_projections::records::NotifPrefs;
use osmium_projections::state::Recipient;
use osmium_projections::{Effect, ScanRange, Table, keys, query};
use osmium_proto::ids::{ChatId, Position, UserId};
use osmium_proto::updates;
use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;

/// The sequence an update belongs to, with the position of that sequence's previous
/// update: a client that applied every update up to position `t` (its token) and
/// receives an update whose `previous` is after `t` missed something, and catches up
/// with `ChatEngine::updates_since(t)`.
///
/// A user's updates are in their own sequence, except those about a whole chat of more
/// than `CHAT_LIST_FANOUT_MAX` members, which are in that chat's sequence (a message to
/// 10,000 members writes one key for them all, not one per member).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sequence {
    /// Not logged (typing): in no sequence, never caught up.
    Unlogged,
    /// The user's own sequence.
    User {
        /// The position of the previous update of the user's sequence (zero: none).
        previous: Position,
    },
    /// The sequence of a chat with its own (more than `USER_SEQUENCE_MEMBERS_MAX` members).
    Chat {
        /// The chat.
        chat: ChatId,
        /// The position of the previous update of the chat's sequence (zero: none).
        previous: Position,
    },
}

impl Sequence {
    /// The previous update's position in the sequence, if the update is logged.
    pub fn previous(&self) -> Option<Position> {
        match self {
            Sequence::Unlogged => None,
            Sequence::User { previous } | Sequence::Chat { previous, .. } => Some(*previous),
        }
    }
}

/// One update for one user, tagged with the log position it follows from (typing updates,
/// which are not logged, carry the log position current when they were made).
#[derive(Clone, Debug, PartialEq)]
pub struct TaggedUpdate {
    /// The log position this update reflects: the token to resume after once applied.
    pub position: Position,
    /// The protocol update.
    pub update: updates::Update,
    /// Whether a client should notify the user: a new message from someone else, as the
    /// user's notification preferences for the conversation say (NONE: never; MENTIONS:
    /// only when it mentions them; ALL, DEFAULT: always). False for every other update.
    pub notify: bool,
    /// The sequence the update is in, where a gap shows.
    pub sequence: Sequence,
}

/// What a subscription and the fan-out share: where it was cut when it fell behind.
#[derive(Debug, Default)]
struct Shared {
    /// Zero while delivering; else the position from which queued updates are dropped
    /// (the resume token is the position before it).
    cut: AtomicU64,
    /// The position a subscription starts after (its catch-up's end, or the read position
    /// when it started live).
    start: AtomicU64,
}

/// A user's stream of updates: for [`ChatEngine::subscribe_from`], the missed updates
/// first, then live ones. It ends when the engine closes, or when the subscriber fell
/// `subscription_queue_max` updates behind: then [`Subscription::resume_token`] says
/// where to resume from (with `updates_since` or `subscribe_from`), so that nothing is
/// skipped silently.
///
/// [`ChatEngine::subscribe_from`]: super::ChatEngine::subscribe_from
#[derive(Debug)]
pub struct Subscription {
    backlog: VecDeque<TaggedUpdate>,
    receiver: mpsc::Receiver<TaggedUpdate>,
    /// Logged live updates at or before this position are dropped: they were in the
    /// backlog, or their event came before the subscription started (the fan-out runs
    /// after reads see an event, so it may reach a subscription registered after that).
    seam: Position,
    shared: Arc<Shared>,
}

impl Subscription {
    /// The next update; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<TaggedUpdate> {
        if let Some(update) = self.backlog.pop_front() {
            return Some(update);
        }
        loop {
            let update = self.receiver.recv().await?;
            if self.keeps(&update) {
                return Some(update);
            }
        }
    }

    /// The next update if one is already waiting.
    pub fn try_next(&mut self) -> Option<TaggedUpdate> {
        if let Some(update) = self.backlog.pop_front() {
            return Some(update);
        }
        loop {
            let update = self.receiver.try_recv().ok()?;
            if self.keeps(&update) {
                return Some(update);
            }
        }
    }

    /// After the subscription ended (`next` answered `None`): `Some(token)` when it was
    /// closed because the subscriber fell behind; every update up to `token` was
    /// delivered, and `updates_since(token)` continues without a gap or a duplicate.
    /// `None` while it runs, or when the engine closed.
    pub fn resume_token(&self) -> Option<Position> {
        let cut = self.shared.cut.load(Ordering::Acquire);
        (cut != 0).then(|| Position(cut - 1))
    }

    fn keeps(&self, update: &TaggedUpdate) -> bool {
        let cut = self.shared.cut.load(Ordering::Acquire);
        if cut != 0 && update.position.get() >= cut {
            return false; // after the resume token: the catch-up delivers it
        }
        update.sequence == Sequence::Unlogged || update.position > self.seam
    }

    /// Puts the catch-up's updates (up to `seam`) before the live ones.
    pub(crate) fn set_backlog(&mut self, backlog: Vec<TaggedUpdate>, seam: Position) {
        self.backlog = backlog.into();
        self.seam = seam;
        self.shared.start.store(seam.get(), Ordering::Release);
    }
}

/// One subscription as the fan-out holds it.
#[derive(Debug)]
struct Subscriber {
    sender: mpsc::Sender<TaggedUpdate>,
    shared: Arc<Shared>,
    /// The position of the last logged update queued, if any.
    delivered: Option<Position>,
}

impl Subscriber {
    /// Queues `update`; false when the subscription is gone or was cut because it fell
    /// behind (its resume token then set).
    fn deliver(&mut self, user: UserId, update: &TaggedUpdate) -> bool {
        let logged = update.sequence != Sequence::Unlogged;
        match self.sender.try_send(update.clone()) {
            Ok(()) => {
                if logged {
                    self.delivered = Some(update.position);
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Updates come in position order (typing aside): everything before the
                // cut was queued. A typing update cuts at the last logged position queued,
                // whose other updates might be missing.
                let cut = match (logged, self.delivered) {
                    (true, _) => update.position,
                    (false, Some(delivered)) => delivered,
                    (false, None) => Position(self.shared.start.load(Ordering::Acquire)).next(),
                };
                self.shared.cut.store(cut.get().max(1), Ordering::Release);
                tracing::warn!(%user, resume_token = cut.get().saturating_sub(1), "subscriber fell behind; closing its subscription with a resume token");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Subscribers by user.
#[derive(Debug, Default)]
pub(crate) struct UpdateHub {
    subscribers: Mutex<HashMap<UserId, Vec<Subscriber>>>,
}

impl UpdateHub {
    /// A live subscription of `user`, starting after `start` (the read position now).
    pub(crate) fn subscribe(&self, user: UserId, queue_max: usize, start: Position) -> Subscription {
        let (sender, receiver) = mpsc::channel(queue_max.max(1));
        let shared = Arc::new(Shared { cut: AtomicU64::new(0), start: AtomicU64::new(start.get()) });
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.entry(user).or_default().push(Subscriber { sender, shared: shared.clone(), delivered: None });
        }
        Subscription { backlog: VecDeque::new(), receiver, seam: start, shared }
    }

    /// Delivers to every subscription of `user`; drops the closed and the full ones (these
    /// with their resume token).
    pub(crate) fn publish(&self, user: UserId, update: TaggedUpdate) {
        let Ok(mut subscribers) = self.subscribers.lock() else { return };
        let Some(senders) = subscribers.get_mut(&user) else { return };
        senders.retain_mut(|subscriber| subscriber.deliver(user, &update));
        if senders.is_empty() {
            subscribers.remove(&user);
        }
    }

    /// Closes every subscription of `user` with the resume token before `position`,
    /// whose updates could not be built: the subscriber catches up rather than skip them.
    pub(crate) fn close_before(&self, user: UserId, position: Position) {
        let Ok(mut subscribers) = self.subscribers.lock() else { return };
        for subscriber in subscribers.remove(&user).unwrap_or_default() {
            let _ = subscriber.shared.cut.compare_exchange(0, position.get().max(1), Ordering::AcqRel, Ordering::Acquire);
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
        for (position, told) in batch {
            if let Err(err) = publish_effect(&fan_out, position, told) {
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
                Ok(Some((chat, query::participants(view, chat_id)?)))
            });
            let Ok(Some((chat, members))) = found else { continue };
            let position = self.views.upgrade().map_or(Position::ZERO, |views| views.position());
            for user in members.iter().filter(|&&user| user != typist) {
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

fn publish_effect(inner: &FanOut, position: Position, told: Told) -> Result<(), EngineError> {
    let hub = &inner.hub;
    let Told { effect, chat_sequence } = told;
    if let Effect::MessageCreated { audience, message, .. } = &effect {
        let author = message.author;
        if inner.typing.clear(audience.chat, author) {
            for recipient in hub.subscribed(&audience.recipients).into_iter().filter(|r| r.user != author) {
                let chat_ref = query::chat_ref_by(recipient.user, audience.chat, audience.addressing);
                hub.publish(recipient.user, typing_update_to(chat_ref, author, false, position));
            }
        }
    }
    let mut targets: Vec<Recipient> = match (&effect, effect.audience(), effect.member()) {
        (_, _, Some(user)) => vec![Recipient { user, notif_prefs: NotifPrefs::All }],
        (_, Some(audience), None) => hub.subscribed(&audience.recipients),
        (_, None, None) => Vec::new(),
    };
    if let Effect::GroupChanged { removed: Some(user), .. } = &effect {
        targets.push(Recipient { user: *user, notif_prefs: NotifPrefs::All });
    }
    targets.retain(|target| hub.is_subscribed(target.user));
    if targets.is_empty() {
        return Ok(());
    }
    let chat = effect.chat();
    let built = inner.read(|view| {
        let mut built = Vec::new();
        effect_updates(view, &effect, &targets, &mut |user, kind, notify| built.push((user, kind, notify)))?;
        let mut previous: HashMap<UserId, Position> = HashMap::new();
        let mut told = Vec::with_capacity(built.len());
        for (user, kind, notify) in built {
            let sequence = match chat_sequence {
                Some(previous) => Sequence::Chat { chat, previous },
                None => {
                    let previous = match previous.get(&user) {
                        Some(found) => *found,
                        None => {
                            let found = previous_in_user_sequence(view, user, position)?;
                            previous.insert(user, found);
                            found
                        }
                    };
                    Sequence::User { previous }
                }
            };
            told.push((user, TaggedUpdate { position, update: update(kind), notify, sequence }));
        }
        Ok(told)
    });
    let told = match built {
        Ok(told) => told,
        Err(err) => {
            // Never skipped silently: each subscriber told is closed with its resume token.
            for target in &targets {
                hub.close_before(target.user, position);
            }
            return Err(err);
        }
    };
    for (user, update) in told {
        hub.publish(user, update);
    }
    Ok(())
}

/// The position of the last update of `user`'s own sequence before `position` (zero: none).
pub(crate) fn previous_in_user_sequence(view: &dyn StoreRead, user: UserId, position: Position) -> Result<Position, EngineError> {
    let prefix = user.to_be_bytes();
    let start = keys::user_update(user, Position(position.get().saturating_sub(1)));
    let mut found = Ok(Position::ZERO);
    view.scan(Table::UseridPositionUpdate, ScanRange::prefix_reverse(&prefix).starting_at(&start), &mut |key, _| {
        found = keys::user_update_position(key);
        ControlFlow::Break(())
    })?;
    Ok(found?)
}

/// Builds the updates `effect` means for each of `targets` (members it addressed, with
/// their notification preferences then), as of the effect's event: calls
/// `emit(user, update, notify)` for each. Shared by the live fan-out and the catch-up, so
/// that both say the same.
pub(crate) fn effect_updates(
    view: &dyn StoreRead,
    effect: &Effect,
    targets: &[Recipient],
    emit: &mut dyn FnMut(UserId, updates::update::Update, bool),
) -> Result<(), EngineError> {
    match effect {
        Effect::MessageCreated { audience, message_id, message } => {
            let author = message.author;
            let author_view = query::user_view(view, author)?;
            for recipient in targets {
                let chat_ref = query::chat_ref_by(recipient.user, audience.chat, audience.addressing);
                let created = updates::UpdateMessageCreated {
                    message: Some(query::message_view(chat_ref, audience.chat, *message_id, message)?),
                    channel_unread_count: 0,
                    author: Some(author_view.clone()),
                    client_id: if recipient.user == author { message.client_id } else { None },
                };
                let mentioned = message.mentions.binary_search(&recipient.user).is_ok();
                let notify = recipient.user != author && recipient.notif_prefs.notifies(mentioned);
                emit(recipient.user, updates::update::Update::MessageCreated(created), notify);
            }
        }
        Effect::MessageEdited { audience, message_id, message } => {
            for recipient in targets {
                let chat_ref = query::chat_ref_by(recipient.user, audience.chat, audience.addressing);
                let message = query::message_view(chat_ref, audience.chat, *message_id, message)?;
                emit(recipient.user, updates::update::Update::Message(updates::UpdateMessage { message: Some(message) }), false);
            }
        }
        Effect::MessagesDeleted { audience, message_ids } => {
            for recipient in targets {
                let deleted = updates::UpdateMessageDeleted {
                    chat_ref: Some(query::chat_ref_by(recipient.user, audience.chat, audience.addressing)),
                    message_ids: message_ids.clone(),
                };
                emit(recipient.user, updates::update::Update::MessageDeleted(deleted), false);
            }
        }
        Effect::ReadPositionMoved { chat, addressing, user, last_read_message_id, unread_count, unread_mentions_count } => {
            if targets.iter().any(|target| target.user == *user) {
                let last_read = updates::UpdateConversationLastRead {
                    chat_ref: Some(query::chat_ref_by(*user, *chat, *addressing)),
                    last_read_message_id: last_read_message_id.get(),
                    unread_count: Some(*unread_count),
                    unread_mentions_count: Some(*unread_mentions_count),
                };
                emit(*user, updates::update::Update::ConversationLastRead(last_read), false);
            }
        }
        Effect::ConversationChanged { chat, user, snapshot } => {
            if targets.iter().any(|target| target.user == *user) {
                let view = views::chat_of_snapshot(view, *user, *chat, snapshot)?;
                emit(*user, updates::update::Update::Chat(updates::UpdateChat { chat: Some(view) }), false);
            }
        }
        Effect::PermissionsChanged { chat, addressing, user, pos, neg } => {
            if targets.iter().any(|target| target.user == *user) {
                let permissions = updates::UpdateConversationPermissions {
                    chat_ref: Some(query::chat_ref_by(*user, *chat, *addressing)),
                    permissions: Some(osmium_proto::types::PermissionOverrides { pos: *pos, neg: *neg }),
                };
                emit(*user, updates::update::Update::ConversationPermissions(permissions), false);
            }
        }
        Effect::GroupChanged { audience, chat: record, participants, .. } => {
            let users = views::users_of(view, participants.iter().copied())?;
            for viewer in targets {
                let Some(group) = query::group_of(viewer.user, audience.chat, record, participants) else { continue };
                let changed = updates::UpdateGroup { group: Some(group), users: users.clone() };
                emit(viewer.user, updates::update::Update::Group(changed), false);
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
    TaggedUpdate {
        position,
        update: update(updates::update::Update::ChatTyping(chat_typing)),
        notify: false,
        sequence: Sequence::Unlogged,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn logged_at(position: u64) -> TaggedUpdate {
        TaggedUpdate {
            position: Position(position),
            update: updates::Update::default(),
            notify: false,
            sequence: Sequence::User { previous: Position(position - 1) },
        }
    }

    /// Regression: a subscription made right after a command's answer got that command's
    /// updates when the fan-out reached them after it registered (a catch-up test flaked).
    #[test]
    fn a_live_subscription_drops_the_late_updates_of_events_before_it_started() {
        let hub = UpdateHub::default();
        let user = UserId(1);
        let mut subscription = hub.subscribe(user, 8, Position(5));
        for position in [4, 5, 6] {
            hub.publish(user, logged_at(position));
        }
        let typing = TaggedUpdate { sequence: Sequence::Unlogged, ..logged_at(3) };
        hub.publish(user, typing);
        assert_eq!(subscription.try_next().map(|update| update.position), Some(Position(6)));
        assert_eq!(subscription.try_next().map(|update| (update.position, update.sequence)), Some((Position(3), Sequence::Unlogged)));
        assert_eq!(subscription.try_next(), None);
    }
}
