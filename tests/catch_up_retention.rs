//! Retention of the catch-up index (issue #13): `trim_catch_up` forgets the updates of
//! events recorded more than `catch_up_retention_ms` ago, a catch-up from before them is
//! told to refetch, their effect records leave the disk, and the floor survives restarts,
//! rebuilds and verification.
#![allow(clippy::unwrap_used, clippy::expect_used)]


use crate::common::{ANN, BOB, START_MS, config, dm, send};
use osmium_state::maintenance::{DataDirectory, RebuildOptions};
use osmium_state::proto::ids::Position;
use osmium_state::proto::types;
use osmium_state::projections::Table;
use osmium_state::{CatchUp, ChatEngine, EngineConfig, Limits, ManualClock, OpenError};

const RETENTION_MS: u64 = 60_000;

fn retaining(clock: &ManualClock) -> EngineConfig {
    EngineConfig { limits: Limits { catch_up_retention_ms: RETENTION_MS, ..Limits::default() }, ..config(clock) }
}

async fn open(dir: &std::path::Path, clock: &ManualClock) -> ChatEngine {
    let engine = ChatEngine::open(dir, retaining(clock)).await.unwrap();
    for id in 1..=2 {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    engine
}

/// Three messages from Ann to Bob at `START_MS`, then, past the retention, two more.
/// Returns the last position of the old ones.
async fn old_and_new_messages(engine: &ChatEngine, clock: &ManualClock) -> Position {
    for text in ["old 1", "old 2", "old 3"] {
        send(engine, ANN, &dm(BOB), text).await;
    }
    let last_old = engine.last_position();
    clock.advance_ms(RETENTION_MS + 1);
    for text in ["new 1", "new 2"] {
        send(engine, ANN, &dm(BOB), text).await;
    }
    last_old
}

/// A catch-up from before the floor is too far behind; one from the last old message gets
/// exactly the new ones.
fn assert_the_floor_holds(engine: &ChatEngine, last_old: Position) {
    assert!(matches!(engine.updates_since(BOB, Position(1), 100).unwrap(), CatchUp::TooFarBehind { .. }));
    assert_eq!(texts(engine.updates_since(BOB, last_old, 100).unwrap()), ["new 1", "new 2"]);
}

fn texts(catch_up: CatchUp) -> Vec<String> {
    let CatchUp::Updates { updates, complete: true, .. } = catch_up else { panic!("expected every update, got {catch_up:?}") };
    let mut texts = Vec::new();
    for update in updates {
        if let Some(osmium_state::proto::updates::update::Update::MessageCreated(created)) = update.update.update {
            texts.push(created.message.map(|message| message.message).unwrap_or_default());
        }
    }
    texts
}

#[tokio::test]
async fn a_trim_raises_the_floor_to_the_first_event_within_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    let last_old = old_and_new_messages(&engine, &clock).await;
    let trim = engine.trim_catch_up().await.unwrap();
    assert_eq!(trim.previous_floor, Position(0));
    assert_eq!(trim.floor, Position(last_old.get() + 1));
}

#[tokio::test]
async fn a_token_from_before_the_floor_is_too_far_behind() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    let last_old = old_and_new_messages(&engine, &clock).await;
    engine.trim_catch_up().await.unwrap();
    let answer = engine.updates_since(BOB, Position(last_old.get() - 1), 100).unwrap();
    assert_eq!(answer, CatchUp::TooFarBehind { resume_token: engine.read_position() });
}

#[tokio::test]
async fn a_token_just_before_the_floor_still_gets_every_update_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    let last_old = old_and_new_messages(&engine, &clock).await;
    engine.trim_catch_up().await.unwrap();
    assert_eq!(texts(engine.updates_since(BOB, last_old, 100).unwrap()), ["new 1", "new 2"]);
}

#[tokio::test]
async fn a_trim_keeps_everything_recorded_within_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    for text in ["a", "b"] {
        send(&engine, ANN, &dm(BOB), text).await;
    }
    clock.advance_ms(RETENTION_MS - 1);
    let trim = engine.trim_catch_up().await.unwrap();
    assert_eq!((trim.previous_floor, trim.floor), (Position(0), Position(0)), "nothing to trim, nothing written");
    assert_eq!(texts(engine.updates_since(BOB, Position(0), 100).unwrap()), ["a", "b"]);
}

#[tokio::test]
async fn trimmed_effect_records_leave_the_disk_and_the_rest_stay() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    let last_old = old_and_new_messages(&engine, &clock).await;
    engine.flush().await.unwrap();
    let floor = engine.trim_catch_up().await.unwrap().floor;
    drop(engine);
    let directory = DataDirectory::open_read_only(dir.path()).unwrap();
    let contents = directory.projection_contents(directory.slot()).unwrap();
    let positions: Vec<u64> = contents
        .entries(Table::PositionEffect)
        .map(|(key, _)| u64::from_be_bytes(key.try_into().unwrap()))
        .collect();
    assert!(!positions.is_empty());
    assert!(positions.iter().all(|&position| position >= floor.get()), "{positions:?} below {floor}");
    assert!(positions.contains(&(last_old.get() + 1)));
}

#[tokio::test]
async fn the_floor_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    let last_old = old_and_new_messages(&engine, &clock).await;
    engine.trim_catch_up().await.unwrap();
    drop(engine);
    let engine = ChatEngine::open(dir.path(), retaining(&clock)).await.unwrap();
    assert_the_floor_holds(&engine, last_old);
}

#[tokio::test]
async fn the_floor_holds_after_a_rebuild_and_verification_passes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    let last_old = old_and_new_messages(&engine, &clock).await;
    engine.trim_catch_up().await.unwrap();
    drop(engine);
    let mut directory = DataDirectory::open_exclusive(dir.path()).unwrap();
    directory.rebuild(RebuildOptions::default(), &mut |_, _| {}).unwrap();
    let (_, differences) = directory.verify(10, &mut |_, _| {}).unwrap();
    assert!(differences.is_empty(), "{differences:?}");
    drop(directory);
    let engine = ChatEngine::open(dir.path(), retaining(&clock)).await.unwrap();
    assert_the_floor_holds(&engine, last_old);
}

#[tokio::test]
async fn verification_ignores_what_a_trim_removed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let engine = open(dir.path(), &clock).await;
    old_and_new_messages(&engine, &clock).await;
    engine.flush().await.unwrap();
    engine.trim_catch_up().await.unwrap();
    drop(engine);
    let directory = DataDirectory::open_read_only(dir.path()).unwrap();
    let (_, differences) = directory.verify(10, &mut |_, _| {}).unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}

#[tokio::test]
async fn a_retention_of_zero_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let config = EngineConfig { limits: Limits { catch_up_retention_ms: 0, ..Limits::default() }, ..config(&clock) };
    let refused = ChatEngine::open(dir.path(), config).await.expect_err("refused");
    assert!(matches!(refused, OpenError::InvalidConfig { setting: "limits.catch_up_retention_ms", .. }), "{refused:?}");
}
