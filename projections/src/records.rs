//! Values of the projection tables: serde structs encoded with bincode (standard
//! config: little-endian, variable-length integers). Changing any of them means
//! bumping [`crate::limits::PROJECTION_SCHEMA_VERSION`].

use crate::error::{ProjectionError, hex};
use crate::keys;
use crate::limits::RECORD_BYTES_MAX;
use crate::store::{Store, StoreRead, Table};
use osmium_proto::ids::{ChatId, MessageId, Position, UserId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Encodes a record.
#[allow(clippy::expect_used)]
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    thread_local! {
        /// Where records are encoded before being copied out at their exact size (encoding
        /// into a new `Vec` grew it a few times per record: reallocations were a few
        /// percent of the state machine thread). Grows to the largest record encoded.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        // Invariant: bincode's serde encoder into a Vec fails only for shapes it cannot
        // describe (sequences of unknown length); our records are plain structs, enums,
        // integers, strings, options and vectors, so it cannot fail. Were it to, writing
        // nothing (or empty bytes) would corrupt the projections silently: panic instead.
        // (Serializing a record never encodes another, so the scratch is never borrowed twice.)
        bincode::serde::encode_into_std_write(record, scratch, bincode::config::standard()).expect("projection records always encode");
        scratch.to_vec()
    })
}

/// Decodes a record read from `table` under `key`.
pub fn decode<T: DeserializeOwned>(table: Table, key: &[u8], bytes: &[u8]) -> Result<T, ProjectionError> {
    // The limit changes no byte of the encoding; it only refuses length prefixes that claim
    // more than a record can hold, which bincode would otherwise try to allocate.
    let config = bincode::config::standard().with_limit::<RECORD_BYTES_MAX>();
    let decoded = bincode::serde::decode_from_slice(bytes, config);
    match decoded {
        Ok((record, read)) if read == bytes.len() => Ok(record),
        Ok((_, read)) => Err(ProjectionError::Decode {
            table,
            key_hex: hex(key),
            reason: format!("{} trailing bytes", bytes.len() - read),
        }),
        Err(err) => Err(ProjectionError::Decode { table, key_hex: hex(key), reason: err.to_string() }),
    }
}

/// Reads and decodes one record.
pub fn load<T: DeserializeOwned>(
    store: &(impl StoreRead + ?Sized),
    table: Table,
    key: &[u8],
) -> Result<Option<T>, ProjectionError> {
    store.get(table, key)?.map(|bytes| decode(table, key, &bytes)).transpose()
}

/// Encodes and writes one record.
pub fn save<T: Serialize>(store: &mut (impl Store + ?Sized), table: Table, key: Vec<u8>, record: &T) {
    store.put(table, key, encode(record));
}

/// What kind of chat a [`ChatRecord`] is.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ChatKind {
    /// An owner-based group.
    Group(GroupInfo),
    /// A DM between two users; `user_a == user_b` for a user's own (self) chat.
    Direct {
        /// One side.
        user_a: UserId,
        /// The other side.
        user_b: UserId,
    },
}

/// Group-only chat state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Display name (1..=100 chars).
    pub name: String,
    /// The owner: the only member who edits the group and manages members and invites.
    pub owner: UserId,
    /// Group photo: file id and preview bytes.
    pub photo: Option<(u64, Vec<u8>)>,
    /// The highlighted (pinned) message, if any.
    pub highlighted: Option<MessageId>,
    /// Set when the last member left: the group serves nobody any more.
    pub closed: bool,
}

