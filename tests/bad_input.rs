//! Bad input, table-driven: every command with each kind of invalid input gets its
//! specific typed error, and a dump of the projections is byte-identical before and
//! after (and the log does not grow).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::refs::{ChannelRef, ChatRef, chat_ref::Ref};
use osmium_state::proto::{auth, chats, media, messages, refs, types};
use osmium_state::{ChatEngine, EngineError};

#[derive(Clone, Copy, Debug)]
enum Case {
    SendToUnknownGroup,
    SendAsNonMember,
    SendWithoutTextOrMedia,
    SendOversizedText,
    SendWithoutChatRef,
    SendToAChannel,
    SendToUnknownUser,
    SendWithAnEntityPastTheText,
    SendOversizedAttachment,
    CreateChatWithEmptyName,
    CreateChatWithLongName,
    CreateChatWithUnknownUser,
    EditChatAsMember,
    EditChatWithOversizedPhoto,
    AddMemberAsMember,
    AddExistingMember,
    RemoveNonMember,
    EditSomeoneElsesMessage,
    EditUnknownMessage,
    DeleteNoMessages,
    DeleteTooManyMessages,
    MarkReadInUnknownChat,
    SaveOversizedDraft,
    SetOverridesAsMember,
    SetOverlappingOverrides,
    InviteToDirectChat,
    InviteExpiringInThePast,
    InviteWithZeroUses,
    InviteAsMember,
    UseUnknownInvite,
    UseInviteAsMember,
    DeleteUnknownInvite,
    GetChatsWithZeroLimit,
    GetHistoryWithZeroLimit,
    UpsertUserWithZeroId,
    UpsertUserWithEmptyName,
    UpsertUserWithOversizedPhoto,
    SendReplyToAnUnknownMessage,
    SendReplyToAMessageOfAnotherChat,
    SendReplyToADeletedMessage,
    SendReplyToAnotherMessageThanReplyToOld,
    SendReplyInADmItsMessageCreates,
    SendUploadWithoutItsFileReference,
    SendUploadWithFileIdZero,
    SendEmbedWithoutUrl,
    EditChatPhotoWithFileIdZero,
    EditWithNothingToChange,
    EditRemovingAndReplacingMedia,
    EditLeavingNeitherTextNorMedia,
    EditWithAnEntityPastTheText,
    EditWithMediaDeniedByOverrides,
    UpsertUserWithATakenUsername,
    UpsertUserWithALongUsername,
    SetNotifPrefsInUnknownChat,
    GetUnreadMentionsAsNonMember,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    NotFound,
    Denied,
    Invalid(&'static str),
    AlreadyMember,
    InviteNotFound,
    ReplyTargetNotFound,
    UsernameTaken,
}

const CASES: [(Case, Expect); 55] = [
    (Case::SendToUnknownGroup, Expect::NotFound),
    (Case::SendAsNonMember, Expect::NotFound),
    (Case::SendWithoutTextOrMedia, Expect::Invalid("message")),
    (Case::SendOversizedText, Expect::Invalid("message")),
    (Case::SendWithoutChatRef, Expect::Invalid("chat_ref")),
    (Case::SendToAChannel, Expect::Invalid("chat_ref")),
    (Case::SendToUnknownUser, Expect::NotFound),
    (Case::SendWithAnEntityPastTheText, Expect::Invalid("entities")),
    (Case::SendOversizedAttachment, Expect::Invalid("request")),
    (Case::CreateChatWithEmptyName, Expect::Invalid("name")),
    (Case::CreateChatWithLongName, Expect::Invalid("name")),
    (Case::CreateChatWithUnknownUser, Expect::NotFound),
    (Case::EditChatAsMember, Expect::Denied),
    (Case::EditChatWithOversizedPhoto, Expect::Invalid("request")),
    (Case::AddMemberAsMember, Expect::Denied),
    (Case::AddExistingMember, Expect::AlreadyMember),
    (Case::RemoveNonMember, Expect::NotFound),
    (Case::EditSomeoneElsesMessage, Expect::Denied),
    (Case::EditUnknownMessage, Expect::NotFound),
    (Case::DeleteNoMessages, Expect::Invalid("message_ids")),
    (Case::DeleteTooManyMessages, Expect::Invalid("message_ids")),
    (Case::MarkReadInUnknownChat, Expect::NotFound),
    (Case::SaveOversizedDraft, Expect::Invalid("draft")),
    (Case::SetOverridesAsMember, Expect::Denied),
    (Case::SetOverlappingOverrides, Expect::Invalid("permissions")),
    (Case::InviteToDirectChat, Expect::Invalid("chat_ref")),
    (Case::InviteExpiringInThePast, Expect::Invalid("expires_at")),
    (Case::InviteWithZeroUses, Expect::Invalid("max_uses")),
    (Case::InviteAsMember, Expect::Denied),
    (Case::UseUnknownInvite, Expect::InviteNotFound),
    (Case::UseInviteAsMember, Expect::AlreadyMember),
    (Case::DeleteUnknownInvite, Expect::InviteNotFound),
    (Case::GetChatsWithZeroLimit, Expect::Invalid("limit")),
    (Case::GetHistoryWithZeroLimit, Expect::Invalid("limit")),
    (Case::UpsertUserWithZeroId, Expect::Invalid("id")),
    (Case::UpsertUserWithEmptyName, Expect::Invalid("name")),
    (Case::UpsertUserWithOversizedPhoto, Expect::Invalid("request")),
    (Case::SendReplyToAnUnknownMessage, Expect::ReplyTargetNotFound),
    (Case::SendReplyToAMessageOfAnotherChat, Expect::ReplyTargetNotFound),
    (Case::SendReplyToADeletedMessage, Expect::ReplyTargetNotFound),
    (Case::SendReplyToAnotherMessageThanReplyToOld, Expect::Invalid("reply_to")),
    (Case::SendReplyInADmItsMessageCreates, Expect::ReplyTargetNotFound),
    (Case::SendUploadWithoutItsFileReference, Expect::Invalid("media")),
    (Case::SendUploadWithFileIdZero, Expect::Invalid("media")),
    (Case::SendEmbedWithoutUrl, Expect::Invalid("media")),
    (Case::EditChatPhotoWithFileIdZero, Expect::Invalid("photo")),
    (Case::EditWithNothingToChange, Expect::Invalid("message")),
    (Case::EditRemovingAndReplacingMedia, Expect::Invalid("remove_media")),
    (Case::EditLeavingNeitherTextNorMedia, Expect::Invalid("message")),
    (Case::EditWithAnEntityPastTheText, Expect::Invalid("entities")),
    (Case::EditWithMediaDeniedByOverrides, Expect::Denied),
    (Case::UpsertUserWithATakenUsername, Expect::UsernameTaken),
    (Case::UpsertUserWithALongUsername, Expect::Invalid("username")),
    (Case::SetNotifPrefsInUnknownChat, Expect::NotFound),
    (Case::GetUnreadMentionsAsNonMember, Expect::NotFound),
];

struct World {
    group: u64,
    bobs_message: u64,
    /// Ann's message in the group, deleted.
    deleted_message: u64,
    /// Ann's text-only message in the group.
    anns_message: u64,
    code: String,
}

/// More bytes than the default `request_bytes_max` (1 MiB) allows.
fn oversized_text() -> String {
    "b".repeat(1024 * 1024 + 1)
}

fn request(chat_ref: Option<ChatRef>, text: &str) -> messages::SendMessage {
    messages::SendMessage { chat_ref, message: text.into(), ..Default::default() }
}

async fn attempt(engine: &ChatEngine, world: &World, case: Case) -> Result<(), EngineError> {
    let group_ref = Some(group(world.group));
    let invite = |chat_ref, expires_at, max_uses| chats::CreateChatInvite { chat_ref, expires_at, max_uses };
    match case {
        Case::SendToUnknownGroup => engine.send_message(ANN, request(Some(group(42)), "x")).await.map(drop),
        Case::SendAsNonMember => engine.send_message(DAN, request(group_ref, "x")).await.map(drop),
        Case::SendWithoutTextOrMedia => engine.send_message(ANN, request(group_ref, "")).await.map(drop),
        Case::SendOversizedText => engine.send_message(ANN, request(group_ref, &"x".repeat(4_097))).await.map(drop),
        Case::SendWithoutChatRef => engine.send_message(ANN, request(None, "x")).await.map(drop),
        Case::SendToAChannel => {
            let channel = ChatRef { r#ref: Some(Ref::Channel(ChannelRef { community_id: 1, channel_id: 2 })) };
            engine.send_message(ANN, request(Some(channel), "x")).await.map(drop)
        }
        Case::SendToUnknownUser => engine.send_message(ANN, request(Some(dm(UserId(999))), "x")).await.map(drop),
        Case::SendWithAnEntityPastTheText => {
            let entity = types::MessageEntity { start_index: 1, length: 5, entity: Some(types::message_entity::Entity::Bold(true)) };
            let request = messages::SendMessage { entities: vec![entity], ..request(group_ref, "abc") };
            engine.send_message(ANN, request).await.map(drop)
        }
        Case::SendOversizedAttachment => {
            let file = media::UploadedFileRef { id: 1, ..Default::default() };
            let uploaded = media::MediaRefUploadedFile { file: Some(file), filename: Some(oversized_text()), mimetype: "text/plain".into(), ..Default::default() };
            let request = messages::SendMessage { media: vec![upload(uploaded)], ..request(group_ref, "x") };
            engine.send_message(ANN, request).await.map(drop)
        }
        Case::CreateChatWithEmptyName => engine.create_chat(ANN, chats::CreateChat { users: vec![], name: String::new() }).await.map(drop),
        Case::CreateChatWithLongName => engine.create_chat(ANN, chats::CreateChat { users: vec![], name: "n".repeat(101) }).await.map(drop),
        Case::CreateChatWithUnknownUser => {
            let users = vec![refs::UserRef { user_id: 999 }];
            engine.create_chat(ANN, chats::CreateChat { users, name: "g".into() }).await.map(drop)
        }
        Case::EditChatAsMember => {
            engine.edit_chat(BOB, chats::EditChat { chat_ref: group_ref, name: Some("mine".into()), ..Default::default() }).await.map(drop)
        }
        Case::EditChatWithOversizedPhoto => {
            let photo = Some(chats::edit_chat::Photo { file: Some(media::UploadedFileRef { id: 1, name: oversized_text(), part_count: 1 }) });
            engine.edit_chat(ANN, chats::EditChat { chat_ref: group_ref, photo, ..Default::default() }).await.map(drop)
        }
        Case::AddMemberAsMember => engine.add_chat_member(BOB, chats::AddChatMember { chat_ref: group_ref, user_id: CAT.get() }).await,
        Case::AddExistingMember => engine.add_chat_member(ANN, chats::AddChatMember { chat_ref: group_ref, user_id: BOB.get() }).await,
        Case::RemoveNonMember => engine.remove_chat_member(ANN, chats::RemoveChatMember { chat_ref: group_ref, user_id: DAN.get() }).await,
        Case::EditSomeoneElsesMessage => {
            let edit = messages::EditMessage { chat_ref: group_ref, message_id: world.bobs_message, message: Some("y".into()), ..Default::default() };
            engine.edit_message(ANN, edit).await
        }
        Case::EditUnknownMessage => {
            engine.edit_message(ANN, messages::EditMessage { chat_ref: group_ref, message_id: 5, message: Some("y".into()), ..Default::default() }).await
        }
        Case::DeleteNoMessages => engine.delete_message(ANN, messages::DeleteMessage { chat_ref: group_ref, message_ids: vec![] }).await,
        Case::DeleteTooManyMessages => {
            let message_ids = (1..=101).collect();
            engine.delete_message(ANN, messages::DeleteMessage { chat_ref: group_ref, message_ids }).await
        }
        Case::MarkReadInUnknownChat => {
            engine.mark_chat_read(ANN, chats::MarkChatRead { chat_ref: Some(group(42)), message_id: 1, read_amount: None }).await
        }
        Case::SaveOversizedDraft => engine.save_draft(ANN, group(world.group), Some("d".repeat(4_097))).await,
        Case::SetOverridesAsMember => {
            engine.set_permission_overrides(BOB, group(world.group), ANN, types::PermissionOverrides { pos: 0, neg: 4 }).await
        }
        Case::SetOverlappingOverrides => {
            engine.set_permission_overrides(ANN, group(world.group), BOB, types::PermissionOverrides { pos: 4, neg: 4 }).await
        }
        Case::InviteToDirectChat => engine.create_chat_invite(ANN, invite(Some(dm(BOB)), None, None)).await.map(drop),
        Case::InviteExpiringInThePast => engine.create_chat_invite(ANN, invite(group_ref, Some(START_MS), None)).await.map(drop),
        Case::InviteWithZeroUses => engine.create_chat_invite(ANN, invite(group_ref, None, Some(0))).await.map(drop),
        Case::InviteAsMember => engine.create_chat_invite(BOB, invite(group_ref, None, None)).await.map(drop),
        Case::UseUnknownInvite => engine.use_invite(CAT, auth::UseInvite { code: "unknown".into() }).await,
        Case::UseInviteAsMember => engine.use_invite(BOB, auth::UseInvite { code: world.code.clone() }).await,
        Case::DeleteUnknownInvite => engine.delete_chat_invite(ANN, chats::DeleteChatInvite { code: "unknown".into() }).await,
        Case::GetChatsWithZeroLimit => engine.get_chats(ANN, chats::GetChats { limit: Some(0), ..Default::default() }).await.map(drop),
        Case::GetHistoryWithZeroLimit => {
            engine.get_history(ANN, messages::GetHistory { chat_ref: group_ref, limit: Some(0), offset: None }).await.map(drop)
        }
        Case::UpsertUserWithZeroId => engine.upsert_user(types::User { id: 0, name: "z".into(), ..Default::default() }).await,
        Case::UpsertUserWithEmptyName => engine.upsert_user(types::User { id: 9, name: String::new(), ..Default::default() }).await,
        Case::UpsertUserWithOversizedPhoto => {
            let photo = Some(types::ChatPhoto { file_id: 1, preview: oversized_text().into_bytes() });
            engine.upsert_user(types::User { id: ANN.get(), name: "ann".into(), photo, ..Default::default() }).await
        }
        Case::SendReplyToAnUnknownMessage => engine.send_message(ANN, reply(group_ref, Some(12_345), None)).await.map(drop),
        Case::SendReplyToAMessageOfAnotherChat => {
            engine.send_message(ANN, reply(Some(dm(BOB)), Some(world.bobs_message), None)).await.map(drop)
        }
        Case::SendReplyToADeletedMessage => engine.send_message(ANN, reply(group_ref, Some(world.deleted_message), None)).await.map(drop),
        Case::SendReplyToAnotherMessageThanReplyToOld => {
            engine.send_message(ANN, reply(group_ref, Some(world.bobs_message), Some(world.anns_message))).await.map(drop)
        }
        Case::SendReplyInADmItsMessageCreates => engine.send_message(ANN, reply(Some(dm(CAT)), None, Some(world.bobs_message))).await.map(drop),
        Case::SendUploadWithoutItsFileReference => {
            let uploaded = media::MediaRefUploadedFile { mimetype: "image/png".into(), ..Default::default() };
            engine.send_message(ANN, messages::SendMessage { media: vec![upload(uploaded)], ..request(group_ref, "x") }).await.map(drop)
        }
        Case::SendUploadWithFileIdZero => {
            engine.send_message(ANN, messages::SendMessage { media: vec![uploaded(0, "image/png")], ..request(group_ref, "x") }).await.map(drop)
        }
        Case::SendEmbedWithoutUrl => {
            let embed = media::MediaRef { r#ref: Some(media::media_ref::Ref::Embed(media::MediaRefEmbed { url: String::new() })) };
            engine.send_message(ANN, messages::SendMessage { media: vec![embed], ..request(group_ref, "x") }).await.map(drop)
        }
        Case::EditChatPhotoWithFileIdZero => {
            let photo = Some(chats::edit_chat::Photo { file: Some(media::UploadedFileRef::default()) });
            engine.edit_chat(ANN, chats::EditChat { chat_ref: group_ref, photo, ..Default::default() }).await.map(drop)
        }
        Case::EditWithNothingToChange => {
            engine.edit_message(ANN, messages::EditMessage { chat_ref: group_ref, message_id: world.anns_message, ..Default::default() }).await
        }
        Case::EditRemovingAndReplacingMedia => {
            let edit = messages::EditMessage {
                chat_ref: group_ref,
                message_id: world.anns_message,
                remove_media: true,
                media: vec![uploaded(7, "image/png")],
                ..Default::default()
            };
            engine.edit_message(ANN, edit).await
        }
        Case::EditLeavingNeitherTextNorMedia => {
            let edit = messages::EditMessage { chat_ref: group_ref, message_id: world.anns_message, message: Some(String::new()), ..Default::default() };
            engine.edit_message(ANN, edit).await
        }
        Case::EditWithAnEntityPastTheText => {
            let entity = types::MessageEntity { start_index: 0, length: 50, entity: Some(types::message_entity::Entity::Bold(true)) };
            let edit = messages::EditMessage { chat_ref: group_ref, message_id: world.anns_message, entities: vec![entity], ..Default::default() };
            engine.edit_message(ANN, edit).await
        }
        Case::EditWithMediaDeniedByOverrides => {
            let edit = messages::EditMessage {
                chat_ref: group_ref,
                message_id: world.bobs_message,
                media: vec![uploaded(7, "image/png")],
                ..Default::default()
            };
            engine.edit_message(BOB, edit).await
        }
        Case::UpsertUserWithATakenUsername => {
            engine.upsert_user(types::User { id: BOB.get(), name: "bob".into(), username: Some("ANN".into()), ..Default::default() }).await
        }
        Case::UpsertUserWithALongUsername => {
            engine.upsert_user(types::User { id: BOB.get(), name: "bob".into(), username: Some("b".repeat(65)), ..Default::default() }).await
        }
        Case::SetNotifPrefsInUnknownChat => engine.set_notif_prefs(ANN, group(42), types::NotifPrefs::Mentions).await,
        Case::GetUnreadMentionsAsNonMember => {
            engine.get_unread_mentions(DAN, osmium_state::proto::core::GetUnreadMentions { chat_ref: group_ref }).await.map(drop)
        }
    }
}

fn upload(uploaded: media::MediaRefUploadedFile) -> media::MediaRef {
    media::MediaRef { r#ref: Some(media::media_ref::Ref::Uploaded(uploaded)) }
}

/// A send that replies with `reply_to` (7) and/or the deprecated `reply_to_old` (3).
fn reply(chat_ref: Option<ChatRef>, reply_to: Option<u64>, reply_to_old: Option<u64>) -> messages::SendMessage {
    let reply_to = reply_to.map(|message_id| messages::send_message::ReplyTo { message_id, quote: None });
    messages::SendMessage { reply_to, reply_to_old, ..request(chat_ref, "re") }
}

fn matches_expectation(error: &EngineError, expect: Expect) -> bool {
    match (error, expect) {
        (EngineError::NotFound { .. }, Expect::NotFound) => true,
        (EngineError::PermissionDenied { .. }, Expect::Denied) => true,
        (EngineError::InvalidArgument { field, .. }, Expect::Invalid(expected)) => *field == expected,
        (EngineError::AlreadyMember, Expect::AlreadyMember) => true,
        (EngineError::InviteNotFound, Expect::InviteNotFound) => true,
        (EngineError::ReplyTargetNotFound { .. }, Expect::ReplyTargetNotFound) => true,
        (EngineError::UsernameTaken { .. }, Expect::UsernameTaken) => true,
        _ => false,
    }
}

#[tokio::test]
async fn every_invalid_command_gets_its_typed_error_and_changes_nothing() {
    let f = fixture().await;
    let group_id = create_group(&f.engine, ANN, &[BOB]).await;
    let bobs_message = send(&f.engine, BOB, &group(group_id), "hello").await.get();
    let deleted_message = send(&f.engine, ANN, &group(group_id), "soon gone").await.get();
    let delete = messages::DeleteMessage { chat_ref: Some(group(group_id)), message_ids: vec![deleted_message] };
    f.engine.delete_message(ANN, delete).await.unwrap();
    let anns_message = send(&f.engine, ANN, &group(group_id), "text only").await.get();
    send(&f.engine, ANN, &dm(BOB), "hello").await;
    let ann = types::User { id: ANN.get(), name: "ann".into(), username: Some("ann".into()), ..Default::default() };
    f.engine.upsert_user(ann).await.unwrap();
    let deny_media = types::PermissionOverrides { pos: 0, neg: 32 };
    f.engine.set_permission_overrides(ANN, group(group_id), BOB, deny_media).await.unwrap();
    let code = f
        .engine
        .create_chat_invite(ANN, chats::CreateChatInvite { chat_ref: Some(group(group_id)), expires_at: None, max_uses: Some(5) })
        .await
        .unwrap()
        .code;
    let world = World { group: group_id, bobs_message, deleted_message, anns_message, code };
    for (case, expect) in CASES {
        let projections_before = f.engine.projection_contents().unwrap();
        let position_before = f.engine.last_position();
        let outcome = attempt(&f.engine, &world, case).await;
        match &outcome {
            Err(error) => assert!(matches_expectation(error, expect), "{case:?}: expected {expect:?}, got {error:?}"),
            Ok(()) => panic!("{case:?}: expected {expect:?}, but it succeeded"),
        }
        assert_eq!(f.engine.last_position(), position_before, "{case:?} wrote to the log");
        assert!(f.engine.projection_contents().unwrap() == projections_before, "{case:?} changed the projections");
    }
}
