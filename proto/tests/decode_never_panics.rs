//! Decoders meet arbitrary bytes: every outcome is `Ok` or `Err`, never a panic. What
//! decodes re-encodes to bytes that decode to the same value.
//!
//! Three decoders take bytes from outside: `ClientMessage` (a client's frame),
//! `ServerMessage` (what a client decodes) and `EventEnvelope` (a log record). Arbitrary
//! bytes mostly fail at the first field, so the second property wraps them as the
//! length-delimited payload of every field number: that drives the decoders of every
//! nested message (requests, updates, events, media) with arbitrary contents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_proto::core::{ClientMessage, ServerMessage};
use osmium_proto::events::EventEnvelope;
use osmium_proto::prost::Message;
use osmium_proto::prost::encoding::{WireType, encode_key, encode_varint};
use proptest::prelude::*;

/// Field numbers tried as wrappers: every number up to the highest `ClientMessage` call
/// (96), which covers every field number of every message (`RPCResult.trace_id` is 37).
fn wrapper_fields() -> impl Strategy<Value = u32> {
    1u32..=96
}

/// Decodes `bytes` as `M`; when that works, the re-encoding decodes to the same value.
fn decodes_stably<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(decoded) = M::decode(bytes) {
        let again = M::decode(decoded.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
        assert_eq!(again, decoded, "re-encoding is stable");
    }
}

fn decode_all(bytes: &[u8]) {
    decodes_stably::<ClientMessage>(bytes);
    decodes_stably::<ServerMessage>(bytes);
    decodes_stably::<EventEnvelope>(bytes);
}

fn wrapped(field: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    encode_key(field, WireType::LengthDelimited, &mut bytes);
    encode_varint(payload.len() as u64, &mut bytes);
    bytes.extend_from_slice(payload);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_payloads_of_every_field_never_panic_the_nested_decoders(
        field in wrapper_fields(),
        inner_field in wrapper_fields(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        decode_all(&wrapped(field, &payload));
        decode_all(&wrapped(field, &wrapped(inner_field, &payload)));
    }
}

#[test]
fn an_event_envelope_round_trips() {
    use osmium_proto::events::{MessageSent, StreamRef, event_envelope::Event, stream_ref::Stream};
    let envelope = EventEnvelope {
        position: 42,
        stream: Some(StreamRef { stream: Some(Stream::ChatId(7)) }),
        stream_version: 3,
        recorded_at_ms: 1_700_000_000_000,
        actor_id: 5,
        event: Some(Event::MessageSent(MessageSent { message_id: 99, author_id: 5, text: "hi".into(), ..Default::default() })),
    };
    assert_eq!(EventEnvelope::decode(envelope.encode_to_vec().as_slice()).unwrap(), envelope);
}
