//! Opening a DM (seed 001: "Opening a DM: Call GetChat with a ChatRef pointing to the
//! user"): `get_chat` with `ChatRef.user` creates the DM when it does not exist yet, once,
//! so that drafts, typing and reads work before the first message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::events::event_envelope::Event;
use osmium_state::proto::ids::{Position, UserId};
use osmium_state::proto::updates::update::Update;
use osmium_state::proto::{chats, messages};
use osmium_state::{ChatEngine, EngineError};

/// The `direct_chat_created` events between `a` and `b` in the whole log.
fn dms_created(engine: &ChatEngine, a: UserId, b: UserId) -> usize {
    let events = engine.log().read_all(Position(1), 100_000).unwrap();
    let between = |created: &osmium_state::proto::events::DirectChatCreated| {
        let pair = (UserId(created.user_a), UserId(created.user_b));
        pair == (a, b) || pair == (b, a)
    };
    events.iter().filter(|event| matches!(&event.event, Some(Event::DirectChatCreated(created)) if between(created))).count()
}

#[tokio::test]
async fn get_chat_with_a_user_ref_opens_the_dm_before_the_first_message() {
    let f = fixture().await;
    let chat = f.engine.get_chat(ANN, chats::GetChat { chat_ref: Some(dm(BOB)) }).await.unwrap();
    let conversation = chat.chat.unwrap();
    assert_eq!(conversation.chat_ref, Some(dm(BOB)));
    assert_eq!((conversation.last_read_message_id, conversation.unread_count), (0, 0));
    assert_eq!(chat.message, None);
    let users: Vec<u64> = chat.users.iter().map(|user| user.id).collect();
    assert_eq!(users, [ANN.get(), BOB.get()]);
    assert_eq!(dms_created(&f.engine, ANN, BOB), 1);
}

#[tokio::test]
async fn an_opened_dm_is_listed_for_both_users_sorted_by_its_chat_id() {
    let f = fixture().await;
    let opened = conversation(&f.engine, ANN, &dm(BOB)).await;
    let bobs = f.engine.get_chats(BOB, chats::GetChats::default()).await.unwrap().chats;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].chat_ref, Some(dm(ANN)));
    assert_eq!(bobs[0].last_message_id, opened.last_message_id, "no message: the chat id");
}

#[tokio::test]
async fn opening_an_existing_dm_writes_nothing() {
    let f = fixture().await;
    conversation(&f.engine, ANN, &dm(BOB)).await;
    let position = f.engine.last_position();
    conversation(&f.engine, ANN, &dm(BOB)).await;
    conversation(&f.engine, BOB, &dm(ANN)).await;
    assert_eq!(f.engine.last_position(), position);
}

#[tokio::test]
async fn drafts_typing_and_reads_work_in_an_opened_dm() {
    let f = fixture().await;
    conversation(&f.engine, ANN, &dm(BOB)).await;
    f.engine.save_draft(ANN, dm(BOB), Some("hel".into())).await.unwrap();
    let mut bobs = f.engine.subscribe(BOB);
    f.engine.set_typing(ANN, chats::SetTyping { chat_ref: Some(dm(BOB)), typing: true, action: None }).await.unwrap();
    let request = chats::MarkChatRead { chat_ref: Some(dm(BOB)), message_id: 1, read_amount: None };
    f.engine.mark_chat_read(ANN, request).await.unwrap();
    assert_eq!(conversation(&f.engine, ANN, &dm(BOB)).await.draft.as_deref(), Some("hel"));
    let typing = bobs.next().await.unwrap();
    assert!(matches!(typing.update.update, Some(Update::ChatTyping(typing)) if typing.typing && typing.user_id == ANN.get()));
}

#[tokio::test]
async fn the_first_message_after_opening_goes_to_the_opened_dm() {
    let f = fixture().await;
    conversation(&f.engine, ANN, &dm(BOB)).await;
    let first = send(&f.engine, BOB, &dm(ANN), "hi").await;
    assert_eq!(conversation(&f.engine, ANN, &dm(BOB)).await.last_message_id, first.get());
    assert_eq!(dms_created(&f.engine, ANN, BOB), 1);
    assert_eq!(f.engine.get_chats(ANN, chats::GetChats::default()).await.unwrap().chats.len(), 1);
}

#[tokio::test]
async fn concurrent_opens_and_a_first_message_create_one_dm() {
    let f = fixture().await;
    let mut tasks = Vec::new();
    for n in 0..16u64 {
        let engine = f.engine.clone();
        let (actor, peer) = if n % 2 == 0 { (ANN, BOB) } else { (BOB, ANN) };
        tasks.push(tokio::spawn(async move {
            if n == 7 {
                let request = messages::SendMessage { chat_ref: Some(dm(peer)), message: "racing".into(), ..Default::default() };
                engine.send_message(actor, request).await.map(drop)
            } else {
                engine.get_chat(actor, chats::GetChat { chat_ref: Some(dm(peer)) }).await.map(drop)
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(dms_created(&f.engine, ANN, BOB), 1);
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn get_chat_with_self_opens_the_self_chat() {
    let f = fixture().await;
    let own = conversation(&f.engine, ANN, &own_chat()).await;
    assert_eq!(own.chat_ref, Some(own_chat()));
    assert_eq!(dms_created(&f.engine, ANN, ANN), 1);
    let note = send(&f.engine, ANN, &own_chat(), "note").await;
    assert_eq!(conversation(&f.engine, ANN, &own_chat()).await.last_message_id, note.get());
}

#[tokio::test]
async fn opening_a_dm_with_an_unknown_user_is_not_found_and_writes_nothing() {
    let f = fixture().await;
    let position = f.engine.last_position();
    let refused = f.engine.get_chat(ANN, chats::GetChat { chat_ref: Some(dm(UserId(999))) }).await;
    assert!(matches!(refused, Err(EngineError::NotFound { .. })), "{refused:?}");
    assert_eq!(f.engine.last_position(), position);
}

#[tokio::test]
async fn other_calls_on_a_dm_never_opened_answer_not_found() {
    let f = fixture().await;
    let draft = f.engine.save_draft(ANN, dm(BOB), Some("x".into())).await;
    assert!(matches!(draft, Err(EngineError::NotFound { .. })), "{draft:?}");
    assert_eq!(dms_created(&f.engine, ANN, BOB), 0);
}
