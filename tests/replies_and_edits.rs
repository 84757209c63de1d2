//! Replies (`SendMessage.reply_to`, the deprecated `reply_to_old`) and edits as the current
//! protocol has them (`EditMessage` text, entities, media, `remove_media`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::ids::MessageId;
use osmium_state::proto::messages::{self, send_message::ReplyTo};
use osmium_state::proto::refs::ChatRef;
use osmium_state::proto::types::{self, message::MessageReplyInfo, message::Quote, message_entity::Entity};
use osmium_state::{ChatEngine, EngineError};

/// The chat's messages as `viewer` gets them from `get_history`, oldest first.
async fn history(engine: &ChatEngine, viewer: osmium_state::proto::ids::UserId, chat: &ChatRef) -> Vec<types::Message> {
    let request = messages::GetHistory { chat_ref: Some(*chat), ..Default::default() };
    engine.get_history(viewer, request).await.unwrap().messages
}

async fn only_message(engine: &ChatEngine, chat: &ChatRef, id: MessageId) -> types::Message {
    history(engine, BOB, chat).await.into_iter().find(|message| message.message_id == id.get()).expect("the message is in the history")
}

fn bold(start_index: u32, length: u32) -> types::MessageEntity {
    types::MessageEntity { start_index, length, entity: Some(Entity::Bold(true)) }
}

fn edit(chat: &ChatRef, message: MessageId) -> messages::EditMessage {
    messages::EditMessage { chat_ref: Some(*chat), message_id: message.get(), ..Default::default() }
}

#[tokio::test]
async fn a_reply_is_returned_as_message_reply_and_as_the_deprecated_reply_to() {
    let f = fixture().await;
    let question = send(&f.engine, BOB, &dm(ANN), "lunch?").await;
    let request = messages::SendMessage {
        chat_ref: Some(dm(BOB)),
        message: "yes".into(),
        reply_to: Some(ReplyTo { message_id: question.get(), quote: None }),
        ..Default::default()
    };
    let answer = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    let message = only_message(&f.engine, &dm(ANN), answer).await;
    assert_eq!(message.reply, Some(MessageReplyInfo { message_id: Some(question.get()), quote: None }));
    assert_eq!(message.reply_to, Some(question.get()), "older clients read field 5");
}

#[tokio::test]
async fn a_reply_keeps_its_quote() {
    let f = fixture().await;
    let question = send(&f.engine, BOB, &dm(ANN), "lunch at noon?").await;
    let quote = Quote { message: "noon".into(), entities: vec![bold(0, 4)], offset: Some(9) };
    let request = messages::SendMessage {
        chat_ref: Some(dm(BOB)),
        message: "yes".into(),
        reply_to: Some(ReplyTo { message_id: question.get(), quote: Some(quote.clone()) }),
        ..Default::default()
    };
    let answer = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    assert_eq!(only_message(&f.engine, &dm(ANN), answer).await.reply.unwrap().quote, Some(quote));
}

#[tokio::test]
async fn reply_to_old_alone_is_a_reply_without_a_quote() {
    let f = fixture().await;
    let question = send(&f.engine, BOB, &dm(ANN), "lunch?").await;
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), message: "yes".into(), reply_to_old: Some(question.get()), ..Default::default() };
    let answer = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    let message = only_message(&f.engine, &dm(ANN), answer).await;
    assert_eq!(message.reply, Some(MessageReplyInfo { message_id: Some(question.get()), quote: None }));
}

#[tokio::test]
async fn a_reply_to_a_deleted_message_is_refused_with_reply_target_not_found_and_writes_nothing() {
    let f = fixture().await;
    let question = send(&f.engine, BOB, &dm(ANN), "lunch?").await;
    f.engine.delete_message(BOB, messages::DeleteMessage { chat_ref: Some(dm(ANN)), message_ids: vec![question.get()] }).await.unwrap();
    let position = f.engine.last_position();
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), message: "yes".into(), reply_to_old: Some(question.get()), ..Default::default() };
    let refused = f.engine.send_message(ANN, request).await;
    assert!(matches!(&refused, Err(EngineError::ReplyTargetNotFound { message_id }) if *message_id == question), "{refused:?}");
    assert_eq!(refused.unwrap_err().rpc_code(), 404);
    assert_eq!(f.engine.last_position(), position);
}

#[tokio::test]
async fn a_reply_stays_when_the_message_it_replies_to_is_deleted() {
    let f = fixture().await;
    let question = send(&f.engine, BOB, &dm(ANN), "lunch?").await;
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), message: "yes".into(), reply_to_old: Some(question.get()), ..Default::default() };
    let answer = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    f.engine.delete_message(BOB, messages::DeleteMessage { chat_ref: Some(dm(ANN)), message_ids: vec![question.get()] }).await.unwrap();
    assert_eq!(only_message(&f.engine, &dm(ANN), answer).await.reply_to, Some(question.get()));
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn an_edit_with_new_text_and_no_entities_clears_the_entities() {
    let f = fixture().await;
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), message: "bold".into(), entities: vec![bold(0, 4)], ..Default::default() };
    let sent = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    f.engine.edit_message(ANN, messages::EditMessage { message: Some("plain".into()), ..edit(&dm(BOB), sent) }).await.unwrap();
    let message = only_message(&f.engine, &dm(ANN), sent).await;
    assert_eq!((message.message.as_str(), message.entities.len()), ("plain", 0));
}

