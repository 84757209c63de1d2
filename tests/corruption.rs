//! Damaged files: a flipped byte in a table file (`.sst`) or in the write-ahead log
//! (`.log`) of a closed data directory is found and reported as
//! `EngineError::CorruptFile` naming the file. Never a panic, and never an answer that
//! differs from the undamaged directory's: every read either answers what the intact
//! directory answers or fails naming the damaged file. Damaged projections are made anew
//! by a rebuild.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_state::maintenance::{DataDirectory, RebuildOptions};
use osmium_state::proto::ids::UserId;
use osmium_state::proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_state::proto::{chats, messages, types};
use osmium_state::{ChatEngine, EngineConfig, EngineError};
use std::path::{Path, PathBuf};

const USERS: u64 = 4;
/// Messages written, long enough to fill several table blocks per column family.
const MESSAGES: u64 = 300;

fn dm(peer: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: peer })) }
}

/// A data directory with DMs and a group of `USERS` users holding `MESSAGES` messages,
/// closed. With `flushed`, opened once more and closed, so that its data sits in table
/// files; otherwise it is still in the write-ahead log.
async fn written_directory(flushed: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let engine = ChatEngine::open(dir.path(), EngineConfig::default()).await.unwrap();
    for id in 1..=USERS {
        engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    let users = (2..=USERS).map(|user_id| UserRef { user_id }).collect();
    let group = engine.create_chat(UserId(1), chats::CreateChat { users, name: "crew".into() }).await.unwrap();
    let group = ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: group.id })) };
    for n in 0..MESSAGES {
        let author = UserId(1 + n % USERS);
        let chat = if n % 3 == 0 { group } else { dm(1 + (n + 1) % USERS) };
        let text = format!("message {n} {}", "lorem ipsum ".repeat(20));
        let request = messages::SendMessage { chat_ref: Some(chat), message: text, client_id: Some(n + 1), ..Default::default() };
        engine.send_message(author, request).await.unwrap();
    }
    drop(engine);
    if flushed {
        drop(ChatEngine::open(dir.path(), EngineConfig::default()).await.unwrap());
    }
    dir
}

/// A read through the public API.
#[derive(Clone, Debug)]
enum Read {
    Chats(UserId),
    History(UserId, ChatRef),
}

/// What `read` answers, as text.
async fn answer(engine: &ChatEngine, read: &Read) -> Result<String, EngineError> {
    match read {
        Read::Chats(user) => {
            let list = engine.get_chats(*user, chats::GetChats { limit: Some(100), ..Default::default() }).await?;
            Ok(format!("{list:?}"))
        }
        Read::History(user, chat_ref) => {
            let request = messages::GetHistory { chat_ref: Some(*chat_ref), limit: Some(100), offset: None };
            Ok(format!("{:?}", engine.get_history(*user, request).await?))
        }
    }
}

/// Every user's chat list and the history of each of their chats, with the answers of
/// the intact directory.
async fn every_read(engine: &ChatEngine) -> Vec<(Read, String)> {
    let mut reads = Vec::new();
    for user in (1..=USERS).map(UserId) {
        let list = engine.get_chats(user, chats::GetChats { limit: Some(100), ..Default::default() }).await.unwrap();
        for chat_ref in list.chats.iter().filter_map(|chat| chat.chat_ref) {
            reads.push(Read::History(user, chat_ref));
        }
        reads.push(Read::Chats(user));
    }
    let mut answered = Vec::new();
    for read in reads {
        let expected = answer(engine, &read).await.unwrap();
        answered.push((read, expected));
    }
    answered
}

fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    files
}

fn copy_directory(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
    }
    to
}

/// Inverts `count` bytes in the middle of `file`.
fn flip_bytes_in_the_middle(file: &Path, count: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let (middle, len) = (bytes.len() / 2, bytes.len());
    for byte in &mut bytes[middle..(middle + count).min(len)] {
        *byte ^= 0xff;
    }
    std::fs::write(file, bytes).unwrap();
}

