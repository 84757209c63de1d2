//! Notification preferences (`Conversation.notif_prefs`): stored per member, shown in the
//! conversation, and what live updates' `notify` follows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::events::{self, EventEnvelope, StreamRef, event_envelope::Event, stream_ref::Stream};
use osmium_state::proto::ids::{MessageId, UserId};
use osmium_state::proto::refs::ChatRef;
use osmium_state::proto::types::{self, NotifPrefs, message_entity::Entity};
use osmium_state::proto::updates::update::Update;
use osmium_state::proto::messages;
use osmium_state::{ChatEngine, Subscription};

/// The `notify` of the update announcing `message` (other updates skipped).
async fn notify_of(updates: &mut Subscription, message: MessageId) -> bool {
    loop {
        let update = updates.next().await.expect("the subscription stays open");
        if let Some(Update::MessageCreated(created)) = &update.update.update
            && created.message.as_ref().unwrap().message_id == message.get()
        {
            return update.notify;
        }
    }
}

/// Sends `text` mentioning `mentioned` (`@id` under a `user_mention` entity) after it.
async fn send_mentioning(engine: &ChatEngine, author: UserId, chat: &ChatRef, mentioned: UserId) -> MessageId {
    let text = format!("hey @{mentioned}");
    let entity = types::MessageEntity {
        start_index: 4,
        length: text.len() as u32 - 4,
        entity: Some(Entity::UserMention(types::UserMentionEntity {})),
    };
    let request = messages::SendMessage { chat_ref: Some(*chat), message: text, entities: vec![entity], ..Default::default() };
    MessageId(engine.send_message(author, request).await.unwrap().message_id)
}

#[tokio::test]
async fn a_new_member_is_notified_of_everything_all() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    assert_eq!(conversation(&f.engine, BOB, &group(id)).await.notif_prefs, NotifPrefs::All as i32);
}

#[tokio::test]
async fn notif_prefs_none_never_notifies_not_even_of_a_mention() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_notif_prefs(BOB, group(id), NotifPrefs::None).await.unwrap();
    let mut updates = f.engine.subscribe(BOB);
    let plain = send(&f.engine, ANN, &group(id), "plain").await;
    let mention = send_mentioning(&f.engine, ANN, &group(id), BOB).await;
    assert!(!notify_of(&mut updates, plain).await);
    assert!(!notify_of(&mut updates, mention).await);
}

#[tokio::test]
async fn notif_prefs_mentions_notifies_only_of_messages_that_mention_the_member() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    f.engine.set_notif_prefs(BOB, group(id), NotifPrefs::Mentions).await.unwrap();
    let mut updates = f.engine.subscribe(BOB);
    let plain = send(&f.engine, ANN, &group(id), "plain").await;
    let someone_else = send_mentioning(&f.engine, ANN, &group(id), CAT).await;
    let bob = send_mentioning(&f.engine, ANN, &group(id), BOB).await;
    assert!(!notify_of(&mut updates, plain).await);
    assert!(!notify_of(&mut updates, someone_else).await);
    assert!(notify_of(&mut updates, bob).await);
}

#[tokio::test]
async fn notif_prefs_all_and_default_notify_every_message_from_someone_else() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB, CAT]).await;
    f.engine.set_notif_prefs(BOB, group(id), NotifPrefs::All).await.unwrap();
    f.engine.set_notif_prefs(CAT, group(id), NotifPrefs::Default).await.unwrap();
    let mut bob = f.engine.subscribe(BOB);
    let mut cat = f.engine.subscribe(CAT);
    let plain = send(&f.engine, ANN, &group(id), "plain").await;
    assert!(notify_of(&mut bob, plain).await);
    assert!(notify_of(&mut cat, plain).await);
}

#[tokio::test]
async fn the_author_is_never_notified_of_their_own_message() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let mut updates = f.engine.subscribe(ANN);
    let own = send_mentioning(&f.engine, ANN, &group(id), ANN).await;
    assert!(!notify_of(&mut updates, own).await);
}

#[tokio::test]
async fn set_muted_is_notif_prefs_none_and_unmuting_is_all() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_muted(BOB, group(id), true).await.unwrap();
    assert_eq!(conversation(&f.engine, BOB, &group(id)).await.notif_prefs, NotifPrefs::None as i32);
    f.engine.set_notif_prefs(BOB, group(id), NotifPrefs::Mentions).await.unwrap();
    f.engine.set_muted(BOB, group(id), false).await.unwrap();
    assert_eq!(conversation(&f.engine, BOB, &group(id)).await.notif_prefs, NotifPrefs::All as i32);
}

#[tokio::test]
async fn notif_prefs_are_per_member_and_survive_reopening() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    f.engine.set_notif_prefs(BOB, group(id), NotifPrefs::Mentions).await.unwrap();
    let f = f.reopen().await;
    assert_eq!(conversation(&f.engine, BOB, &group(id)).await.notif_prefs, NotifPrefs::Mentions as i32);
    assert_eq!(conversation(&f.engine, ANN, &group(id)).await.notif_prefs, NotifPrefs::All as i32);
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}

#[tokio::test]
async fn changing_notif_prefs_publishes_the_members_conversation() {
    let f = fixture().await;
    let id = create_group(&f.engine, ANN, &[BOB]).await;
    let mut updates = f.engine.subscribe(BOB);
    f.engine.set_notif_prefs(BOB, group(id), NotifPrefs::Mentions).await.unwrap();
    let chat = loop {
        // The group's creation may still be on its way: skip it.
        if let Some(Update::Chat(chat)) = updates.next().await.unwrap().update.update {
            break chat;
        }
    };
    assert_eq!(chat.chat.unwrap().chat.unwrap().notif_prefs, NotifPrefs::Mentions as i32);
}

/// Logs written before `MuteSet.notif_prefs` existed carry only the seeds' bool: muted
/// folds as NONE, not muted as ALL.
#[test]
fn a_mute_set_event_without_notif_prefs_folds_as_the_seeds_mute() {
    use osmium_state::projections::{ProjectionState, apply};
    let chat = 7u64;
    let envelope = |position: u64, event: Event| EventEnvelope {
        position,
        stream: Some(StreamRef { stream: Some(Stream::ChatId(chat)) }),
        stream_version: position,
        recorded_at_ms: START_MS,
        actor_id: 1,
        event: Some(event),
    };
    let mut state = ProjectionState::in_memory();
    let created = events::GroupCreated { owner_id: 1, name: "g".into(), member_ids: vec![2, 3] };
    apply(&mut state, &envelope(1, Event::GroupCreated(created))).unwrap();
    apply(&mut state, &envelope(2, Event::MuteSet(events::MuteSet { user_id: 2, muted: true, notif_prefs: None }))).unwrap();
    apply(&mut state, &envelope(3, Event::MuteSet(events::MuteSet { user_id: 3, muted: false, notif_prefs: None }))).unwrap();
    use osmium_state::projections::NotifPrefs as Stored;
    let chat = osmium_state::proto::ids::ChatId(chat);
    assert_eq!(state.member(chat, UserId(2)).unwrap().unwrap().notif_prefs, Stored::None);
    assert_eq!(state.member(chat, UserId(3)).unwrap().unwrap().notif_prefs, Stored::All);
}
