//! What one log record is: the mapping of streams to subjects, of expected versions to
//! `Nats-Expected-Last-Subject-Sequence`, and the bytes of one append.

use crate::LogError;
use bytes::Bytes;
use osmium_proto::events::{EventEnvelope, StreamRef, stream_ref};
use osmium_proto::ids::{ChatId, Position, StreamId, UserId};
use prost::Message as _;
use sha2::{Digest, Sha256};
use std::fmt;

/// Where a stream's last record must be for an append to go through. A stream's version,
/// in the replicated log, is the position of its last record: JetStream checks it as the
/// stream sequence of the subject's last message (`Nats-Expected-Last-Subject-Sequence`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExpectedLast {
    /// Wherever it is (no header: the append is never refused for a conflict).
    Any,
    /// The stream has no record yet (expected last subject sequence 0).
    NoStream,
    /// The stream's last record is at this position (> 0): the position of the last record
    /// of the stream the caller has folded.
    At(Position),
}

impl ExpectedLast {
    /// The value of `Nats-Expected-Last-Subject-Sequence`, `None` for no check.
    pub fn subject_sequence(self) -> Option<u64> {
        match self {
            ExpectedLast::Any => None,
            ExpectedLast::NoStream => Some(0),
            ExpectedLast::At(position) => Some(position.get()),
        }
    }

    /// The expectation that a stream whose last record is at `last` meets
    /// (`NoStream` for [`Position::ZERO`]).
    pub fn at(last: Position) -> ExpectedLast {
        if last == Position::ZERO {
            ExpectedLast::NoStream
        } else {
            ExpectedLast::At(last)
        }
    }
}

impl fmt::Display for ExpectedLast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedLast::Any => write!(f, "any position"),
            ExpectedLast::NoStream => write!(f, "no record yet"),
            ExpectedLast::At(position) => write!(f, "its last record at position {position}"),
        }
    }
}

/// One append as stored: one message of the log's JetStream stream, on its stream's
/// subject. Every event of the append is in it, in order, so that the append is atomic and
/// the expected-last-subject-sequence check covers all of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The message's stream sequence: gapless from 1 (the stream never deletes).
    pub position: Position,
    /// The stream the events belong to (the message's subject).
    pub stream: StreamId,
    /// The events in append order. Each envelope's `position` is the record's; an event's
    /// address in the log is (position, index in `events`). `stream_version` carries the
    /// appender's expectation ([`Record::expected_last`]), not a version: a
    /// replicated stream's version is the position of its last record.
    pub events: Vec<EventEnvelope>,
}

impl Record {
    /// Where the appender expected the stream's previous record: `None` for
    /// [`ExpectedLast::Any`], `Some(0)` for `NoStream`, `Some(p)` for `At(p)` (stored in
    /// each envelope's `stream_version` as that plus one, 0 for `Any`). A reader checks it
    /// against the stream's previous record: JetStream 2.9 does not serialize its own
    /// expected-last-subject-sequence check in a cluster (nats-server#4320, fixed in
    /// 2.9.21/2.10), so two appends expecting the same record can both be stored.
    pub fn expected_last(&self) -> Option<u64> {
        self.events.first().and_then(|event| event.stream_version.checked_sub(1))
    }
}

/// The message body: the append's envelopes (field 1, repeated), protobuf.
///
/// Defined here rather than in `events.proto` so that this crate changes no other crate;
/// its bytes are those of `message EventBatch { repeated EventEnvelope events = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventBatch {
    /// The envelopes, positions left 0 (assigned by the server as the stream sequence).
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<EventEnvelope>,
}

/// Subjects and names derived from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    /// `<prefix>.chat.<id>` or `<prefix>.user.<id>`.
    pub(crate) fn stream(&self, stream: StreamId) -> String {
        match stream {
            StreamId::Chat(chat) => format!("{}.chat.{}", self.prefix, chat.get()),
            StreamId::User(user) => format!("{}.user.{}", self.prefix, user.get()),
        }
    }

    /// The log stream's subjects.
    pub(crate) fn log_filters(&self) -> Vec<String> {
        vec![
            format!("{}.chat.*", self.prefix),
            format!("{}.user.*", self.prefix),
        ]
    }

    /// The idempotency stream's subjects.
    pub(crate) fn idempotency_filters(&self) -> Vec<String> {
        vec![format!("{}.idem.*", self.prefix)]
    }

    /// `<prefix>.idem.<hash>`.
    pub(crate) fn idempotency(&self, key_hash: &str) -> String {
        format!("{}.idem.{key_hash}", self.prefix)
    }

    /// Inverse of [`Self::stream`]; `None` for any other subject.
    pub(crate) fn parse_stream(&self, subject: &str) -> Option<StreamId> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let (kind, id) = rest.split_once('.')?;
        let id: u64 = id.parse().ok()?;
        match kind {
            "chat" => Some(StreamId::Chat(ChatId(id))),
            "user" => Some(StreamId::User(UserId(id))),
            _ => None,
        }
    }
}

