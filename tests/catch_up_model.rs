//! Property test of catch-up (issue #13): random histories of messages, edits, deletes,
//! reads and drafts in Ann's chats (and one she is not in), with random disconnects and
//! reconnects of Ann's phone. The phone applies whole positions only: on a disconnect it
//! keeps a random prefix of the updates received, ending at a position boundary, and its
//! token is the last position applied; on a reconnect it calls `subscribe_from(token)`.
//!
//! Checked:
//! - no update arrives whose sequence's `previous` is after the phone's token (no gap goes
//!   unseen: there is none to see);
//! - what the phone applied, in order, is exactly what her laptop, connected throughout,
//!   received;
//! - the phone's model (the messages and drafts of the first `get_chats`/`get_history`,
//!   with every applied update applied; a message Ann sends clears her draft there)
//!   equals the engine's views at the end.
//!
//! Fixed seed; cases: `PROPTEST_CASES` (default 24).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{ANN, BOB, CAT, DAN, create_group, dm, group, own_chat, send};
use osmium_state::proto::ids::{MessageId, Position, UserId};
use osmium_state::proto::refs::ChatRef;
use osmium_state::proto::updates::update::Update;
use osmium_state::proto::{chats, messages};
use osmium_state::{ChatEngine, Resumed, Sequence, Subscription, TaggedUpdate};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Step {
    Send { chat: usize, author: usize },
    Edit { pick: usize },
    Delete { pick: usize },
    ReadOnLaptop { chat: usize },
    Draft { chat: usize, who: usize },
    Disconnect { keep: usize },
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..5usize, 0..3usize).prop_map(|(chat, author)| Step::Send { chat, author }),
        2 => any::<usize>().prop_map(|pick| Step::Edit { pick }),
        2 => any::<usize>().prop_map(|pick| Step::Delete { pick }),
        2 => (0..5usize).prop_map(|chat| Step::ReadOnLaptop { chat }),
        1 => (0..5usize, 0..3usize).prop_map(|(chat, who)| Step::Draft { chat, who }),
        2 => any::<usize>().prop_map(|keep| Step::Disconnect { keep }),
        2 => Just(Step::Reconnect),
    ]
}

/// Ann's key for a chat: how she names it.
fn key(chat_ref: &ChatRef) -> String {
    format!("{chat_ref:?}")
}

/// What Ann's phone knows: per chat, messages (id -> text) and her draft.
#[derive(Debug, Default, PartialEq)]
struct Model {
    messages: BTreeMap<String, BTreeMap<u64, String>>,
    drafts: BTreeMap<String, Option<String>>,
}

impl Model {
    fn apply(&mut self, update: &TaggedUpdate) {
        match update.update.update.as_ref().unwrap() {
            Update::MessageCreated(created) => {
                let message = created.message.as_ref().unwrap();
                let chat = key(message.chat_ref.as_ref().unwrap());
                if message.author_id == ANN.get() {
                    self.drafts.insert(chat.clone(), None); // sending clears the sender's draft
                }
                self.messages.entry(chat).or_default().insert(message.message_id, message.message.clone());
            }
            Update::Message(edited) => {
                let message = edited.message.as_ref().unwrap();
                self.messages.entry(key(message.chat_ref.as_ref().unwrap())).or_default().insert(message.message_id, message.message.clone());
            }
            Update::MessageDeleted(deleted) => {
                let messages = self.messages.entry(key(deleted.chat_ref.as_ref().unwrap())).or_default();
                for id in &deleted.message_ids {
                    messages.remove(id);
                }
            }
            Update::Chat(chat) => {
                let conversation = chat.chat.as_ref().unwrap().chat.as_ref().unwrap();
                self.drafts.insert(key(conversation.chat_ref.as_ref().unwrap()), conversation.draft.clone());
            }
            _ => {}
        }
    }
}

/// The engine's views as the model keeps them.
async fn views(engine: &ChatEngine) -> Model {
    let mut model = Model::default();
    let list = engine.get_chats(ANN, chats::GetChats { limit: Some(100), ..Default::default() }).await.unwrap();
    for chat in &list.chats {
        let chat_ref = chat.chat_ref.unwrap();
        model.drafts.insert(key(&chat_ref), chat.draft.clone());
        let history =
            engine.get_history(ANN, messages::GetHistory { chat_ref: Some(chat_ref), limit: Some(100), offset: None }).await.unwrap();
        let messages = model.messages.entry(key(&chat_ref)).or_default();
        for message in history.messages {
            messages.insert(message.message_id, message.message);
        }
    }
    model
}

struct Phone {
    subscription: Option<Subscription>,
    token: Position,
    model: Model,
    applied: Vec<TaggedUpdate>,
}

impl Phone {
    fn apply(&mut self, update: TaggedUpdate) {
        if let Some(previous) = update.sequence.previous() {
            assert!(previous <= self.token, "a gap before {update:?} (token {})", self.token);
        }
        self.token = self.token.max(update.position);
        self.model.apply(&update);
        self.applied.push(update);
    }
}

/// Receives until the marker (a draft in Ann's own chat, one update at the returned position).
async fn until_marker(engine: &ChatEngine, subscription: &mut Subscription, text: &str) -> Vec<TaggedUpdate> {
    engine.save_draft(ANN, own_chat(), Some(text.into())).await.unwrap();
    let marker = engine.last_position();
    let mut received = Vec::new();
    while let Some(update) = subscription.next().await {
        let position = update.position;
        if update.sequence != Sequence::Unlogged {
            received.push(update);
        }
        if position >= marker {
            break;
        }
    }
    received
}

