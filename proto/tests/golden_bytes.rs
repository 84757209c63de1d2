//! Wire compatibility: byte strings written by hand from the protobuf encoding rules
//! decode to the expected fields and re-encode to the same bytes.
//! Tag byte = (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_proto::chats::{EditChat, GetChats, MarkChatRead, edit_chat};
use osmium_proto::auth::{Authorization, Authorize};
use osmium_proto::core::{
    ClientMessage, Entrypoints, GetUnreadMentions, Initialize, Initialized, RpcError, RpcResult, UnreadMentions,
    client_message, rpc_result,
};
use osmium_proto::media::{
    FileMetadata, MediaRef, MediaRefEmbed, MediaRefUploadedFile, MetadataImage, UploadedFileRef, file_metadata, media_ref,
};
use osmium_proto::messages::{BotInfo, EditMessage, SendMessage, send_message};
use osmium_proto::prost::Message;
use osmium_proto::refs::{ChatRef, GroupRef, RefSelf, UserRef, chat_ref};
use osmium_proto::types::{
    Conversation, Entrypoint, Message as ChatMessage, MessageEntity, NotifPrefs, PermissionOverrides, User, UserMentionEntity,
    message, message_entity,
};
use osmium_proto::updates::{Update, UpdateConversationLastRead, update};

fn group_ref_7() -> Vec<u8> {
    // ChatRef.group (3, LEN) = 0x1a, 9 bytes: GroupRef.group_id (1, fixed64) = 0x09 + 7 LE
    vec![0x1a, 0x09, 0x09, 7, 0, 0, 0, 0, 0, 0, 0]
}

fn mark_chat_read_bytes() -> Vec<u8> {
    let mut bytes = vec![0x0a, 0x0b]; // chat_ref (1, LEN), 11 bytes
    bytes.extend(group_ref_7());
    bytes.extend([0x11, 0x2c, 0x01, 0, 0, 0, 0, 0, 0]); // message_id (2, fixed64) = 300
    bytes.extend([0x18, 0x03]); // read_amount (3, varint) = 3
    bytes
}

