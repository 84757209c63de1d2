//! Message history, edits, deletions and their permissions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::ids::MessageId;
use osmium_state::proto::messages::{self, get_history::Offset};
use osmium_state::proto::chats;
use osmium_state::EngineError;

async fn history(f: &Fixture, offset: Option<Offset>, limit: u32) -> Vec<String> {
    let request = messages::GetHistory { chat_ref: Some(dm(BOB)), limit: Some(limit), offset };
    let page = f.engine.get_history(ANN, request).await.unwrap();
    page.messages.into_iter().map(|message| message.message).collect()
}

#[tokio::test]
async fn history_pages_oldest_first_around_since_and_before_a_message() {
    let f = fixture().await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(send(&f.engine, ANN, &dm(BOB), &format!("m{n}")).await);
    }
    assert_eq!(history(&f, None, 3).await, ["m7", "m8", "m9"]);
    assert_eq!(history(&f, Some(Offset::Before(ids[5].get())), 2).await, ["m3", "m4"]);
    assert_eq!(history(&f, Some(Offset::Since(ids[5].get())), 2).await, ["m6", "m7"]);
    assert_eq!(history(&f, Some(Offset::Around(ids[5].get())), 4).await, ["m3", "m4", "m5", "m6"]);
    let delete = messages::DeleteMessage { chat_ref: Some(dm(BOB)), message_ids: vec![ids[8].get()] };
    f.engine.delete_message(ANN, delete).await.unwrap();
    assert_eq!(history(&f, None, 3).await, ["m6", "m7", "m9"], "deleted messages are not history");
}

#[tokio::test]
async fn history_limit_is_capped_and_zero_is_refused() {
    let f = fixture().await;
    for n in 0..120 {
        send(&f.engine, ANN, &dm(BOB), &format!("m{n}")).await;
    }
    assert_eq!(history(&f, None, 1_000).await.len(), 100);
    let zero = messages::GetHistory { chat_ref: Some(dm(BOB)), limit: Some(0), offset: None };
    assert!(matches!(f.engine.get_history(ANN, zero).await, Err(EngineError::InvalidArgument { field: "limit", .. })));
}

#[tokio::test]
async fn only_the_author_edits_and_the_edit_is_recorded() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let message = send(&f.engine, BOB, &group(id), "typo").await;
    let edit = |text: &str| messages::EditMessage { chat_ref: Some(group(id)), message_id: message.get(), message: Some(text.into()), ..Default::default() };
    assert!(matches!(f.engine.edit_message(ANN, edit("owner edit")).await, Err(EngineError::PermissionDenied { .. })));
    f.clock.advance_ms(500);
    f.engine.edit_message(BOB, edit("fixed")).await.unwrap();
    let page = f.engine.get_history(ANN, messages::GetHistory { chat_ref: Some(group(id)), ..Default::default() }).await.unwrap();
    assert_eq!(page.messages[0].message, "fixed");
    assert_eq!(page.messages[0].edited_at, Some(START_MS + 500));
}

#[tokio::test]
async fn authors_delete_their_own_messages_and_the_group_owner_deletes_any() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    let bobs = send(&f.engine, BOB, &group(id), "bob's").await;
    let delete = |message: MessageId| messages::DeleteMessage { chat_ref: Some(group(id)), message_ids: vec![message.get()] };
    assert!(matches!(f.engine.delete_message(CAT, delete(bobs)).await, Err(EngineError::PermissionDenied { .. })));
    f.engine.delete_message(ANN, delete(bobs)).await.unwrap();
    assert!(matches!(f.engine.delete_message(BOB, delete(bobs)).await, Err(EngineError::NotFound { .. })), "already gone");
    let cats = send(&f.engine, CAT, &group(id), "cat's").await;
    f.engine.delete_message(CAT, delete(cats)).await.unwrap();
}

#[tokio::test]
async fn the_owner_highlights_a_message_that_exists() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let message = send(&f.engine, BOB, &group(id), "pin me").await;
    let highlight = |message: u64| chats::EditChat {
        chat_ref: Some(group(id)),
        highlighted_msg_id: Some(chats::HighlightedMessage { highlighted_msg_id: Some(message) }),
        ..Default::default()
    };
    f.engine.edit_chat(ANN, highlight(message.get())).await.unwrap();
    assert!(matches!(f.engine.edit_chat(ANN, highlight(12_345)).await, Err(EngineError::NotFound { .. })));
    f.engine.edit_chat(ANN, highlight(0)).await.unwrap();
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

/// Sync log, 64 senders at once, each in a group of its own: the state machine ends
/// batches early while the writer is idle and inserts each batch's writes for readers
/// while the writer syncs it. Every acknowledged message is read back at once.
#[tokio::test]
async fn every_message_of_many_concurrent_senders_is_read_back_as_soon_as_it_is_acknowledged() {
    const SENDERS: usize = 64;
    const SENDS_EACH: usize = 30;
    let f = fixture().await;
    let mut groups = Vec::with_capacity(SENDERS);
    for _ in 0..SENDERS {
        groups.push(create_group(&f.engine, ANN, &[BOB]).await);
    }
    let mut tasks = Vec::with_capacity(SENDERS);
    for id in groups.iter().copied() {
        let engine = f.engine.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..SENDS_EACH {
                let sent = send(&engine, ANN, &group(id), &format!("message {n}")).await;
                let read = conversation(&engine, ANN, &group(id)).await;
                assert_eq!(read.last_message_id, sent.get(), "read back at once in group {id}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for id in groups {
        assert_eq!(conversation(&f.engine, BOB, &group(id)).await.unread_count, SENDS_EACH as u32);
    }
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}
