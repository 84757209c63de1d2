//! `osmium-replay check` on a data directory with a damaged file: exit code 2, the file
//! named, and for a table file the column family it holds and what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use osmium_engine::chat::{ChatEngine, EngineConfig};
use osmium_engine::maintenance::DataDirectory;
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, UserRef, chat_ref::Ref};
use osmium_proto::{messages, types};
use std::path::{Path, PathBuf};

fn replay(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("osmium-replay").unwrap();
    command.arg("--data-dir").arg(dir);
    command
}

/// 200 messages, closed; with `flushed`, reopened and closed once more so that they sit
/// in table files rather than the write-ahead log.
fn written_directory(flushed: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = ChatEngine::open(dir.path(), EngineConfig::default()).await.unwrap();
        for id in 1..=2 {
            engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
        }
        let chat_ref = ChatRef { r#ref: Some(Ref::User(UserRef { user_id: 2 })) };
        for n in 0..200 {
            let text = format!("message {n} {}", "lorem ipsum ".repeat(20));
            engine.send_message(UserId(1), messages::SendMessage { chat_ref: Some(chat_ref), message: text, ..Default::default() }).await.unwrap();
        }
        drop(engine);
        if flushed {
            drop(ChatEngine::open(dir.path(), EngineConfig::default()).await.unwrap());
        }
    });
    dir
}

fn flip_bytes_in_the_middle(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 8] {
        *byte ^= 0xff;
    }
    std::fs::write(file, bytes).unwrap();
}

fn table_file_of(dir: &Path, column_family: &str) -> PathBuf {
    let directory = DataDirectory::open_read_only(dir).unwrap();
    directory.table_files().unwrap().into_iter().find(|file| file.column_family == column_family).unwrap().path
}

#[test]
fn check_names_a_damaged_log_table_file_and_says_to_restore_a_backup() {
    let dir = written_directory(true);
    let file = table_file_of(dir.path(), "position_event");
    replay(dir.path()).arg("check").assert().success();
    flip_bytes_in_the_middle(&file);
    let assert = replay(dir.path()).arg("check").assert().code(2);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains(&format!("corrupt file {}", file.display())), "{stderr}");
    assert!(stderr.contains("column family position_event: the log: restore"), "{stderr}");
}

#[test]
fn check_names_a_damaged_projection_file_and_says_to_rebuild() {
    let dir = written_directory(true);
    let file = table_file_of(dir.path(), "chatid_msgid_message#a");
    flip_bytes_in_the_middle(&file);
    let assert = replay(dir.path()).args(["--json", "check"]).assert().code(2);
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert!(report["error"].as_str().unwrap().contains(&file.display().to_string()), "{report}");
    assert_eq!(report["column_family"], "chatid_msgid_message#a");
    replay(dir.path()).arg("rebuild").assert().success();
    replay(dir.path()).arg("check").assert().success();
    replay(dir.path()).arg("verify").assert().success();
}

#[test]
fn check_names_a_damaged_write_ahead_log() {
    let dir = written_directory(false);
    let wal = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .max_by_key(|path| std::fs::metadata(path).unwrap().len())
        .unwrap();
    flip_bytes_in_the_middle(&wal);
    replay(dir.path()).arg("check").assert().code(2).stderr(predicates::str::contains(format!("corrupt file {}", wal.display())));
}
