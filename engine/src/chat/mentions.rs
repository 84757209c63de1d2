//! Mentions: which users a message mentions, read from its entities and the text they cover.
//!
//! The protocol's `UserMentionEntity` (`MessageEntity.user_mention`, 13) is empty: the
//! mentioned user's id is in the text the entity covers, and the protocol does not fix how
//! it is written. **The engine's convention:** the covered text is `@` followed by the
//! decimal user id (`@1234`), or the same in angle brackets (`<@1234>`); nothing else
//! (no spaces, no sign, no leading `+`). A `username` entity (`MessageEntity.username`,
//! 14) covers `@` followed by a username (`@ann`), looked up in the username index
//! (`username_userid`, kept by `user_upserted`; ASCII letters match case-insensitively).
//! Entity offsets and lengths count UTF-16 code units, as everywhere in the protocol.
//!
//! What a mention does (decided when the message is sent or edited, recorded in its event):
//! a mentioned **member other than the author** gets a `chatid_userid_seq_mention` key,
//! which counts in their `unread_mentions_count` and `GetUnreadMentions` until they read
//! past the message or it is deleted, and notifies them when their preference is
//! `MENTIONS`. Covered text in neither form, an unknown username, a user who is not a
//! member and the author themselves mention nobody; the entity is still stored and sent
//! as given (it is formatting, not an error).

use osmium_proto::ids::UserId;
use osmium_proto::types::{MessageEntity, message_entity::Entity};

/// One mention as written in a message, before it is resolved to a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mention {
    /// `@1234` or `<@1234>` under a `user_mention` entity.
    Id(UserId),
    /// `@name` under a `username` entity.
    Username(String),
}

/// The mentions of `text` by `entities`, in entity order (duplicates kept; entities that
/// mention nobody by the convention above left out). Entities are expected within the
/// text (the caller checks bounds first); one that is not mentions nobody.
pub(crate) fn mentions_in(text: &str, entities: &[MessageEntity]) -> Vec<Mention> {
    if entities.is_empty() {
        return Vec::new(); // most messages: no need to index the text
    }
    let mut units: Vec<u16> = Vec::with_capacity(text.len());
    units.extend(text.encode_utf16());
    entities
        .iter()
        .filter_map(|entity| {
            let covered = covered_text(&units, entity)?;
            match entity.entity.as_ref()? {
                Entity::UserMention(_) => parse_user_mention(&covered).map(Mention::Id),
                Entity::Username(true) => parse_username(&covered).map(|name| Mention::Username(name.to_owned())),
                _ => None,
            }
        })
        .collect()
}

/// The text an entity covers, if its range lies within the text and is valid UTF-16.
fn covered_text(units: &[u16], entity: &MessageEntity) -> Option<String> {
    let start = usize::try_from(entity.start_index).ok()?;
    let end = start.checked_add(usize::try_from(entity.length).ok()?)?;
    String::from_utf16(units.get(start..end)?).ok()
}

/// The user id of a `user_mention`'s covered text: `@` then decimal digits, or `<@digits>`.
pub(crate) fn parse_user_mention(covered: &str) -> Option<UserId> {
    let digits = match covered.strip_prefix("<@") {
        Some(rest) => rest.strip_suffix('>')?,
        None => covered.strip_prefix('@')?,
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|&id| id != 0).map(UserId)
}

/// The username of a `username` entity's covered text: `@` then a non-empty name.
pub(crate) fn parse_username(covered: &str) -> Option<&str> {
    covered.strip_prefix('@').filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use osmium_proto::types::UserMentionEntity;

    fn entity(start_index: u32, length: u32, entity: Entity) -> MessageEntity {
        MessageEntity { start_index, length, entity: Some(entity) }
    }

    #[test]
    fn a_user_mention_covers_at_and_the_decimal_id_or_the_same_in_angle_brackets() {
        assert_eq!(parse_user_mention("@1234"), Some(UserId(1234)));
        assert_eq!(parse_user_mention("<@1234>"), Some(UserId(1234)));
        for not_an_id in ["1234", "@", "<@>", "@ 12", "@+12", "@12a", "<@12", "@0", "@99999999999999999999", "@Ann"] {
            assert_eq!(parse_user_mention(not_an_id), None, "{not_an_id}");
        }
    }

    #[test]
    fn a_username_mention_covers_at_and_a_name() {
        assert_eq!(parse_username("@ann"), Some("ann"));
        assert_eq!(parse_username("@"), None);
        assert_eq!(parse_username("ann"), None);
    }

    #[test]
    fn entity_ranges_count_utf16_units() {
        // "é" is one UTF-16 unit, "😀" two: "@7" starts at unit 4.
        let text = "é😀 @7 @bob";
        let entities = [
            entity(4, 2, Entity::UserMention(UserMentionEntity {})),
            entity(7, 4, Entity::Username(true)),
            entity(0, 1, Entity::Bold(true)),
        ];
        assert_eq!(mentions_in(text, &entities), [Mention::Id(UserId(7)), Mention::Username("bob".into())]);
    }

    #[test]
    fn ranges_past_the_text_or_splitting_a_surrogate_pair_mention_nobody() {
        let text = "😀@7";
        let past = entity(2, 5, Entity::UserMention(UserMentionEntity {}));
        let split = entity(1, 3, Entity::UserMention(UserMentionEntity {}));
        assert_eq!(mentions_in(text, &[past, split]), []);
    }
}
