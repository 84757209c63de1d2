//! A client's frame: whatever the bytes, decoding a `ClientMessage` returns, and what
//! decodes re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use osmium_proto::core::ClientMessage;
use osmium_proto::prost::Message;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(message) = ClientMessage::decode(bytes) {
        let again = ClientMessage::decode(message.encode_to_vec().as_slice());
        assert_eq!(again.ok(), Some(message), "re-encoding a decoded ClientMessage is stable");
    }
});
