//! The event log's contract: ordering, conflicts, idempotency, concurrency, durability
//! across reopen, and typed errors for bad directories and records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_engine::log::{EventLog, ExpectedVersion, LogConfig};
use osmium_engine::schema::{CF_META, CF_POSITION_EVENT, META_FORMAT_VERSION};
use osmium_engine::{EngineError, ManualClock, OpenError};
use osmium_proto::events::{self, event_envelope::Event};
use osmium_proto::ids::{ChatId, Position, StreamId, StreamVersion, UserId};
use osmium_proto::types::User;
use std::sync::Arc;

fn config() -> LogConfig {
    LogConfig { clock: Arc::new(ManualClock::new(1_700_000_000_000)), ..LogConfig::default() }
}

fn user_upserted(id: u64, name: &str) -> Event {
    Event::UserUpserted(events::UserUpserted { user: Some(User { id, name: name.into(), ..User::default() }) })
}

fn user_stream(id: u64) -> StreamId {
    StreamId::User(UserId(id))
}

async fn upsert(log: &EventLog, id: u64, name: &str) -> Result<osmium_engine::Appended, EngineError> {
    log.append(user_stream(id), ExpectedVersion::Any, UserId(id), vec![user_upserted(id, name)], None).await
}

fn positions(events: &[events::EventEnvelope]) -> Vec<u64> {
    events.iter().map(|event| event.position).collect()
}

#[tokio::test]
async fn appended_events_read_back_in_position_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), config()).unwrap();
    let chat = ChatId(500);
    let created = log
        .append(
            StreamId::Chat(chat),
            ExpectedVersion::NoStream,
            UserId(1),
            vec![
                Event::GroupCreated(events::GroupCreated { owner_id: 1, name: "crew".into(), member_ids: vec![2] }),
                Event::MessageSent(events::MessageSent {
                    message_id: 900,
                    author_id: 1,
                    text: "hello".into(),
                    ..Default::default()
                }),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(positions(&created.events), [1, 2]);
    upsert(&log, 7, "ann").await.unwrap();

    let all = log.read_all(Position(1), 100).unwrap();
    assert_eq!(positions(&all), [1, 2, 3]);
    assert!(matches!(&all[1].event, Some(Event::MessageSent(sent)) if sent.text == "hello"));
    assert_eq!(all[1].stream_version, 2);
    assert_eq!(all[1].recorded_at_ms, 1_700_000_000_000);
    assert_eq!(positions(&log.read_all(Position(2), 1).unwrap()), [2]);
    assert_eq!(log.last_position(), Position(3));

    let stream = log.read_stream(StreamId::Chat(chat), StreamVersion(2), 10).unwrap();
    assert_eq!(positions(&stream), [2]);
}

#[tokio::test]
async fn version_conflict_is_refused_and_leaves_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), config()).unwrap();
    upsert(&log, 1, "first").await.unwrap();

    let refused = log
        .append(user_stream(1), ExpectedVersion::NoStream, UserId(1), vec![user_upserted(1, "second")], None)
        .await;
    assert!(matches!(
        refused,
        Err(EngineError::Conflict { found: StreamVersion(1), expected: ExpectedVersion::NoStream, .. })
    ));
    let stale = log
        .append(user_stream(1), ExpectedVersion::Exact(StreamVersion(0)), UserId(1), vec![user_upserted(1, "x")], None)
        .await;
    assert!(matches!(stale, Err(EngineError::Conflict { .. })));
    assert_eq!(log.last_position(), Position(1));
    assert_eq!(log.read_all(Position(1), 10).unwrap().len(), 1);

    let accepted = log
        .append(user_stream(1), ExpectedVersion::Exact(StreamVersion(1)), UserId(1), vec![user_upserted(1, "y")], None)
        .await
        .unwrap();
    assert_eq!(accepted.first_position(), Position(2));
}

