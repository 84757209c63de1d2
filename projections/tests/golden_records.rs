//! Golden bytes of every projection record encoding and key layout (FORMAT.md): a change
//! to any of them must fail here, and then bump `PROJECTION_SCHEMA_VERSION`.
//! Each record test encodes a record with every field set and compares the bytes, then
//! decodes the pinned bytes back to the same record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_projections::keys;
use osmium_projections::limits::PROJECTION_SCHEMA_VERSION;
use osmium_projections::records::{
    self, ChatKind, ChatRecord, GroupInfo, InviteRecord, MemberRecord, MessageRecord, NotifPrefs, UserRecord,
};
use osmium_projections::{MemStore, Table};
use osmium_proto::ids::{ChatId, MessageId, Position, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap()).collect()
}

/// `record` encodes to exactly `golden`, and `golden` decodes to `record`.
fn assert_golden<T: Serialize + DeserializeOwned + PartialEq + Debug>(table: Table, record: &T, golden: &str) {
    assert_eq!(hex(&records::encode(record)), golden, "encoding of a {} record changed", table.name());
    let decoded: T = records::decode(table, b"key", &unhex(golden)).unwrap();
    assert_eq!(&decoded, record);
}

const CHAT: ChatId = ChatId(0x0102_0304_0506_0708);
const USER: UserId = UserId(0x1112_1314_1516_1718);
const PEER: UserId = UserId(0x2122_2324_2526_2728);
const MESSAGE: MessageId = MessageId(0x3132_3334_3536_3738);

#[test]
fn a_group_chat_record_keeps_its_bytes() {
    let group = GroupInfo {
        name: "crew".into(),
        owner: UserId(7),
        photo: Some((300, vec![0xAA, 0xBB])),
        highlighted: Some(MessageId(9)),
        closed: true,
    };
    let record = ChatRecord {
        kind: ChatKind::Group(group),
        last_seq: 42,
        last_message_id: MessageId(1_000),
        member_count: 3,
        joins: 4,
        large: false,
        chat_sequence: true,
        last_update_position: Position(0),
    };
    assert_golden(Table::ChatidChat, &record, "0004637265770701fb2c0102aabb0109012afbe8030304000100");
}

#[test]
fn a_direct_chat_record_keeps_its_bytes() {
    let record = ChatRecord {
        kind: ChatKind::Direct { user_a: UserId(1), user_b: UserId(2) },
        last_seq: 0,
        last_message_id: MessageId(77),
        member_count: 2,
        joins: 2,
        large: true,
        chat_sequence: false,
        last_update_position: Position(300),
    };
    assert_golden(Table::ChatidChat, &record, "010102004d02020100fb2c01");
}

#[test]
fn a_member_record_keeps_its_bytes() {
    let record = MemberRecord {
        join_order: 5,
        read_seq: 251,
        read_message_id: MessageId(65_536),
        draft: Some("hé".into()),
        notif_prefs: NotifPrefs::Mentions,
        overrides: Some((32, 4)),
        chat_sequence_from: Position(70_000),
    };
    assert_golden(Table::ChatidUseridMember, &record, "05fbfb00fc00000100010368c3a901012004fc70110100");
}

#[test]
fn every_notification_preference_keeps_its_tag() {
    let tags: Vec<String> = [NotifPrefs::All, NotifPrefs::Mentions, NotifPrefs::None, NotifPrefs::Default]
        .iter()
        .map(|prefs| hex(&records::encode(prefs)))
        .collect();
    assert_eq!(tags, ["00", "01", "02", "03"]);
}

#[test]
fn a_message_record_keeps_its_bytes() {
    let record = MessageRecord {
        seq: 3,
        author: UserId(2),
        sent_at_ms: 1_750_000_000_000,
        deleted: false,
        text: "hi".into(),
        entities: vec![vec![0x0A, 0x01]],
        media: vec![vec![0x12]],
        edited_at_ms: Some(1),
        message_type: -1,
        client_id: Some(300),
        reply: Some(vec![0x08, 0x05]),
        mentions: vec![UserId(4), UserId(6)],
    };
    assert_golden(Table::ChatidMsgidMessage, &record, "0302fd00dc2074970100000002686901020a0101011201010101fb2c0101020805020406");
}

#[test]
fn an_invite_record_keeps_its_bytes() {
    let record = InviteRecord {
        chat: ChatId(10),
        creator: UserId(1),
        created_at_ms: 1_000,
        expires_at_ms: Some(2_000),
        max_uses: Some(5),
        uses: 5,
        used_up_at_ms: Some(1_500),
    };
    assert_golden(Table::CodeInvite, &record, "0a01fbe80301fbd00701050501fbdc05");
}

