//! Model-based property test: random histories of chat commands from four users over two
//! DMs and two groups run against the engine and against a plain in-memory model. After
//! every step, every user's view of every chat (unread count, read position, last message,
//! draft, mute, membership) must equal the model's, and the chat list must be ordered;
//! at the end the projections must equal a fold of the log.
//!
//! Cases: `PROPTEST_CASES` (default 48). Failures are kept under `proptest-regressions/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::refs::ChatRef;
use osmium_state::proto::{chats, messages, refs, types};
use osmium_state::{ChatEngine, Durability, EngineError};
use proptest::prelude::*;
use std::collections::BTreeMap;

const USERS: [u64; 4] = [1, 2, 3, 4];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Chat {
    /// DM between users 1 and 2.
    DmOneTwo,
    /// DM between users 2 and 3.
    DmTwoThree,
    /// Group owned by 1 with 2 and 3.
    GroupA,
    /// Group owned by 2 with 3 and 4.
    GroupB,
}

#[derive(Clone, Copy, Debug)]
enum ReadTarget {
    Old,
    Latest,
    BeyondLast,
}

#[derive(Clone, Debug)]
enum Step {
    Send { user: u64, chat: Chat },
    MarkRead { user: u64, chat: Chat, target: ReadTarget },
    Delete { user: u64, chat: Chat, nth: usize },
    Edit { user: u64, chat: Chat, nth: usize },
    Draft { user: u64, chat: Chat, text: Option<String> },
    Mute { user: u64, chat: Chat, muted: bool },
    Leave { user: u64, chat: Chat },
    Add { actor: u64, chat: Chat, user: u64 },
    Reopen,
}

fn user() -> impl Strategy<Value = u64> {
    prop::sample::select(USERS.to_vec())
}

fn chat() -> impl Strategy<Value = Chat> {
    prop_oneof![Just(Chat::DmOneTwo), Just(Chat::DmTwoThree), Just(Chat::GroupA), Just(Chat::GroupB)]
}

