//! Bounded invite storage: expired and used-up invites are purged after
//! `invite_purge_grace_ms` through `invite_deleted` events (so a rebuild agrees), and a
//! chat keeps at most `invites_kept_per_chat_max` invites.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::{auth, chats};
use osmium_state::{ChatEngine, EngineConfig, EngineError, INVITE_PURGE_GRACE_MS_DEFAULT, InvitePurge, Limits, ManualClock};

const GRACE_MS: u64 = INVITE_PURGE_GRACE_MS_DEFAULT;
const HOUR_MS: u64 = 60 * 60 * 1000;

async fn create_invite(f: &Fixture, group_id: u64, expires_at: Option<u64>, max_uses: Option<u32>) -> String {
    let request = chats::CreateChatInvite { chat_ref: Some(group(group_id)), expires_at, max_uses };
    f.engine.create_chat_invite(ANN, request).await.unwrap().code
}

async fn lookup(engine: &ChatEngine, code: &str) -> Result<auth::InvitePreview, EngineError> {
    engine.lookup_invite(CAT, auth::LookupInvite { code: code.into() }).await
}

async fn kept_codes(f: &Fixture, group_id: u64) -> Vec<String> {
    let details = f.engine.chat_invite_details(ANN, group(group_id)).await.unwrap();
    details.into_iter().map(|invite| invite.code).collect()
}

async fn purge_everything(engine: &ChatEngine) -> usize {
    let mut purged = 0;
    loop {
        let InvitePurge { purged: now, swept, .. } = engine.purge_invites().await.unwrap();
        purged += now;
        if swept {
            return purged;
        }
    }
}

#[tokio::test]
async fn an_expired_invite_answers_expired_for_the_grace_period_then_is_purged() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let code = create_invite(&f, id, Some(START_MS + HOUR_MS), None).await;
    f.clock.advance_ms(HOUR_MS + GRACE_MS - 1);
    assert_eq!(purge_everything(&f.engine).await, 0);
    assert!(matches!(lookup(&f.engine, &code).await, Err(EngineError::InviteExpired)));
    f.clock.advance_ms(1);
    assert_eq!(purge_everything(&f.engine).await, 1);
    assert!(matches!(lookup(&f.engine, &code).await, Err(EngineError::InviteNotFound)));
    assert!(kept_codes(&f, id).await.is_empty());
}

#[tokio::test]
async fn a_used_up_invite_is_purged_a_grace_period_after_its_last_use() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let code = create_invite(&f, id, None, Some(1)).await;
    f.clock.advance_ms(HOUR_MS);
    f.engine.use_invite(DAN, auth::UseInvite { code: code.clone() }).await.unwrap();
    f.clock.advance_ms(GRACE_MS - 1);
    assert_eq!(purge_everything(&f.engine).await, 0);
    assert!(matches!(lookup(&f.engine, &code).await, Err(EngineError::InviteUsedUp)));
    f.clock.advance_ms(1);
    assert_eq!(purge_everything(&f.engine).await, 1);
    assert!(matches!(lookup(&f.engine, &code).await, Err(EngineError::InviteNotFound)));
}

#[tokio::test]
async fn an_active_invite_is_never_purged() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let code = create_invite(&f, id, None, Some(5)).await;
    f.engine.use_invite(DAN, auth::UseInvite { code: code.clone() }).await.unwrap();
    f.clock.advance_ms(10 * GRACE_MS);
    assert_eq!(purge_everything(&f.engine).await, 0);
    assert_eq!(kept_codes(&f, id).await, [code]);
}

#[tokio::test]
async fn a_purge_is_logged_as_invite_deleted_by_the_engine_and_the_projections_equal_the_fold() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    create_invite(&f, id, Some(START_MS + 1), None).await;
    let before = f.engine.last_position();
    f.clock.advance_ms(GRACE_MS + 1);
    assert_eq!(purge_everything(&f.engine).await, 1);
    assert_eq!(f.engine.last_position().get(), before.get() + 1);
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn each_purge_call_scans_at_most_invite_purge_scan_max_and_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let limits = Limits { invite_purge_scan_max: 2, ..Limits::default() };
    let engine = ChatEngine::open(dir.path(), EngineConfig { limits, ..config(&clock) }).await.unwrap();
    let f = Fixture { dir, engine, clock };
    for id in 1..=3 {
        f.engine.upsert_user(osmium_state::proto::types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    for _ in 0..5 {
        create_invite(&f, id, Some(START_MS + 1), None).await;
    }
    f.clock.advance_ms(GRACE_MS + 1);
    let calls = [f.engine.purge_invites().await, f.engine.purge_invites().await, f.engine.purge_invites().await];
    let calls: Vec<InvitePurge> = calls.into_iter().map(Result::unwrap).collect();
    assert_eq!(calls.iter().map(|call| call.scanned).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(calls.iter().map(|call| call.purged).sum::<usize>(), 5);
    assert_eq!(calls.iter().map(|call| call.swept).collect::<Vec<_>>(), [false, false, true]);
    assert!(kept_codes(&f, id).await.is_empty());
}

#[tokio::test]
async fn a_chat_keeps_at_most_invites_kept_per_chat_max_until_the_purge_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let limits = Limits { invites_kept_per_chat_max: 3, ..Limits::default() };
    let engine = ChatEngine::open(dir.path(), EngineConfig { limits, ..config(&clock) }).await.unwrap();
    let f = Fixture { dir, engine, clock };
    for id in 1..=2 {
        f.engine.upsert_user(osmium_state::proto::types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    for _ in 0..3 {
        create_invite(&f, id, Some(START_MS + 1), None).await;
    }
    f.clock.advance_ms(2);
    let request = chats::CreateChatInvite { chat_ref: Some(group(id)), expires_at: None, max_uses: None };
    let refused = f.engine.create_chat_invite(ANN, request).await;
    assert!(matches!(refused, Err(EngineError::InvalidArgument { field: "chat_ref", .. })), "{refused:?}");
    assert_eq!(kept_codes(&f, id).await.len(), 3);
    f.clock.advance_ms(GRACE_MS);
    assert_eq!(purge_everything(&f.engine).await, 3);
    f.engine.create_chat_invite(ANN, request).await.unwrap();
}
