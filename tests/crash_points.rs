//! Crash points inside the engine (the `fail` crate, compiled in by the `failpoints`
//! feature for tests): an I/O error before the commit's write, a crash after the write
//! but before the acknowledgement, a crash after the acknowledgement, a crash of the state
//! machine between submitting a batch and inserting its writes, a projection flush
//! that fails before its write and one that crashes right after it, and an error inside
//! a rebuild before its switch. After each, the reopened directory's log is gapless,
//! its checkpoint not ahead, and its projections equal a fold of the log. Each test shows
//! its point was hit by an effect only that point produces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use osmium_state::maintenance::{DataDirectory, RebuildOptions};
use osmium_state::proto::messages;
use osmium_state::{ChatEngine, EngineError};

fn assert_directory_consistent(dir: &std::path::Path) {
    let directory = DataDirectory::open_read_only(dir).unwrap();
    assert!(directory.check(10, &mut |_, _| {}).unwrap().is_empty(), "the log checks clean");
    assert!(directory.verify(10, &mut |_, _| {}).unwrap().1.is_empty(), "projections equal a fold of the log up to their checkpoint");
}

/// Closes the engine, then checks its directory (the temp dir lives until after the check).
fn close_and_assert_consistent(f: Fixture) {
    let Fixture { dir, engine, .. } = f;
    drop(engine);
    assert_directory_consistent(dir.path());
}

fn hello() -> messages::SendMessage {
    messages::SendMessage { chat_ref: Some(dm(BOB)), message: "hello".into(), ..Default::default() }
}

async fn messages_in_log(f: &Fixture) -> usize {
    let events = f.engine.log().read_all(osmium_state::proto::ids::Position(1), 10_000).unwrap();
    events
        .iter()
        .filter(|event| matches!(event.event, Some(osmium_state::proto::events::event_envelope::Event::MessageSent(_))))
        .count()
}

#[tokio::test]
async fn an_io_error_before_the_write_fails_the_batch_writes_nothing_and_stops_the_writer() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    send(&f.engine, ANN, &dm(BOB), "before").await;
    fail::cfg("commit::before_write", "return").unwrap();
    let failed = f.engine.send_message(ANN, hello()).await;
    assert!(
        matches!(&failed, Err(EngineError::WriterFailed { reason }) if reason.contains("injected at commit::before_write")),
        "{failed:?}"
    );
    fail::remove("commit::before_write");
    let refused = f.engine.send_message(ANN, hello()).await;
    assert!(matches!(refused, Err(EngineError::WriterFailed { .. })), "no write after a failed commit: {refused:?}");
    let f = f.reopen().await;
    assert_eq!(messages_in_log(&f).await, 1, "only the message before the failure");
    send(&f.engine, ANN, &dm(BOB), "after reopening").await;
    close_and_assert_consistent(f);
    scenario.teardown();
}

#[tokio::test]
async fn a_crash_after_the_write_before_the_acknowledgement_keeps_the_durable_batch() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    f.engine.flush().await.unwrap(); // as below: the fixture's commits are past their crash points
    fail::cfg("commit::after_write", "panic").unwrap();
    let unacknowledged = f.engine.send_message(ANN, hello()).await;
    assert!(matches!(unacknowledged, Err(EngineError::Closed)), "crashed before answering: {unacknowledged:?}");
    let refused = f.engine.send_message(ANN, hello()).await;
    assert!(
        matches!(&refused, Err(EngineError::WriterFailed { reason }) if reason.contains("commit::after_write")),
        "{refused:?}"
    );
    fail::remove("commit::after_write");
    let f = f.reopen().await;
    assert_eq!(messages_in_log(&f).await, 1, "the batch was durable before the crash");
    assert_eq!(conversation(&f.engine, BOB, &dm(ANN)).await.unread_count, 1);
    close_and_assert_consistent(f);
    scenario.teardown();
}

#[tokio::test]
async fn a_crash_after_the_acknowledgement_loses_nothing_acknowledged() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    // The writer evaluates crash points after it answered: let it pass those of the
    // fixture's commits first (a flush is answered after every earlier commit's points).
    f.engine.flush().await.unwrap();
    fail::cfg("commit::after_ack", "panic").unwrap();
    let acknowledged = f.engine.send_message(ANN, hello()).await.unwrap();
    let after_crash = f.engine.send_message(ANN, hello()).await;
    assert!(
        matches!(&after_crash, Err(EngineError::WriterFailed { reason }) if reason.contains("commit::after_ack")),
        "{after_crash:?}"
    );
    fail::remove("commit::after_ack");
    let f = f.reopen().await;
    let history = f.engine.get_history(BOB, messages::GetHistory { chat_ref: Some(dm(ANN)), ..Default::default() }).await.unwrap();
    assert_eq!(history.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), [acknowledged.message_id]);
    close_and_assert_consistent(f);
    scenario.teardown();
}

#[tokio::test]
async fn a_batch_synced_before_its_writes_are_inserted_is_answered_only_once_readers_see_it() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    send(&f.engine, ANN, &dm(BOB), "before").await; // the DM exists: reading it needs no command
    fail::cfg("state_machine::before_insert", "sleep(200)").unwrap(); // the sync wins the race
    let sent = f.engine.send_message(ANN, hello()).await.unwrap();
    fail::remove("state_machine::before_insert");
    assert_eq!(conversation(&f.engine, ANN, &dm(BOB)).await.last_message_id, sent.message_id, "read back at once");
    close_and_assert_consistent(f);
    scenario.teardown();
}

