//! Catch-up after a disconnect (issue #13): a client that reconnects with the position of
//! the last update it applied gets exactly the updates it missed, in order, then live
//! ones; also after a restart and after a rebuild; too far behind, it is told to refetch.
//! Every update says the previous position of its sequence, so a loss always shows; a
//! subscriber that falls behind is closed with the token to resume from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{ANN, BOB, CAT, DAN, START_MS, create_group, dm, group, own_chat, send};
use osmium_state::maintenance::{DataDirectory, RebuildOptions};
use osmium_state::projections::Table;
use osmium_state::proto::ids::{MessageId, Position, UserId};
use osmium_state::proto::refs::ChatRef;
use osmium_state::proto::{chats, messages, types};
use osmium_state::{CatchUp, ChatEngine, EngineConfig, Limits, LogConfig, ManualClock, Resumed, Sequence, Subscription, TaggedUpdate};
use std::sync::Arc;

fn config(clock: &ManualClock, limits: Limits) -> EngineConfig {
    EngineConfig { log: LogConfig { clock: Arc::new(clock.clone()), ..LogConfig::default() }, limits, ..EngineConfig::default() }
}

fn roomy_limits() -> Limits {
    Limits { subscription_queue_max: 100_000, ..Limits::default() }
}

async fn open(dir: &std::path::Path, clock: &ManualClock, limits: Limits) -> ChatEngine {
    let engine = ChatEngine::open(dir, config(clock, limits)).await.unwrap();
    for id in 1..=6 {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    engine
}

/// Saves a draft in `user`'s own chat: one update for `user`, at the returned position,
/// after every update of the commands before it.
async fn marker(engine: &ChatEngine, user: UserId, text: &str) -> Position {
    engine.save_draft(user, own_chat(), Some(text.into())).await.unwrap();
    engine.last_position()
}

/// The subscription's updates up to and including those at `until`.
async fn receive_until(subscription: &mut Subscription, until: Position) -> Vec<TaggedUpdate> {
    let mut received = Vec::new();
    while let Some(update) = subscription.next().await {
        let position = update.position;
        received.push(update);
        if position >= until {
            break;
        }
    }
    received
}

/// Every update of `user` after `token`, page by page of at most `page` events.
fn catch_up(engine: &ChatEngine, user: UserId, token: Position, page: usize) -> Vec<TaggedUpdate> {
    let mut all = Vec::new();
    let mut token = token;
    loop {
        match engine.updates_since(user, token, page).unwrap() {
            CatchUp::Updates { updates, token: next, complete } => {
                let events: std::collections::BTreeSet<Position> = updates.iter().map(|update| update.position).collect();
                assert!(events.len() <= page, "a page holds at most {page} events");
                all.extend(updates);
                token = next;
                if complete {
                    return all;
                }
            }
            CatchUp::TooFarBehind { resume_token } => panic!("too far behind, resume from {resume_token}"),
        }
    }
}

fn logged(updates: Vec<TaggedUpdate>) -> Vec<TaggedUpdate> {
    updates.into_iter().filter(|update| update.sequence != Sequence::Unlogged).collect()
}

/// A small deterministic generator (fixed seed), so that the history is the same every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The chats of the conversation: how each member names them, and who is in them.
struct Chats {
    /// (members, each member's `ChatRef` for it).
    chats: Vec<(Vec<UserId>, Vec<ChatRef>)>,
}

async fn set_up_chats(engine: &ChatEngine) -> Chats {
    let trio = create_group(engine, ANN, &[BOB, CAT]).await;
    let pair = create_group(engine, DAN, &[ANN]).await;
    engine.get_chat(ANN, chats::GetChat { chat_ref: Some(dm(BOB)) }).await.unwrap();
    engine.get_chat(ANN, chats::GetChat { chat_ref: Some(dm(CAT)) }).await.unwrap();
    engine.get_chat(BOB, chats::GetChat { chat_ref: Some(dm(CAT)) }).await.unwrap();
    engine.get_chat(ANN, chats::GetChat { chat_ref: Some(own_chat()) }).await.unwrap();
    Chats {
        chats: vec![
            (vec![ANN, BOB, CAT], vec![group(trio); 3]),
            (vec![DAN, ANN], vec![group(pair); 2]),
            (vec![ANN, BOB], vec![dm(BOB), dm(ANN)]),
            (vec![ANN, CAT], vec![dm(CAT), dm(ANN)]),
            (vec![BOB, CAT], vec![dm(CAT), dm(BOB)]), // Ann is not in it: nothing for her
        ],
    }
}

/// `messages` messages across the chats from their members, some edited, some deleted,
/// some read by Ann on another device, drafts saved.
async fn converse(engine: &ChatEngine, chats: &Chats, messages_count: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let mut sent: Vec<(usize, usize, MessageId)> = Vec::new(); // (chat, author index, message)
    for n in 0..messages_count {
        let chat = rng.below(chats.chats.len() as u64) as usize;
        let (members, refs) = &chats.chats[chat];
        let author = rng.below(members.len() as u64) as usize;
        let message = send(engine, members[author], &refs[author], &format!("message {n}")).await;
        sent.push((chat, author, message));
        match rng.below(10) {
            0 | 1 => {
                let (chat, author, message) = sent[rng.below(sent.len() as u64) as usize];
                let (members, refs) = &chats.chats[chat];
                let edit = messages::EditMessage {
                    chat_ref: Some(refs[author]),
                    message_id: message.get(),
                    message: Some(format!("edited {n}")),
                    ..Default::default()
                };
                // An edit of a message deleted since is refused: fine, nothing happens.
                let _ = engine.edit_message(members[author], edit).await;
            }
            2 => {
                let index = rng.below(sent.len() as u64) as usize;
                let (chat, author, message) = sent.swap_remove(index);
                let (members, refs) = &chats.chats[chat];
                let delete = messages::DeleteMessage { chat_ref: Some(refs[author]), message_ids: vec![message.get()] };
                engine.delete_message(members[author], delete).await.unwrap();
            }
            3 => {
                let (members, refs) = &chats.chats[chat];
                if let Some(ann) = members.iter().position(|member| *member == ANN) {
                    common::mark_read(engine, ANN, &refs[ann], message).await;
                }
            }
            4 => {
                let (members, refs) = &chats.chats[chat];
                let drafter = rng.below(members.len() as u64) as usize;
                engine.save_draft(members[drafter], refs[drafter], Some(format!("draft {n}"))).await.unwrap();
            }
            _ => {}
        }
    }
}

/// Ann applied everything up to her token, then lost her connection; her other device
/// stayed connected and saw everything live. Returns the engine, her token and what the
/// other device saw after the token.
struct Disconnected {
    dir: tempfile::TempDir,
    clock: ManualClock,
    engine: ChatEngine,
    chats: Chats,
    token: Position,
    missed: Vec<TaggedUpdate>,
}

async fn disconnect_mid_conversation(messages_count: usize) -> Disconnected {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, roomy_limits()).await;
    let chats = set_up_chats(&engine).await;
    let mut phone = engine.subscribe(ANN);
    let mut laptop = engine.subscribe(ANN);
    converse(&engine, &chats, 20, 1).await;
    let before = marker(&engine, ANN, "before").await;
    let applied = receive_until(&mut laptop, before).await;
    let token = applied.last().unwrap().position;
    assert_eq!(token, before);
    drop(laptop); // the connection is lost
    converse(&engine, &chats, messages_count, 2).await;
    let end = marker(&engine, ANN, "end").await;
    let seen = receive_until(&mut phone, end).await;
    let missed = logged(seen.into_iter().filter(|update| update.position > token).collect());
    Disconnected { dir, clock, engine, chats, token, missed }
}