/// The engine error inside an open error (a damaged file found while opening).
fn opening(err: osmium_state::OpenError) -> EngineError {
    match err {
        osmium_state::OpenError::Engine(err) => err,
        other => panic!("expected an engine error inside the open error, got {other:?}"),
    }
}

fn assert_names(err: &EngineError, file: &Path, what: &str) {
    match err {
        EngineError::CorruptFile { path, .. } => assert_eq!(path, file, "{what}: the error names the damaged file: {err}"),
        other => panic!("{what}: expected CorruptFile naming {}, got {other:?}", file.display()),
    }
}

#[tokio::test]
async fn a_flipped_byte_in_any_table_file_is_reported_naming_it_and_never_served() {
    let intact = written_directory(true).await;
    let expected = {
        let engine = ChatEngine::open(intact.path(), EngineConfig::default()).await.unwrap();
        every_read(&engine).await
    };
    let tables = files_with_extension(intact.path(), "sst");
    assert!(tables.len() >= 3, "the log, its index and the projections are in table files: {tables:?}");
    for table in &tables {
        let damaged = copy_directory(intact.path());
        let file = damaged.path().join(table.file_name().unwrap());
        flip_bytes_in_the_middle(&file, 8);
        // Checked before the engine opens it: the engine's open may compact the damaged
        // file away, rewriting it from the blocks the shared block cache still holds for
        // the intact original (whose copied files have the same cache keys).
        let checked =
            DataDirectory::open_read_only(damaged.path()).map_err(opening).and_then(|directory| directory.check(10, &mut |_, _| {}));
        match checked {
            Err(err) => assert_names(&err, &file, "check"),
            Ok(problems) => panic!("check found no error in the damaged {}: {problems:?}", file.display()),
        }
        match ChatEngine::open(damaged.path(), EngineConfig::default()).await {
            Err(err) => assert_names(&opening(err), &file, "opening"),
            Ok(engine) => {
                for (read, expected) in &expected {
                    match answer(&engine, read).await {
                        Ok(answer) => assert_eq!(&answer, expected, "{read:?} through the damaged {} answered differently", file.display()),
                        Err(err) => assert_names(&err, &file, "reading"),
                    }
                }
                drop(engine);
            }
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_write_ahead_log_refuses_the_open_naming_it() {
    let dir = written_directory(false).await;
    let logs = files_with_extension(dir.path(), "log");
    let wal = logs.iter().max_by_key(|file| std::fs::metadata(file).unwrap().len()).unwrap();
    flip_bytes_in_the_middle(wal, 8);
    let opened = ChatEngine::open(dir.path(), EngineConfig::default()).await;
    assert_names(&opening(opened.unwrap_err()), wal, "opening the engine");
    let read_only = DataDirectory::open_read_only(dir.path());
    assert_names(&opening(read_only.unwrap_err()), wal, "opening read-only");
}

#[tokio::test]
async fn damaged_projections_are_made_anew_by_a_rebuild() {
    let dir = written_directory(true).await;
    let directory = DataDirectory::open_read_only(dir.path()).unwrap();
    let messages_table = directory.slot().column_family(osmium_state::projections::Table::ChatidMsgidMessage);
    let files = directory.table_files().unwrap();
    drop(directory);
    let projection_file = &files.iter().find(|file| file.column_family == messages_table).unwrap().path;
    flip_bytes_in_the_middle(projection_file, 8);
    let damaged = DataDirectory::open_read_only(dir.path()).unwrap().verify(10, &mut |_, _| {});
    assert_names(&damaged.unwrap_err(), projection_file, "verify before the rebuild");
    let mut directory = DataDirectory::open_exclusive(dir.path()).unwrap();
    directory.rebuild(RebuildOptions::default(), &mut |_, _| {}).unwrap();
    drop(directory);
    let rebuilt = DataDirectory::open_read_only(dir.path()).unwrap();
    assert_eq!(rebuilt.check(10, &mut |_, _| {}).unwrap(), [], "the log checks clean");
    assert_eq!(rebuilt.verify(10, &mut |_, _| {}).unwrap().1, [], "the rebuilt projections equal a fold of the log");
}
