//! Mentions: the `user_mention` (`@id`, `<@id>`) and `username` (`@name`) conventions,
//! `unread_mentions_count` derived from them like the unread count, and
//! `get_unread_mentions`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::core::GetUnreadMentions;
use osmium_state::proto::ids::{MessageId, UserId};
use osmium_state::proto::refs::ChatRef;
use osmium_state::proto::types::{self, message_entity::Entity};
use osmium_state::proto::updates::update::Update;
use osmium_state::proto::{chats, messages};
use osmium_state::{ChatEngine, EngineError};

/// `text` with one entity covering `covered` (which must occur in it).
fn with_entity(text: &str, covered: &str, entity: Entity) -> (String, Vec<types::MessageEntity>) {
    let start = text.find(covered).expect("the covered text occurs") as u32; // ASCII: bytes are UTF-16 units
    let entity = types::MessageEntity { start_index: start, length: covered.len() as u32, entity: Some(entity) };
    (text.to_owned(), vec![entity])
}

fn user_mention() -> Entity {
    Entity::UserMention(types::UserMentionEntity {})
}

/// Sends `text` with one `user_mention` entity over `covered`.
async fn mention(engine: &ChatEngine, author: UserId, chat: &ChatRef, text: &str, covered: &str) -> MessageId {
    send_with(engine, author, chat, with_entity(text, covered, user_mention())).await
}

async fn send_with(engine: &ChatEngine, author: UserId, chat: &ChatRef, (text, entities): (String, Vec<types::MessageEntity>)) -> MessageId {
    let request = messages::SendMessage { chat_ref: Some(*chat), message: text, entities, ..Default::default() };
    MessageId(engine.send_message(author, request).await.unwrap().message_id)
}

async fn mentions_count(engine: &ChatEngine, user: UserId, chat: &ChatRef) -> u32 {
    conversation(engine, user, chat).await.unread_mentions_count
}

async fn unread_mentions(engine: &ChatEngine, user: UserId, chat: &ChatRef) -> Vec<u64> {
    engine.get_unread_mentions(user, GetUnreadMentions { chat_ref: Some(*chat) }).await.unwrap().message_ids
}

async fn set_username(engine: &ChatEngine, user: UserId, username: &str) {
    let profile = types::User { id: user.get(), name: format!("user{user}"), username: Some(username.into()), ..Default::default() };
    engine.upsert_user(profile).await.unwrap();
}

#[tokio::test]
async fn a_user_mention_of_at_and_the_id_counts_for_the_mentioned_member_until_they_read_past_it() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    let first = mention(&f.engine, ANN, &group(id), "hey @2 look", "@2").await;
    let second = mention(&f.engine, CAT, &group(id), "@2 again", "@2").await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 2);
    assert_eq!(mentions_count(&f.engine, CAT, &group(id)).await, 0, "only the mentioned member counts it");
    mark_read(&f.engine, BOB, &group(id), first).await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 1);
    mark_read(&f.engine, BOB, &group(id), second).await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 0);
}

#[tokio::test]
async fn a_user_mention_in_angle_brackets_counts_too() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    mention(&f.engine, ANN, &group(id), "ping <@2>", "<@2>").await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 1);
}

#[tokio::test]
async fn a_user_mention_whose_text_is_neither_form_mentions_nobody_and_is_kept_as_formatting() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let sent = mention(&f.engine, ANN, &group(id), "hi @bob", "@bob").await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 0);
    let history = f.engine.get_history(BOB, messages::GetHistory { chat_ref: Some(group(id)), ..Default::default() }).await.unwrap();
    assert_eq!(history.messages[0].message_id, sent.get());
    assert_eq!(history.messages[0].entities[0].entity, Some(user_mention()), "the entity is stored as given");
}

#[tokio::test]
async fn a_username_mention_resolves_through_the_username_index_ascii_case_insensitively() {
    let f = fixture().await;
    set_username(&f.engine, BOB, "Bobby").await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    send_with(&f.engine, ANN, &group(id), with_entity("cc @bobby", "@bobby", Entity::Username(true))).await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 1);
}

#[tokio::test]
async fn a_renamed_user_is_mentioned_by_the_new_username_and_no_longer_by_the_old_one() {
    let f = fixture().await;
    set_username(&f.engine, BOB, "bob").await;
    set_username(&f.engine, BOB, "robert").await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    send_with(&f.engine, ANN, &group(id), with_entity("@bob", "@bob", Entity::Username(true))).await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 0, "the old name is free");
    send_with(&f.engine, ANN, &group(id), with_entity("@robert", "@robert", Entity::Username(true))).await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 1);
    set_username(&f.engine, CAT, "bob").await; // the freed name can be taken
    send_with(&f.engine, ANN, &group(id), with_entity("@bob", "@bob", Entity::Username(true))).await;
    assert_eq!(mentions_count(&f.engine, CAT, &group(id)).await, 1);
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn a_username_held_by_another_user_is_refused_and_changes_nothing() {
    let f = fixture().await;
    set_username(&f.engine, BOB, "bob").await;
    let position = f.engine.last_position();
    let taken = types::User { id: CAT.get(), name: "cat".into(), username: Some("BOB".into()), ..Default::default() };
    let refused = f.engine.upsert_user(taken).await;
    assert!(matches!(&refused, Err(EngineError::UsernameTaken { user, .. }) if *user == BOB), "{refused:?}");
    assert_eq!(refused.unwrap_err().rpc_code(), 409);
    assert_eq!(f.engine.last_position(), position);
}