/// `chatid_chat`: one chat's shared state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChatRecord {
    /// Group or direct chat.
    pub kind: ChatKind,
    /// Messages ever sent here; the newest message's sequence number (deleted ones included).
    pub last_seq: u64,
    /// The newest non-deleted message, or the chat's own id when there is none.
    pub last_message_id: MessageId,
    /// Current members.
    pub member_count: u32,
    /// Members ever joined: the next member's join order (longest-standing = lowest).
    pub joins: u64,
    /// Whether the chat list is kept through `userid_chatid_largechat` (see
    /// [`crate::limits::CHAT_LIST_FANOUT_MAX`]). Once set it stays set.
    pub large: bool,
    /// Whether what the chat tells all its members goes to its own catch-up sequence
    /// (`chatid_position_update`) rather than to each member's (see
    /// [`crate::limits::USER_SEQUENCE_MEMBERS_MAX`]). Once set it stays set.
    pub chat_sequence: bool,
    /// The last position of the chat's catch-up sequence (`chatid_position_update`), zero
    /// before any (see [`crate::catch_up`]).
    pub last_update_position: Position,
}

impl ChatRecord {
    /// The group part, for group chats.
    pub fn group(&self) -> Option<&GroupInfo> {
        match &self.kind {
            ChatKind::Group(group) => Some(group),
            ChatKind::Direct { .. } => None,
        }
    }

    /// Whether the chat has at least one non-deleted message.
    pub fn has_messages(&self, chat: ChatId) -> bool {
        self.last_message_id.get() != chat.get()
    }
}

/// Who a member's conversation notifies of new messages (the protocol's `NotifPrefs`).
/// Unread counting is the same whatever it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub enum NotifPrefs {
    /// Every message from someone else.
    #[default]
    All,
    /// Only messages that mention the member.
    Mentions,
    /// Never (the seeds' "muted").
    None,
    /// The client's default: treated as [`NotifPrefs::All`].
    Default,
}

impl NotifPrefs {
    /// The protocol enum's value (`types::NotifPrefs`).
    pub fn to_proto(self) -> i32 {
        use osmium_proto::types::NotifPrefs as Wire;
        match self {
            NotifPrefs::All => Wire::All as i32,
            NotifPrefs::Mentions => Wire::Mentions as i32,
            NotifPrefs::None => Wire::None as i32,
            NotifPrefs::Default => Wire::Default as i32,
        }
    }

    /// From the protocol enum's value; `None` for a value the protocol does not define.
    pub fn from_proto(value: i32) -> Option<NotifPrefs> {
        use osmium_proto::types::NotifPrefs as Wire;
        Some(match Wire::try_from(value).ok()? {
            Wire::All => NotifPrefs::All,
            Wire::Mentions => NotifPrefs::Mentions,
            Wire::None => NotifPrefs::None,
            Wire::Default => NotifPrefs::Default,
        })
    }

    /// Whether a new message from someone else notifies: never for `None`, only when the
    /// member is `mentioned` for `Mentions`, always for `All` and `Default`.
    pub fn notifies(self, mentioned: bool) -> bool {
        match self {
            NotifPrefs::All | NotifPrefs::Default => true,
            NotifPrefs::Mentions => mentioned,
            NotifPrefs::None => false,
        }
    }
}

/// `chatid_userid_member`: one member's own view of a chat.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Order of joining the chat (lower = longer-standing).
    pub join_order: u64,
    /// Sequence number of the newest message this member has read.
    pub read_seq: u64,
    /// The message id the read position was set to (0 before any).
    pub read_message_id: MessageId,
    /// Unsent draft.
    pub draft: Option<String>,
    /// Who notifies this member (unread counting is unaffected).
    pub notif_prefs: NotifPrefs,
    /// Permission overrides `(pos, neg)` set by the owner.
    pub overrides: Option<(u64, u64)>,
    /// In a chat with its own catch-up sequence ([`ChatRecord::chat_sequence`]): the first
    /// position of that sequence this member is told (their join, or the join that gave the
    /// chat its own sequence); zero otherwise.
    pub chat_sequence_from: Position,
}