#[tokio::test]
async fn retry_with_the_same_idempotency_key_returns_the_original_positions_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), config()).unwrap();
    let key = Some(b"client-42".to_vec());
    let first = log.append(user_stream(1), ExpectedVersion::Any, UserId(1), vec![user_upserted(1, "a")], key.clone());
    let first = first.await.unwrap();
    upsert(&log, 2, "other").await.unwrap();
    let retry = log.append(user_stream(1), ExpectedVersion::Any, UserId(1), vec![user_upserted(1, "b")], key.clone());
    let retry = retry.await.unwrap();
    assert!(retry.deduplicated);
    assert_eq!(positions(&retry.events), positions(&first.events));
    assert!(matches!(&retry.events[0].event, Some(Event::UserUpserted(u)) if u.user.as_ref().unwrap().name == "a"));
    assert_eq!(log.last_position(), Position(2));
    drop(log);

    // Durable, not a time window: the key is still known after reopening.
    let log = EventLog::open(dir.path(), config()).unwrap();
    let after_reopen =
        log.append(user_stream(1), ExpectedVersion::Any, UserId(1), vec![user_upserted(1, "c")], key).await.unwrap();
    assert!(after_reopen.deduplicated);
    assert_eq!(after_reopen.first_position(), Position(1));
    assert_eq!(log.last_position(), Position(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_appenders_get_gapless_increasing_positions_all_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EventLog::open(dir.path(), config()).unwrap());
    let mut tasks = Vec::new();
    for appender in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0..50u64 {
                let user = appender * 1_000 + round;
                let appended = upsert(&log, user, "u").await.unwrap();
                acknowledged.push(appended.first_position().get());
            }
            acknowledged
        }));
    }
    let mut all_acknowledged = Vec::new();
    for task in tasks {
        let acknowledged = task.await.unwrap();
        assert!(acknowledged.windows(2).all(|pair| pair[0] < pair[1]), "one appender's positions increase");
        all_acknowledged.extend(acknowledged);
    }
    all_acknowledged.sort_unstable();
    assert_eq!(all_acknowledged, (1..=400).collect::<Vec<u64>>());
    let read = log.read_all(Position(1), 1_000).unwrap();
    assert_eq!(positions(&read), (1..=400).collect::<Vec<u64>>());
}

#[tokio::test]
async fn reopening_after_drop_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(dir.path(), config()).unwrap();
        for user in 1..=20 {
            upsert(&log, user, "u").await.unwrap();
        }
    }
    let log = EventLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.last_position(), Position(20));
    assert_eq!(log.read_all(Position(1), 100).unwrap().len(), 20);
    assert_eq!(upsert(&log, 99, "next").await.unwrap().first_position(), Position(21));
}

#[tokio::test]
async fn subscribers_see_each_committed_batch_and_the_new_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), config()).unwrap();
    let mut batches = log.subscribe();
    let mut position = log.watch_position();
    upsert(&log, 1, "a").await.unwrap();
    let batch = batches.recv().await.unwrap();
    assert_eq!(positions(&batch.events), [1]);
    position.changed().await.unwrap();
    assert_eq!(*position.borrow(), Position(1));
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_an_error_naming_its_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(dir.path(), config()).unwrap();
        for user in 1..=3 {
            upsert(&log, user, "u").await.unwrap();
        }
    }
    overwrite(dir.path(), CF_POSITION_EVENT, &2u64.to_be_bytes(), &[0xff, 0xff, 0xff]);
    let log = EventLog::open(dir.path(), config()).unwrap();
    let read = log.read_all(Position(1), 10);
    assert!(matches!(read, Err(EngineError::Decode { position: Position(2), .. })), "{read:?}");
}

#[tokio::test]
async fn a_directory_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EventLog::open(dir.path(), config()).unwrap());
    overwrite(dir.path(), CF_META, META_FORMAT_VERSION, &99u32.to_be_bytes());
    let opened = EventLog::open(dir.path(), config());
    assert!(matches!(opened, Err(OpenError::NewerFormat { found: 99, supported: 1 })), "{opened:?}");
}

#[tokio::test]
async fn a_directory_that_is_not_an_engine_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "my files").unwrap();
    let opened = EventLog::open(dir.path(), config());
    assert!(matches!(opened, Err(OpenError::NotAnEngineDirectory { .. })), "{opened:?}");
    assert!(dir.path().join("notes.txt").exists());
}

