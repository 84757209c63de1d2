//! Owner-based groups, permissions, membership visibility, invites, typing and limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::*;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::updates::update::Update;
use osmium_state::proto::{auth, chats, messages, refs, types};
use osmium_state::EngineError;

fn add(id: u64, user: UserId) -> chats::AddChatMember {
    chats::AddChatMember { chat_ref: Some(group(id)), user_id: user.get() }
}

fn remove(id: u64, user: UserId) -> chats::RemoveChatMember {
    chats::RemoveChatMember { chat_ref: Some(group(id)), user_id: user.get() }
}

fn invite_request(id: u64, expires_at: Option<u64>, max_uses: Option<u32>) -> chats::CreateChatInvite {
    chats::CreateChatInvite { chat_ref: Some(group(id)), expires_at, max_uses }
}

async fn invite(f: &Fixture, id: u64, max_uses: Option<u32>) -> String {
    f.engine.create_chat_invite(ANN, invite_request(id, None, max_uses)).await.unwrap().code
}

fn use_code(code: &str) -> auth::UseInvite {
    auth::UseInvite { code: code.into() }
}

#[tokio::test]
async fn the_group_shows_owner_true_only_to_its_owner() {
    let f = fixture().await;
    let created = f.engine.create_chat(ANN, chats::CreateChat { users: vec![refs::UserRef { user_id: 2 }], name: "g".into() });
    let created = created.await.unwrap();
    assert!(created.owner);
    assert_eq!(created.participant_ids, [ANN.get(), BOB.get()]);
    let bob_view = f.engine.get_chat(BOB, chats::GetChat { chat_ref: Some(group(created.id)) }).await.unwrap();
    assert!(!bob_view.group.unwrap().owner);
}

#[tokio::test]
async fn only_the_owner_edits_the_group_and_adds_or_removes_others() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    let rename = chats::EditChat { chat_ref: Some(group(id)), name: Some("renamed".into()), ..Default::default() };
    let refused = f.engine.edit_chat(BOB, rename.clone()).await;
    assert!(matches!(refused, Err(EngineError::PermissionDenied { .. })), "{refused:?}");
    assert!(matches!(f.engine.add_chat_member(BOB, add(id, DAN)).await, Err(EngineError::PermissionDenied { .. })));
    assert!(matches!(f.engine.remove_chat_member(BOB, remove(id, CAT)).await, Err(EngineError::PermissionDenied { .. })));
    let edited = f.engine.edit_chat(ANN, rename).await.unwrap();
    assert_eq!(edited.group.unwrap().name, "renamed");
    f.engine.add_chat_member(ANN, add(id, DAN)).await.unwrap();
    assert!(matches!(f.engine.add_chat_member(ANN, add(id, DAN)).await, Err(EngineError::AlreadyMember)));
    f.engine.remove_chat_member(ANN, remove(id, CAT)).await.unwrap();
    let group_view = f.engine.get_chat(ANN, chats::GetChat { chat_ref: Some(group(id)) }).await.unwrap().group.unwrap();
    assert_eq!(group_view.participant_ids, [ANN.get(), BOB.get(), DAN.get()]);
}

#[tokio::test]
async fn any_member_may_leave() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.remove_chat_member(BOB, remove(id, BOB)).await.unwrap();
    assert!(matches!(conversation_result(&f.engine, BOB, &group(id)).await, Err(EngineError::NotFound { .. })));
    assert!(f.engine.get_chats(BOB, chats::GetChats::default()).await.unwrap().chats.is_empty());
}

#[tokio::test]
async fn when_the_owner_leaves_the_longest_standing_member_becomes_owner() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[CAT, BOB]).await; // CAT joined before BOB
    f.engine.add_chat_member(ANN, add(id, DAN)).await.unwrap();
    f.engine.remove_chat_member(ANN, remove(id, ANN)).await.unwrap();
    let cat_view = f.engine.get_chat(CAT, chats::GetChat { chat_ref: Some(group(id)) }).await.unwrap();
    assert!(cat_view.group.unwrap().owner);
    f.engine.add_chat_member(CAT, add(id, EVE)).await.unwrap();
}

