//! Key layouts of the projection tables. All integers are big-endian so that byte
//! order is numeric order; FORMAT.md documents the same layouts and the tests below
//! pin them byte for byte.

use crate::error::ProjectionError;
use crate::tables::Table;
use osmium_proto::ids::{ChatId, MessageId, Position, UserId};

/// Projection meta key: the last applied log position (u64 BE).
pub const META_CHECKPOINT: &[u8] = b"checkpoint";
/// Projection meta key: the schema version the slot was written with (u32 BE).
pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// Projection meta key, only in a slot being rebuilt: present (empty) while a batch's
/// tables are being ingested (`engine/src/ingest.rs`).
pub const META_REBUILD_INGESTING: &[u8] = b"rebuild_ingesting";

fn concat<const N: usize>(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(N);
    for part in parts {
        key.extend_from_slice(part);
    }
    debug_assert_eq!(key.len(), N, "key layout length");
    key
}

fn u64_at(table: Table, key: &[u8], offset: usize) -> Result<u64, ProjectionError> {
    key.get(offset..offset + 8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| ProjectionError::MalformedKey {
            table,
            expected: format!("at least {} bytes", offset + 8),
            found: format!("{} bytes", key.len()),
        })
}

/// `chatid_chat`: `chat_id` (8).
pub fn chat(chat: ChatId) -> Vec<u8> {
    chat.to_be_bytes().to_vec()
}

/// `chatid_userid_member`: `chat_id (8) | user_id (8)`.
pub fn member(chat: ChatId, user: UserId) -> Vec<u8> {
    concat::<16>(&[&chat.to_be_bytes(), &user.to_be_bytes()])
}

/// `chatid_userid_member` prefix of one chat's members.
pub fn members_of(chat: ChatId) -> Vec<u8> {
    chat.to_be_bytes().to_vec()
}

/// The user of a `chatid_userid_member` key.
pub fn member_user(key: &[u8]) -> Result<UserId, ProjectionError> {
    u64_at(Table::ChatidUseridMember, key, 8).map(UserId)
}

/// `chatid_userid_override`: `chat_id (8) | user_id (8)`, as a member key.
pub fn parked_overrides(chat: ChatId, user: UserId) -> Vec<u8> {
    member(chat, user)
}

/// `userid_lastmsgid_chatid_chatlist`: `user_id (8) | last_message_id (8) | chat_id (8)`.
pub fn chat_list_entry(user: UserId, last_message: MessageId, chat: ChatId) -> Vec<u8> {
    concat::<24>(&[&user.to_be_bytes(), &last_message.to_be_bytes(), &chat.to_be_bytes()])
}

/// Decodes a `userid_lastmsgid_chatid_chatlist` key into `(last_message_id, chat_id)`.
pub fn parse_chat_list_entry(key: &[u8]) -> Result<(MessageId, ChatId), ProjectionError> {
    let table = Table::UseridLastmsgidChatidChatlist;
    Ok((MessageId(u64_at(table, key, 8)?), ChatId(u64_at(table, key, 16)?)))
}

/// `userid_chatid_largechat`: `user_id (8) | chat_id (8)`.
pub fn large_chat(user: UserId, chat: ChatId) -> Vec<u8> {
    concat::<16>(&[&user.to_be_bytes(), &chat.to_be_bytes()])
}

/// The chat of a `userid_chatid_largechat` key.
pub fn large_chat_chat(key: &[u8]) -> Result<ChatId, ProjectionError> {
    u64_at(Table::UseridChatidLargechat, key, 8).map(ChatId)
}

/// `userid_chatid_chatsequence`: `user_id (8) | chat_id (8)`.
pub fn chat_sequence(user: UserId, chat: ChatId) -> Vec<u8> {
    concat::<16>(&[&user.to_be_bytes(), &chat.to_be_bytes()])
}

/// The chat of a `userid_chatid_chatsequence` key.
pub fn chat_sequence_chat(key: &[u8]) -> Result<ChatId, ProjectionError> {
    u64_at(Table::UseridChatidChatsequence, key, 8).map(ChatId)
}

/// `userid_position_update`: `user_id (8) | position (8)`.
pub fn user_update(user: UserId, position: Position) -> Vec<u8> {
    concat::<16>(&[&user.to_be_bytes(), &position.to_be_bytes()])
}

/// The position of a `userid_position_update` key.
pub fn user_update_position(key: &[u8]) -> Result<Position, ProjectionError> {
    u64_at(Table::UseridPositionUpdate, key, 8).map(Position)
}

/// `chatid_position_update`: `chat_id (8) | position (8)`.
pub fn chat_update(chat: ChatId, position: Position) -> Vec<u8> {
    concat::<16>(&[&chat.to_be_bytes(), &position.to_be_bytes()])
}

/// The position of a `chatid_position_update` key.
pub fn chat_update_position(key: &[u8]) -> Result<Position, ProjectionError> {
    u64_at(Table::ChatidPositionUpdate, key, 8).map(Position)
}

/// `position_effect`: `position (8)`.
pub fn position_effect(position: Position) -> Vec<u8> {
    position.to_be_bytes().to_vec()
}

/// `chatid_msgid_message`: `chat_id (8) | message_id (8)`.
pub fn message(chat: ChatId, message: MessageId) -> Vec<u8> {
    concat::<16>(&[&chat.to_be_bytes(), &message.to_be_bytes()])
}

/// The message id of a `chatid_msgid_message` key.
pub fn message_id(key: &[u8]) -> Result<MessageId, ProjectionError> {
    u64_at(Table::ChatidMsgidMessage, key, 8).map(MessageId)
}

/// `chatid_seq_deleted`: `chat_id (8) | seq (8)`.
pub fn deleted_seq(chat: ChatId, seq: u64) -> Vec<u8> {
    concat::<16>(&[&chat.to_be_bytes(), &seq.to_be_bytes()])
}

