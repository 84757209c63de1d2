//! Micro benchmarks of the engine on a temporary directory: one send in a group of two
//! (`Sync` and `Buffered`: one event through the whole write path), `get_chats`
//! (limit 50) and `mark_chat_read`.
//! `cargo bench -p osmium-state --bench engine`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use osmium_state::proto::ids::UserId;
use osmium_state::proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_state::proto::{chats, messages, types};
use osmium_state::{ChatEngine, Durability, EngineConfig, LogConfig};
use std::hint::black_box;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Users in the chat list of the `get_chats` and `mark_chat_read` benchmarks.
const CHATS_PER_USER: u64 = 200;
const HUB: UserId = UserId(1);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// A group of two; its reference.
async fn group(engine: &ChatEngine, owner: UserId) -> ChatRef {
    for id in [owner.get(), owner.get() + 1] {
        engine.upsert_user(types::User { id, name: format!("user {id}"), ..Default::default() }).await.unwrap();
    }
    let users = vec![UserRef { user_id: owner.get() + 1 }];
    let created = engine.create_chat(owner, chats::CreateChat { users, name: "bench".into() }).await.unwrap();
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: created.id })) }
}

/// One send (one `message_sent` event) through the engine.
async fn send_one(engine: &ChatEngine, chat: ChatRef, author: UserId) {
    let text = "see you at the station at seven, bring the tickets".to_owned();
    engine.send_message(author, messages::SendMessage { chat_ref: Some(chat), message: text, ..Default::default() }).await.unwrap();
}

fn append(c: &mut Criterion) {
    let runtime = runtime();
    let mut group_ = c.benchmark_group("send one message");
    for durability in [Durability::Sync, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { log: LogConfig { durability, ..LogConfig::default() }, ..EngineConfig::default() };
        let engine = runtime.block_on(ChatEngine::open(dir.path(), config)).unwrap();
        let chat = runtime.block_on(group(&engine, HUB));
        if durability == Durability::Sync {
            group_.sample_size(20).measurement_time(Duration::from_secs(5));
        } else {
            group_.sample_size(50).measurement_time(Duration::from_secs(5));
        }
        group_.bench_function(format!("{durability:?}"), |b| b.iter(|| runtime.block_on(send_one(&engine, chat, HUB))));
    }
    group_.finish();
}

/// An engine (Buffered) where [`HUB`] has [`CHATS_PER_USER`] DMs.
fn engine_with_chats(runtime: &Runtime, dir: &std::path::Path) -> ChatEngine {
    runtime.block_on(async {
        let config = EngineConfig { log: LogConfig { durability: Durability::Buffered, ..LogConfig::default() }, ..EngineConfig::default() };
        let engine = ChatEngine::open(dir, config).await.unwrap();
        for id in 1..=CHATS_PER_USER + 1 {
            engine.upsert_user(types::User { id, name: format!("user {id}"), ..Default::default() }).await.unwrap();
        }
        for peer in 2..=CHATS_PER_USER + 1 {
            let to = ChatRef { r#ref: Some(Ref::User(UserRef { user_id: HUB.get() })) };
            engine.send_message(UserId(peer), messages::SendMessage { chat_ref: Some(to), message: "hi".into(), ..Default::default() }).await.unwrap();
        }
        let listed = engine.get_chats(HUB, chats::GetChats { limit: Some(100), ..Default::default() }).await.unwrap();
        assert_eq!(listed.chats.len(), 100, "the hub should list (a page of) its {CHATS_PER_USER} DMs");
        engine
    })
}

fn reads_and_marks(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_chats(&runtime, dir.path());
    c.bench_function(&format!("get_chats limit 50 (user in {CHATS_PER_USER} chats)"), |b| {
        b.iter(|| {
            let request = chats::GetChats { limit: Some(50), ..Default::default() };
            black_box(runtime.block_on(engine.get_chats(HUB, request)).unwrap())
        });
    });
    let mut peer = 1u64;
    c.bench_function("mark_chat_read (Buffered)", |b| {
        b.iter(|| {
            peer = peer % CHATS_PER_USER + 2;
            let chat_ref = ChatRef { r#ref: Some(Ref::User(UserRef { user_id: peer })) };
            let request = chats::MarkChatRead { chat_ref: Some(chat_ref), message_id: u64::MAX, read_amount: None };
            runtime.block_on(engine.mark_chat_read(HUB, request)).unwrap();
        });
    });
}

criterion_group!(benches, append, reads_and_marks);
criterion_main!(benches);