#[tokio::test]
async fn a_group_left_empty_is_closed() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let code = invite(&f, id, None).await;
    f.engine.remove_chat_member(ANN, remove(id, ANN)).await.unwrap();
    f.engine.remove_chat_member(BOB, remove(id, BOB)).await.unwrap();
    assert!(matches!(f.engine.use_invite(CAT, use_code(&code)).await, Err(EngineError::InviteNotFound)));
    assert!(matches!(conversation_result(&f.engine, BOB, &group(id)).await, Err(EngineError::NotFound { .. })));
}

#[tokio::test]
async fn permission_overrides_can_deny_sending_and_media_and_show_in_the_viewers_conversation() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let deny_media = types::PermissionOverrides { pos: 0, neg: 32 };
    f.engine.set_permission_overrides(ANN, group(id), BOB, deny_media).await.unwrap();
    assert_eq!(conversation(&f.engine, BOB, &group(id)).await.permissions, Some(deny_media));
    send(&f.engine, BOB, &group(id), "text is fine").await;
    let with_media = messages::SendMessage {
        chat_ref: Some(group(id)),
        message: "pic".into(),
        media: vec![uploaded(9, "image/png")],
        ..Default::default()
    };
    assert!(matches!(f.engine.send_message(BOB, with_media.clone()).await, Err(EngineError::PermissionDenied { .. })));
    f.engine.set_permission_overrides(ANN, group(id), BOB, types::PermissionOverrides { pos: 0, neg: 4 }).await.unwrap();
    let text = messages::SendMessage { chat_ref: Some(group(id)), message: "x".into(), ..Default::default() };
    assert!(matches!(f.engine.send_message(BOB, text).await, Err(EngineError::PermissionDenied { .. })));
    f.engine.send_message(ANN, with_media).await.unwrap();
    let refused = f.engine.set_permission_overrides(BOB, group(id), ANN, types::PermissionOverrides::default()).await;
    assert!(matches!(refused, Err(EngineError::PermissionDenied { .. })));
}

fn text(id: u64, message: &str) -> messages::SendMessage {
    messages::SendMessage { chat_ref: Some(group(id)), message: message.into(), ..Default::default() }
}

const DENY_SEND: types::PermissionOverrides = types::PermissionOverrides { pos: 0, neg: 4 };

#[tokio::test]
async fn a_send_ban_survives_leaving_and_rejoining_through_an_invite() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_permission_overrides(ANN, group(id), BOB, DENY_SEND).await.unwrap();
    f.engine.remove_chat_member(BOB, remove(id, BOB)).await.unwrap();
    let code = invite(&f, id, None).await;
    f.engine.use_invite(BOB, use_code(&code)).await.unwrap();
    assert_eq!(conversation(&f.engine, BOB, &group(id)).await.permissions, Some(DENY_SEND));
    assert!(matches!(f.engine.send_message(BOB, text(id, "back")).await, Err(EngineError::PermissionDenied { .. })));
}

#[tokio::test]
async fn a_send_ban_survives_removal_by_the_owner_and_being_added_again() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_permission_overrides(ANN, group(id), BOB, DENY_SEND).await.unwrap();
    f.engine.remove_chat_member(ANN, remove(id, BOB)).await.unwrap();
    f.engine.add_chat_member(ANN, add(id, BOB)).await.unwrap();
    assert!(matches!(f.engine.send_message(BOB, text(id, "back")).await, Err(EngineError::PermissionDenied { .. })));
}

