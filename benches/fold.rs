//! Micro benchmarks of the pure parts: folding one event of each kind, and encoding and
//! decoding the log's envelope. `cargo bench -p osmium-state --bench fold`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use osmium_state::projections::{MemStore, ProjectionState, apply};
use osmium_state::proto::events::{self, EventEnvelope, StreamRef, event_envelope::Event, stream_ref::Stream};
use osmium_state::proto::prost::Message as _;
use osmium_state::proto::types;
use std::hint::black_box;
use std::time::Duration;

const CHAT: u64 = 1_000;
const OWNER: u64 = 1;
const FIRST_MESSAGE: u64 = 2_000;
const SECOND_MESSAGE: u64 = 2_001;
const INVITE: &str = "AAAAAAAAAAAAAAAAAAAAAA";

fn envelope(position: u64, stream: Stream, event: Event) -> EventEnvelope {
    EventEnvelope {
        position,
        stream: Some(StreamRef { stream: Some(stream) }),
        stream_version: position,
        recorded_at_ms: 1_700_000_000_000 + position,
        actor_id: OWNER,
        event: Some(event),
    }
}

fn sent(message_id: u64, author_id: u64) -> Event {
    Event::MessageSent(events::MessageSent {
        message_id,
        author_id,
        text: "see you at the station at seven, bring the tickets".into(),
        client_id: Some(message_id),
        ..Default::default()
    })
}

/// A group of 4 (owner 1, members 2 to 4) with two messages and an invite, in memory, with
/// its writes taken (what the state machine holds for a hot chat between two batches).
fn prepared_state() -> ProjectionState<MemStore> {
    let chat = Stream::ChatId(CHAT);
    let setup = [
        envelope(1, Stream::UserId(OWNER), Event::UserUpserted(events::UserUpserted {
            user: Some(types::User { id: OWNER, name: "ann".into(), ..Default::default() }),
        })),
        envelope(2, chat, Event::GroupCreated(events::GroupCreated { owner_id: OWNER, name: "crew".into(), member_ids: vec![2, 3, 4] })),
        envelope(3, chat, sent(FIRST_MESSAGE, OWNER)),
        envelope(4, chat, sent(SECOND_MESSAGE, 2)),
        envelope(5, chat, Event::InviteCreated(events::InviteCreated {
            code: INVITE.into(),
            creator_id: OWNER,
            created_at_ms: 1,
            ..Default::default()
        })),
    ];
    let mut state = ProjectionState::in_memory();
    for event in &setup {
        apply(&mut state, event).unwrap();
    }
    state.take_writes(false).unwrap();
    state
}

/// One event of each kind, each valid against [`prepared_state`].
fn one_of_each_kind() -> Vec<(&'static str, EventEnvelope)> {
    let chat = Stream::ChatId(CHAT);
    let at = |stream, event| envelope(6, stream, event);
    vec![
        ("user_upserted", at(Stream::UserId(OWNER), Event::UserUpserted(events::UserUpserted {
            user: Some(types::User { id: OWNER, name: "ann again".into(), ..Default::default() }),
        }))),
        ("group_created", at(Stream::ChatId(5_000), Event::GroupCreated(events::GroupCreated {
            owner_id: OWNER,
            name: "new".into(),
            member_ids: vec![2, 3],
        }))),
        ("direct_chat_created", at(Stream::ChatId(5_001), Event::DirectChatCreated(events::DirectChatCreated { user_a: OWNER, user_b: 2 }))),
        ("group_edited", at(chat, Event::GroupEdited(events::GroupEdited { name: Some("renamed".into()), ..Default::default() }))),
        ("member_added", at(chat, Event::MemberAdded(events::MemberAdded { user_id: 9, added_by: OWNER, invite_code: None }))),
        ("member_removed", at(chat, Event::MemberRemoved(events::MemberRemoved { user_id: 4, removed_by: OWNER }))),
        ("ownership_transferred", at(chat, Event::OwnershipTransferred(events::OwnershipTransferred { new_owner_id: 2 }))),
        ("group_closed", at(chat, Event::GroupClosed(events::GroupClosed {}))),
        ("message_sent", at(chat, sent(3_000, OWNER))),
        ("message_edited", at(chat, Event::MessageEdited(events::MessageEdited { message_id: FIRST_MESSAGE, text: "edited".into(), edited_at_ms: 7, ..Default::default() }))),
        ("messages_deleted", at(chat, Event::MessagesDeleted(events::MessagesDeleted { message_ids: vec![SECOND_MESSAGE] }))),
        ("chat_marked_read", at(chat, Event::ChatMarkedRead(events::ChatMarkedRead { user_id: 3, message_id: SECOND_MESSAGE, read_amount: None }))),
        ("draft_saved", at(chat, Event::DraftSaved(events::DraftSaved { user_id: 2, draft: Some("unfinished".into()) }))),
        ("mute_set", at(chat, Event::MuteSet(events::MuteSet { user_id: 2, muted: true, ..Default::default() }))),
        ("permission_overrides_set", at(chat, Event::PermissionOverridesSet(events::PermissionOverridesSet { user_id: 2, pos: 0, neg: 4 }))),
        ("invite_created", at(chat, Event::InviteCreated(events::InviteCreated { code: "BBBBBBBBBBBBBBBBBBBBBB".into(), creator_id: OWNER, created_at_ms: 2, ..Default::default() }))),
        ("invite_used", at(chat, Event::InviteUsed(events::InviteUsed { code: INVITE.into(), user_id: 9 }))),
        ("invite_deleted", at(chat, Event::InviteDeleted(events::InviteDeleted { code: INVITE.into(), deleted_by: OWNER }))),
    ]
}

/// Folds one event into a state holding its chat, and encodes the records it changed (what
/// the state machine does per event, the batch's other events aside).
fn fold_each_kind(c: &mut Criterion) {
    let mut group = c.benchmark_group("fold");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    for (kind, event) in one_of_each_kind() {
        // Every event must fold cleanly, or the benchmark would measure an error path.
        apply(&mut prepared_state(), &event).unwrap_or_else(|err| panic!("{kind}: {err}"));
        group.bench_with_input(BenchmarkId::from_parameter(kind), &event, |b, event| {
            b.iter_batched(
                prepared_state,
                |mut state| {
                    apply(&mut state, black_box(event)).unwrap();
                    black_box(state.take_writes(false).unwrap())
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn envelope_codec(c: &mut Criterion) {
    let event = envelope(123_456_789, Stream::ChatId(CHAT), sent(3_000, OWNER));
    let bytes = event.encode_to_vec();
    let mut group = c.benchmark_group("envelope");
    group.bench_function("encode message_sent", |b| b.iter(|| black_box(&event).encode_to_vec()));
    group.bench_function("decode message_sent", |b| b.iter(|| EventEnvelope::decode(black_box(bytes.as_slice())).unwrap()));
    group.finish();
}

criterion_group!(benches, fold_each_kind, envelope_codec);
criterion_main!(benches);