#[tokio::test]
async fn a_rocksdb_database_of_another_application_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let opened = EventLog::open(dir.path(), config());
    assert!(matches!(opened, Err(OpenError::NotAnEngineDirectory { .. })), "{opened:?}");
}

#[tokio::test]
async fn a_second_open_of_a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EventLog::open(dir.path(), config()).unwrap();
    let second = EventLog::open(dir.path(), config());
    assert!(matches!(second, Err(OpenError::DirectoryInUse { .. })), "{second:?}");
}

#[tokio::test]
async fn an_engine_refuses_a_log_with_an_event_the_fold_rejects_naming_its_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Appended around the engine (only the log's own API can): a message into a chat
        // that was never created contradicts the log.
        let log = EventLog::open(dir.path(), config()).unwrap();
        let orphan = Event::MessageSent(events::MessageSent { message_id: 5, author_id: 1, ..Default::default() });
        log.append(StreamId::Chat(ChatId(77)), ExpectedVersion::Any, UserId(1), vec![orphan], None).await.unwrap();
    }
    let opened = osmium_engine::ChatEngine::open(dir.path(), osmium_engine::EngineConfig::default()).await;
    let Err(OpenError::Engine(EngineError::Projection(err))) = opened else { panic!("{opened:?}") };
    assert!(err.to_string().contains("position 1"), "{err}");
}

/// Writes one raw key into a closed data directory, as a disk fault or a foreign tool would.
fn overwrite(path: &std::path::Path, cf: &str, key: &[u8], value: &[u8]) {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), path, names).unwrap();
    db.put_cf(db.cf_handle(cf).unwrap(), key, value).unwrap();
}

#[tokio::test]
async fn projections_of_another_schema_version_are_refused_with_a_rebuild_hint() {
    let dir = tempfile::tempdir().unwrap();
    drop(osmium_engine::ChatEngine::open(dir.path(), osmium_engine::EngineConfig::default()).await.unwrap());
    overwrite(dir.path(), "projection_meta#a", b"schema_version", &99u32.to_be_bytes());
    let opened = osmium_engine::ChatEngine::open(dir.path(), osmium_engine::EngineConfig::default()).await;
    let expected = osmium_projections::limits::PROJECTION_SCHEMA_VERSION;
    assert!(matches!(opened, Err(OpenError::ProjectionSchemaMismatch { found: 99, expected: e }) if e == expected), "{opened:?}");
    assert!(opened.unwrap_err().to_string().contains("osmium-replay rebuild"));
}

#[tokio::test]
async fn meta_last_position_disagreeing_with_the_log_is_a_corruption_error_with_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(dir.path(), config()).unwrap();
        upsert(&log, 1, "a").await.unwrap();
    }
    overwrite(dir.path(), CF_META, b"last_position", &5u64.to_be_bytes());
    let opened = EventLog::open(dir.path(), config());
    assert!(
        matches!(&opened, Err(OpenError::Engine(EngineError::Corrupt { expected, found, .. })) if expected == "5" && found == "1"),
        "{opened:?}"
    );
}

#[test]
fn opening_the_chat_engine_outside_a_tokio_runtime_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let opening = osmium_engine::ChatEngine::open(dir.path(), osmium_engine::EngineConfig::default());
    let opened = poll_without_runtime(opening);
    assert!(matches!(opened, Err(OpenError::NoRuntime)), "{opened:?}");
}

/// Polls a future on the current thread without any runtime, a bounded number of times.
fn poll_without_runtime<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!("the future did not finish within 1,000 polls");
}

/// Regression: a child process spawned by another thread inherits a copy of the lock
/// file's descriptor until its `exec` closes it, and a `flock` lasts while any copy does;
/// a directory closed in that window must still reopen (CI failed on this once).
#[tokio::test]
async fn a_closed_directory_reopens_while_another_thread_spawns_child_processes() {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::process::Command::new("true").status().unwrap();
            }
        })
    };
    for _ in 0..50 {
        let log = EventLog::open(dir.path(), config()).unwrap();
        drop(log);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spawner.join().unwrap();
}
