//! Every column family of a data directory, declared in one place, and the key
//! layouts of the log's own families. FORMAT.md describes the same; the tests pin
//! the bytes.

use osmium_projections::Table;
use osmium_proto::ids::{Position, StreamId, StreamVersion};

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// `position (u64 BE)` -> protobuf `EventEnvelope`.
pub const CF_POSITION_EVENT: &str = "position_event";
/// `stream tag (1) | stream id (u64 BE) | stream version (u64 BE)` -> `position (u64 BE)`.
pub const CF_STREAMID_VERSION_POSITION: &str = "streamid_version_position";
/// `idempotency key bytes` -> `first position (u64 BE) | event count (u32 BE) |
/// recorded at (unix ms, u64 BE) | request fingerprint (16 bytes)`; entries written before
/// fingerprints existed are the first 12 bytes only.
pub const CF_IDEMKEY_POSITION: &str = "idemkey_position";
/// Fixed keys: format version, last position, active projection slot.
pub const CF_META: &str = "meta";

/// The log's column families.
pub const LOG_COLUMN_FAMILIES: [&str; 4] =
    [CF_POSITION_EVENT, CF_STREAMID_VERSION_POSITION, CF_IDEMKEY_POSITION, CF_META];

/// Meta key: [`FORMAT_VERSION`] of the directory (u32 BE).
pub const META_FORMAT_VERSION: &[u8] = b"format_version";
/// Meta key: the last durable position (u64 BE), written in every commit batch.
pub const META_LAST_POSITION: &[u8] = b"last_position";
/// Meta key: the largest snowflake id issued so far (u64 BE), written in every commit
/// batch, so that ids never repeat across restarts even if the clock went back.
pub const META_SNOWFLAKE_FLOOR: &[u8] = b"snowflake_floor";
/// Meta key: the catch-up floor (u64 BE, absent = 0): catch-up index entries of positions
/// below it are trimmed, and a catch-up from a token before it is answered "too far
/// behind" (written by `ChatEngine::trim_catch_up`; never lowered).
pub const META_CATCH_UP_FLOOR: &[u8] = b"catch_up_floor";
/// Meta key: the projection slot being served (`a` or `b`).
pub const META_PROJECTION_SLOT: &[u8] = b"projection_slot";

/// One of the two sets of projection column families. The engine serves one; the replay
/// CLI rebuilds into the other and then flips [`META_PROJECTION_SLOT`] in one write.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ProjectionSlot {
    /// Column families suffixed `#a`.
    A,
    /// Column families suffixed `#b`.
    B,
}

impl ProjectionSlot {
    /// Both slots.
    pub const ALL: [ProjectionSlot; 2] = [ProjectionSlot::A, ProjectionSlot::B];

    /// The byte stored under [`META_PROJECTION_SLOT`].
    pub const fn tag(self) -> u8 {
        match self {
            ProjectionSlot::A => b'a',
            ProjectionSlot::B => b'b',
        }
    }

    /// Inverse of [`Self::tag`].
    pub fn from_tag(tag: &[u8]) -> Option<ProjectionSlot> {
        match tag {
            b"a" => Some(ProjectionSlot::A),
            b"b" => Some(ProjectionSlot::B),
            _ => None,
        }
    }

    /// The other slot.
    pub const fn other(self) -> ProjectionSlot {
        match self {
            ProjectionSlot::A => ProjectionSlot::B,
            ProjectionSlot::B => ProjectionSlot::A,
        }
    }

    /// Column family name of `table` in this slot, e.g. `chatid_chat#a`.
    pub fn column_family(self, table: Table) -> &'static str {
        PROJECTION_COLUMN_FAMILIES[self as usize][table.index()]
    }
}

macro_rules! slot_names {
    ($suffix:literal) => {
        [
            concat!("chatid_chat", $suffix),
            concat!("chatid_userid_member", $suffix),
            concat!("userid_lastmsgid_chatid_chatlist", $suffix),
            concat!("userid_chatid_largechat", $suffix),
            concat!("userid_chatid_chatsequence", $suffix),
            concat!("chatid_msgid_message", $suffix),
            concat!("chatid_seq_deleted", $suffix),
            concat!("userid_userid_dm", $suffix),
            concat!("code_invite", $suffix),
            concat!("chatid_code_invite", $suffix),
            concat!("userid_user", $suffix),
            concat!("chatid_userid_seq_mention", $suffix),
            concat!("username_userid", $suffix),
            concat!("chatid_userid_override", $suffix),
            concat!("userid_position_update", $suffix),
            concat!("chatid_position_update", $suffix),
            concat!("position_effect", $suffix),
            concat!("projection_meta", $suffix),
        ]
    };
}