#[tokio::test]
async fn the_owner_clears_a_ban_while_the_user_is_away_and_they_rejoin_free() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_permission_overrides(ANN, group(id), BOB, DENY_SEND).await.unwrap();
    f.engine.remove_chat_member(BOB, remove(id, BOB)).await.unwrap();
    f.engine.set_permission_overrides(ANN, group(id), BOB, types::PermissionOverrides::default()).await.unwrap();
    f.engine.add_chat_member(ANN, add(id, BOB)).await.unwrap();
    assert_eq!(conversation(&f.engine, BOB, &group(id)).await.permissions, None);
    f.engine.send_message(BOB, text(id, "free")).await.unwrap();
}

#[tokio::test]
async fn the_owner_bans_a_user_before_they_ever_join() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_permission_overrides(ANN, group(id), DAN, DENY_SEND).await.unwrap();
    let code = invite(&f, id, None).await;
    f.engine.use_invite(DAN, use_code(&code)).await.unwrap();
    assert!(matches!(f.engine.send_message(DAN, text(id, "hi")).await, Err(EngineError::PermissionDenied { .. })));
}

#[tokio::test]
async fn overrides_for_an_unknown_user_are_not_found_and_change_nothing() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let before = f.engine.last_position();
    let refused = f.engine.set_permission_overrides(ANN, group(id), UserId(999_999), DENY_SEND).await;
    assert!(matches!(refused, Err(EngineError::NotFound { .. })), "{refused:?}");
    assert_eq!(f.engine.last_position(), before);
}

#[tokio::test]
async fn a_kept_ban_is_in_the_projections_after_a_reopen_and_equals_the_fold_of_the_log() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_permission_overrides(ANN, group(id), BOB, DENY_SEND).await.unwrap();
    f.engine.remove_chat_member(BOB, remove(id, BOB)).await.unwrap();
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
    let f = f.reopen().await;
    f.engine.add_chat_member(ANN, add(id, BOB)).await.unwrap();
    assert!(matches!(f.engine.send_message(BOB, text(id, "back")).await, Err(EngineError::PermissionDenied { .. })));
}

#[tokio::test]
async fn non_members_get_not_found_for_everything_about_a_group() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    send(&f.engine, ANN, &group(id), "secret").await;
    let outsider_send = messages::SendMessage { chat_ref: Some(group(id)), message: "hi".into(), ..Default::default() };
    assert!(matches!(f.engine.send_message(CAT, outsider_send).await, Err(EngineError::NotFound { .. })));
    assert!(matches!(conversation_result(&f.engine, CAT, &group(id)).await, Err(EngineError::NotFound { .. })));
    let history = f.engine.get_history(CAT, messages::GetHistory { chat_ref: Some(group(id)), ..Default::default() }).await;
    assert!(matches!(history, Err(EngineError::NotFound { .. })));
    assert!(matches!(conversation_result(&f.engine, CAT, &group(999)).await, Err(EngineError::NotFound { .. })));
}

#[tokio::test]
async fn events_after_a_removal_do_not_reach_the_removed_users_view() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    send(&f.engine, ANN, &group(id), "before").await;
    f.engine.remove_chat_member(ANN, remove(id, BOB)).await.unwrap();
    let bob_before = f.engine.get_chats(BOB, chats::GetChats::default()).await.unwrap();
    send(&f.engine, ANN, &group(id), "after").await;
    assert_eq!(f.engine.get_chats(BOB, chats::GetChats::default()).await.unwrap(), bob_before);
    assert!(matches!(conversation_result(&f.engine, BOB, &group(id)).await, Err(EngineError::NotFound { .. })));
}

#[tokio::test]
async fn invite_codes_are_url_safe_and_carry_128_random_bits() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[]).await;
    let first = invite(&f, id, None).await;
    let second = invite(&f, id, None).await;
    assert_ne!(first, second);
    assert!(first.len() >= 22, "16 bytes in base64 are 22 characters");
    assert!(first.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
}