/// The sequence number of a `chatid_seq_deleted` key.
pub fn deleted_seq_value(key: &[u8]) -> Result<u64, ProjectionError> {
    u64_at(Table::ChatidSeqDeleted, key, 8)
}

/// `userid_userid_dm`: `lower user_id (8) | higher user_id (8)`; both ids equal for a self chat.
pub fn direct_chat(a: UserId, b: UserId) -> Vec<u8> {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    concat::<16>(&[&low.to_be_bytes(), &high.to_be_bytes()])
}

/// `chatid_userid_seq_mention`: `chat_id (8) | user_id (8) | seq (8)`: `user` is
/// mentioned by the message with sequence number `seq` in `chat`.
pub fn mention(chat: ChatId, user: UserId, seq: u64) -> Vec<u8> {
    concat::<24>(&[&chat.to_be_bytes(), &user.to_be_bytes(), &seq.to_be_bytes()])
}

/// `chatid_userid_seq_mention` prefix of one member's mentions in one chat.
pub fn mentions_of(chat: ChatId, user: UserId) -> Vec<u8> {
    concat::<16>(&[&chat.to_be_bytes(), &user.to_be_bytes()])
}

/// The sequence number of a `chatid_userid_seq_mention` key.
pub fn mention_seq(key: &[u8]) -> Result<u64, ProjectionError> {
    u64_at(Table::ChatidUseridSeqMention, key, 16)
}

/// `username_userid`: the username with ASCII letters lowercased (usernames match
/// ASCII-case-insensitively; other characters as they are).
pub fn username(name: &str) -> Vec<u8> {
    name.to_ascii_lowercase().into_bytes()
}

/// `code_invite`: the invite code's UTF-8 bytes.
pub fn invite(code: &str) -> Vec<u8> {
    code.as_bytes().to_vec()
}

/// `chatid_code_invite`: `chat_id (8) | code bytes`.
pub fn chat_invite(chat: ChatId, code: &str) -> Vec<u8> {
    let mut key = chat.to_be_bytes().to_vec();
    key.extend_from_slice(code.as_bytes());
    key
}

/// The code of a `chatid_code_invite` key.
pub fn chat_invite_code(key: &[u8]) -> Result<String, ProjectionError> {
    key.get(8..)
        .and_then(|code| std::str::from_utf8(code).ok())
        .map(str::to_owned)
        .ok_or_else(|| ProjectionError::MalformedKey {
            table: Table::ChatidCodeInvite,
            expected: "chat id then a UTF-8 code".into(),
            found: crate::error::hex(key),
        })
}

/// `userid_user`: `user_id` (8).
pub fn user(user: UserId) -> Vec<u8> {
    user.to_be_bytes().to_vec()
}

/// A user's prefix in the per-user tables.
pub fn user_prefix(user: UserId) -> Vec<u8> {
    user.to_be_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_key_is_chat_then_user_big_endian() {
        assert_eq!(
            member(ChatId(0x0102), UserId(0x0a0b)),
            [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0x0a, 0x0b]
        );
        assert_eq!(member_user(&member(ChatId(1), UserId(77))).unwrap(), UserId(77));
    }

    #[test]
    fn chat_list_key_is_user_then_last_message_then_chat() {
        let key = chat_list_entry(UserId(1), MessageId(0xff00), ChatId(2));
        assert_eq!(
            key,
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(parse_chat_list_entry(&key).unwrap(), (MessageId(0xff00), ChatId(2)));
    }

    #[test]
    fn chat_list_keys_sort_by_last_message_within_a_user() {
        let older = chat_list_entry(UserId(5), MessageId(100), ChatId(9));
        let newer = chat_list_entry(UserId(5), MessageId(200), ChatId(1));
        let other_user = chat_list_entry(UserId(6), MessageId(1), ChatId(1));
        assert!(older < newer && newer < other_user);
    }

    #[test]
    fn direct_chat_key_puts_the_lower_user_first_from_either_side() {
        let expected = [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 7];
        assert_eq!(direct_chat(UserId(3), UserId(7)), expected);
        assert_eq!(direct_chat(UserId(7), UserId(3)), expected);
    }

    #[test]
    fn message_and_deleted_keys_are_chat_then_big_endian_id() {
        assert_eq!(message(ChatId(1), MessageId(2)), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(deleted_seq(ChatId(1), 258), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(message_id(&message(ChatId(1), MessageId(2))).unwrap(), MessageId(2));
    }

    #[test]
    fn invite_keys_are_the_code_bytes() {
        assert_eq!(invite("AbC_-"), b"AbC_-");
        assert_eq!(chat_invite(ChatId(1), "xy"), [0, 0, 0, 0, 0, 0, 0, 1, b'x', b'y']);
        assert_eq!(chat_invite_code(&chat_invite(ChatId(1), "xy")).unwrap(), "xy");
    }

    #[test]
    fn mention_key_is_chat_then_user_then_seq_big_endian() {
        let key = mention(ChatId(1), UserId(2), 0x0103);
        assert_eq!(key, [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 3]);
        assert!(key.starts_with(&mentions_of(ChatId(1), UserId(2))));
        assert_eq!(mention_seq(&key).unwrap(), 0x0103);
    }

    #[test]
    fn username_key_lowercases_ascii_letters_only() {
        assert_eq!(username("Ann_1"), b"ann_1");
        assert_eq!(username("Ä"), "Ä".as_bytes());
    }

    #[test]
    fn short_key_is_a_malformed_key_error_not_a_panic() {
        assert!(matches!(member_user(&[1, 2, 3]), Err(ProjectionError::MalformedKey { .. })));
    }
}