#[test]
fn a_user_record_keeps_its_bytes() {
    let record = UserRecord {
        name: "Ann".into(),
        username: Some("ann".into()),
        photo: Some((1, vec![0xFF])),
        bot: true,
        icon: Some(2),
        color: Some(0x00FF_00FF),
    };
    assert_golden(Table::UseridUser, &record, "03416e6e0103616e6e010101ff01010201fcff00ff00");
}

#[test]
fn kept_permission_overrides_are_pos_then_neg_big_endian() {
    assert_eq!(hex(&records::encode_overrides((32, 4))), "00000000000000200000000000000004");
}

#[test]
fn the_checkpoint_and_schema_version_keep_their_bytes() {
    let mut store = MemStore::new();
    records::save_checkpoint(&mut store, Position(0x0102));
    let checkpoint = osmium_projections::StoreRead::get(&store, Table::ProjectionMeta, keys::META_CHECKPOINT).unwrap().unwrap();
    assert_eq!(hex(&checkpoint), "0000000000000102");
    assert_eq!(keys::META_CHECKPOINT, b"checkpoint");
    assert_eq!(keys::META_SCHEMA_VERSION, b"schema_version");
    assert_eq!(PROJECTION_SCHEMA_VERSION, 3);
}

#[test]
fn every_key_layout_keeps_its_bytes() {
    let chat = "0102030405060708";
    let user = "1112131415161718";
    let peer = "2122232425262728";
    let message = "3132333435363738";
    assert_eq!(hex(&keys::chat(CHAT)), chat);
    assert_eq!(hex(&keys::member(CHAT, USER)), format!("{chat}{user}"));
    assert_eq!(hex(&keys::parked_overrides(CHAT, USER)), format!("{chat}{user}"));
    assert_eq!(hex(&keys::chat_list_entry(USER, MESSAGE, CHAT)), format!("{user}{message}{chat}"));
    assert_eq!(hex(&keys::large_chat(USER, CHAT)), format!("{user}{chat}"));
    assert_eq!(hex(&keys::chat_sequence(USER, CHAT)), format!("{user}{chat}"));
    assert_eq!(hex(&keys::message(CHAT, MESSAGE)), format!("{chat}{message}"));
    assert_eq!(hex(&keys::deleted_seq(CHAT, 9)), format!("{chat}0000000000000009"));
    assert_eq!(hex(&keys::direct_chat(PEER, USER)), format!("{user}{peer}"), "lower user id first");
    assert_eq!(hex(&keys::mention(CHAT, USER, 9)), format!("{chat}{user}0000000000000009"));
    assert_eq!(keys::username("AnN_é"), "ann_é".as_bytes(), "ASCII letters lowercased, the rest as is");
    assert_eq!(keys::invite("Ab-9"), b"Ab-9");
    assert_eq!(hex(&keys::chat_invite(CHAT, "Ab")), format!("{chat}4162"));
    assert_eq!(hex(&keys::user(USER)), user);
    assert_eq!(hex(&keys::user_update(USER, Position(9))), format!("{user}0000000000000009"));
    assert_eq!(hex(&keys::chat_update(CHAT, Position(9))), format!("{chat}0000000000000009"));
    assert_eq!(hex(&keys::position_effect(Position(9))), "0000000000000009");
}

#[test]
fn a_catch_up_user_entry_keeps_its_bytes() {
    let entry = osmium_projections::catch_up::UserEntry { effects_mask: 0b101, notif_prefs: NotifPrefs::None };
    assert_golden(Table::UseridPositionUpdate, &entry, "0502");
}

#[test]
fn every_table_keeps_its_column_family_name() {
    let names: Vec<&str> = Table::ALL.iter().map(|table| table.name()).collect();
    assert_eq!(
        names,
        [
            "chatid_chat",
            "chatid_userid_member",
            "userid_lastmsgid_chatid_chatlist",
            "userid_chatid_largechat",
            "userid_chatid_chatsequence",
            "chatid_msgid_message",
            "chatid_seq_deleted",
            "userid_userid_dm",
            "code_invite",
            "chatid_code_invite",
            "userid_user",
            "chatid_userid_seq_mention",
            "username_userid",
            "chatid_userid_override",
            "userid_position_update",
            "chatid_position_update",
            "position_effect",
            "projection_meta",
        ]
    );
}