#[tokio::test]
async fn a_crash_of_the_state_machine_while_the_writer_syncs_answers_the_callers_and_keeps_the_durable_batch() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    // The state machine submits a batch, then inserts its writes for readers while the
    // writer syncs it: a crash between the two must not leave the completion waiting.
    fail::cfg("state_machine::before_insert", "panic").unwrap();
    let unpublished = f.engine.send_message(ANN, hello()).await;
    assert!(
        matches!(&unpublished, Err(EngineError::WriterFailed { reason }) if reason.contains("state machine failed")),
        "answered, not left waiting: {unpublished:?}"
    );
    let refused = f.engine.send_message(ANN, hello()).await;
    assert!(
        matches!(&refused, Err(EngineError::WriterFailed { reason }) if reason.contains("state_machine::before_insert")),
        "{refused:?}"
    );
    fail::remove("state_machine::before_insert");
    let f = f.reopen().await;
    assert_eq!(messages_in_log(&f).await, 1, "the batch was submitted, and so written, before the crash");
    assert_eq!(conversation(&f.engine, BOB, &dm(ANN)).await.unread_count, 1, "reopening folds it");
    close_and_assert_consistent(f);
    scenario.teardown();
}

#[tokio::test]
async fn an_error_inside_a_rebuild_before_its_switch_leaves_the_served_projections() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    send(&f.engine, ANN, &dm(BOB), "one").await;
    let dir = f.dir.path().to_path_buf();
    drop(f.engine);
    fail::cfg("rebuild::before_switch", "return").unwrap();
    let mut directory = DataDirectory::open_exclusive(&dir).unwrap();
    let served = directory.slot();
    let failed = directory.rebuild(RebuildOptions::default(), &mut |_, _| {});
    assert!(matches!(&failed, Err(EngineError::Io { source, .. }) if source.to_string().contains("rebuild::before_switch")), "{failed:?}");
    assert_eq!(directory.slot(), served);
    drop(directory);
    fail::remove("rebuild::before_switch");
    assert_directory_consistent(&dir);
    let reopened = DataDirectory::open_read_only(&dir).unwrap();
    assert_eq!(reopened.slot(), served, "the switch never happened");
    drop(f.dir);
    scenario.teardown();
}

#[tokio::test]
async fn a_flush_that_fails_before_its_write_stops_writes_and_a_reopen_folds_what_it_missed() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    f.engine.flush().await.unwrap();
    fail::cfg("flush::before_write", "return").unwrap();
    let acknowledged = f.engine.send_message(ANN, hello()).await.unwrap(); // durable in the log
    let flushed = f.engine.flush().await;
    assert!(
        matches!(&flushed, Err(EngineError::WriterFailed { reason }) if reason.contains("injected at flush::before_write")),
        "{flushed:?}"
    );
    let refused = f.engine.send_message(ANN, hello()).await;
    assert!(matches!(refused, Err(EngineError::WriterFailed { .. })), "no write once flushing stopped: {refused:?}");
    // Reads still answer from what was published (the unflushed layer is kept).
    assert_eq!(conversation(&f.engine, BOB, &dm(ANN)).await.unread_count, 1);
    fail::remove("flush::before_write");
    let f = f.reopen().await;
    let history = f.engine.get_history(BOB, messages::GetHistory { chat_ref: Some(dm(ANN)), ..Default::default() }).await.unwrap();
    assert_eq!(history.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), [acknowledged.message_id]);
    assert_eq!(conversation(&f.engine, BOB, &dm(ANN)).await.unread_count, 1, "the reopen folded the unflushed send");
    close_and_assert_consistent(f);
    scenario.teardown();
}

#[tokio::test]
async fn a_crash_right_after_a_flush_wrote_keeps_it_and_loses_nothing() {
    let scenario = fail::FailScenario::setup();
    let f = fixture().await;
    f.engine.flush().await.unwrap();
    let before = DataDirectory::open_read_only(f.dir.path()).unwrap().checkpoint().unwrap();
    fail::cfg("flush::after_write", "panic").unwrap();
    let acknowledged = f.engine.send_message(ANN, hello()).await.unwrap();
    let flushed = f.engine.flush().await;
    assert!(matches!(&flushed, Err(EngineError::WriterFailed { reason }) if reason.contains("panicked")), "{flushed:?}");
    fail::remove("flush::after_write");
    let dir = f.dir.path().to_path_buf();
    let checkpoint = {
        let Fixture { dir: kept, engine, clock } = f;
        drop(engine);
        let checkpoint = DataDirectory::open_read_only(&dir).unwrap().checkpoint().unwrap();
        let f = Fixture { dir: kept, engine: ChatEngine::open(&dir, config(&clock)).await.unwrap(), clock };
        let history = f.engine.get_history(BOB, messages::GetHistory { chat_ref: Some(dm(ANN)), ..Default::default() }).await.unwrap();
        assert_eq!(history.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), [acknowledged.message_id]);
        close_and_assert_consistent(f);
        checkpoint
    };
    assert!(checkpoint > before, "the flush that crashed after its write is on disk ({before} -> {checkpoint})");
    scenario.teardown();
}