/// `chatid_msgid_message`: a message, or the tombstone of a deleted one.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Position in the chat's send order, from 1.
    pub seq: u64,
    /// Who sent it.
    pub author: UserId,
    /// When it was recorded (unix ms).
    pub sent_at_ms: u64,
    /// Set once deleted; a tombstone keeps only `seq`, `author`, `sent_at_ms` and `client_id`.
    pub deleted: bool,
    /// Text (empty in a tombstone).
    pub text: String,
    /// Protobuf-encoded `MessageEntity` values.
    pub entities: Vec<Vec<u8>>,
    /// Protobuf-encoded `MessageMedia` values.
    pub media: Vec<Vec<u8>>,
    /// Last edit time (unix ms).
    pub edited_at_ms: Option<u64>,
    /// Protocol `MessageType` value.
    pub message_type: i32,
    /// The sender's idempotency key.
    pub client_id: Option<u64>,
    /// Protobuf-encoded `Message.MessageReplyInfo`: the message replied to and the quote.
    pub reply: Option<Vec<u8>>,
    /// The members it mentions, in user id order (each has a `chatid_userid_seq_mention` key).
    pub mentions: Vec<UserId>,
}

/// `code_invite`: an invite code's state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InviteRecord {
    /// The group it admits to.
    pub chat: ChatId,
    /// Who created it.
    pub creator: UserId,
    /// When it was created (unix ms).
    pub created_at_ms: u64,
    /// Expiry (unix ms), if any.
    pub expires_at_ms: Option<u64>,
    /// Use limit, if any.
    pub max_uses: Option<u32>,
    /// Successful uses so far (never above `max_uses`).
    pub uses: u32,
    /// When the last allowed use was recorded (unix ms), once used up.
    pub used_up_at_ms: Option<u64>,
}

impl InviteRecord {
    /// Whether the invite is past its expiry at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|expires| now_ms >= expires)
    }

    /// Whether every allowed use is taken.
    pub fn is_used_up(&self) -> bool {
        self.max_uses.is_some_and(|max| self.uses >= max)
    }

    /// Whether it can still be used at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        !self.is_expired(now_ms) && !self.is_used_up()
    }

    /// Whether it has been unusable (expired, or used up) for at least `grace_ms` at
    /// `now_ms`: then the engine purges it.
    pub fn is_purgeable(&self, now_ms: u64, grace_ms: u64) -> bool {
        let expired_at = self.expires_at_ms.filter(|&expires| now_ms >= expires);
        let unusable_since = expired_at.into_iter().chain(self.used_up_at_ms).min();
        unusable_since.is_some_and(|since| now_ms >= since.saturating_add(grace_ms))
    }
}

/// `userid_user`: a user directory entry (the protocol `User`, minus transport details).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    /// Display name.
    pub name: String,
    /// Unique handle, if any.
    pub username: Option<String>,
    /// Photo: file id and preview bytes.
    pub photo: Option<(u64, Vec<u8>)>,
    /// Whether the account is a bot.
    pub bot: bool,
    /// Icon file id.
    pub icon: Option<u64>,
    /// Accent colour.
    pub color: Option<u32>,
}

/// Typed reads of single records.
pub fn load_chat(store: &(impl StoreRead + ?Sized), chat: ChatId) -> Result<Option<ChatRecord>, ProjectionError> {
    load(store, Table::ChatidChat, &keys::chat(chat))
}

/// The member record of `user` in `chat`, if a member.
pub fn load_member(
    store: &(impl StoreRead + ?Sized),
    chat: ChatId,
    user: UserId,
) -> Result<Option<MemberRecord>, ProjectionError> {
    load(store, Table::ChatidUseridMember, &keys::member(chat, user))
}

/// A message or tombstone.
pub fn load_message(
    store: &(impl StoreRead + ?Sized),
    chat: ChatId,
    message: MessageId,
) -> Result<Option<MessageRecord>, ProjectionError> {
    load(store, Table::ChatidMsgidMessage, &keys::message(chat, message))
}

