//! The log's one appender: assigns gapless positions and stream versions, checks expected
//! versions and idempotency keys, and stages everything of a batch in one `WriteBatch`
//! for the writer thread. Synchronous, so that whoever appends (the engine's state
//! machine) knows the positions at once and can fold the events before they are durable.

use super::{APPEND_EVENTS_MAX, Append, EVENT_BYTES_MAX, Earlier, IDEMPOTENCY_KEY_MAX_BYTES, STREAM_VERSIONS_CACHED_MAX, read};
use crate::directory::column_family;
use crate::error::EngineError;
use crate::schema::{self, CF_IDEMKEY_POSITION, CF_META, CF_POSITION_EVENT, CF_STREAMID_VERSION_POSITION};
use osmium_proto::events::{EventEnvelope, StreamRef, stream_ref::Stream};
use osmium_proto::ids::{Position, StreamId, StreamVersion};
use osmium_proto::prost::Message as _;
use rocksdb::{DB, WriteBatch};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Everything one commit writes to the log, staged by the [`Sequencer`].
pub struct LogBatch {
    pub(crate) write_batch: WriteBatch,
    /// The staged events, in position order.
    pub(crate) events: Vec<EventEnvelope>,
    first_position: Position,
}

impl std::fmt::Debug for LogBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBatch")
            .field("first_position", &self.first_position)
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl LogBatch {
    /// The position of the last staged event (the one before the first when empty).
    pub fn last_position(&self) -> Position {
        Position(self.first_position.get() + self.events.len() as u64 - 1)
    }

    /// Whether no event is staged.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The position of the first event staged (or to be staged).
    pub fn first_position(&self) -> Position {
        self.first_position
    }

    /// The staged events.
    pub fn events(&self) -> &[EventEnvelope] {
        &self.events
    }
}

/// The appender of one log (exactly one exists per open directory).
pub struct Sequencer {
    db: Arc<DB>,
    next_position: Position,
    durable: Arc<AtomicU64>,
    /// Newest version of recently appended streams (reloaded from the index on a miss).
    stream_versions: HashMap<StreamId, StreamVersion>,
    /// Idempotency keys of staged appends not yet known durable, with their events.
    in_flight: HashMap<Vec<u8>, Earlier>,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer").field("next_position", &self.next_position).finish_non_exhaustive()
    }
}

impl Sequencer {
    /// The appender of a log whose last position is `last` and whose durable position
    /// the writer publishes in `durable`.
    pub(crate) fn new(db: Arc<DB>, last: Position, durable: Arc<AtomicU64>) -> Self {
        Sequencer { db, next_position: last.next(), durable, stream_versions: HashMap::new(), in_flight: HashMap::new() }
    }

    /// The position the next staged event gets.
    pub fn next_position(&self) -> Position {
        self.next_position
    }

    /// A new, empty batch starting at the next position.
    pub fn batch(&self) -> LogBatch {
        LogBatch { write_batch: WriteBatch::default(), events: Vec::new(), first_position: self.next_position }
    }

    /// The earlier append with idempotency key `key`, if any (staged in a batch not yet
    /// durable, or in the log).
    pub fn earlier(&mut self, key: &[u8]) -> Result<Option<Earlier>, EngineError> {
        let durable = Position(self.durable.load(Ordering::Acquire));
        self.in_flight.retain(|_, earlier| earlier.events.last().is_some_and(|event| event.position > durable.get()));
        if let Some(earlier) = self.in_flight.get(key) {
            return Ok(Some(earlier.clone()));
        }
        let stored = self
            .db
            .get_cf(column_family(&self.db, CF_IDEMKEY_POSITION)?, key)
            .map_err(EngineError::storage("reading an idempotency key"))?;
        let Some(value) = stored else { return Ok(None) };
        let entry = schema::parse_idempotency_value(&value).ok_or_else(|| EngineError::Corrupt {
            what: "idempotency entry".into(),
            expected: "12 or 36 bytes".into(),
            found: format!("{} bytes", value.len()),
        })?;
        let (first, count) = (entry.first, entry.count);
        let events = read::read_events(&self.db, first, durable, count as usize)?;
        if events.len() != count as usize {
            return Err(EngineError::Corrupt {
                what: format!("events of idempotency key at position {first}"),
                expected: format!("{count} events"),
                found: format!("{} events", events.len()),
            });
        }
        // An all-zero fingerprint was stored for an append that had none.
        let fingerprint = entry.fingerprint.filter(|fingerprint| *fingerprint != [0; 16]);
        Ok(Some(Earlier { events, recorded_at_ms: entry.recorded_at_ms, fingerprint }))
    }

