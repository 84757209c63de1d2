//! `osmium-replay backup` and `restore`: a backup is a point-in-time copy (exactly the
//! events up to one position, with projections that equal their fold), also when taken
//! while an engine writes; neither command overwrites anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use osmium_engine::chat::{ChatEngine, EngineConfig};
use osmium_engine::maintenance::DataDirectory;
use osmium_proto::events::EventEnvelope;
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, UserRef, chat_ref::Ref};
use osmium_proto::{messages, types};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn replay(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("osmium-replay").unwrap();
    command.arg("--data-dir").arg(dir);
    command
}

fn hello(n: u64) -> messages::SendMessage {
    let chat_ref = ChatRef { r#ref: Some(Ref::User(UserRef { user_id: 2 })) };
    messages::SendMessage { chat_ref: Some(chat_ref), message: format!("hello {n}"), client_id: Some(n), ..Default::default() }
}

async fn open_with_users(dir: &Path) -> ChatEngine {
    let engine = ChatEngine::open(dir, EngineConfig::default()).await.unwrap();
    for id in 1..=2 {
        engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    engine
}

/// Sends messages `first..first + count` from user 1 to user 2.
fn write_messages(dir: &Path, first: u64, count: u64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let engine = open_with_users(dir).await;
        for n in first..first + count {
            engine.send_message(UserId(1), hello(n)).await.unwrap();
        }
    });
}

fn events(dir: &Path) -> Vec<EventEnvelope> {
    let directory = DataDirectory::open_read_only(dir).unwrap();
    let mut events = Vec::new();
    directory
        .for_each_event(1_000, |event| {
            events.push(event.clone());
            Ok(())
        })
        .unwrap();
    events
}

/// Runs `backup --json` and returns the last position it reports, and its method.
fn backup(dir: &Path, to: &Path) -> (usize, String) {
    let output = replay(dir).args(["--json", "backup", "--to"]).arg(to).assert().success().get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    (report["last_position"].as_u64().unwrap() as usize, report["method"].as_str().unwrap().to_owned())
}

fn assert_restores_to_exactly(backup_dir: &Path, original_events: &[EventEnvelope], last_position: usize) {
    let restored = tempfile::tempdir().unwrap();
    replay(restored.path()).args(["restore", "--from"]).arg(backup_dir).assert().success();
    replay(restored.path()).arg("check").assert().success();
    replay(restored.path()).arg("verify").assert().success();
    assert_eq!(events(restored.path()), original_events[..last_position], "the restored log is the log up to the backup");
    let reopened = tokio::runtime::Runtime::new().unwrap().block_on(ChatEngine::open(restored.path(), EngineConfig::default()));
    assert!(reopened.is_ok(), "an engine opens the restored directory: {reopened:?}");
}

#[test]
fn a_backup_of_a_stopped_directory_restores_exactly_the_events_up_to_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    write_messages(dir.path(), 1, 50);
    let parent = tempfile::tempdir().unwrap();
    let backup_dir = parent.path().join("backup");
    let (last_position, method) = backup(dir.path(), &backup_dir);
    assert_eq!(method, "checkpoint");
    write_messages(dir.path(), 51, 50);
    let original = events(dir.path());
    assert!(original.len() > last_position, "events were written after the backup");
    assert_restores_to_exactly(&backup_dir, &original, last_position);
}

#[test]
fn a_backup_taken_while_an_engine_writes_is_a_point_in_time_copy() {
    let dir = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let backup_dir = parent.path().join("backup");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = runtime.block_on(open_with_users(dir.path()));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (engine, writing) = (engine.clone(), writing.clone());
        runtime.spawn(async move {
            let mut n = 0;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                engine.send_message(UserId(1), hello(n)).await.unwrap();
            }
            n
        })
    };
    while engine.log().last_position().get() < 100 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (last_position, method) = backup(dir.path(), &backup_dir);
    writing.store(false, Ordering::Relaxed);
    let sent = runtime.block_on(writer).unwrap();
    runtime.block_on(async {
        for n in sent + 1..=sent + 10 {
            engine.send_message(UserId(1), hello(n)).await.unwrap();
        }
    });
    drop(engine);
    drop(runtime);
    assert_eq!(method, "read_only_copy", "the engine held the directory");
    let original = events(dir.path());
    assert!(last_position >= 100, "the backup holds what was written before it: {last_position}");
    assert_restores_to_exactly(&backup_dir, &original, last_position);
}

#[test]
fn backup_refuses_a_target_that_is_not_empty_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_messages(dir.path(), 1, 3);
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("keep.txt"), "mine").unwrap();
    replay(dir.path()).args(["backup", "--to"]).arg(target.path()).assert().code(2).stderr(predicates::str::contains("not empty"));
    let names: Vec<_> = std::fs::read_dir(target.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(names, ["keep.txt"]);
    assert_eq!(std::fs::read_to_string(target.path().join("keep.txt")).unwrap(), "mine");
}

#[test]
fn restore_refuses_a_data_directory_that_is_not_empty_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_messages(dir.path(), 1, 3);
    let parent = tempfile::tempdir().unwrap();
    let backup_dir = parent.path().join("backup");
    backup(dir.path(), &backup_dir);
    let before = events(dir.path());
    replay(dir.path()).args(["restore", "--from"]).arg(&backup_dir).assert().code(2).stderr(predicates::str::contains("not empty"));
    assert_eq!(events(dir.path()), before, "the directory is untouched");
}

#[test]
fn restore_refuses_a_source_that_is_not_a_backup() {
    let not_a_backup = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let restored = target.path().join("data");
    replay(&restored)
        .args(["--json", "restore", "--from"])
        .arg(not_a_backup.path())
        .assert()
        .code(2)
        .stdout(predicates::str::contains("not an osmium-state data directory"));
    assert!(!restored.exists(), "nothing was created");
}

#[test]
fn backup_and_restore_have_help_with_an_example() {
    for subcommand in ["backup", "restore"] {
        let help = Command::cargo_bin("osmium-replay").unwrap().args([subcommand, "--help"]).assert().success();
        let text = String::from_utf8(help.get_output().stdout.clone()).unwrap();
        assert!(text.contains("Example: osmium-replay"), "{subcommand} --help has no example");
    }
}

#[test]
fn backup_of_a_directory_that_is_not_an_engines_is_refused_and_leaves_the_empty_target() {
    let not_data = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    replay(not_data.path()).args(["backup", "--to"]).arg(target.path()).assert().code(2).stderr(predicates::str::contains("not an osmium-state data directory"));
    assert!(target.path().is_dir() && std::fs::read_dir(target.path()).unwrap().next().is_none(), "the empty target is still there, still empty");
}