#[tokio::test]
async fn a_client_that_reconnects_with_its_token_gets_exactly_the_updates_it_missed_in_order() {
    let d = disconnect_mid_conversation(500).await;
    assert!(d.missed.len() >= 500, "{} updates missed", d.missed.len());
    assert_eq!(catch_up(&d.engine, ANN, d.token, 100), d.missed);
    common::assert_projections_equal_a_fold_of_the_log(&d.engine).await;
}

#[tokio::test]
async fn subscribe_from_a_token_delivers_the_missed_updates_then_live_ones_without_gap_or_duplicate() {
    let d = disconnect_mid_conversation(500).await;
    let Resumed::Subscribed(mut resumed) = d.engine.subscribe_from(ANN, d.token).unwrap() else { panic!("too far behind") };
    let (members, refs) = &d.chats.chats[0];
    let live = send(&d.engine, members[1], &refs[1], "after the reconnect").await;
    let live_position = d.engine.last_position();
    let received = receive_until(&mut resumed, live_position).await;
    let (caught_up, after) = received.split_at(d.missed.len());
    assert_eq!(caught_up, d.missed);
    assert_eq!(after.len(), 1, "one live update: {after:?}");
    assert_eq!(after[0].position, live_position);
    let Some(osmium_state::proto::updates::update::Update::MessageCreated(created)) = &after[0].update.update else {
        panic!("{after:?}")
    };
    assert_eq!(created.message.as_ref().unwrap().message_id, live.get());
    let last_own = d.missed.iter().rev().find(|update| matches!(update.sequence, Sequence::User { .. })).unwrap();
    assert_eq!(after[0].sequence, Sequence::User { previous: last_own.position }, "the live update follows the caught-up ones");
}