#[tokio::test]
async fn direct_chats_cannot_have_invites_and_invite_values_are_checked() {
    let f = fixture().await;
    send(&f.engine, ANN, &dm(BOB), "hi").await;
    let for_dm = chats::CreateChatInvite { chat_ref: Some(dm(BOB)), expires_at: None, max_uses: None };
    assert!(matches!(f.engine.create_chat_invite(ANN, for_dm).await, Err(EngineError::InvalidArgument { field: "chat_ref", .. })));
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let past = f.engine.create_chat_invite(ANN, invite_request(id, Some(START_MS - 1), None)).await;
    assert!(matches!(past, Err(EngineError::InvalidArgument { field: "expires_at", .. })));
    let zero = f.engine.create_chat_invite(ANN, invite_request(id, None, Some(0))).await;
    assert!(matches!(zero, Err(EngineError::InvalidArgument { field: "max_uses", .. })));
    let by_member = f.engine.create_chat_invite(BOB, invite_request(id, None, None)).await;
    assert!(matches!(by_member, Err(EngineError::PermissionDenied { .. })));
}

#[tokio::test]
async fn using_an_invite_adds_the_member_and_counts_one_use() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[]).await;
    let code = invite(&f, id, Some(5)).await;
    let preview = f.engine.lookup_invite(CAT, auth::LookupInvite { code: code.clone() }).await.unwrap();
    assert_eq!((preview.target_id, preview.creator_id), (id, ANN.get()));
    f.engine.use_invite(CAT, use_code(&code)).await.unwrap();
    assert!(f.engine.is_member(osmium_state::proto::ids::ChatId(id), CAT).unwrap());
    let details = f.engine.chat_invite_details(ANN, group(id)).await.unwrap();
    assert_eq!((details[0].uses, details[0].max_uses), (1, Some(5)));
}

#[tokio::test]
async fn use_invite_fails_distinctly_and_counts_no_use() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[]).await;
    assert!(matches!(f.engine.use_invite(BOB, use_code("nope")).await, Err(EngineError::InviteNotFound)));
    let once = invite(&f, id, Some(1)).await;
    assert!(matches!(f.engine.use_invite(ANN, use_code(&once)).await, Err(EngineError::AlreadyMember)));
    f.engine.use_invite(BOB, use_code(&once)).await.unwrap();
    assert!(matches!(f.engine.use_invite(CAT, use_code(&once)).await, Err(EngineError::InviteUsedUp)));
    let expiring = f.engine.create_chat_invite(ANN, invite_request(id, Some(START_MS + 60_000), None)).await.unwrap().code;
    f.clock.advance_ms(60_000);
    assert!(matches!(f.engine.use_invite(CAT, use_code(&expiring)).await, Err(EngineError::InviteExpired)));
    let deleted = invite(&f, id, None).await;
    f.engine.delete_chat_invite(ANN, chats::DeleteChatInvite { code: deleted.clone() }).await.unwrap();
    assert!(matches!(f.engine.use_invite(CAT, use_code(&deleted)).await, Err(EngineError::InviteNotFound)));
    let details = f.engine.chat_invite_details(ANN, group(id)).await.unwrap();
    let once_uses = details.iter().find(|invite| invite.code == once).unwrap().uses;
    assert_eq!(once_uses, 1);
}

#[tokio::test]
async fn list_chat_invites_returns_the_active_ones() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[]).await;
    let active = invite(&f, id, None).await;
    let used_up = invite(&f, id, Some(1)).await;
    f.engine.use_invite(BOB, use_code(&used_up)).await.unwrap();
    f.engine.create_chat_invite(ANN, invite_request(id, Some(START_MS + 10), None)).await.unwrap();
    f.clock.advance_ms(10);
    let list = f.engine.list_chat_invites(ANN, chats::ListChatInvites { chat_ref: Some(group(id)) }).await.unwrap();
    let codes: Vec<_> = list.invites.iter().map(|invite| invite.code.clone()).collect();
    assert_eq!(codes, [active]);
    let by_member = f.engine.list_chat_invites(BOB, chats::ListChatInvites { chat_ref: Some(group(id)) }).await;
    assert!(matches!(by_member, Err(EngineError::PermissionDenied { .. })));
}