async fn run(steps: &[Step]) {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(common::START_MS);
    let engine = ChatEngine::open(dir.path(), common::config(&clock)).await.unwrap();
    for id in 1..=6 {
        engine.upsert_user(osmium_state::proto::types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    let trio = create_group(&engine, ANN, &[BOB, CAT]).await;
    let pair = create_group(&engine, DAN, &[ANN]).await;
    for (actor, peer) in [(ANN, BOB), (ANN, CAT), (BOB, CAT), (ANN, ANN)] {
        let chat_ref = if actor == peer { own_chat() } else { dm(peer) };
        engine.get_chat(actor, chats::GetChat { chat_ref: Some(chat_ref) }).await.unwrap();
    }
    let chats: Vec<(Vec<UserId>, Vec<ChatRef>)> = vec![
        (vec![ANN, BOB, CAT], vec![group(trio); 3]),
        (vec![DAN, ANN, DAN], vec![group(pair); 3]),
        (vec![ANN, BOB, ANN], vec![dm(BOB), dm(ANN), dm(BOB)]),
        (vec![ANN, CAT, CAT], vec![dm(CAT), dm(ANN), dm(ANN)]),
        (vec![BOB, CAT, BOB], vec![dm(CAT), dm(BOB), dm(CAT)]),
    ];
    let mut laptop = engine.subscribe(ANN);
    let start = engine.read_position();
    let Resumed::Subscribed(first) = engine.subscribe_from(ANN, start).unwrap() else { panic!("too far behind") };
    let mut phone = Phone { subscription: Some(first), token: start, model: views(&engine).await, applied: Vec::new() };
    let mut sent: Vec<(usize, usize, MessageId)> = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Send { chat, author } => {
                let (members, refs) = &chats[*chat];
                let message = send(&engine, members[*author], &refs[*author], &format!("message {n}")).await;
                sent.push((*chat, *author, message));
            }
            Step::Edit { pick } if !sent.is_empty() => {
                let (chat, author, message) = sent[pick % sent.len()];
                let (members, refs) = &chats[chat];
                let edit = messages::EditMessage {
                    chat_ref: Some(refs[author]),
                    message_id: message.get(),
                    message: Some(format!("edited {n}")),
                    ..Default::default()
                };
                engine.edit_message(members[author], edit).await.unwrap();
            }
            Step::Delete { pick } if !sent.is_empty() => {
                let (chat, author, message) = sent.swap_remove(pick % sent.len());
                let (members, refs) = &chats[chat];
                let delete = messages::DeleteMessage { chat_ref: Some(refs[author]), message_ids: vec![message.get()] };
                engine.delete_message(members[author], delete).await.unwrap();
            }
            Step::ReadOnLaptop { chat } => {
                let (members, refs) = &chats[*chat];
                if let (Some(ann), Some((_, _, last))) =
                    (members.iter().position(|member| *member == ANN), sent.iter().rev().find(|(c, _, _)| c == chat))
                {
                    common::mark_read(&engine, ANN, &refs[ann], *last).await;
                }
            }
            Step::Draft { chat, who } => {
                let (members, refs) = &chats[*chat];
                engine.save_draft(members[*who], refs[*who], Some(format!("draft {n}"))).await.unwrap();
            }
            Step::Disconnect { keep } => {
                if let Some(mut subscription) = phone.subscription.take() {
                    let received = until_marker(&engine, &mut subscription, &format!("disconnect {n}")).await;
                    drop(subscription);
                    let mut kept = keep % (received.len() + 1);
                    while kept > 0 && kept < received.len() && received[kept].position == received[kept - 1].position {
                        kept += 1; // whole positions only
                    }
                    for update in received.into_iter().take(kept) {
                        phone.apply(update);
                    }
                }
            }
            Step::Reconnect => {
                if phone.subscription.is_none() {
                    let Resumed::Subscribed(subscription) = engine.subscribe_from(ANN, phone.token).unwrap() else {
                        panic!("too far behind")
                    };
                    phone.subscription = Some(subscription);
                }
            }
            Step::Edit { .. } | Step::Delete { .. } => {}
        }
    }
    if phone.subscription.is_none() {
        let Resumed::Subscribed(subscription) = engine.subscribe_from(ANN, phone.token).unwrap() else { panic!("too far behind") };
        phone.subscription = Some(subscription);
    }
    let mut subscription = phone.subscription.take().unwrap();
    for update in until_marker(&engine, &mut subscription, "end").await {
        phone.apply(update);
    }
    let end = engine.last_position();
    let mut seen_by_laptop = Vec::new();
    while let Some(update) = laptop.next().await {
        let position = update.position;
        if update.sequence != Sequence::Unlogged && position > start {
            seen_by_laptop.push(update);
        }
        if position >= end {
            break;
        }
    }
    assert_eq!(phone.applied, seen_by_laptop, "the phone applied exactly what the laptop saw, in order");
    assert_eq!(phone.model, views(&engine).await, "the phone's model equals the engine's views");
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: RngSeed::Fixed(13),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn live_and_caught_up_updates_applied_to_the_first_views_reproduce_the_engines_views(steps in prop::collection::vec(step(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(&steps));
    }
}