#[tokio::test]
async fn catch_up_after_a_restart_gives_the_same_updates() {
    let d = disconnect_mid_conversation(500).await;
    let (dir, clock) = (d.dir, d.clock);
    drop(d.engine);
    let engine = ChatEngine::open(dir.path(), config(&clock, roomy_limits())).await.unwrap();
    assert_eq!(catch_up(&engine, ANN, d.token, 100), d.missed);
}

#[tokio::test]
async fn catch_up_after_a_rebuild_gives_the_same_updates() {
    let d = disconnect_mid_conversation(500).await;
    let (dir, clock) = (d.dir, d.clock);
    drop(d.engine);
    let mut directory = DataDirectory::open_exclusive(dir.path()).unwrap();
    directory.rebuild(RebuildOptions::default(), &mut |_, _| {}).unwrap();
    drop(directory);
    let engine = ChatEngine::open(dir.path(), config(&clock, roomy_limits())).await.unwrap();
    assert_eq!(catch_up(&engine, ANN, d.token, 100), d.missed);
}

#[tokio::test]
async fn every_logged_update_names_the_previous_position_of_the_users_sequence() {
    let d = disconnect_mid_conversation(200).await;
    let mut last = d.token;
    for update in &d.missed {
        let Sequence::User { previous } = update.sequence else { panic!("{update:?}") };
        if update.position != last {
            assert_eq!(previous, last, "update at {} follows the one at {last}", update.position);
        }
        last = update.position;
    }
}

#[tokio::test]
async fn a_client_missing_an_update_sees_the_gap_in_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, roomy_limits()).await;
    let mut phone = engine.subscribe(ANN);
    send(&engine, BOB, &dm(ANN), "one").await;
    let first = engine.last_position();
    send(&engine, CAT, &dm(ANN), "two").await;
    let second = engine.last_position();
    let updates = receive_until(&mut phone, second).await;
    let second_update = updates.iter().find(|update| update.position == second).unwrap();
    // A client that applied only up to the first message's position ...
    let first_update = updates.iter().rfind(|update| update.position <= first).unwrap();
    assert_eq!(second_update.sequence.previous(), Some(first_update.position));
    // ... and one that lost it sees that the second one follows something it never got.
    let token_without_first = Position(first.get() - 1);
    assert!(second_update.sequence.previous().unwrap() > token_without_first);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_closed_with_a_token_that_resumes_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, Limits { subscription_queue_max: 4, ..Limits::default() }).await;
    let start = engine.last_position();
    let mut slow = engine.subscribe(ANN);
    for n in 0..20 {
        send(&engine, BOB, &dm(ANN), &format!("message {n}")).await;
    }
    let mut received = Vec::new();
    while let Some(update) = slow.next().await {
        received.push(update);
    }
    let resume = slow.resume_token().expect("closed because it fell behind, with a resume token");
    assert!(received.iter().all(|update| update.position <= resume));
    let mut resumed = logged(received);
    resumed.extend(catch_up(&engine, ANN, resume, 100));
    assert_eq!(resumed, catch_up(&engine, ANN, start, 100), "received + caught up = everything, once");
}