/// An invite by code.
pub fn load_invite(store: &(impl StoreRead + ?Sized), code: &str) -> Result<Option<InviteRecord>, ProjectionError> {
    load(store, Table::CodeInvite, &keys::invite(code))
}

/// A user directory entry.
pub fn load_user(store: &(impl StoreRead + ?Sized), user: UserId) -> Result<Option<UserRecord>, ProjectionError> {
    load(store, Table::UseridUser, &keys::user(user))
}

/// The user holding `username` in the username index (ASCII case-insensitive), if any.
pub fn load_username(store: &(impl StoreRead + ?Sized), username: &str) -> Result<Option<UserId>, ProjectionError> {
    let key = keys::username(username);
    load_id(store, Table::UsernameUserid, &key).map(|id| id.map(UserId))
}

/// `chatid_userid_override` value: `pos (8) | neg (8)`, big-endian.
pub fn encode_overrides((pos, neg): (u64, u64)) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&pos.to_be_bytes());
    bytes.extend_from_slice(&neg.to_be_bytes());
    bytes
}

/// The permission overrides kept for a user who is not a member of `chat`, if any.
pub fn load_parked_overrides(
    store: &(impl StoreRead + ?Sized),
    chat: ChatId,
    user: UserId,
) -> Result<Option<(u64, u64)>, ProjectionError> {
    let key = keys::parked_overrides(chat, user);
    let Some(bytes) = store.get(Table::ChatidUseridOverride, &key)? else { return Ok(None) };
    match <[u8; 16]>::try_from(bytes.as_slice()) {
        Ok(raw) => {
            let (mut pos, mut neg) = ([0u8; 8], [0u8; 8]);
            pos.copy_from_slice(&raw[..8]);
            neg.copy_from_slice(&raw[8..]);
            Ok(Some((u64::from_be_bytes(pos), u64::from_be_bytes(neg))))
        }
        Err(_) => Err(ProjectionError::Decode {
            table: Table::ChatidUseridOverride,
            key_hex: hex(&key),
            reason: format!("expected 16 bytes (pos, neg), found {}", bytes.len()),
        }),
    }
}

fn load_id(store: &(impl StoreRead + ?Sized), table: Table, key: &[u8]) -> Result<Option<u64>, ProjectionError> {
    store.get(table, key)?.map(|bytes| decode_u64(table, key, &bytes, "id")).transpose()
}

/// A big-endian u64 value (`what` names it in the error of a value of another length).
fn decode_u64(table: Table, key: &[u8], value: &[u8], what: &str) -> Result<u64, ProjectionError> {
    <[u8; 8]>::try_from(value).map(u64::from_be_bytes).map_err(|_| ProjectionError::Decode {
        table,
        key_hex: hex(key),
        reason: format!("expected an 8-byte {what}, found {} bytes", value.len()),
    })
}

/// A member's mentions in a chat after sequence number `after`: `(seq, message)` in send
/// order, at most `limit`.
pub fn load_mentions_after(
    store: &(impl StoreRead + ?Sized),
    chat: ChatId,
    user: UserId,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, MessageId)>, ProjectionError> {
    let prefix = keys::mentions_of(chat, user);
    let Some(first) = after.checked_add(1) else { return Ok(Vec::new()) };
    let start = keys::mention(chat, user, first);
    let mut found = Vec::new();
    let mut failure = None;
    if limit == 0 {
        return Ok(found);
    }
    store.scan(Table::ChatidUseridSeqMention, crate::store::ScanRange::prefix(&prefix).starting_at(&start), &mut |key, value| {
        match keys::mention_seq(key).and_then(|seq| Ok((seq, MessageId(mention_message(key, value)?)))) {
            Ok(entry) => found.push(entry),
            Err(err) => {
                failure = Some(err);
                return std::ops::ControlFlow::Break(());
            }
        }
        if found.len() >= limit { std::ops::ControlFlow::Break(()) } else { std::ops::ControlFlow::Continue(()) }
    })?;
    failure.map_or(Ok(found), Err)
}