#[tokio::test]
async fn deleting_an_invite_keeps_the_members_who_joined_with_it() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[]).await;
    let code = invite(&f, id, None).await;
    f.engine.use_invite(BOB, use_code(&code)).await.unwrap();
    f.engine.delete_chat_invite(ANN, chats::DeleteChatInvite { code }).await.unwrap();
    assert!(f.engine.is_member(osmium_state::proto::ids::ChatId(id), BOB).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_uses_of_a_single_use_invite_admit_exactly_one() {
    let f = fixture().await;
    for id in 100..200 {
        f.engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    let id = create_group(&f.engine, ANN, &[]).await;
    let code = invite(&f, id, Some(1)).await;
    let attempts: Vec<_> = (100..200)
        .map(|user| {
            let engine = f.engine.clone();
            let code = code.clone();
            tokio::spawn(async move { engine.use_invite(UserId(user), use_code(&code)).await })
        })
        .collect();
    let mut admitted = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(err) => assert!(matches!(err, EngineError::InviteUsedUp), "{err:?}"),
        }
    }
    assert_eq!(admitted, 1);
    assert_eq!(f.engine.chat_invite_details(ANN, group(id)).await.unwrap()[0].uses, 1);
}

#[tokio::test]
async fn typing_reaches_the_other_members_expires_after_six_seconds_and_clears_on_send() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let mut bob = f.engine.subscribe(BOB);
    let typing = |on: bool| chats::SetTyping { chat_ref: Some(group(id)), typing: on, action: None };
    f.engine.set_typing(ANN, typing(true)).await.unwrap();
    let next_typing = |update: osmium_state::TaggedUpdate| match update.update.update {
        Some(Update::ChatTyping(typing)) => Some((typing.user_id, typing.typing)),
        _ => None,
    };
    assert_eq!(next_typing(bob.next().await.unwrap()), Some((ANN.get(), true)));
    f.clock.advance_ms(5_999);
    f.engine.expire_typing();
    f.clock.advance_ms(1);
    f.engine.expire_typing();
    assert_eq!(next_typing(bob.next().await.unwrap()), Some((ANN.get(), false)));

    f.engine.set_typing(ANN, typing(true)).await.unwrap();
    assert_eq!(next_typing(bob.next().await.unwrap()), Some((ANN.get(), true)));
    send(&f.engine, ANN, &group(id), "done typing").await;
    let mut cleared = false;
    for _ in 0..3 {
        if next_typing(bob.next().await.unwrap()) == Some((ANN.get(), false)) {
            cleared = true;
            break;
        }
    }
    assert!(cleared, "sending clears the typing indicator");
}

#[tokio::test]
async fn typing_reaches_a_member_who_joined_after_the_last_indicator() {
    // Whom to tell comes from the cached participants, which a join must refresh.
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let typing = chats::SetTyping { chat_ref: Some(group(id)), typing: true, action: None };
    f.engine.set_typing(ANN, typing).await.unwrap();
    let mut cat = f.engine.subscribe(CAT);
    f.engine.add_chat_member(ANN, chats::AddChatMember { chat_ref: Some(group(id)), user_id: CAT.get() }).await.unwrap();
    f.engine.set_typing(ANN, typing).await.unwrap();
    let mut typists = Vec::new();
    // Bounded, so that a missing indicator fails the test instead of hanging it.
    for _ in 0..10 {
        let Ok(update) = tokio::time::timeout(std::time::Duration::from_secs(10), cat.next()).await else { break };
        if let Some(Update::ChatTyping(indicator)) = update.unwrap().update.update {
            typists.push((indicator.user_id, indicator.typing));
            break;
        }
    }
    assert_eq!(typists, [(ANN.get(), true)], "the member who joined is told");
}