#[tokio::test]
async fn a_token_from_before_the_catch_up_window_is_too_far_behind() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, Limits { catch_up_updates_max: 50, ..Limits::default() }).await;
    let token = engine.last_position();
    for n in 0..60 {
        send(&engine, BOB, &dm(ANN), &format!("message {n}")).await;
    }
    let now = engine.read_position();
    assert_eq!(engine.updates_since(ANN, token, 10).unwrap(), CatchUp::TooFarBehind { resume_token: now });
    assert!(matches!(engine.subscribe_from(ANN, token).unwrap(), Resumed::TooFarBehind { resume_token } if resume_token == now));
    let after_refetch = engine.updates_since(ANN, now, 10).unwrap();
    assert_eq!(after_refetch, CatchUp::Updates { updates: Vec::new(), token: now, complete: true });
}

#[tokio::test]
async fn a_message_to_a_large_group_writes_no_key_per_member_and_is_caught_up_through_the_chats_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, roomy_limits()).await;
    let size = osmium_state::projections::limits::CHAT_LIST_FANOUT_MAX as u64 + 4;
    for id in 7..=size {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    let big = create_group(&engine, ANN, &[BOB]).await;
    for id in 3..=size {
        let request = chats::AddChatMember { chat_ref: Some(group(big)), user_id: id };
        engine.add_chat_member(ANN, request).await.unwrap();
    }
    let token = engine.last_position();
    send(&engine, BOB, &group(big), "to everyone").await;
    let first = engine.last_position();
    send(&engine, CAT, &group(big), "to everyone again").await;
    let second = engine.last_position();
    let user_keys = index_keys_at(&engine, Table::UseridPositionUpdate, second);
    assert!(user_keys <= 1, "at most the author's own key, not one per member: {user_keys}");
    let missed = catch_up(&engine, DAN, token, 100);
    assert_eq!(missed.len(), 2, "{missed:?}");
    assert_eq!(missed[0].position, first);
    assert_eq!(missed[1].sequence, Sequence::Chat { chat: osmium_state::proto::ids::ChatId(big), previous: first });
}

const SEQUENCE_MEMBERS_MAX: u64 = osmium_state::projections::limits::USER_SEQUENCE_MEMBERS_MAX as u64;

/// A group of `size` members: Ann (its owner), Bob, Cat, then users from 7 up (created
/// here). Dan (4) is not in it.
async fn group_of(engine: &ChatEngine, size: u64) -> u64 {
    let extra = 7..7 + size - 3;
    for id in extra.clone() {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    let chat = create_group(engine, ANN, &[BOB, CAT]).await;
    for user_id in extra {
        engine.add_chat_member(ANN, chats::AddChatMember { chat_ref: Some(group(chat)), user_id }).await.unwrap();
    }
    chat
}

/// The keys of the event at `position` in a table of the catch-up index keyed by a user
/// or chat id, then the position.
fn index_keys_at(engine: &ChatEngine, table: Table, position: Position) -> usize {
    let contents = engine.projection_contents().unwrap();
    contents.entries(table).filter(|(key, _)| key[8..] == position.to_be_bytes()).count()
}

#[tokio::test]
async fn a_message_to_a_group_of_more_than_32_members_writes_one_catch_up_key_not_one_per_member() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, roomy_limits()).await;
    let chat = group_of(&engine, SEQUENCE_MEMBERS_MAX + 1).await;
    let token = engine.last_position();
    send(&engine, BOB, &group(chat), "to all 33").await;
    let sent = engine.last_position();
    let user_keys = index_keys_at(&engine, Table::UseridPositionUpdate, sent);
    assert!(user_keys <= 1, "at most the author's own key: {user_keys}");
    assert_eq!(index_keys_at(&engine, Table::ChatidPositionUpdate, sent), 1, "one key in the chat's sequence");
    let missed = catch_up(&engine, CAT, token, 100);
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0].position, sent);
    assert!(matches!(missed[0].sequence, Sequence::Chat { chat: id, .. } if id.get() == chat), "{:?}", missed[0].sequence);
}

