//! Decoders meet arbitrary bytes: every outcome is `Ok` or `Err`, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_proto::prost::Message;
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) {
    let _ = osmium_proto::core::ClientMessage::decode(bytes);
    let _ = osmium_proto::core::ServerMessage::decode(bytes);
    let _ = osmium_proto::events::EventEnvelope::decode(bytes);
    let _ = osmium_proto::types::Conversation::decode(bytes);
    let _ = osmium_proto::chats::GetChats::decode(bytes);
    let _ = osmium_proto::messages::SendMessage::decode(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }
}

#[test]
fn an_event_envelope_round_trips() {
    use osmium_proto::events::{EventEnvelope, MessageSent, StreamRef, event_envelope::Event, stream_ref::Stream};
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