fn group_7() -> ChatRef {
    ChatRef { r#ref: Some(chat_ref::Ref::Group(GroupRef { group_id: 7 })) }
}

#[test]
fn get_chats_golden_bytes_decode_and_reencode() {
    let bytes = [
        0x08, 0x0a, // limit (1, varint) = 10
        0x11, 8, 7, 6, 5, 4, 3, 2, 1, // max_id (2, fixed64) = 0x0102030405060708
        0x19, 5, 0, 0, 0, 0, 0, 0, 0, // min_id (3, fixed64) = 5
    ];
    let decoded = GetChats::decode(&bytes[..]).unwrap();
    assert_eq!(decoded, GetChats { limit: Some(10), max_id: Some(0x0102_0304_0506_0708), min_id: Some(5) });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn mark_chat_read_golden_bytes_decode_and_reencode() {
    let bytes = mark_chat_read_bytes();
    let decoded = MarkChatRead::decode(&bytes[..]).unwrap();
    assert_eq!(decoded, MarkChatRead { chat_ref: Some(group_7()), message_id: 300, read_amount: Some(3) });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn conversation_golden_bytes_decode_and_reencode() {
    let mut bytes = vec![0x0a, 0x0b, 0x0a, 0x09, 0x09, 9, 0, 0, 0, 0, 0, 0, 0]; // chat_ref.user (1) = 9
    bytes.extend([0x11, 100, 0, 0, 0, 0, 0, 0, 0]); // last_message_id (2, fixed64) = 100
    bytes.extend([0x19, 90, 0, 0, 0, 0, 0, 0, 0]); // last_read_message_id (3, fixed64) = 90
    bytes.extend([0x28, 0x04]); // unread_count (5, varint) = 4
    bytes.extend([0x32, 0x02, b'h', b'i']); // draft (6, LEN) = "hi"
    bytes.extend([0x3a, 0x12, 0x09, 4, 0, 0, 0, 0, 0, 0, 0, 0x11, 32, 0, 0, 0, 0, 0, 0, 0]); // permissions (7)
    bytes.extend([0x40, 0x02]); // notif_prefs (8, varint) = NONE (2)
    bytes.extend([0x48, 0x03]); // unread_mentions_count (9, varint) = 3
    let decoded = Conversation::decode(&bytes[..]).unwrap();
    let expected = Conversation {
        chat_ref: Some(ChatRef { r#ref: Some(chat_ref::Ref::User(UserRef { user_id: 9 })) }),
        last_message_id: 100,
        last_read_message_id: 90,
        unread_count: 4,
        draft: Some("hi".into()),
        permissions: Some(PermissionOverrides { pos: 4, neg: 32 }),
        notif_prefs: NotifPrefs::None as i32,
        unread_mentions_count: 3,
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn notif_prefs_is_the_seeds_muted_bool_field_8() {
    /// The seeds' Conversation, as far as mute goes: `bool muted = 8`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct SeedConversation {
        #[prost(bool, tag = "8")]
        muted: bool,
    }
    let values = [(NotifPrefs::All, 0u8), (NotifPrefs::Mentions, 1), (NotifPrefs::None, 2), (NotifPrefs::Default, 3)];
    for (prefs, value) in values {
        let conversation = Conversation { notif_prefs: prefs as i32, ..Conversation::default() };
        let bytes = conversation.encode_to_vec();
        let expected: Vec<u8> = if value == 0 { vec![] } else { vec![0x40, value] }; // ALL is proto3's default: not written
        assert_eq!(bytes, expected, "{prefs:?}");
        // A seeds client reads NONE as muted and ALL as not muted.
        let seed = SeedConversation::decode(bytes.as_slice()).unwrap();
        assert_eq!(seed.muted, prefs != NotifPrefs::All, "{prefs:?}");
    }
    // The seeds' `muted = true` (varint 1) is MENTIONS to the current protocol: why the
    // engine writes NONE (2) for a muted conversation.
    assert_eq!(Conversation::decode(&[0x40, 0x01][..]).unwrap().notif_prefs, NotifPrefs::Mentions as i32);
}

#[test]
fn client_message_with_mark_chat_read_golden_bytes_decode_and_reencode() {
    let inner = mark_chat_read_bytes();
    let mut bytes = vec![0x08, 0x07]; // id (1, varint) = 7
    bytes.extend([0xaa, 0x01, inner.len() as u8]); // chats_mark_chat_read (21, LEN): tag 170 as varint
    bytes.extend(&inner);
    let decoded = ClientMessage::decode(&bytes[..]).unwrap();
    assert_eq!(decoded.id, 7);
    assert!(matches!(
        &decoded.message,
        Some(client_message::Message::ChatsMarkChatRead(mark)) if mark.message_id == 300 && mark.chat_ref == Some(group_7())
    ));
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn client_message_with_send_message_golden_bytes_decode_and_reencode() {
    let send = [
        0x0a, 0x02, 0x22, 0x00, // chat_ref (1) = { self (4) = {} }
        0x12, 0x02, b'y', b'o', // message (2) = "yo"
        0x49, 77, 0, 0, 0, 0, 0, 0, 0, // client_id (9, fixed64) = 77
    ];
    let mut bytes = vec![0x08, 0x01, 0x22, send.len() as u8]; // id = 1; messages_send_message (4, LEN)
    bytes.extend(send);
    let decoded = ClientMessage::decode(&bytes[..]).unwrap();
    let expected = SendMessage {
        chat_ref: Some(ChatRef { r#ref: Some(chat_ref::Ref::Self_(RefSelf {})) }),
        message: "yo".into(),
        client_id: Some(77),
        ..SendMessage::default()
    };
    assert_eq!(decoded.message, Some(client_message::Message::MessagesSendMessage(expected)));
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn rpc_result_with_an_error_golden_bytes_decode_and_reencode() {
    let bytes = [
        0x08, 0x05, // req_id (1) = 5
        0x12, 0x07, // error (2, LEN), 7 bytes
        0x08, 0x94, 0x03, // error_code (1, varint) = 404
        0x12, 0x02, b'n', b'f', // error_message (2) = "nf"
    ];
    let decoded = RpcResult::decode(&bytes[..]).unwrap();
    let error = RpcError { error_code: 404, error_message: "nf".into() };
    assert_eq!(decoded, RpcResult { req_id: 5, result: Some(rpc_result::Result::Error(error)), trace_id: None });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn update_conversation_last_read_golden_bytes_keep_an_explicit_zero_unread_count() {
    let mut inner = vec![0x0a, 0x0b];
    inner.extend(group_ref_7());
    inner.extend([0x11, 0x2c, 0x01, 0, 0, 0, 0, 0, 0]); // last_read_message_id (2) = 300
    inner.extend([0x18, 0x00]); // unread_count (3, optional varint) = 0, present
    let mut bytes = vec![0xc2, 0x01, inner.len() as u8]; // conversation_last_read (24, LEN)
    bytes.extend(&inner);
    let decoded = Update::decode(&bytes[..]).unwrap();
    let expected = UpdateConversationLastRead {
        chat_ref: Some(group_7()),
        last_read_message_id: 300,
        unread_count: Some(0),
        unread_mentions_count: None,
    };
    assert_eq!(decoded.update, Some(update::Update::ConversationLastRead(expected)));
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn fields_from_newer_clients_are_skipped_not_rejected() {
    // User.status (4) is skipped by the chat subset; a client may still send it.
    let user = [0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x01, b'a', 0x22, 0x03, b'x', b'y', b'z'];
    assert_eq!(User::decode(&user[..]).unwrap(), User { id: 1, name: "a".into(), ..User::default() });
    // An unknown field of a Conversation (here 10) is skipped.
    let conversation = [0x28, 0x02, 0x50, 0x05];
    assert_eq!(Conversation::decode(&conversation[..]).unwrap().unread_count, 2);
}

// ---- Current protocol (wire.md, "Current protocol"): the session calls ----------------

/// `Initialize` as the official JS client encodes it (protobufjs writes the fields it was
/// given in field-number order; it never sets `no_subscribe`).
fn official_initialize_bytes() -> Vec<u8> {
    let mut bytes = vec![0x08, 0x2a]; // client_id (1, varint) = 42
    bytes.extend([0x12, 0x0f]); // device_type (2, LEN), 15 bytes
    bytes.extend(b"@osmiumchat/sdk");
    bytes.extend([0x1a, 0x08]); // device_version (3, LEN), 8 bytes
    bytes.extend(b"v22.11.0");
    bytes.extend([0x22, 0x05]); // app_version (4, LEN), 5 bytes
    bytes.extend(b"0.3.1");
    bytes
}

#[test]
fn client_message_with_initialize_at_19_golden_bytes_decode_and_reencode() {
    let inner = official_initialize_bytes();
    assert_eq!(inner.len(), 0x24);
    let mut bytes = vec![0x08, 0x01, 0x9a, 0x01, 0x24]; // id = 1; core_initialize (19, LEN): tag 154 as varint
    bytes.extend(&inner);
    let decoded = ClientMessage::decode(&bytes[..]).unwrap();
    let expected = Initialize {
        client_id: 42,
        device_type: "@osmiumchat/sdk".into(),
        device_version: "v22.11.0".into(),
        app_version: "0.3.1".into(),
        no_subscribe: false,
    };
    assert_eq!(decoded, ClientMessage { id: 1, message: Some(client_message::Message::CoreInitialize(expected)) });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn initialize_no_subscribe_is_field_5() {
    let bytes = [0x28, 0x01]; // no_subscribe (5, varint) = true
    assert_eq!(Initialize::decode(&bytes[..]).unwrap(), Initialize { no_subscribe: true, ..Initialize::default() });
}

#[test]
fn client_message_with_authorize_at_20_golden_bytes_decode_and_reencode() {
    // id = 2; auth_authorize (20, LEN): tag 162 as varint, 5 bytes; token (5, LEN) = "tok"
    let bytes = [0x08, 0x02, 0xa2, 0x01, 0x05, 0x2a, 0x03, b't', b'o', b'k'];
    let decoded = ClientMessage::decode(&bytes[..]).unwrap();
    let expected = client_message::Message::AuthAuthorize(Authorize { token: "tok".into() });
    assert_eq!(decoded, ClientMessage { id: 2, message: Some(expected) });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn heartbeat_is_a_client_message_with_only_an_id() {
    // What the official client sends every 30 s: ClientMessage.create({ id: 1 }).
    let decoded = ClientMessage::decode(&[0x08, 0x01][..]).unwrap();
    assert_eq!(decoded, ClientMessage { id: 1, message: None });
}

#[test]
fn rpc_result_with_initialized_at_14_golden_bytes_decode_and_reencode() {
    let entrypoint = [
        0x0a, 0x09, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', // hostname (1) = "localhost"
        0x12, 0x09, b'1', b'2', b'7', b'.', b'0', b'.', b'0', b'.', b'1', // ip_address (2) = "127.0.0.1"
        0x18, 0x9e, 0x36, // port (3, varint) = 6942
        0x20, 0x02, // region (4, varint) = 2
    ];
    let mut entrypoints = vec![0x0a, entrypoint.len() as u8]; // Entrypoints.entrypoints (1, LEN)
    entrypoints.extend(entrypoint);
    let mut initialized = vec![0x0a, entrypoints.len() as u8]; // Initialized.entrypoints (1, LEN)
    initialized.extend(&entrypoints);
    initialized.extend([0x12, 0x01, b'k']); // vapid_public_key (2, LEN) = "k"
    let mut bytes = vec![0x08, 0x01, 0x72, initialized.len() as u8]; // req_id = 1; initialized (14, LEN) = 0x72
    bytes.extend(&initialized);
    let decoded = RpcResult::decode(&bytes[..]).unwrap();
    let expected = Initialized {
        entrypoints: Some(Entrypoints {
            entrypoints: vec![Entrypoint {
                hostname: "localhost".into(),
                ip_address: Some("127.0.0.1".into()),
                port: 6942,
                region: 2,
            }],
        }),
        vapid_public_key: Some("k".into()),
    };
    assert_eq!(decoded, RpcResult { req_id: 1, result: Some(rpc_result::Result::Initialized(expected)), trace_id: None });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn rpc_result_with_authorization_at_4_golden_bytes_decode_and_reencode() {
    let user = [0x09, 5, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x01, b'a']; // User { id (1, fixed64) = 5, name (2) = "a" }
    let mut authorization = vec![0x0a, 0x01, b't']; // token (1) = "t"
    authorization.extend([0x12, user.len() as u8]); // user (2, LEN)
    authorization.extend(user);
    authorization.extend([0x19, 9, 0, 0, 0, 0, 0, 0, 0]); // session_id (3, fixed64) = 9
    let mut bytes = vec![0x08, 0x02, 0x22, authorization.len() as u8]; // req_id = 2; authorization (4, LEN) = 0x22
    bytes.extend(&authorization);
    let decoded = RpcResult::decode(&bytes[..]).unwrap();
    let expected = Authorization {
        token: "t".into(),
        user: Some(User { id: 5, name: "a".into(), ..User::default() }),
        session_id: 9,
    };
    assert_eq!(decoded, RpcResult { req_id: 2, result: Some(rpc_result::Result::Authorization(expected)), trace_id: None });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn rpc_result_trace_id_is_field_37() {
    // req_id = 3; trace_id (37, LEN): tag 298 as varint = 0xaa 0x02; "ab"
    let bytes = [0x08, 0x03, 0xaa, 0x02, 0x02, b'a', b'b'];
    let decoded = RpcResult::decode(&bytes[..]).unwrap();
    assert_eq!(decoded, RpcResult { req_id: 3, result: None, trace_id: Some("ab".into()) });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn get_unread_mentions_at_86_and_unread_mentions_at_38_golden_bytes_decode_and_reencode() {
    let mut request = vec![0x0a, 0x0b]; // chat_ref (1, LEN), 11 bytes
    request.extend(group_ref_7());
    let mut bytes = vec![0x08, 0x04, 0xb2, 0x05, request.len() as u8]; // id = 4; field 86 (LEN): tag 690 as varint
    bytes.extend(&request);
    let decoded = ClientMessage::decode(&bytes[..]).unwrap();
    let expected = client_message::Message::MessagesGetUnreadMentions(GetUnreadMentions { chat_ref: Some(group_7()) });
    assert_eq!(decoded, ClientMessage { id: 4, message: Some(expected) });
    assert_eq!(decoded.encode_to_vec(), bytes);

    // req_id = 4; unread_mentions (38, LEN): tag 306 = 0xb2 0x02; message_ids (1), packed: 2 x fixed64
    let mut mentions = vec![0x0a, 0x10];
    mentions.extend([7, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
    let mut bytes = vec![0x08, 0x04, 0xb2, 0x02, mentions.len() as u8];
    bytes.extend(&mentions);
    let decoded = RpcResult::decode(&bytes[..]).unwrap();
    let expected = rpc_result::Result::UnreadMentions(UnreadMentions { message_ids: vec![7, 8] });
    assert_eq!(decoded, RpcResult { req_id: 4, result: Some(expected), trace_id: None });
    assert_eq!(decoded.encode_to_vec(), bytes);
}

// ---- Current protocol: messages, replies, media, mentions ------------------------------

/// `Quote { message (1) = "hi"; entities (2) = [{ length (2) = 2, bold (3) = true }]; offset (3) = 7 }`.
fn quote_bytes() -> Vec<u8> {
    vec![
        0x0a, 0x02, b'h', b'i', // message (1, LEN) = "hi"
        0x12, 0x04, 0x10, 0x02, 0x18, 0x01, // entities (2, LEN): length (2) = 2, bold (3) = true
        0x18, 0x07, // offset (3, varint) = 7
    ]
}

fn quote() -> message::Quote {
    let bold = MessageEntity { start_index: 0, length: 2, entity: Some(message_entity::Entity::Bold(true)) };
    message::Quote { message: "hi".into(), entities: vec![bold], offset: Some(7) }
}

fn self_ref() -> ChatRef {
    ChatRef { r#ref: Some(chat_ref::Ref::Self_(RefSelf {})) }
}

#[test]
fn send_message_reply_fields_3_6_7_8_golden_bytes_decode_and_reencode() {
    let mut reply_to = vec![0x09, 5, 0, 0, 0, 0, 0, 0, 0]; // ReplyTo.message_id (1, fixed64) = 5
    reply_to.extend([0x12, quote_bytes().len() as u8]); // quote (2, LEN)
    reply_to.extend(quote_bytes());
    let mut bytes = vec![0x0a, 0x02, 0x22, 0x00]; // chat_ref (1) = { self (4) = {} }
    bytes.extend([0x12, 0x02, b'r', b'e']); // message (2) = "re"
    bytes.extend([0x19, 5, 0, 0, 0, 0, 0, 0, 0]); // reply_to_old (3, fixed64) = 5
    bytes.extend([0x30, 0x01]); // suppress_embeds (6, varint) = true
    bytes.extend([0x3a, reply_to.len() as u8]); // reply_to (7, LEN)
    bytes.extend(&reply_to);
    bytes.extend([0x42, 0x00]); // bot_info (8, LEN) = {}
    bytes.extend([0x49, 77, 0, 0, 0, 0, 0, 0, 0]); // client_id (9, fixed64) = 77
    let decoded = SendMessage::decode(&bytes[..]).unwrap();
    let expected = SendMessage {
        chat_ref: Some(self_ref()),
        message: "re".into(),
        reply_to_old: Some(5),
        suppress_embeds: true,
        reply_to: Some(send_message::ReplyTo { message_id: 5, quote: Some(quote()) }),
        bot_info: Some(BotInfo {}),
        client_id: Some(77),
        ..SendMessage::default()
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn send_message_bot_info_contents_are_skipped() {
    // bot_info (8, LEN), 4 bytes: a varint field 1 = 1 and an empty field 2, unknown to us.
    let bytes = [0x42, 0x04, 0x08, 0x01, 0x12, 0x00];
    let decoded = SendMessage::decode(&bytes[..]).unwrap();
    assert_eq!(decoded.bot_info, Some(BotInfo {}));
}

#[test]
fn edit_message_fields_4_to_7_golden_bytes_decode_and_reencode() {
    let mut bytes = vec![0x0a, 0x02, 0x22, 0x00]; // chat_ref (1) = { self (4) = {} }
    bytes.extend([0x11, 9, 0, 0, 0, 0, 0, 0, 0]); // message_id (2, fixed64) = 9
    bytes.extend([0x1a, 0x01, b'x']); // message (3) = "x"
    bytes.extend([0x20, 0x01]); // remove_media (4, varint) = true
    bytes.extend([0x2a, 0x05, 0x12, 0x03, 0x0a, 0x01, b'u']); // media (5): MediaRef { embed (2) { url (1) = "u" } }
    bytes.extend([0x32, 0x04, 0x10, 0x01, 0x20, 0x01]); // entities (6): { length (2) = 1, italic (4) = true }
    bytes.extend([0x38, 0x01]); // suppress_embeds (7, varint) = true
    let decoded = EditMessage::decode(&bytes[..]).unwrap();
    let expected = EditMessage {
        chat_ref: Some(self_ref()),
        message_id: 9,
        message: Some("x".into()),
        remove_media: true,
        media: vec![MediaRef { r#ref: Some(media_ref::Ref::Embed(MediaRefEmbed { url: "u".into() })) }],
        entities: vec![MessageEntity { start_index: 0, length: 1, entity: Some(message_entity::Entity::Italic(true)) }],
        suppress_embeds: true,
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn message_fields_5_10_11_12_golden_bytes_decode_and_reencode() {
    let mut reply = vec![0x09, 5, 0, 0, 0, 0, 0, 0, 0]; // MessageReplyInfo.message_id (1, fixed64) = 5
    reply.extend([0x12, 0x04, 0x0a, 0x02, b'h', b'i']); // quote (2): Quote { message (1) = "hi" }
    let mut bytes = vec![0x0a, 0x02, 0x22, 0x00]; // chat_ref (1) = { self (4) = {} }
    bytes.extend([0x11, 10, 0, 0, 0, 0, 0, 0, 0]); // message_id (2, fixed64) = 10
    bytes.extend([0x19, 3, 0, 0, 0, 0, 0, 0, 0]); // author_id (3, fixed64) = 3
    bytes.extend([0x22, 0x02, b'o', b'k']); // message (4) = "ok"
    bytes.extend([0x29, 5, 0, 0, 0, 0, 0, 0, 0]); // reply_to (5, fixed64, deprecated) = 5
    bytes.extend([0x52, 0x00]); // forward (10, LEN) = {}
    bytes.extend([0x5a, reply.len() as u8]); // reply (11, LEN)
    bytes.extend(&reply);
    bytes.extend([0x62, 0x00]); // bot_info (12, LEN) = {}
    let decoded = ChatMessage::decode(&bytes[..]).unwrap();
    let quote = message::Quote { message: "hi".into(), ..message::Quote::default() };
    let expected = ChatMessage {
        chat_ref: Some(self_ref()),
        message_id: 10,
        author_id: 3,
        message: "ok".into(),
        reply_to: Some(5),
        forward: Some(message::MessageForwardInfo {}),
        reply: Some(message::MessageReplyInfo { message_id: Some(5), quote: Some(quote) }),
        bot_info: Some(message::MessageBotInfo {}),
        ..ChatMessage::default()
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn quote_golden_bytes_decode_and_reencode() {
    let bytes = quote_bytes();
    let decoded = message::Quote::decode(&bytes[..]).unwrap();
    assert_eq!(decoded, quote());
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn media_ref_uploaded_file_golden_bytes_decode_and_reencode() {
    let mut file = vec![0x09, 0x77, 0, 0, 0, 0, 0, 0, 0]; // UploadedFileRef.id (1, fixed64) = 0x77
    file.extend([0x12, 0x05]); // name (2, LEN) = "a.png"
    file.extend(b"a.png");
    file.extend([0x18, 0x02]); // part_count (3, varint) = 2
    let mut uploaded = vec![0x0a, file.len() as u8]; // MediaRefUploadedFile.file (1, LEN)
    uploaded.extend(&file);
    uploaded.extend([0x12, 0x05]); // filename (2, LEN) = "b.png"
    uploaded.extend(b"b.png");
    uploaded.extend([0x1a, 0x09]); // mimetype (3, LEN) = "image/png"
    uploaded.extend(b"image/png");
    uploaded.extend([0x22, 0x06, 0x0a, 0x04, 0x08, 0x04, 0x10, 0x03]); // metadata (4): image (1) { width 4, height 3 }
    let mut bytes = vec![0x0a, uploaded.len() as u8]; // MediaRef.uploaded (1, LEN)
    bytes.extend(&uploaded);
    let decoded = MediaRef::decode(&bytes[..]).unwrap();
    let image = MetadataImage { width: 4, height: 3, preview: None };
    let expected = MediaRef {
        r#ref: Some(media_ref::Ref::Uploaded(MediaRefUploadedFile {
            file: Some(UploadedFileRef { id: 0x77, name: "a.png".into(), part_count: 2 }),
            filename: Some("b.png".into()),
            mimetype: "image/png".into(),
            metadata: Some(FileMetadata { metadata: Some(file_metadata::Metadata::Image(image)) }),
        })),
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn media_ref_embed_golden_bytes_decode_and_reencode() {
    let bytes = [0x12, 0x0b, 0x0a, 0x09, b'h', b't', b't', b'p', b's', b':', b'/', b'/', b'x']; // embed (2) { url (1) }
    let decoded = MediaRef::decode(&bytes[..]).unwrap();
    let expected = MediaRef { r#ref: Some(media_ref::Ref::Embed(MediaRefEmbed { url: "https://x".into() })) };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn edit_chat_photo_golden_bytes_decode_and_reencode() {
    let mut bytes = vec![0x0a, 0x0b]; // chat_ref (1, LEN), 11 bytes
    bytes.extend(group_ref_7());
    bytes.extend([0x22, 0x0b, 0x0a, 0x09, 0x09, 9, 0, 0, 0, 0, 0, 0, 0]); // photo (4) { file (1) { id (1) = 9 } }
    let decoded = EditChat::decode(&bytes[..]).unwrap();
    let file = UploadedFileRef { id: 9, ..UploadedFileRef::default() };
    let expected = EditChat {
        chat_ref: Some(group_7()),
        photo: Some(edit_chat::Photo { file: Some(file) }),
        ..EditChat::default()
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
    // A photo without a file (the engine's "remove the photo") is present and empty.
    let without_file = EditChat::decode(&[0x22, 0x00][..]).unwrap();
    assert_eq!(without_file.photo, Some(edit_chat::Photo { file: None }));
    assert_eq!(without_file.encode_to_vec(), [0x22, 0x00]);
}

#[test]
fn user_mention_entity_is_an_empty_message_at_13() {
    let bytes = [0x10, 0x05, 0x6a, 0x00]; // length (2) = 5; user_mention (13, LEN) = {}
    let decoded = MessageEntity::decode(&bytes[..]).unwrap();
    let expected = MessageEntity { start_index: 0, length: 5, entity: Some(message_entity::Entity::UserMention(UserMentionEntity {})) };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
    // The user_id this engine once invented inside it is skipped, not an error.
    let invented = [0x10, 0x05, 0x6a, 0x09, 0x09, 7, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(MessageEntity::decode(&invented[..]).unwrap(), expected);
    // username (14, varint) = true.
    let username = MessageEntity::decode(&[0x10, 0x04, 0x70, 0x01][..]).unwrap();
    assert_eq!(username.entity, Some(message_entity::Entity::Username(true)));
}

#[test]
fn update_conversation_last_read_carries_unread_mentions_count_at_4() {
    let mut inner = vec![0x0a, 0x0b];
    inner.extend(group_ref_7());
    inner.extend([0x11, 0x2c, 0x01, 0, 0, 0, 0, 0, 0]); // last_read_message_id (2) = 300
    inner.extend([0x18, 0x00]); // unread_count (3) = 0, present
    inner.extend([0x20, 0x02]); // unread_mentions_count (4) = 2
    let decoded = UpdateConversationLastRead::decode(&inner[..]).unwrap();
    let expected = UpdateConversationLastRead {
        chat_ref: Some(group_7()),
        last_read_message_id: 300,
        unread_count: Some(0),
        unread_mentions_count: Some(2),
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), inner);
}
