//! Shared fixtures of the integration tests: an engine on a temp directory with a manual
//! clock, users 1..=6 in the directory, and short names for chat references.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use osmium_state::proto::ids::{MessageId, UserId};
use osmium_state::proto::refs::{ChatRef, GroupRef, RefSelf, UserRef, chat_ref::Ref};
use osmium_state::proto::{chats, media, messages, types};
use osmium_state::{ChatEngine, EngineConfig, EngineError, LogConfig, ManualClock};
use std::sync::Arc;

pub const START_MS: u64 = 1_750_000_000_000;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub engine: ChatEngine,
    pub clock: ManualClock,
}

pub fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig {
        log: LogConfig { clock: Arc::new(clock.clone()), ..LogConfig::default() },
        ..EngineConfig::default()
    }
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = ChatEngine::open(dir.path(), config(&clock)).await.unwrap();
    for id in 1..=6 {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    Fixture { dir, engine, clock }
}

impl Fixture {
    /// Closes the engine and opens the same directory again.
    pub async fn reopen(self) -> Fixture {
        let Fixture { dir, engine, clock } = self;
        drop(engine);
        let engine = ChatEngine::open(dir.path(), config(&clock)).await.unwrap();
        Fixture { dir, engine, clock }
    }
}

pub const ANN: UserId = UserId(1);
pub const BOB: UserId = UserId(2);
pub const CAT: UserId = UserId(3);
pub const DAN: UserId = UserId(4);
pub const EVE: UserId = UserId(5);

pub fn dm(peer: UserId) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: peer.get() })) }
}

pub fn group(id: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: id })) }
}

pub fn own_chat() -> ChatRef {
    ChatRef { r#ref: Some(Ref::Self_(RefSelf {})) }
}

pub async fn send(engine: &ChatEngine, actor: UserId, chat: &ChatRef, text: &str) -> MessageId {
    let request = messages::SendMessage { chat_ref: Some(*chat), message: text.into(), ..Default::default() };
    MessageId(engine.send_message(actor, request).await.unwrap().message_id)
}

/// An attachment of the uploaded file `id` (`MediaRef.uploaded`), as a client sends it.
pub fn uploaded(id: u64, mimetype: &str) -> media::MediaRef {
    let file = media::UploadedFileRef { id, name: format!("file{id}"), part_count: 1 };
    let uploaded = media::MediaRefUploadedFile { file: Some(file), mimetype: mimetype.into(), ..Default::default() };
    media::MediaRef { r#ref: Some(media::media_ref::Ref::Uploaded(uploaded)) }
}

pub async fn create_group(engine: &ChatEngine, owner: UserId, members: &[UserId]) -> u64 {
    let users = members.iter().map(|user| UserRef { user_id: user.get() }).collect();
    engine.create_chat(owner, chats::CreateChat { users, name: "crew".into() }).await.unwrap().id
}

pub async fn conversation(engine: &ChatEngine, actor: UserId, chat: &ChatRef) -> types::Conversation {
    conversation_result(engine, actor, chat).await.unwrap()
}

pub async fn conversation_result(
    engine: &ChatEngine,
    actor: UserId,
    chat: &ChatRef,
) -> Result<types::Conversation, EngineError> {
    let chat = engine.get_chat(actor, chats::GetChat { chat_ref: Some(*chat) }).await?;
    Ok(chat.chat.unwrap())
}

pub async fn mark_read(engine: &ChatEngine, actor: UserId, chat: &ChatRef, message: MessageId) {
    let request = chats::MarkChatRead { chat_ref: Some(*chat), message_id: message.get(), read_amount: None };
    engine.mark_chat_read(actor, request).await.unwrap();
}

pub async fn chat_list(engine: &ChatEngine, actor: UserId, request: chats::GetChats) -> Vec<u64> {
    engine.get_chats(actor, request).await.unwrap().chats.iter().map(|c| c.last_message_id).collect()
}

/// Flushes, then folds the whole log from scratch into memory and compares it with what
/// the engine's reads see (which, after the flush, is what is on disk).
pub async fn assert_projections_equal_a_fold_of_the_log(engine: &ChatEngine) {
    use osmium_state::proto::ids::Position;
    engine.flush().await.unwrap();
    let mut rebuilt = osmium_state::projections::ProjectionState::in_memory();
    let mut from = Position(1);
    let up_to = engine.read_position();
    while from <= up_to {
        let events = engine.log().read_all(from, 1_000).unwrap();
        let Some(last) = events.last() else { break };
        from = Position(last.position + 1);
        for event in events.iter().filter(|event| event.position <= up_to.get()) {
            osmium_state::projections::apply(&mut rebuilt, event).unwrap();
        }
    }
    let rebuilt = rebuilt.to_memstore().unwrap();
    let live = engine.projection_contents().unwrap();
    for table in osmium_state::projections::Table::ALL {
        let live_entries: Vec<_> = live.entries(table).collect();
        let rebuilt_entries: Vec<_> = rebuilt.entries(table).collect();
        assert_eq!(live_entries, rebuilt_entries, "table {table:?} differs from a fold of the log");
    }
}