/// Lowercase hex of SHA-256 of the key: the key's subject token and `Nats-Msg-Id`.
pub(crate) fn key_hash(key: &[u8]) -> String {
    hex(&Sha256::digest(key))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

pub(crate) fn stream_ref(stream: StreamId) -> StreamRef {
    let stream = match stream {
        StreamId::Chat(chat) => stream_ref::Stream::ChatId(chat.get()),
        StreamId::User(user) => stream_ref::Stream::UserId(user.get()),
    };
    StreamRef {
        stream: Some(stream),
    }
}

/// The message body of an append.
pub(crate) fn encode(events: &[EventEnvelope]) -> Bytes {
    let batch = EventBatch {
        events: events.to_vec(),
    };
    Bytes::from(batch.encode_to_vec())
}

/// The record stored at `position` on `subject` with body `payload`.
pub(crate) fn decode(
    subjects: &Subjects,
    position: Position,
    subject: &str,
    payload: &[u8],
) -> Result<Record, LogError> {
    let fail = |detail: String| LogError::Decode { position, detail };
    let stream = subjects
        .parse_stream(subject)
        .ok_or_else(|| fail(format!("subject {subject:?} names no chat or user stream")))?;
    let batch = EventBatch::decode(payload).map_err(|err| fail(format!("protobuf: {err}")))?;
    if batch.events.is_empty() {
        return Err(fail("no event".to_owned()));
    }
    let expected_ref = stream_ref(stream);
    let mut events = batch.events;
    for (index, event) in events.iter_mut().enumerate() {
        if event.stream.as_ref() != Some(&expected_ref) {
            return Err(fail(format!(
                "event {index} names stream {:?}, the subject {subject}",
                event.stream
            )));
        }
        if event.event.is_none() {
            return Err(fail(format!(
                "event {index} has no kind (written by a newer version?)"
            )));
        }
        event.position = position.get();
    }
    Ok(Record {
        position,
        stream,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use osmium_proto::events::{GroupClosed, event_envelope::Event};

    #[test]
    fn streams_map_to_subjects_and_back() {
        let subjects = Subjects::new("osm");
        for stream in [StreamId::Chat(ChatId(7)), StreamId::User(UserId(u64::MAX))] {
            let subject = subjects.stream(stream);
            assert_eq!(subjects.parse_stream(&subject), Some(stream), "{subject}");
        }
        assert_eq!(subjects.stream(StreamId::Chat(ChatId(7))), "osm.chat.7");
        assert_eq!(subjects.parse_stream("osm.idem.ab"), None);
        assert_eq!(subjects.parse_stream("other.chat.7"), None);
    }

    #[test]
    fn expected_last_maps_to_the_subject_sequence_header() {
        assert_eq!(ExpectedLast::Any.subject_sequence(), None);
        assert_eq!(ExpectedLast::NoStream.subject_sequence(), Some(0));
        assert_eq!(ExpectedLast::At(Position(42)).subject_sequence(), Some(42));
        assert_eq!(ExpectedLast::at(Position::ZERO), ExpectedLast::NoStream);
    }

    #[test]
    fn a_record_decodes_with_the_position_the_server_gave_it() {
        let subjects = Subjects::new("osm");
        let stream = StreamId::Chat(ChatId(3));
        let envelope = EventEnvelope {
            stream: Some(stream_ref(stream)),
            actor_id: 9,
            event: Some(Event::GroupClosed(GroupClosed {})),
            ..Default::default()
        };
        let bytes = encode(&[envelope.clone(), envelope]);
        let record = decode(&subjects, Position(12), "osm.chat.3", &bytes).unwrap();
        assert_eq!(record.position, Position(12));
        assert_eq!(record.events.len(), 2);
        assert!(record.events.iter().all(|event| event.position == 12));
        let wrong_subject = decode(&subjects, Position(12), "osm.chat.4", &bytes).unwrap_err();
        assert!(
            matches!(
                wrong_subject,
                LogError::Decode {
                    position: Position(12),
                    ..
                }
            ),
            "{wrong_subject}"
        );
        let garbage = decode(&subjects, Position(13), "osm.chat.3", &[0xff, 0xff]).unwrap_err();
        assert!(
            matches!(
                garbage,
                LogError::Decode {
                    position: Position(13),
                    ..
                }
            ),
            "{garbage}"
        );
    }

    #[test]
    fn key_hash_is_sha256_hex() {
        assert_eq!(
            key_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