fn step() -> impl Strategy<Value = Step> {
    let target = prop_oneof![Just(ReadTarget::Old), Just(ReadTarget::Latest), Just(ReadTarget::BeyondLast)];
    prop_oneof![
        6 => (user(), chat()).prop_map(|(user, chat)| Step::Send { user, chat }),
        4 => (user(), chat(), target).prop_map(|(user, chat, target)| Step::MarkRead { user, chat, target }),
        2 => (user(), chat(), 0usize..6).prop_map(|(user, chat, nth)| Step::Delete { user, chat, nth }),
        1 => (user(), chat(), 0usize..6).prop_map(|(user, chat, nth)| Step::Edit { user, chat, nth }),
        2 => (user(), chat(), prop::option::of("[a-z]{0,3}")).prop_map(|(user, chat, text)| Step::Draft { user, chat, text }),
        1 => (user(), chat(), any::<bool>()).prop_map(|(user, chat, muted)| Step::Mute { user, chat, muted }),
        1 => (user(), prop_oneof![Just(Chat::GroupA), Just(Chat::GroupB)]).prop_map(|(user, chat)| Step::Leave { user, chat }),
        1 => (user(), prop_oneof![Just(Chat::GroupA), Just(Chat::GroupB)], user())
            .prop_map(|(actor, chat, user)| Step::Add { actor, chat, user }),
        1 => Just(Step::Reopen),
    ]
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ModelMember {
    read: u64,
    join_order: u64,
    draft: Option<String>,
    muted: bool,
}

#[derive(Clone, Debug, Default)]
struct ModelChat {
    id: u64,
    exists: bool,
    group_owner: Option<u64>,
    closed: bool,
    joins: u64,
    members: BTreeMap<u64, ModelMember>,
    /// (message id, author, live)
    messages: Vec<(u64, u64, bool)>,
}

impl ModelChat {
    fn last_live(&self) -> Option<u64> {
        self.messages.iter().rev().find(|(_, _, live)| *live).map(|(id, _, _)| *id)
    }

    fn member(&self, user: u64) -> Option<&ModelMember> {
        if !self.exists || self.closed { None } else { self.members.get(&user) }
    }

    fn join(&mut self, user: u64) {
        let member = ModelMember { read: self.last_live().unwrap_or(0), join_order: self.joins, ..ModelMember::default() };
        self.joins += 1;
        self.members.insert(user, member);
    }

    /// The conversation `user` should see.
    fn expected(&self, user: u64) -> Option<(u64, u64, u32, Option<String>, bool)> {
        let member = self.member(user)?;
        let last = self.last_live();
        let unread = self.messages.iter().filter(|(id, author, live)| *live && *id > member.read && *author != user).count();
        let last_read = last.map_or(0, |last| member.read.min(last));
        Some((last.unwrap_or(self.id), last_read, unread as u32, member.draft.clone(), member.muted))
    }
}

struct Harness {
    fixture: Fixture,
    chats: BTreeMap<Chat, ModelChat>,
}

fn chat_ref(chat: Chat, viewer: u64, model: &ModelChat) -> ChatRef {
    match chat {
        Chat::DmOneTwo => dm(UserId(if viewer == 1 { 2 } else { 1 })),
        Chat::DmTwoThree => dm(UserId(if viewer == 2 { 3 } else { 2 })),
        Chat::GroupA | Chat::GroupB => group(model.id),
    }
}

fn dm_members(chat: Chat) -> Option<(u64, u64)> {
    match chat {
        Chat::DmOneTwo => Some((1, 2)),
        Chat::DmTwoThree => Some((2, 3)),
        _ => None,
    }
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = osmium_state::ManualClock::new(START_MS);
        let mut config = config(&clock);
        config.log.durability = Durability::Buffered;
        let engine = ChatEngine::open(dir.path(), config).await.unwrap();
        for id in USERS {
            engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
        }
        let mut chats = BTreeMap::new();
        for (chat, owner, members) in [(Chat::GroupA, 1u64, [2u64, 3]), (Chat::GroupB, 2, [3, 4])] {
            let users = members.iter().map(|&user_id| refs::UserRef { user_id }).collect();
            let created = engine.create_chat(UserId(owner), chats::CreateChat { users, name: "g".into() }).await.unwrap();
            let mut model = ModelChat { id: created.id, exists: true, group_owner: Some(owner), ..ModelChat::default() };
            model.join(owner);
            for member in members {
                model.join(member);
            }
            chats.insert(chat, model);
        }
        chats.insert(Chat::DmOneTwo, ModelChat::default());
        chats.insert(Chat::DmTwoThree, ModelChat::default());
        Harness { fixture: Fixture { dir, engine, clock }, chats }
    }

    fn may_address(&self, user: u64, chat: Chat) -> bool {
        match dm_members(chat) {
            Some((a, b)) => user == a || user == b,
            None => true,
        }
    }

    /// Runs one step on the engine and the model; the engine's outcome must be the model's.
    async fn step(&mut self, step: &Step) {
        if matches!(step, Step::Reopen) {
            let fixture = std::mem::replace(&mut self.fixture, placeholder().await);
            self.fixture = fixture.reopen().await;
            return;
        }
        let engine = self.fixture.engine.clone();
        match step.clone() {
            Step::Reopen => unreachable!("handled above, before the engine handle is cloned"),
            Step::Send { user, chat } => {
                if !self.may_address(user, chat) {
                    return;
                }
                let model = self.chats.get_mut(&chat).unwrap();
                let request = messages::SendMessage { chat_ref: Some(chat_ref(chat, user, model)), message: "m".into(), ..Default::default() };
                let result = engine.send_message(UserId(user), request).await;
                if dm_members(chat).is_some() && !model.exists {
                    let sent = result.unwrap();
                    let (a, b) = dm_members(chat).unwrap();
                    model.exists = true;
                    model.join(a);
                    model.join(b);
                    model.id = dm_chat_id(&engine, a, b).await;
                    model.messages.push((sent.message_id, user, true));
                    model.members.get_mut(&user).unwrap().read = sent.message_id;
                } else if model.member(user).is_some() {
                    let sent = result.unwrap();
                    model.messages.push((sent.message_id, user, true));
                    let member = model.members.get_mut(&user).unwrap();
                    member.read = sent.message_id;
                    member.draft = None;
                } else {
                    assert!(matches!(result, Err(EngineError::NotFound { .. })), "{result:?}");
                }
            }
            Step::MarkRead { user, chat, target } => {
                if !self.may_address(user, chat) {
                    return;
                }
                let model = self.chats.get_mut(&chat).unwrap();
                let last = model.last_live();
                let m = match target {
                    ReadTarget::Old => model.messages.first().map_or(1, |(id, _, _)| *id),
                    ReadTarget::Latest => last.unwrap_or(1),
                    ReadTarget::BeyondLast => u64::MAX - 1,
                };
                let request = chats::MarkChatRead { chat_ref: Some(chat_ref(chat, user, model)), message_id: m, read_amount: None };
                let result = engine.mark_chat_read(UserId(user), request).await;
                match model.members.get_mut(&user).filter(|_| model.exists && !model.closed) {
                    Some(member) => {
                        result.unwrap();
                        if let Some(last) = last {
                            member.read = member.read.max(m.min(last));
                        }
                    }
                    None => assert!(matches!(result, Err(EngineError::NotFound { .. })), "{result:?}"),
                }
            }
            Step::Delete { user, chat, nth } | Step::Edit { user, chat, nth } => {
                let deleting = matches!(step, Step::Delete { .. });
                if !self.may_address(user, chat) {
                    return;
                }
                let model = self.chats.get_mut(&chat).unwrap();
                let Some(&(id, author, live)) = model.messages.get(nth) else { return };
                let chat_ref = Some(chat_ref(chat, user, model));
                let result = if deleting {
                    engine.delete_message(UserId(user), messages::DeleteMessage { chat_ref, message_ids: vec![id] }).await
                } else {
                    let edit = messages::EditMessage { chat_ref, message_id: id, message: Some("edited".into()) };
                    engine.edit_message(UserId(user), edit).await
                };
                let allowed = author == user || (deleting && model.group_owner == Some(user));
                if model.member(user).is_none() || !live {
                    assert!(matches!(result, Err(EngineError::NotFound { .. })), "{result:?}");
                } else if !allowed {
                    assert!(matches!(result, Err(EngineError::PermissionDenied { .. })), "{result:?}");
                } else {
                    result.unwrap();
                    if deleting {
                        model.messages[nth].2 = false;
                    }
                }
            }
            Step::Draft { user, chat, text } => {
                if !self.may_address(user, chat) {
                    return;
                }
                let model = self.chats.get_mut(&chat).unwrap();
                let result = engine.save_draft(UserId(user), chat_ref(chat, user, model), text.clone()).await;
                match model.members.get_mut(&user).filter(|_| model.exists && !model.closed) {
                    Some(member) => {
                        result.unwrap();
                        member.draft = text.filter(|text| !text.is_empty());
                    }
                    None => assert!(matches!(result, Err(EngineError::NotFound { .. })), "{result:?}"),
                }
            }
            Step::Mute { user, chat, muted } => {
                if !self.may_address(user, chat) {
                    return;
                }
                let model = self.chats.get_mut(&chat).unwrap();
                let result = engine.set_muted(UserId(user), chat_ref(chat, user, model), muted).await;
                match model.members.get_mut(&user).filter(|_| model.exists && !model.closed) {
                    Some(member) => {
                        result.unwrap();
                        member.muted = muted;
                    }
                    None => assert!(matches!(result, Err(EngineError::NotFound { .. })), "{result:?}"),
                }
            }
            Step::Leave { user, chat } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let request = chats::RemoveChatMember { chat_ref: Some(group(model.id)), user_id: user };
                let result = engine.remove_chat_member(UserId(user), request).await;
                if model.member(user).is_none() {
                    assert!(matches!(result, Err(EngineError::NotFound { .. })), "{result:?}");
                    return;
                }
                result.unwrap();
                model.members.remove(&user);
                if model.group_owner == Some(user) {
                    match model.members.iter().min_by_key(|(_, member)| member.join_order) {
                        Some((&successor, _)) => model.group_owner = Some(successor),
                        None => model.closed = true,
                    }
                }
            }
            Step::Add { actor, chat, user } => {
                let model = self.chats.get_mut(&chat).unwrap();
                let request = chats::AddChatMember { chat_ref: Some(group(model.id)), user_id: user };
                let result = engine.add_chat_member(UserId(actor), request).await;
                if model.member(actor).is_none() {
                    assert!(matches!(result, Err(EngineError::NotFound { .. })), "{result:?}");
                } else if model.group_owner != Some(actor) {
                    assert!(matches!(result, Err(EngineError::PermissionDenied { .. })), "{result:?}");
                } else if model.members.contains_key(&user) {
                    assert!(matches!(result, Err(EngineError::AlreadyMember)), "{result:?}");
                } else {
                    result.unwrap();
                    model.join(user);
                }
            }
        }
    }

    /// Every user's view of every chat equals the model's; chat lists are ordered.
    async fn check(&self) {
        let engine = &self.fixture.engine;
        for user in USERS {
            for (chat, model) in &self.chats {
                if !self.may_address(user, *chat) {
                    continue;
                }
                let got = conversation_result(engine, UserId(user), &chat_ref(*chat, user, model)).await;
                match (model.expected(user), got) {
                    (Some(expected), Ok(conversation)) => {
                        let seen = (
                            conversation.last_message_id,
                            conversation.last_read_message_id,
                            conversation.unread_count,
                            conversation.draft,
                            conversation.muted,
                        );
                        assert_eq!(seen, expected, "user {user} in {chat:?}");
                        assert!(conversation.last_read_message_id <= conversation.last_message_id);
                    }
                    (None, Err(EngineError::NotFound { .. })) => {}
                    (expected, got) => panic!("user {user} in {chat:?}: expected {expected:?}, got {got:?}"),
                }
            }
            let list = engine.get_chats(UserId(user), chats::GetChats::default()).await.unwrap();
            let ids: Vec<u64> = list.chats.iter().map(|c| c.last_message_id).collect();
            assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "chat list of {user} is ordered: {ids:?}");
            let member_of = self.chats.values().filter(|model| model.member(user).is_some()).count();
            assert_eq!(ids.len(), member_of, "user {user} lists every chat they are in");
        }
    }
}

async fn dm_chat_id(engine: &ChatEngine, a: u64, b: u64) -> u64 {
    // A DM's id is what its conversation sorts by before any message: read it from the log.
    let events = engine.log().read_all(osmium_state::proto::ids::Position(1), 100_000).unwrap();
    events
        .iter()
        .rev()
        .find_map(|event| match (&event.event, event.stream.as_ref().and_then(|s| s.stream)) {
            (
                Some(osmium_state::proto::events::event_envelope::Event::DirectChatCreated(created)),
                Some(osmium_state::proto::events::stream_ref::Stream::ChatId(chat)),
            ) if (created.user_a, created.user_b) == (a, b) || (created.user_a, created.user_b) == (b, a) => Some(chat),
            _ => None,
        })
        .unwrap()
}

async fn placeholder() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(START_MS);
    let engine = ChatEngine::open(dir.path(), config(&clock)).await.unwrap();
    Fixture { dir, engine, clock }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "tests/proptest-regressions/read_state_model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn read_state_matches_the_model_after_every_step(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let mut harness = Harness::new().await;
            for step in &steps {
                harness.step(step).await;
                harness.check().await;
            }
            assert_projections_equal_a_fold_of_the_log(&harness.fixture.engine);
        });
    }
}