#[tokio::test]
async fn an_edit_with_only_entities_replaces_them_and_keeps_the_text() {
    let f = fixture().await;
    let sent = send(&f.engine, ANN, &dm(BOB), "make me bold").await;
    f.engine.edit_message(ANN, messages::EditMessage { entities: vec![bold(8, 4)], ..edit(&dm(BOB), sent) }).await.unwrap();
    let message = only_message(&f.engine, &dm(ANN), sent).await;
    assert_eq!((message.message.as_str(), message.entities), ("make me bold", vec![bold(8, 4)]));
    assert!(message.edited_at.is_some());
}

#[tokio::test]
async fn an_edit_with_media_replaces_the_attachments_and_keeps_the_text() {
    let f = fixture().await;
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), message: "pics".into(), media: vec![uploaded(1, "image/png")], ..Default::default() };
    let sent = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    let replacement = vec![uploaded(2, "image/jpeg"), uploaded(3, "image/jpeg")];
    f.engine.edit_message(ANN, messages::EditMessage { media: replacement, ..edit(&dm(BOB), sent) }).await.unwrap();
    let message = only_message(&f.engine, &dm(ANN), sent).await;
    let ids: Vec<u64> = message
        .media
        .iter()
        .map(|media| match &media.media {
            Some(osmium_state::proto::media::message_media::Media::File(file)) => file.file.as_ref().unwrap().file_id,
            other => panic!("expected a file, got {other:?}"),
        })
        .collect();
    assert_eq!((message.message.as_str(), ids), ("pics", vec![2, 3]));
}

#[tokio::test]
async fn remove_media_removes_the_attachments_and_keeps_the_text() {
    let f = fixture().await;
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), message: "pic".into(), media: vec![uploaded(1, "image/png")], ..Default::default() };
    let sent = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    f.engine.edit_message(ANN, messages::EditMessage { remove_media: true, ..edit(&dm(BOB), sent) }).await.unwrap();
    let message = only_message(&f.engine, &dm(ANN), sent).await;
    assert_eq!((message.message.as_str(), message.media.len()), ("pic", 0));
}

#[tokio::test]
async fn removing_the_media_of_a_message_without_text_is_refused_and_changes_nothing() {
    let f = fixture().await;
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), media: vec![uploaded(1, "image/png")], ..Default::default() };
    let sent = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    let before = f.engine.projection_contents().unwrap();
    let refused = f.engine.edit_message(ANN, messages::EditMessage { remove_media: true, ..edit(&dm(BOB), sent) }).await;
    assert!(matches!(refused, Err(EngineError::InvalidArgument { field: "message", .. })), "{refused:?}");
    assert!(f.engine.projection_contents().unwrap() == before);
}

#[tokio::test]
async fn an_edit_of_the_text_keeps_the_media() {
    let f = fixture().await;
    let request = messages::SendMessage { chat_ref: Some(dm(BOB)), message: "pic".into(), media: vec![uploaded(1, "image/png")], ..Default::default() };
    let sent = MessageId(f.engine.send_message(ANN, request).await.unwrap().message_id);
    f.engine.edit_message(ANN, messages::EditMessage { message: Some("the pic".into()), ..edit(&dm(BOB), sent) }).await.unwrap();
    let message = only_message(&f.engine, &dm(ANN), sent).await;
    assert_eq!((message.message.as_str(), message.media.len()), ("the pic", 1));
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

/// Logs written before `MessageEdited.replaces_all` existed replace only the text: the
/// entities and media of the message stay.
#[test]
fn a_message_edited_event_without_replaces_all_changes_only_the_text() {
    use osmium_state::proto::events::{self, EventEnvelope, StreamRef, event_envelope::Event, stream_ref::Stream};
    use osmium_state::projections::{ProjectionState, apply};
    let chat = osmium_state::proto::ids::ChatId(7);
    let envelope = |position: u64, event: Event| EventEnvelope {
        position,
        stream: Some(StreamRef { stream: Some(Stream::ChatId(chat.get())) }),
        stream_version: position,
        recorded_at_ms: START_MS,
        actor_id: 1,
        event: Some(event),
    };
    let mut state = ProjectionState::in_memory();
    apply(&mut state, &envelope(1, Event::GroupCreated(events::GroupCreated { owner_id: 1, name: "g".into(), member_ids: vec![] }))).unwrap();
    let sent = events::MessageSent { message_id: 9, author_id: 1, text: "bold".into(), entities: vec![bold(0, 4)], ..Default::default() };
    apply(&mut state, &envelope(2, Event::MessageSent(sent))).unwrap();
    let edited = events::MessageEdited { message_id: 9, text: "BOLD".into(), edited_at_ms: START_MS, ..Default::default() };
    apply(&mut state, &envelope(3, Event::MessageEdited(edited))).unwrap();
    let record = state.message(chat, MessageId(9)).unwrap().unwrap();
    assert_eq!((record.text.as_str(), record.entities.len()), ("BOLD", 1));
}