#[tokio::test]
async fn limits_are_enforced_with_errors_naming_the_field_and_nothing_is_written() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let position = f.engine.last_position();
    let long_text = "x".repeat(4_097);
    let too_long = messages::SendMessage { chat_ref: Some(group(id)), message: long_text, ..Default::default() };
    assert!(matches!(f.engine.send_message(ANN, too_long).await, Err(EngineError::InvalidArgument { field: "message", .. })));
    for name in [String::new(), "n".repeat(101)] {
        let create = chats::CreateChat { users: vec![], name };
        assert!(matches!(f.engine.create_chat(ANN, create).await, Err(EngineError::InvalidArgument { field: "name", .. })));
    }
    let long_draft = f.engine.save_draft(ANN, group(id), Some("d".repeat(4_097))).await;
    assert!(matches!(long_draft, Err(EngineError::InvalidArgument { field: "draft", .. })));
    let zero = f.engine.get_chats(ANN, chats::GetChats { limit: Some(0), ..Default::default() }).await;
    assert!(matches!(zero, Err(EngineError::InvalidArgument { field: "limit", .. })));
    let no_ref = messages::SendMessage { chat_ref: None, message: "x".into(), ..Default::default() };
    assert!(matches!(f.engine.send_message(ANN, no_ref).await, Err(EngineError::InvalidArgument { field: "chat_ref", .. })));
    assert_eq!(f.engine.last_position(), position, "refused commands write nothing");
}

#[tokio::test]
async fn errors_map_to_protocol_rpc_errors() {
    assert_eq!(EngineError::InviteExpired.to_rpc_error().error_code, 410);
    assert_eq!(EngineError::AlreadyMember.to_rpc_error().error_code, 409);
    let invalid = EngineError::InvalidArgument { field: "limit", reason: "must be at least 1".into() }.to_rpc_error();
    assert_eq!(invalid.error_code, 400);
    assert!(invalid.error_message.contains("limit"));
}

#[tokio::test]
async fn group_size_and_invites_per_chat_are_bounded_by_the_configured_limits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(START_MS);
    let mut config = common::config(&clock);
    config.limits.group_members_max = 3;
    config.limits.invites_per_chat_max = 2;
    let engine = osmium_state::ChatEngine::open(dir.path(), config).await.unwrap();
    for id in 1..=5 {
        engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    let too_big = chats::CreateChat { users: [2, 3, 4].map(|user_id| refs::UserRef { user_id }).to_vec(), name: "g".into() };
    assert!(matches!(engine.create_chat(ANN, too_big).await, Err(EngineError::InvalidArgument { field: "users", .. })));
    let id = create_group(&engine, ANN, &[BOB, CAT]).await;
    assert!(matches!(engine.add_chat_member(ANN, add(id, DAN)).await, Err(EngineError::InvalidArgument { field: "user_id", .. })));
    for _ in 0..2 {
        engine.create_chat_invite(ANN, invite_request(id, None, None)).await.unwrap();
    }
    let third = engine.create_chat_invite(ANN, invite_request(id, None, None)).await;
    assert!(matches!(third, Err(EngineError::InvalidArgument { field: "chat_ref", .. })));
}

#[tokio::test]
async fn the_projections_always_equal_a_fold_of_the_log() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    let code = invite(&f, id, Some(3)).await;
    f.engine.use_invite(DAN, use_code(&code)).await.unwrap();
    let message = send(&f.engine, BOB, &group(id), "hello").await;
    send(&f.engine, DAN, &dm(EVE), "hi eve").await;
    f.engine.set_muted(CAT, group(id), true).await.unwrap();
    f.engine.set_permission_overrides(ANN, group(id), DAN, types::PermissionOverrides { pos: 0, neg: 32 }).await.unwrap();
    mark_read(&f.engine, CAT, &group(id), message).await;
    f.engine.delete_message(ANN, messages::DeleteMessage { chat_ref: Some(group(id)), message_ids: vec![message.get()] }).await.unwrap();
    f.engine.remove_chat_member(ANN, remove(id, ANN)).await.unwrap();
    f.engine.delete_chat_invite(BOB, chats::DeleteChatInvite { code }).await.unwrap();
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}