/// The message id stored under a `chatid_userid_seq_mention` key.
pub fn mention_message(key: &[u8], value: &[u8]) -> Result<u64, ProjectionError> {
    decode_u64(Table::ChatidUseridSeqMention, key, value, "message id")
}

/// The chats of `user` that have their own catch-up sequence, in chat id order, each with
/// the first position of it the user is told (`userid_chatid_chatsequence`).
pub fn load_chat_sequences(
    store: &(impl StoreRead + ?Sized),
    user: UserId,
) -> Result<Vec<(ChatId, Position)>, ProjectionError> {
    crate::store::collect_prefix(store, Table::UseridChatidChatsequence, &keys::user_prefix(user), |key, value| {
        let from = decode_u64(Table::UseridChatidChatsequence, key, value, "position")?;
        Ok((keys::chat_sequence_chat(key)?, Position(from)))
    })
}

/// The DM (or self chat) between two users, if it exists.
pub fn load_direct_chat(
    store: &(impl StoreRead + ?Sized),
    a: UserId,
    b: UserId,
) -> Result<Option<ChatId>, ProjectionError> {
    let key = keys::direct_chat(a, b);
    load_id(store, Table::UseridUseridDm, &key).map(|id| id.map(ChatId))
}

/// Every member of `chat` with their record, in user id order.
pub fn load_members(
    store: &(impl StoreRead + ?Sized),
    chat: ChatId,
) -> Result<Vec<(UserId, MemberRecord)>, ProjectionError> {
    crate::store::collect_prefix(store, Table::ChatidUseridMember, &keys::members_of(chat), |key, value| {
        Ok((keys::member_user(key)?, decode::<MemberRecord>(Table::ChatidUseridMember, key, value)?))
    })
}

/// The projection slot's checkpoint: the last folded log position.
pub fn load_checkpoint(store: &(impl StoreRead + ?Sized)) -> Result<Position, ProjectionError> {
    load_u64(store, keys::META_CHECKPOINT).map(|position| Position(position.unwrap_or(0)))
}

/// The schema version the projection slot was written with, if it was ever written.
pub fn load_schema_version(store: &(impl StoreRead + ?Sized)) -> Result<Option<u32>, ProjectionError> {
    let Some(bytes) = store.get(Table::ProjectionMeta, keys::META_SCHEMA_VERSION)? else { return Ok(None) };
    <[u8; 4]>::try_from(bytes.as_slice()).map(|raw| Some(u32::from_be_bytes(raw))).map_err(|_| {
        ProjectionError::Decode {
            table: Table::ProjectionMeta,
            key_hex: hex(keys::META_SCHEMA_VERSION),
            reason: format!("expected 4 bytes, found {}", bytes.len()),
        }
    })
}

fn load_u64(store: &(impl StoreRead + ?Sized), key: &[u8]) -> Result<Option<u64>, ProjectionError> {
    let Some(bytes) = store.get(Table::ProjectionMeta, key)? else { return Ok(None) };
    <[u8; 8]>::try_from(bytes.as_slice()).map(|raw| Some(u64::from_be_bytes(raw))).map_err(|_| {
        ProjectionError::Decode {
            table: Table::ProjectionMeta,
            key_hex: hex(key),
            reason: format!("expected 8 bytes, found {}", bytes.len()),
        }
    })
}

/// Records the checkpoint and the schema version.
pub fn save_checkpoint(store: &mut (impl Store + ?Sized), position: Position) {
    store.put(Table::ProjectionMeta, keys::META_CHECKPOINT.to_vec(), position.to_be_bytes().to_vec());
    store.put(
        Table::ProjectionMeta,
        keys::META_SCHEMA_VERSION.to_vec(),
        crate::limits::PROJECTION_SCHEMA_VERSION.to_be_bytes().to_vec(),
    );
}
