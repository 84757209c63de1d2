//! The catch-up index: who was told what at each position, so that a client that was
//! disconnected gets exactly the updates it missed (`ChatEngine::updates_since`).
//!
//! The fold writes it as projection writes (flushed with the checkpoint, rebuilt by a
//! rebuild, never written by the log), from the effects of each event:
//! - `position_effect`: the event's effects, once ([`EffectsRecord`]; recipients left out);
//! - `userid_position_update`: one key per member told, for effects in chats without a
//!   sequence of their own (at most [`USER_SEQUENCE_MEMBERS_MAX`] members so far), and
//!   for effects addressed to one member wherever they are (read position, draft,
//!   permissions, the removed member of a group change). The value says which of the
//!   event's effects it was told and its notification preferences then ([`UserEntry`]);
//! - `chatid_position_update`: one key per event in a chat with its own sequence (flag
//!   `chat_sequence` of the chat record, set for good once it has more than
//!   [`USER_SEQUENCE_MEMBERS_MAX`] members) for the effects addressed to all of its
//!   members, which write nothing per member: a member's catch-up reads the sequence of
//!   each such chat listed in `userid_chatid_chatsequence`, from the position at which
//!   they started following it (`MemberRecord::chat_sequence_from`: their join, or the
//!   join that gave the chat its sequence), so that nobody is told of what happened in a
//!   chat before they joined it.
//!
//! Each update belongs to one sequence, in which the previous update's position is known,
//! so that a client sees any gap: the user's sequence (the user's `userid_position_update`
//! keys) or a chat's (its `chatid_position_update` keys, whose previous position the
//! record carries: [`EffectsRecord::previous_in_chat`]).
//!
//! Cost per event: one `position_effect` record (about the size of the event's message),
//! at most [`USER_SEQUENCE_MEMBERS_MAX`] + 1 small `userid_position_update` keys in a chat
//! without its own sequence, and in a chat with one, one `chatid_position_update` key
//! plus one key per member told alone.
//!
//! [`USER_SEQUENCE_MEMBERS_MAX`]: crate::limits::USER_SEQUENCE_MEMBERS_MAX

use crate::effects::Effect;
use crate::records::NotifPrefs;
use osmium_proto::ids::{ChatId, Position, UserId};
use serde::{Deserialize, Serialize};

/// The most effects one event can tell (a [`UserEntry`] marks them in a `u32`). The fold
/// tells at most three per event; more would be a fold error.
pub const EFFECTS_PER_EVENT_MAX: usize = 32;

/// `position_effect`: what one event told.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EffectsRecord {
    /// The chat the event is about.
    pub chat: ChatId,
    /// Its effects in the order the fold told them, each with whether it went to the
    /// chat's own sequence (`chatid_position_update`) rather than to each member's.
    /// A `MessageCreated` is kept without the message's content (text, entities, media,
    /// reply: see [`elide_content`]), which the event at the same position holds.
    pub effects: Vec<(Effect, bool)>,
    /// For an event in a chat's own sequence: that sequence's previous position (zero
    /// when it is the first).
    pub previous_in_chat: Position,
}

/// `userid_position_update` value: what one event told one user.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct UserEntry {
    /// Bit `i` is set when effect `i` of the event's [`EffectsRecord`] was for this user.
    pub effects_mask: u32,
    /// The user's notification preferences in the chat, as of the event (whether a new
    /// message notifies them).
    pub notif_prefs: NotifPrefs,
}

/// An effect as the fold told it, with the sequence its updates belong to.
#[derive(Clone, Debug)]
pub struct Told {
    /// The effect.
    pub effect: Effect,
    /// `Some(previous)` when its updates go to the chat's own sequence, whose
    /// previous position is `previous` (zero for the first); `None` for the recipients'
    /// own sequences.
    pub chat_sequence: Option<Position>,
}

/// The effect as `position_effect` keeps it: a new message without its content (text,
/// entities, media, reply), which the `message_sent` event at the same position holds, so
/// that a message is not stored a second time; [`restore_content`] puts it back.
pub fn elide_content(effect: &Effect) -> Effect {
    match effect {
        Effect::MessageCreated { audience, message_id, message } => {
            let mut message = message.clone();
            message.text = String::new();
            message.entities = Vec::new();
            message.media = Vec::new();
            message.reply = None;
            Effect::MessageCreated { audience: audience.clone(), message_id: *message_id, message }
        }
        other => other.clone(),
    }
}

/// Puts back the content [`elide_content`] left out, from the `message_sent` event that
/// made the message (as the fold took it).
pub fn restore_content(effect: &mut Effect, sent: &osmium_proto::events::MessageSent) {
    use osmium_proto::prost::Message as _;
    if let Effect::MessageCreated { message, .. } = effect {
        message.text = sent.text.clone();
        message.entities = sent.entities.iter().map(|entity| entity.encode_to_vec()).collect();
        message.media = sent.media.iter().map(|media| media.encode_to_vec()).collect();
        message.reply = sent.reply.as_ref().map(|reply| reply.encode_to_vec());
    }
}

/// Who one event told through their own sequence, with what (see [`UserEntry`]), in user
/// id order. (A sorted `Vec`, not a map: an effect's recipients come in user id order, and
/// this runs for every member of every chat of up to 256 members per event.)
pub fn user_entries(effects: &[(Effect, bool)]) -> Vec<(UserId, UserEntry)> {
    let mut told: Vec<(UserId, UserEntry)> = Vec::new();
    for (index, (effect, large)) in effects.iter().enumerate().take(EFFECTS_PER_EVENT_MAX) {
        let entry = |prefs: NotifPrefs| UserEntry { effects_mask: 1u32 << index, notif_prefs: prefs };
        if let Some(user) = effect.member() {
            told.push((user, entry(NotifPrefs::All)));
        }
        if let Some(audience) = effect.audience()
            && !large
        {
            told.extend(audience.recipients.iter().map(|recipient| (recipient.user, entry(recipient.notif_prefs))));
        }
        if let Effect::GroupChanged { removed: Some(user), .. } = effect {
            told.push((*user, entry(NotifPrefs::All)));
        }
    }
    // Stable: a user's first entry (the earliest effect) keeps its preferences.
    told.sort_by_key(|(user, _)| *user);
    told.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1.effects_mask |= later.1.effects_mask;
        }
        same
    });
    told
}