    fn stream_version(&mut self, stream: StreamId) -> Result<StreamVersion, EngineError> {
        if let Some(version) = self.stream_versions.get(&stream) {
            return Ok(*version);
        }
        if self.stream_versions.len() >= STREAM_VERSIONS_CACHED_MAX {
            self.stream_versions.clear(); // bounded memory; misses read the index again
        }
        let version = read::stream_version(&self.db, stream)?;
        self.stream_versions.insert(stream, version);
        Ok(version)
    }

    /// Stages `append` in `batch`: checks its size, its expected version and its
    /// idempotency key (an earlier append with the key must be looked up with
    /// [`Self::earlier`] before), assigns positions and versions. On error nothing is staged.
    pub fn stage(&mut self, append: Append, now_ms: u64, batch: &mut LogBatch) -> Result<Vec<EventEnvelope>, EngineError> {
        if append.events.is_empty() || append.events.len() > APPEND_EVENTS_MAX {
            return Err(EngineError::invalid("events", format!("1 to {APPEND_EVENTS_MAX} events per append")));
        }
        if let Some(key) = &append.idempotency_key
            && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_BYTES)
        {
            return Err(EngineError::invalid("idempotency_key", format!("1 to {IDEMPOTENCY_KEY_MAX_BYTES} bytes")));
        }
        let found = self.stream_version(append.stream)?;
        if !append.expected_version.admits(found) {
            return Err(EngineError::Conflict { stream: append.stream, expected: append.expected_version, found });
        }
        let stream_ref = StreamRef {
            stream: Some(match append.stream {
                StreamId::Chat(chat) => Stream::ChatId(chat.get()),
                StreamId::User(user) => Stream::UserId(user.get()),
            }),
        };
        let first = self.next_position;
        let envelopes: Vec<EventEnvelope> = append
            .events
            .into_iter()
            .enumerate()
            .map(|(offset, event)| EventEnvelope {
                position: first.get() + offset as u64,
                stream: Some(stream_ref),
                stream_version: found.get() + 1 + offset as u64,
                recorded_at_ms: now_ms,
                actor_id: append.actor.get(),
                event: Some(event),
            })
            .collect();
        let encoded: Vec<Vec<u8>> = envelopes.iter().map(|envelope| envelope.encode_to_vec()).collect();
        if let Some(bytes) = encoded.iter().map(Vec::len).find(|&bytes| bytes > EVENT_BYTES_MAX) {
            return Err(EngineError::invalid("events", format!("an event of {bytes} bytes is over {EVENT_BYTES_MAX}")));
        }
        // Architecture invariant: positions are gapless; checked right before staging.
        assert_eq!(first.get(), batch.first_position.get() + batch.events.len() as u64, "positions are staged gaplessly");
        let events_cf = column_family(&self.db, CF_POSITION_EVENT)?;
        let index_cf = column_family(&self.db, CF_STREAMID_VERSION_POSITION)?;
        for (envelope, bytes) in envelopes.iter().zip(encoded) {
            let position = Position(envelope.position);
            batch.write_batch.put_cf(events_cf, schema::event_key(position), bytes);
            let version = StreamVersion(envelope.stream_version);
            batch.write_batch.put_cf(index_cf, schema::stream_index_key(append.stream, version), position.to_be_bytes());
        }
        let count = envelopes.len() as u32;
        if let Some(key) = append.idempotency_key {
            let entry = schema::IdempotencyEntry {
                first,
                count,
                recorded_at_ms: Some(now_ms),
                fingerprint: Some(append.fingerprint.unwrap_or_default()),
            };
            batch.write_batch.put_cf(column_family(&self.db, CF_IDEMKEY_POSITION)?, &key, schema::idempotency_value(&entry));
            let earlier = Earlier { events: envelopes.clone(), recorded_at_ms: Some(now_ms), fingerprint: append.fingerprint };
            self.in_flight.insert(key, earlier);
        }
        self.stream_versions.insert(append.stream, StreamVersion(found.get() + u64::from(count)));
        self.next_position = Position(first.get() + u64::from(count));
        batch.events.extend(envelopes.iter().cloned());
        Ok(envelopes)
    }

    /// Adds the batch's meta entries (last position, and the snowflake floor when the
    /// appender issues ids) so that a reopen can cross-check the log and never repeat an id.
    pub fn seal(&self, batch: &mut LogBatch, snowflake_floor: Option<u64>) -> Result<(), EngineError> {
        if batch.events.is_empty() {
            return Ok(());
        }
        let meta = column_family(&self.db, CF_META)?;
        batch.write_batch.put_cf(meta, schema::META_LAST_POSITION, batch.last_position().to_be_bytes());
        if let Some(floor) = snowflake_floor {
            batch.write_batch.put_cf(meta, schema::META_SNOWFLAKE_FLOOR, floor.to_be_bytes());
        }
        Ok(())
    }
}