#[tokio::test]
async fn a_group_growing_past_32_members_moves_its_updates_to_its_own_sequence_and_catch_up_equals_what_was_live() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, roomy_limits()).await;
    let chat = group_of(&engine, SEQUENCE_MEMBERS_MAX).await;
    engine.get_chat(CAT, chats::GetChat { chat_ref: Some(own_chat()) }).await.unwrap(); // for the marker
    let token = engine.last_position();
    let mut live = engine.subscribe(CAT);
    send(&engine, BOB, &group(chat), "among 32").await;
    let before = engine.last_position();
    engine.add_chat_member(ANN, chats::AddChatMember { chat_ref: Some(group(chat)), user_id: DAN.get() }).await.unwrap();
    let crossed = engine.last_position();
    send(&engine, BOB, &group(chat), "among 33").await;
    let after = engine.last_position();
    let end = marker(&engine, CAT, "end").await;
    let seen = logged(receive_until(&mut live, end).await);

    assert_eq!(index_keys_at(&engine, Table::UseridPositionUpdate, before), SEQUENCE_MEMBERS_MAX as usize, "32 members: a key each");
    assert!(index_keys_at(&engine, Table::UseridPositionUpdate, after) <= 1, "33 members: the chat's sequence");
    let caught_up = catch_up(&engine, CAT, token, 100);
    assert_eq!(caught_up, seen, "caught up = what a connected device saw, once each");
    let sequences: Vec<(Position, Sequence)> = caught_up.iter().map(|update| (update.position, update.sequence)).collect();
    assert!(sequences.iter().any(|(at, sequence)| *at == before && matches!(sequence, Sequence::User { .. })), "{sequences:?}");
    let in_chat = |at: Position| sequences.iter().find(|(position, _)| *position == at).map(|(_, sequence)| *sequence);
    let chat_id = osmium_state::proto::ids::ChatId(chat);
    assert_eq!(in_chat(crossed), Some(Sequence::Chat { chat: chat_id, previous: Position::ZERO }), "{sequences:?}");
    assert_eq!(in_chat(after), Some(Sequence::Chat { chat: chat_id, previous: crossed }), "{sequences:?}");
    common::assert_projections_equal_a_fold_of_the_log(&engine).await;
    drop(live);
    drop(engine);
    let mut directory = DataDirectory::open_exclusive(dir.path()).unwrap();
    directory.rebuild(RebuildOptions::default(), &mut |_, _| {}).unwrap();
    drop(directory);
    let engine = ChatEngine::open(dir.path(), config(&clock, roomy_limits())).await.unwrap();
    assert_eq!(catch_up(&engine, CAT, token, 100), seen, "the same after a rebuild");
}

#[tokio::test]
async fn a_member_who_joined_after_the_token_is_caught_up_from_their_join_not_on_earlier_messages() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock, roomy_limits()).await;
    let chat = group_of(&engine, SEQUENCE_MEMBERS_MAX + 5).await;
    let token = engine.last_position();
    send(&engine, BOB, &group(chat), "before Dan joined").await;
    let earlier = engine.last_position();
    engine.add_chat_member(ANN, chats::AddChatMember { chat_ref: Some(group(chat)), user_id: DAN.get() }).await.unwrap();
    let joined = engine.last_position();
    send(&engine, BOB, &group(chat), "after Dan joined").await;
    let later = engine.last_position();
    let positions: Vec<Position> = catch_up(&engine, DAN, token, 100).iter().map(|update| update.position).collect();
    assert!(!positions.contains(&earlier), "not told of a message sent before they joined: {positions:?}");
    assert!(positions.contains(&joined) && positions.contains(&later), "{positions:?}");
}
