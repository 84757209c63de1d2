//! Projection records and keys read back from disk meet arbitrary bytes (a corrupted or
//! foreign column family): every decoder answers `Ok` or a typed `Err`, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_projections::keys;
use osmium_projections::records::{ChatRecord, InviteRecord, MemberRecord, MessageRecord, UserRecord, decode};
use osmium_projections::{ProjectionError, Table};
use proptest::prelude::*;

fn is_decode_error<T>(result: Result<T, ProjectionError>) -> bool {
    match result {
        Ok(_) => true,
        Err(ProjectionError::Decode { .. }) => true,
        Err(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_record_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let key = b"key";
        prop_assert!(is_decode_error(decode::<ChatRecord>(Table::ChatidChat, key, &bytes)));
        prop_assert!(is_decode_error(decode::<MemberRecord>(Table::ChatidUseridMember, key, &bytes)));
        prop_assert!(is_decode_error(decode::<MessageRecord>(Table::ChatidMsgidMessage, key, &bytes)));
        prop_assert!(is_decode_error(decode::<InviteRecord>(Table::CodeInvite, key, &bytes)));
        prop_assert!(is_decode_error(decode::<UserRecord>(Table::UseridUser, key, &bytes)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_key_parser(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = keys::member_user(&bytes);
        let _ = keys::parse_chat_list_entry(&bytes);
        let _ = keys::large_chat_chat(&bytes);
        let _ = keys::chat_sequence_chat(&bytes);
        let _ = keys::message_id(&bytes);
        let _ = keys::deleted_seq_value(&bytes);
        let _ = keys::chat_invite_code(&bytes);
    }
}

/// Regression: a record whose string length prefix claimed ~2^64 bytes made bincode try to
/// allocate it, aborting the whole process (found by the property above). Decoders now
/// refuse claims beyond `RECORD_BYTES_MAX` with a typed error.
#[test]
fn a_length_prefix_claiming_exabytes_is_a_decode_error_not_an_abort() {
    // bincode varint: 253 = a u64 follows; here u64::MAX as the name's length.
    let bytes = [253, 255, 255, 255, 255, 255, 255, 255, 255];
    let result = decode::<UserRecord>(Table::UseridUser, b"key", &bytes);
    assert!(matches!(result, Err(ProjectionError::Decode { table: Table::UseridUser, .. })), "{result:?}");
}