/// Projection column family names per slot, indexed by [`Table::index`].
const PROJECTION_COLUMN_FAMILIES: [[&str; Table::ALL.len()]; 2] = [slot_names!("#a"), slot_names!("#b")];

/// Every column family a data directory has, log first.
pub fn all_column_families() -> Vec<&'static str> {
    let mut names = LOG_COLUMN_FAMILIES.to_vec();
    for slot in ProjectionSlot::ALL {
        names.extend(Table::ALL.iter().map(|&table| slot.column_family(table)));
    }
    names
}

/// `position_event` key.
pub fn event_key(position: Position) -> [u8; 8] {
    position.to_be_bytes()
}

/// `streamid_version_position` key.
pub fn stream_index_key(stream: StreamId, version: StreamVersion) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..9].copy_from_slice(&stream.key_prefix());
    key[9..].copy_from_slice(&version.to_be_bytes());
    key
}

/// An idempotency entry: where the original append's events are, when it was recorded,
/// and the fingerprint of the request that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyEntry {
    /// Position of the original append's first event.
    pub first: Position,
    /// Its events.
    pub count: u32,
    /// When it was recorded (unix ms); `None` for entries of format 1 engines.
    pub recorded_at_ms: Option<u64>,
    /// The request's fingerprint; `None` for entries of format 1 engines (any retry matches).
    pub fingerprint: Option<[u8; 16]>,
}

/// `idemkey_position` value (36 bytes).
pub fn idempotency_value(entry: &IdempotencyEntry) -> Vec<u8> {
    let mut value = Vec::with_capacity(36);
    value.extend_from_slice(&entry.first.to_be_bytes());
    value.extend_from_slice(&entry.count.to_be_bytes());
    if let (Some(recorded_at_ms), Some(fingerprint)) = (entry.recorded_at_ms, entry.fingerprint) {
        value.extend_from_slice(&recorded_at_ms.to_be_bytes());
        value.extend_from_slice(&fingerprint);
    }
    value
}

/// Inverse of [`idempotency_value`] (also reads the 12-byte entries of format 1 engines).
pub fn parse_idempotency_value(value: &[u8]) -> Option<IdempotencyEntry> {
    let first = Position(u64::from_be_bytes(value.get(..8)?.try_into().ok()?));
    let count = u32::from_be_bytes(value.get(8..12)?.try_into().ok()?);
    match value.len() {
        12 => Some(IdempotencyEntry { first, count, recorded_at_ms: None, fingerprint: None }),
        36 => Some(IdempotencyEntry {
            first,
            count,
            recorded_at_ms: Some(u64::from_be_bytes(value.get(12..20)?.try_into().ok()?)),
            fingerprint: Some(value.get(20..36)?.try_into().ok()?),
        }),
        _ => None,
    }
}

/// Reads a big-endian u64 value, or says what it found instead.
pub fn parse_u64(value: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(value).ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use osmium_proto::ids::ChatId;

    #[test]
    fn every_table_has_a_column_family_named_after_it_in_each_slot() {
        for table in Table::ALL {
            assert_eq!(ProjectionSlot::A.column_family(table), format!("{}#a", table.name()));
            assert_eq!(ProjectionSlot::B.column_family(table), format!("{}#b", table.name()));
        }
        let names = all_column_families();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn event_key_is_the_position_big_endian() {
        assert_eq!(event_key(Position(258)), [0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn stream_index_key_is_tag_id_then_version() {
        let key = stream_index_key(StreamId::Chat(ChatId(1)), StreamVersion(2));
        assert_eq!(key, [b'c', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn idempotency_value_is_first_position_count_recorded_at_then_fingerprint() {
        let entry = IdempotencyEntry { first: Position(7), count: 3, recorded_at_ms: Some(258), fingerprint: Some([9; 16]) };
        let value = idempotency_value(&entry);
        let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2];
        expected.extend([9; 16]);
        assert_eq!(value, expected);
        assert_eq!(parse_idempotency_value(&value), Some(entry));
        assert_eq!(parse_idempotency_value(&value[..11]), None);
    }

    #[test]
    fn a_format_one_idempotency_value_has_no_fingerprint() {
        let parsed = parse_idempotency_value(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3]).unwrap();
        assert_eq!(parsed, IdempotencyEntry { first: Position(7), count: 3, recorded_at_ms: None, fingerprint: None });
    }
}
