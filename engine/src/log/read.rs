//! Reading the log: by position, by stream, one record.

use crate::directory::column_family;
use crate::error::EngineError;
use crate::schema::{self, CF_POSITION_EVENT, CF_STREAMID_VERSION_POSITION};
use osmium_proto::events::EventEnvelope;
use osmium_proto::ids::{Position, StreamId, StreamVersion};
use osmium_proto::prost::Message as _;
use rocksdb::DB;

/// Decodes a stored record, checking that it is the one its key says.
pub fn decode_event(position: Position, bytes: &[u8]) -> Result<EventEnvelope, EngineError> {
    let envelope =
        EventEnvelope::decode(bytes).map_err(|err| EngineError::Decode { position, reason: err.to_string() })?;
    if envelope.position != position.get() {
        return Err(EngineError::Corrupt {
            what: format!("envelope position of the record stored at {position}"),
            expected: position.to_string(),
            found: envelope.position.to_string(),
        });
    }
    Ok(envelope)
}

/// The event at `position`.
pub(crate) fn read_one(db: &DB, position: Position) -> Result<EventEnvelope, EngineError> {
    let bytes = db
        .get_cf(column_family(db, CF_POSITION_EVENT)?, schema::event_key(position))
        .map_err(EngineError::storage("reading an event"))?
        .ok_or_else(|| EngineError::Corrupt {
            what: "event log".into(),
            expected: format!("an event at position {position}"),
            found: "nothing".into(),
        })?;
    decode_event(position, &bytes)
}

/// Up to `limit` events from `from` to `durable` (inclusive), checking that positions are
/// gapless and that every record decodes.
pub(crate) fn read_events(db: &DB, from: Position, durable: Position, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
    let from = from.max(Position(1));
    let mut events = Vec::with_capacity(limit.min(4_096));
    let mut iter = db.raw_iterator_cf(column_family(db, CF_POSITION_EVENT)?);
    iter.seek(schema::event_key(from));
    let mut expected = from;
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if events.len() >= limit || expected > durable {
            break;
        }
        let position = schema::parse_u64(key).map(Position).ok_or_else(|| EngineError::Corrupt {
            what: "event key".into(),
            expected: "8 bytes".into(),
            found: format!("{} bytes", key.len()),
        })?;
        if position != expected {
            return Err(EngineError::Corrupt {
                what: "event log positions (gap)".into(),
                expected: expected.to_string(),
                found: position.to_string(),
            });
        }
        events.push(decode_event(position, value)?);
        expected = expected.next();
        iter.next();
    }
    iter.status().map_err(EngineError::storage("reading the log"))?;
    Ok(events)
}

/// Up to `limit` events of `stream` from version `from_version` (1 = the first event), at
/// most up to `durable`.
pub(crate) fn read_stream(
    db: &DB,
    stream: StreamId,
    from_version: StreamVersion,
    durable: Position,
    limit: usize,
) -> Result<Vec<EventEnvelope>, EngineError> {
    let index = column_family(db, CF_STREAMID_VERSION_POSITION)?;
    let prefix = stream.key_prefix();
    let mut positions = Vec::new();
    let mut iter = db.raw_iterator_cf(index);
    iter.seek(schema::stream_index_key(stream, from_version.max(StreamVersion(1))));
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if !key.starts_with(&prefix) || positions.len() >= limit {
            break;
        }
        let position = schema::parse_u64(value).map(Position).ok_or_else(|| EngineError::Corrupt {
            what: format!("stream index entry of {stream}"),
            expected: "an 8-byte position".into(),
            found: format!("{} bytes", value.len()),
        })?;
        if position > durable {
            break;
        }
        positions.push(position);
        iter.next();
    }
    iter.status().map_err(EngineError::storage("reading the stream index"))?;
    positions.into_iter().map(|position| read_one(db, position)).collect()
}

/// The newest version of `stream` in the index (0 when it has no event).
pub(crate) fn stream_version(db: &DB, stream: StreamId) -> Result<StreamVersion, EngineError> {
    let index = column_family(db, CF_STREAMID_VERSION_POSITION)?;
    let prefix = stream.key_prefix();
    let mut iter = db.raw_iterator_cf(index);
    iter.seek_for_prev(schema::stream_index_key(stream, StreamVersion(u64::MAX)));
    iter.status().map_err(EngineError::storage("reading a stream version"))?;
    Ok(match iter.key() {
        Some(key) if key.starts_with(&prefix) => StreamVersion(schema::parse_u64(&key[9..]).ok_or_else(|| {
            EngineError::Corrupt {
                what: format!("stream index key of {stream}"),
                expected: "17 bytes".into(),
                found: format!("{} bytes", key.len()),
            }
        })?),
        _ => StreamVersion::EMPTY,
    })
}
