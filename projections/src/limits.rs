//! Named limits of the projections (TigerBeetle style: everything has a bound).

/// Chats with at most this many members keep one chat-list entry per member, moved on
/// every new last message (a send writes `2 * members` small keys). Larger chats are
/// listed through `userid_chatid_largechat` and sorted at query time, so that a send to
/// a 10,000-member group writes a constant number of keys.
pub const CHAT_LIST_FANOUT_MAX: u32 = 256;

/// Chats with at most this many members tell what they tell all their members through
/// each member's own catch-up sequence (a key per member per event in
/// `userid_position_update`). Once a chat has more, it tells them through its own
/// sequence (`chatid_position_update`, one key per event) for good, and each member's
/// catch-up reads it (listed in `userid_chatid_chatsequence`). At 32, a send to a
/// 100-member group writes 1 catch-up key instead of 100 (BENCHMARKS.md, #11), and a
/// user's catch-up reads one sequence per group of more than 32 members they are in.
pub const USER_SEQUENCE_MEMBERS_MAX: u32 = 32;

/// Largest projection record a decoder accepts, in bytes. Every record the engine writes
/// is far smaller (client-provided bytes are bounded by the engine's `request_bytes_max`,
/// which must stay at most half of this); a length prefix claiming more is corruption and
/// is reported as a decode error instead of being allocated.
pub const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Permission bit: may send messages (protocol bitfield).
pub const PERMISSION_SEND_MESSAGES: u64 = 4;
/// Permission bit: may attach media (protocol bitfield).
pub const PERMISSION_SEND_MEDIA: u64 = 32;
/// What a group member may do before overrides.
pub const MEMBER_DEFAULT_PERMISSIONS: u64 = PERMISSION_SEND_MESSAGES | PERMISSION_SEND_MEDIA;

/// The current projection schema version. Bump it whenever a key layout or record
/// encoding changes; an engine refuses to serve projections of another version.
pub const PROJECTION_SCHEMA_VERSION: u32 = 3;
