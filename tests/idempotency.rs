//! Idempotent sends: a `client_id` is bound to the request it first carried, for a window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::chats;
use osmium_state::proto::messages::{self, SendMessage};
use osmium_state::proto::refs::ChatRef;
use osmium_state::{ChatEngine, EngineError, IDEMPOTENCY_WINDOW_MS_DEFAULT, OpenError};

fn keyed(chat: ChatRef, text: &str, client_id: u64) -> SendMessage {
    SendMessage { chat_ref: Some(chat), message: text.into(), client_id: Some(client_id), ..Default::default() }
}

async fn history_texts(engine: &ChatEngine, actor: osmium_state::proto::ids::UserId, chat: ChatRef) -> Vec<String> {
    let page = engine.get_history(actor, messages::GetHistory { chat_ref: Some(chat), limit: Some(100), offset: None }).await.unwrap();
    page.messages.into_iter().map(|message| message.message).collect()
}

#[tokio::test]
async fn reusing_a_client_id_for_a_different_message_is_refused_and_writes_nothing() {
    let f = fixture().await;
    f.engine.send_message(ANN, keyed(dm(BOB), "first", 9)).await.unwrap();
    let position = f.engine.last_position();
    f.clock.advance_ms(5_000);
    let reused = f.engine.send_message(ANN, keyed(dm(BOB), "second", 9)).await;
    assert!(
        matches!(reused, Err(EngineError::IdempotencyKeyReused { client_id: 9, age_ms: 5_000 })),
        "got {reused:?}"
    );
    assert_eq!(reused.unwrap_err().rpc_code(), 409);
    assert_eq!(f.engine.last_position(), position);
    assert_eq!(history_texts(&f.engine, BOB, dm(ANN)).await, ["first"]);
}

#[tokio::test]
async fn reusing_a_client_id_in_another_chat_is_refused() {
    let f = fixture().await;
    f.engine.send_message(ANN, keyed(dm(BOB), "same text", 9)).await.unwrap();
    let reused = f.engine.send_message(ANN, keyed(dm(CAT), "same text", 9)).await;
    assert!(matches!(reused, Err(EngineError::IdempotencyKeyReused { .. })), "got {reused:?}");
    let never_created = f.engine.get_history(CAT, messages::GetHistory { chat_ref: Some(dm(ANN)), limit: Some(1), offset: None }).await;
    assert!(matches!(never_created, Err(EngineError::NotFound { .. })), "the DM was not created: {never_created:?}");
}

#[tokio::test]
async fn the_same_client_id_from_another_user_is_another_key() {
    let f = fixture().await;
    let ann = f.engine.send_message(ANN, keyed(dm(CAT), "from ann", 9)).await.unwrap();
    let bob = f.engine.send_message(BOB, keyed(dm(CAT), "from bob", 9)).await.unwrap();
    assert_ne!(ann, bob);
}

#[tokio::test]
async fn a_retry_after_the_sender_was_removed_returns_the_original_message() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let sent = f.engine.send_message(BOB, keyed(group(id), "before removal", 4)).await.unwrap();
    let remove = chats::RemoveChatMember { chat_ref: Some(group(id)), user_id: BOB.get() };
    f.engine.remove_chat_member(ANN, remove).await.unwrap();
    let retry = f.engine.send_message(BOB, keyed(group(id), "before removal", 4)).await.unwrap();
    assert_eq!(retry, sent, "the answer the client missed, not a refusal");
    let fresh = f.engine.send_message(BOB, keyed(group(id), "after removal", 5)).await;
    assert!(fresh.is_err(), "a new send is refused: {fresh:?}");
}

#[tokio::test]
async fn a_retry_one_millisecond_before_the_window_ends_returns_the_original_message() {
    let f = fixture().await;
    let sent = f.engine.send_message(ANN, keyed(dm(BOB), "once", 7)).await.unwrap();
    f.clock.advance_ms(IDEMPOTENCY_WINDOW_MS_DEFAULT - 1);
    let retry = f.engine.send_message(ANN, keyed(dm(BOB), "once", 7)).await.unwrap();
    assert_eq!(retry, sent);
    assert_eq!(history_texts(&f.engine, BOB, dm(ANN)).await, ["once"]);
}

#[tokio::test]
async fn a_client_id_is_forgotten_when_the_window_ends() {
    let f = fixture().await;
    let sent = f.engine.send_message(ANN, keyed(dm(BOB), "old", 7)).await.unwrap();
    f.clock.advance_ms(IDEMPOTENCY_WINDOW_MS_DEFAULT);
    let again = f.engine.send_message(ANN, keyed(dm(BOB), "new", 7)).await.unwrap();
    assert_ne!(again, sent);
    assert_eq!(history_texts(&f.engine, BOB, dm(ANN)).await, ["old", "new"]);
    let retry = f.engine.send_message(ANN, keyed(dm(BOB), "new", 7)).await.unwrap();
    assert_eq!(retry, again, "the key now names the new message");
}

#[tokio::test]
async fn a_client_id_is_remembered_across_a_reopen() {
    let f = fixture().await;
    let sent = f.engine.send_message(ANN, keyed(dm(BOB), "kept", 3)).await.unwrap();
    let f = f.reopen().await;
    assert_eq!(f.engine.send_message(ANN, keyed(dm(BOB), "kept", 3)).await.unwrap(), sent);
    let reused = f.engine.send_message(ANN, keyed(dm(BOB), "other", 3)).await;
    assert!(matches!(reused, Err(EngineError::IdempotencyKeyReused { .. })), "got {reused:?}");
}

#[tokio::test]
async fn a_window_longer_than_keys_are_kept_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(START_MS);
    let mut too_long = config(&clock);
    too_long.log.idempotency_window_ms = 8 * 24 * 60 * 60 * 1_000;
    let opened = ChatEngine::open(dir.path(), too_long).await;
    assert!(matches!(opened, Err(OpenError::InvalidConfig { setting: "log.idempotency_window_ms", .. })), "got {:?}", opened.err());
}