#[tokio::test]
async fn mentions_of_non_members_and_unknown_users_count_for_nobody() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let (text, mut entities) = with_entity("@3 @999", "@3", user_mention());
    entities.extend(with_entity("@3 @999", "@999", user_mention()).1);
    send_with(&f.engine, ANN, &group(id), (text, entities)).await;
    f.engine.add_chat_member(ANN, chats::AddChatMember { chat_ref: Some(group(id)), user_id: CAT.get() }).await.unwrap();
    assert_eq!(mentions_count(&f.engine, CAT, &group(id)).await, 0, "not a member when mentioned");
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn an_id_in_the_text_without_a_mention_entity_mentions_nobody() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    send(&f.engine, ANN, &group(id), "@2 plain text").await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 0);
}

#[tokio::test]
async fn the_author_mentioning_themselves_counts_nothing() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    mention(&f.engine, ANN, &group(id), "note to @1", "@1").await;
    assert_eq!(mentions_count(&f.engine, ANN, &group(id)).await, 0);
}

#[tokio::test]
async fn a_mention_in_the_first_message_of_a_dm_counts_for_the_peer() {
    let f = fixture().await;
    mention(&f.engine, ANN, &dm(BOB), "@2 hello", "@2").await;
    assert_eq!(mentions_count(&f.engine, BOB, &dm(ANN)).await, 1);
}

#[tokio::test]
async fn deleting_a_mentioning_message_lowers_the_unread_mentions_count() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let first = mention(&f.engine, ANN, &group(id), "@2 one", "@2").await;
    mention(&f.engine, ANN, &group(id), "@2 two", "@2").await;
    let delete = messages::DeleteMessage { chat_ref: Some(group(id)), message_ids: vec![first.get()] };
    f.engine.delete_message(ANN, delete).await.unwrap();
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 1);
}

#[tokio::test]
async fn editing_a_message_resolves_its_mentions_again() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    let sent = mention(&f.engine, ANN, &group(id), "@2 look", "@2").await;
    let (message, entities) = with_entity("@3 look", "@3", user_mention());
    let edit = messages::EditMessage { chat_ref: Some(group(id)), message_id: sent.get(), message: Some(message), entities, ..Default::default() };
    f.engine.edit_message(ANN, edit).await.unwrap();
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 0, "no longer mentioned");
    assert_eq!(mentions_count(&f.engine, CAT, &group(id)).await, 1, "mentioned now");
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn get_unread_mentions_lists_the_unread_mentioning_messages_oldest_first() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let read = mention(&f.engine, ANN, &group(id), "@2 a", "@2").await;
    send(&f.engine, ANN, &group(id), "no mention").await;
    let unread_one = mention(&f.engine, ANN, &group(id), "@2 b", "@2").await;
    let unread_two = mention(&f.engine, ANN, &group(id), "<@2> c", "<@2>").await;
    mark_read(&f.engine, BOB, &group(id), read).await;
    assert_eq!(unread_mentions(&f.engine, BOB, &group(id)).await, [unread_one.get(), unread_two.get()]);
    assert_eq!(unread_mentions(&f.engine, ANN, &group(id)).await, Vec::<u64>::new());
}

#[tokio::test]
async fn get_unread_mentions_lists_at_most_unread_mentions_ids_max() {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(START_MS);
    let mut config = config(&clock);
    config.limits.unread_mentions_ids_max = 2;
    let engine = ChatEngine::open(dir.path(), config).await.unwrap();
    for id in 1..=2 {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(mention(&engine, ANN, &dm(BOB), "@2", "@2").await.get());
    }
    assert_eq!(unread_mentions(&engine, BOB, &dm(ANN)).await, sent[..2], "the oldest first");
    assert_eq!(conversation(&engine, BOB, &dm(ANN)).await.unread_mentions_count, 3, "the count is not bounded");
}

#[tokio::test]
async fn reading_publishes_the_unread_mentions_count_left() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let first = mention(&f.engine, ANN, &group(id), "@2 one", "@2").await;
    mention(&f.engine, ANN, &group(id), "@2 two", "@2").await;
    let mut updates = f.engine.subscribe(BOB);
    mark_read(&f.engine, BOB, &group(id), first).await;
    let last_read = loop {
        // Updates of the sends may still be on their way: skip them.
        if let Some(Update::ConversationLastRead(last_read)) = updates.next().await.unwrap().update.update {
            break last_read;
        }
    };
    assert_eq!((last_read.unread_count, last_read.unread_mentions_count), (Some(1), Some(1)));
}

#[tokio::test]
async fn a_member_who_leaves_and_rejoins_does_not_count_mentions_from_before() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    mention(&f.engine, ANN, &group(id), "@2 before", "@2").await;
    f.engine.remove_chat_member(BOB, chats::RemoveChatMember { chat_ref: Some(group(id)), user_id: BOB.get() }).await.unwrap();
    f.engine.add_chat_member(ANN, chats::AddChatMember { chat_ref: Some(group(id)), user_id: BOB.get() }).await.unwrap();
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 0);
    assert_eq!(unread_mentions(&f.engine, BOB, &group(id)).await, Vec::<u64>::new());
}

#[tokio::test]
async fn unread_mentions_survive_reopening() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let sent = mention(&f.engine, ANN, &group(id), "@2 kept", "@2").await;
    let f = f.reopen().await;
    assert_eq!(mentions_count(&f.engine, BOB, &group(id)).await, 1);
    assert_eq!(unread_mentions(&f.engine, BOB, &group(id)).await, [sent.get()]);
}
