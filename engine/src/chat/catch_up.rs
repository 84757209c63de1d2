//! Catch-up after a disconnect: the updates a user missed since a token, read from the
//! catch-up index the fold writes (`osmium_projections::catch_up`), in position order,
//! built by the same code as the live fan-out.
//!
//! Cost: O(updates missed + the user's chats with their own sequence): one scan of the
//! user's `userid_position_update` keys after the token, one scan per chat with its own
//! sequence (above `USER_SEQUENCE_MEMBERS_MAX` members) of its `chatid_position_update`
//! keys after the token (and from the user's first position in it), one `position_effect` read per event
//! missed, and one log read per new message missed (its content). Never O(chats) of
//! small chats, never O(log).

use super::updates::{Sequence, TaggedUpdate, effect_updates, previous_in_user_sequence};
use crate::error::EngineError;
use crate::log::LogReader;
use osmium_projections::Effect;
use osmium_projections::catch_up::{EffectsRecord, UserEntry, restore_content};
use osmium_proto::events::event_envelope::Event;
use osmium_projections::records::{NotifPrefs, decode, load, load_chat_sequences, load_member};
use osmium_projections::state::Recipient;
use osmium_projections::{ScanRange, StoreRead, Table, keys};
use osmium_proto::ids::{Position, UserId};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// What [`super::ChatEngine::updates_since`] answers.
#[derive(Clone, Debug, PartialEq)]
pub enum CatchUp {
    /// The updates missed after the token, in order (at most the limit's events' worth).
    Updates {
        /// The updates, in position order.
        updates: Vec<TaggedUpdate>,
        /// The token to continue from: every update up to it is in `updates` (or was
        /// before the token).
        token: Position,
        /// Whether `token` is the engine's read position (nothing more to catch up now);
        /// otherwise call again with `token`.
        complete: bool,
    },
    /// More than `catch_up_updates_max` events to catch up on: refetch the chat list
    /// (`get_chats`), then continue from `resume_token` (the state the refetch shows is at
    /// least that recent; updates between both may come again, and apply idempotently).
    TooFarBehind {
        /// The token to continue from after the refetch.
        resume_token: Position,
    },
}

/// What one missed event holds for the user: through their own sequence (which of its
/// effects), through its chat's sequence, or both.
#[derive(Default)]
struct Missed {
    own: Option<UserEntry>,
    chat_sequence: bool,
}

/// The updates of `user` after `token` up to `at` (the read position of `view`), at most
/// `limit` events' worth, or `TooFarBehind` beyond `updates_max` events. New messages'
/// contents are read from their events in `log` (the index does not keep them twice).
pub(crate) fn updates_since(
    view: &dyn StoreRead,
    log: &LogReader,
    at: Position,
    user: UserId,
    token: Position,
    limit: usize,
    updates_max: usize,
) -> Result<CatchUp, EngineError> {
    if token > at {
        return Err(EngineError::invalid("token", format!("{token} is after the engine's read position {at}")));
    }
    let mut missed: BTreeMap<Position, Missed> = BTreeMap::new();
    let mut failed = None;
    let prefix = user.to_be_bytes();
    let start = keys::user_update(user, token.next());
    view.scan(Table::UseridPositionUpdate, ScanRange::prefix(&prefix).starting_at(&start), &mut |key, value| {
        let entry = keys::user_update_position(key)
            .and_then(|position| Ok((position, decode::<UserEntry>(Table::UseridPositionUpdate, key, value)?)));
        match entry {
            Ok((position, _)) if position > at => return ControlFlow::Break(()),
            Ok((position, entry)) => missed.entry(position).or_default().own = Some(entry),
            Err(err) => {
                failed = Some(err);
                return ControlFlow::Break(());
            }
        }
        if missed.len() > updates_max { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })?;
    if let Some(err) = failed.take() {
        return Err(err.into());
    }
    for (chat, from) in load_chat_sequences(view, user)? {
        if missed.len() > updates_max {
            break;
        }
        let chat_prefix = chat.to_be_bytes();
        let start = keys::chat_update(chat, token.next().max(from));
        view.scan(Table::ChatidPositionUpdate, ScanRange::prefix(&chat_prefix).starting_at(&start), &mut |key, _| {
            match keys::chat_update_position(key) {
                Ok(position) if position > at => return ControlFlow::Break(()),
                Ok(position) => missed.entry(position).or_default().chat_sequence = true,
                Err(err) => {
                    failed = Some(err);
                    return ControlFlow::Break(());
                }
            }
            if missed.len() > updates_max { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })?;
    }
    if let Some(err) = failed {
        return Err(err.into());
    }
    if missed.len() > updates_max {
        return Ok(CatchUp::TooFarBehind { resume_token: at });
    }
    let complete = missed.len() <= limit;
    let mut previous_own = previous_in_user_sequence(view, user, token.next())?;
    let mut updates = Vec::new();
    let mut last = token;
    for (position, missed) in missed.into_iter().take(limit.max(1)) {
        let mut record: EffectsRecord = load(view, Table::PositionEffect, &keys::position_effect(position))?.ok_or_else(|| {
            EngineError::Corrupt {
                what: format!("the catch-up index at position {position}"),
                expected: "a position_effect record".into(),
                found: "none".into(),
            }
        })?;
        if record.effects.iter().any(|(effect, _)| matches!(effect, Effect::MessageCreated { .. })) {
            let Some(Event::MessageSent(sent)) = log.read_one(position)?.event else {
                return Err(EngineError::Corrupt {
                    what: format!("the event at position {position}"),
                    expected: "message_sent (the catch-up index has a new message there)".into(),
                    found: "another event or none".into(),
                });
            };
            for (effect, _) in &mut record.effects {
                restore_content(effect, &sent);
            }
        }
        for (index, (effect, via_chat)) in record.effects.iter().enumerate() {
            let (recipient, sequence) = if *via_chat {
                if !missed.chat_sequence {
                    continue;
                }
                let prefs = load_member(view, record.chat, user)?.map_or(NotifPrefs::All, |member| member.notif_prefs);
                (Recipient { user, notif_prefs: prefs }, Sequence::Chat { chat: record.chat, previous: record.previous_in_chat })
            } else {
                let Some(entry) = missed.own.filter(|entry| index < 32 && entry.effects_mask & (1 << index) != 0) else { continue };
                (Recipient { user, notif_prefs: entry.notif_prefs }, Sequence::User { previous: previous_own })
            };
            effect_updates(view, effect, &[recipient], &mut |_, kind, notify| {
                updates.push(TaggedUpdate {
                    position,
                    update: osmium_proto::updates::Update { update: Some(kind) },
                    notify,
                    sequence,
                });
            })?;
        }
        if missed.own.is_some() {
            previous_own = position;
        }
        last = position;
    }
    Ok(CatchUp::Updates { updates, token: if complete { at } else { last }, complete })
}
